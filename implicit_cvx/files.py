"""Writing files safely: atomic text/JSON/.npz writes, strict JSON, package versions.

A leaf of the package (it imports nothing of it). Every file the toolkit writes goes through
`atomic_write`: a temporary file in the same directory, fsync, then os.replace — a reader (or a
run killed at any moment) never sees half a file, the temporary file is removed on failure, and
the result has the usual permissions (0666 minus the umask), not mkstemp's 0600.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from pathlib import Path

import numpy as np


def package_versions() -> dict:
    """Versions of the packages a result depends on (provenance)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("implicit_cvx", "numpy", "scipy", "cvxpy", "scikit-learn", "scs", "clarabel"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def to_jsonable(obj):
    """Numpy scalars/arrays to Python; non-finite floats to None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", **open_kwargs):
    """Open a temporary sibling of `path` for writing; on success fsync and rename it into place.

    Yields the open file. On any exception (Ctrl-C included) the temporary file is removed and
    `path` is left as it was.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, mode.replace("w", "x"), **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path, text: str) -> None:
    """Write a text file atomically (see `atomic_write`)."""
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_json_atomic(path, obj) -> None:
    """Strict JSON (non-finite floats become null), indented, written atomically."""
    write_text_atomic(path, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")


def write_npz_atomic(path, arrays: dict, compressed: bool = True) -> None:
    """An .npz archive of numeric arrays written atomically (no object arrays: never pickle)."""
    bad = [k for k, v in arrays.items() if np.asarray(v).dtype == object]
    if bad:
        raise ValueError(f"arrays {bad} have dtype object; only numeric arrays are stored")
    with atomic_write(path, "wb") as fh:
        (np.savez_compressed if compressed else np.savez)(fh, **arrays)
