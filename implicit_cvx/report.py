"""`report.json`: the one schema every command with `--out DIR` writes (DESIGN §9)."""

from __future__ import annotations

import json
import math
import os
import tempfile
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


def model_fields(model, U_train=None) -> dict:
    """Keys every command that writes a model reports: κ, ‖A‖_∞, sizes, nonzeros, residual."""
    from .wellposed import inf_norm

    fields = {
        "kappa": model.metadata.get("kappa"),
        "inf_norm_A": float(inf_norm(model.A)),
        "n_states": model.n_states,
        "n_params": model.n_params,
        "nnz": model.nnz,
        "nnz_fraction": model.nnz / model.n_params,
        "equilibrium_residual": None,
    }
    if U_train is not None:
        _, info = model.equilibrium(U_train, return_info=True)
        fields["equilibrium_residual"] = float(info.residual)
    return fields


def base_report(command: str, *, method=None, task=None, dataset=None, seed=None, config=None,
                seconds=0.0, seconds_by_phase=None) -> dict:
    return {
        "command": command,
        "method": method,
        "task": task,
        "dataset": dataset,
        "seed": seed,
        "config": config,
        "versions": package_versions(),
        "seconds": float(seconds),
        "seconds_by_phase": dict(seconds_by_phase or {}),
    }


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


def write_text_atomic(path, text: str) -> None:
    """Write via a temporary file in the same directory, fsync, os.replace: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path, obj) -> None:
    write_text_atomic(path, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")


def write_report(out_dir, report: dict) -> Path:
    path = Path(out_dir) / "report.json"
    write_json_atomic(path, report)
    return path
