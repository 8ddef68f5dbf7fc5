"""Losses, metrics, penalties and the true objective shared by every fitting method.

Losses are MEANS over samples: squared ℓ = ‖ŷ − y‖², softmax cross-entropy (labels 0..K−1, K ≥ 2
logits even for binary), multiclass Crammer–Singer hinge max_{j≠y}(1 + ŷ_j − ŷ_y)_+. The number
that counts is the loss of the TRUE equilibrium model plus penalties on (A, B, C, D), never biases.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..numerics import (
    cross_entropy,
    cross_entropy_grad,
    hinge,
    hinge_grad,
    pre_activation,
    predicted_labels,
)

LOSSES = ("squared", "cross_entropy", "hinge")
TASKS = ("classification", "regression")


def check_loss(name: str) -> str:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return name


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    return task


def default_loss(task: str) -> str:
    """squared for regression, cross_entropy for classification."""
    return "cross_entropy" if check_task(task) == "classification" else "squared"


def prepare_targets(name: str, Y, m: int | None = None) -> np.ndarray:
    """Targets in the loss's form: (m, q) floats for squared, (m,) int labels 0..K−1 otherwise."""
    check_loss(name)
    Y = np.asarray(Y)
    if m is not None and Y.shape[0] != m:
        raise ValueError(f"targets have {Y.shape[0]} rows but there are {m} samples: one target per sample")
    if name == "squared":
        Y = np.asarray(Y, dtype=float)
        Y = Y[:, None] if Y.ndim == 1 else Y
        if Y.ndim != 2 or not np.all(np.isfinite(Y)):
            raise ValueError(f"squared-loss targets must be a finite (m,) or (m, q) array, got shape {Y.shape}")
        return Y
    if Y.ndim != 1 or Y.size == 0:
        raise ValueError(f"{name} needs a 1-D array of integer labels 0..K−1, got shape {Y.shape}")
    labels = Y.astype(int)
    if not np.array_equal(labels, Y) or labels.min() < 0:
        raise ValueError(f"{name} labels must be integers 0..K−1, got values like {np.unique(Y)[:5]}")
    return labels


def n_outputs(name: str, Y) -> int:
    """Outputs q the model needs: columns of Y (squared) or K = max(2, max label + 1)."""
    Y = prepare_targets(name, Y)
    return Y.shape[1] if name == "squared" else max(2, int(Y.max()) + 1)


def _check_pair(name: str, Yhat, Y):
    Yhat = np.asarray(Yhat, dtype=float)
    Y = prepare_targets(name, Y, Yhat.shape[0])
    if Yhat.ndim != 2:
        raise ValueError(f"outputs Ŷ must be (m, q), got shape {Yhat.shape}")
    if name == "squared" and Y.shape != Yhat.shape:
        raise ValueError(f"targets have shape {Y.shape} but outputs Ŷ have shape {Yhat.shape}")
    if name != "squared" and (Yhat.shape[1] < 2 or Y.max() >= Yhat.shape[1]):
        raise ValueError(
            f"{name} needs K ≥ 2 logits covering labels 0..{Y.max()}, got Ŷ of shape {Yhat.shape}"
        )
    return Yhat, Y


def loss_value(name: str, Yhat, Y) -> float:
    """The loss averaged over samples."""
    Yhat, Y = _check_pair(check_loss(name), Yhat, Y)
    if name == "squared":
        return float(np.sum((Yhat - Y) ** 2) / Yhat.shape[0])
    per_sample = cross_entropy if name == "cross_entropy" else hinge
    return float(np.mean(per_sample(Yhat, Y)))


def loss_grad(name: str, Yhat, Y) -> np.ndarray:
    """∂L/∂Ŷ (m, q) of the MEAN loss (a subgradient for hinge: the most violated class)."""
    Yhat, Y = _check_pair(check_loss(name), Yhat, Y)
    if name == "squared":
        return 2.0 * (Yhat - Y) / Yhat.shape[0]
    grad = cross_entropy_grad if name == "cross_entropy" else hinge_grad
    return grad(Yhat, Y) / Yhat.shape[0]


def metrics(task: str, Yhat, Y) -> dict:
    """{'accuracy'} for classification, {'rmse'} (root mean squared error per entry) for regression."""
    Yhat = np.asarray(Yhat, dtype=float)
    if task == "classification":
        return {"accuracy": float(np.mean(predicted_labels(Yhat) == np.asarray(Y)))}
    if task == "regression":
        Y = prepare_targets("squared", Y, Yhat.shape[0])
        return {"rmse": float(np.sqrt(np.mean((Yhat - Y) ** 2)))}
    raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")


def _abs_sum(M) -> float:
    return float(abs(M).sum())


def _sq_sum(M) -> float:
    return float(M.multiply(M).sum()) if sp.issparse(M) else float(np.sum(M * M))


def penalty_value(model, lam_l1: float = 0.0, lam_l2: float = 0.0) -> float:
    """λ1 Σ|entries| + λ2 Σ entries² over A, B, C, D (biases are never penalized)."""
    if lam_l1 < 0 or lam_l2 < 0:
        raise ValueError(f"penalties must be ≥ 0, got lam_l1={lam_l1}, lam_l2={lam_l2}")
    weights = (model.A, model.B, model.C, model.D)
    value = 0.0
    if lam_l1:
        value += lam_l1 * sum(_abs_sum(M) for M in weights)
    if lam_l2:
        value += lam_l2 * sum(_sq_sum(M) for M in weights)
    return value


def _inputs(name: str, U) -> np.ndarray:
    U = np.asarray(U, dtype=float)
    if U.ndim != 2 or U.shape[0] == 0 or not np.all(np.isfinite(U)):
        raise ValueError(f"{name} must be a finite (m, p) array with one row per sample, got shape {U.shape}")
    return U


def prepare_data(U, Y, task: str, loss: str | None, U_val=None, Y_val=None):
    """(U, Y, loss, q, U_val, Y_val) validated: U (m, p) finite, targets in the loss's form."""
    loss = check_loss(loss if loss is not None else default_loss(task))
    U = _inputs("U", U)
    Y = prepare_targets(loss, Y, U.shape[0])
    if (U_val is None) != (Y_val is None):
        raise ValueError("pass both U_val and Y_val (validation inputs and targets) or neither")
    if U_val is not None:
        U_val = _inputs("U_val", U_val)
        if U_val.shape[1] != U.shape[1]:
            raise ValueError(f"U_val has {U_val.shape[1]} columns but U has {U.shape[1]}")
        Y_val = prepare_targets(loss, Y_val, U_val.shape[0])
    return U, Y, loss, n_outputs(loss, Y), U_val, Y_val


def evaluate(model, U, Y, task, loss, penalties=(0.0, 0.0), *, X0=None, tol=1e-10, prefix="train"):
    """Record of the TRUE equilibrium model on (U, Y): objective, loss, metrics, residual; and X."""
    X, info = model.equilibrium(U, method="reproducible", return_info=True, X0=X0, tol=tol)
    return _record(model, X, U, Y, task, loss, penalties, info.residual, prefix), X


def evaluate_at(model, X, U, Y, task, loss, penalties=(0.0, 0.0), *, prefix="train") -> dict:
    """The same record at states X already solved for this (A, B): no new equilibrium solve; the
    residual max |X − φ(XAᵀ + UBᵀ + b_x)| is measured."""
    residual = float(np.abs(X - model.phi(pre_activation(model, X, U))).max(initial=0.0))
    return _record(model, X, U, Y, task, loss, penalties, residual, prefix)


def _record(model, X, U, Y, task, loss, penalties, residual, prefix) -> dict:
    Yhat = model.output(X, U)
    value = loss_value(loss, Yhat, Y)
    rec = {f"{prefix}_objective": value + penalty_value(model, *penalties), f"{prefix}_loss": value}
    rec.update({f"{prefix}_{k}": v for k, v in metrics(task, Yhat, Y).items()})
    rec[f"{prefix}_residual"] = float(residual)
    return rec
