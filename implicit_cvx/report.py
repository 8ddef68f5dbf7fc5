"""`report.json`: the one schema every command with `--out DIR` writes."""

from __future__ import annotations

from pathlib import Path

from .files import package_versions, write_json_atomic
from .numerics import inf_norm


def model_fields(model, U_train=None) -> dict:
    """Keys every command that writes a model reports: κ, ‖A‖_∞, sizes, nonzeros, residual."""
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


def write_report(out_dir, report: dict) -> Path:
    path = Path(out_dir) / "report.json"
    write_json_atomic(path, report)
    return path
