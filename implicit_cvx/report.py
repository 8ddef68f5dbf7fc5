"""`report.json`: the one schema every command with `--out DIR` writes (DESIGN §9)."""

from __future__ import annotations

import json
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


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def write_json_atomic(path, obj) -> None:
    """Write JSON via a temporary file and os.replace, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(_jsonable(obj), fh, indent=2, allow_nan=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_report(out_dir, report: dict) -> Path:
    path = Path(out_dir) / "report.json"
    write_json_atomic(path, report)
    return path
