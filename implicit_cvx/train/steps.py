"""Convex steps shared by the fitting methods: the certified (C, D, b_y) output step.

With the states X fixed, the output layer ŷ = Cx + Du + b_y is a convex fit of the loss on the
features [X, U] (or X alone when D is fixed at 0), anchored at the current weights by μ‖Θ − Θ_k‖²
so that the objective never rises; optionally subject to ‖S‖_∞ ≤ s (Thm 4.3) for the current
(A, B), which is a weighted ℓ1 ball per output row.
"""

from __future__ import annotations

import numpy as np

from ..convex.losses import fit_output_layer
from ..robust.training import fit_output_layer_s_bounded, s_bound_weights


def features(X: np.ndarray, U: np.ndarray, include_D: bool) -> np.ndarray:
    """[X, U] (or X when the direct path D is not fitted): the regressors of the output step."""
    return np.column_stack([X, U]) if include_D else X


def relative_anchor(F: np.ndarray, anchor_mu: float) -> float:
    """μ = anchor_mu × the mean diagonal of [F, 1]ᵀ[F, 1]/m: an anchor in the data's own units."""
    mean_diag = (np.einsum("ij,ij->", F, F) / len(F) + 1.0) / (F.shape[1] + 1)
    return float(anchor_mu * max(mean_diag, 1e-12))


def output_step(model, X, U, Y, loss: str, *, include_D: bool, mu: float, lam_l1=0.0, lam_l2=0.0,
                tol: float = 1e-8, s_bound: float | None = None, n_jobs: int = 1,
                backend: str = "serial", address: str | None = None,
                accept_uncertified: bool = False):
    """(model with the new C, D, b_y; OutputFitInfo): the certified output fit anchored at the
    current output weights with weight μ (absolute), warm-started there."""
    F = features(X, U, include_D)
    W0 = np.column_stack([model.C, model.D]) if include_D else np.asarray(model.C, dtype=float)
    kw = dict(lam_l1=lam_l1, lam_l2=lam_l2, anchor=(W0, model.b_y, mu), tol=tol,
              warm_start=(W0, model.b_y), n_jobs=n_jobs, backend=backend, address=address,
              accept_uncertified=accept_uncertified)
    if s_bound is None:
        W, b, info = fit_output_layer(F, Y, loss, **kw)
    else:
        W, b, info = fit_output_layer_s_bounded(F, Y, loss, s_bound_weights(model, include_D),
                                                s_bound, **kw)
    n = model.n_states
    changes = {"C": W[:, :n], "b_y": b}
    if include_D:
        changes["D"] = W[:, n:]
    return model.with_weights(**changes), info
