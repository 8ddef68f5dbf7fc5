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
import shutil
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


# ---- output directories ---------------------------------------------------------------------------
LOCK_NAME = ".lock"


class OutputDirectory:
    """A directory written by one process at a time.

    Opening it creates the directory (parents too), refuses a path that is a file or not
    writable, takes an exclusive lock (fcntl, released when the process ends — even by SIGKILL —
    so a second writer is refused while the first runs), and removes the temporary files that
    killed atomic writes left behind. With `fresh=True` (a new run) a non-empty directory is
    refused unless `resume` (continue the run in it) or `overwrite` (remove the files named by
    `owned` — exact names or name prefixes — and leave every other file alone).
    """

    def __init__(self, path, *, fresh: bool = False, resume: bool = False,
                 overwrite: bool = False, owned=()):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"--out {self.path} is a file, not a directory; choose a "
                                     "directory for the results")
        self.path.mkdir(parents=True, exist_ok=True)
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise PermissionError(f"--out {self.path} is not writable; choose another directory")
        self._lock = self._acquire()
        self._remove_temporaries()
        if fresh:
            self._check_fresh(resume, overwrite, owned)

    def _acquire(self):
        import fcntl

        fh = open(self.path / LOCK_NAME, "a+")  # noqa: SIM115 — held open while the lock lives
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "another process"
            fh.close()
            raise RuntimeError(f"{self.path} is in use by {owner}: wait for it to finish or "
                               "choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"implicit-cvx pid {os.getpid()}")
        fh.flush()
        return fh

    def _remove_temporaries(self) -> None:
        for entry in self.path.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.is_file():
                entry.unlink(missing_ok=True)
            elif entry.name.startswith(".ckpt-") and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)

    def _check_fresh(self, resume: bool, overwrite: bool, owned) -> None:
        present = sorted(e.name for e in self.path.iterdir() if e.name != LOCK_NAME)
        if not present or resume:
            return
        if not overwrite:
            shown = ", ".join(present[:6]) + (", …" if len(present) > 6 else "")
            raise FileExistsError(
                f"--out {self.path} is not empty ({shown}): pass --resume to continue the run in "
                "it, --overwrite to replace its results, or choose another directory")
        for name in present:
            if any(name == o or (o.endswith("*") and name.startswith(o[:-1])) for o in owned):
                target = self.path / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the lock
            self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
