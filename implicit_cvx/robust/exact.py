"""Exact verification of ReLU-type implicit models by mixed-integer programming (HiGHS).

With sound pre-activation bounds l ≤ z ≤ ū, an unstable state x = max(z, βz) is encoded exactly
by a binary δ: x ≥ z, x ≥ βz, x ≤ z − (1 − β)l(1 − δ), x ≤ βz + (1 − β)ū·δ; stable states are
linear; z = Ax + Bu + b_x; u in its box. For each u the only feasible (x, z) is the unique
equilibrium (well-posedness), so the program's minimum is the exact worst-case margin.
A margin is certified when the solver's proven dual bound exceeds its tolerance allowance: with
primal, dual and integrality feasibility tolerances τ, the bound can be off by about
τ·Σ_j (1 + |c_j|)·max|v_j| (a reduced cost or a bound violated by τ), and we subtract ten times
that (`SLACK` = 10τ). It is falsified by the solver's primal point only after that input's
equilibrium and prediction are recomputed in float64 (inside the ε-ball, rounded inward) and
the label is seen to change; otherwise it is unknown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .lp import Formulation, dual_bound

__all__ = ["MILP", "Outcome", "check_model", "decide_margins", "margin_range"]

MILP_TOL = 1e-9  # HiGHS primal, dual and integrality feasibility tolerances
SLACK = 10 * MILP_TOL  # allowance per unit of Σ_j (1 + |c_j|)·max|v_j| in a certified dual bound
EQ_TOL = 1e-13  # equilibrium tolerance when a counterexample is checked


def check_model(model) -> None:
    """Refuse models with states that are not relu / leaky_relu / identity (not exactly encodable)."""
    bad = sorted({act.name for act, _, _ in model.activation.blocks} - {"relu", "leaky_relu", "identity"})
    if bad:
        raise ValueError(f"exact verification needs relu / leaky_relu / identity states, got {bad}; "
                         "use method='linear' or 'lp' for smooth activations")


@dataclass
class Outcome:
    """One margin program: the proven lower bound (dual bound minus the allowance; −inf if
    none), the best value found and its input u (None if none), and whether it finished."""

    lower: float
    value: float
    u: np.ndarray | None
    finished: bool


class MILP:
    """The mixed-integer program of one sample, minimised for one objective at a time."""

    def __init__(self, model, boxes, i: int):
        self.f = Formulation.build(model, boxes, i, exact=True)
        self.h = self.f.highs()
        for option in ("mip_feasibility_tolerance", "primal_feasibility_tolerance",
                       "dual_feasibility_tolerance"):
            self.h.setOptionValue(option, MILP_TOL)
        self.h.setOptionValue("mip_rel_gap", 0.0)
        self.n = model.n_states
        self.p = model.n_inputs
        self._stop = None
        self.h.cbMipInterrupt.subscribe(self._interrupt)

    def _interrupt(self, event) -> None:
        # set the flag either way: HiGHS keeps it from one run to the next
        event.data_in.user_interrupt = self._stop is not None and bool(self._stop(event.data_out))

    def minimize(self, gx, gu, gb: float, time_limit: float, decide: bool = True) -> Outcome:
        """min gxᵀx + guᵀu + gb; with decide=True the solver stops as soon as the sign is
        settled (dual bound above the allowance, or a point below −allowance)."""
        c = self.f.cost(gx, gu)
        vmax = np.maximum(np.abs(self.f.col_lower), np.abs(self.f.col_upper))
        slack = SLACK * (1.0 + (1.0 + np.abs(c)) @ vmax)
        if decide:
            self._stop = lambda out: out.mip_dual_bound + gb > slack or out.mip_primal_bound + gb < -slack
        self.h.changeColsCost(c.size, np.arange(c.size, dtype=np.int32), c)
        self.h.setOptionValue("time_limit", max(float(time_limit), 1e-3))
        self.h.setOptionValue("mip_abs_gap", 1e-10)
        self.h.run()
        self._stop = None
        info = self.h.getInfo()
        status = self.h.modelStatusToString(self.h.getModelStatus())
        sol = self.h.getSolution()
        if not self.f.integer.any():  # an LP (every state stable): its own weak-duality certificate
            lower = dual_bound(self.f, c, gb, np.asarray(sol.row_dual)) if sol.dual_valid else -np.inf
        elif np.isfinite(info.mip_dual_bound):
            lower = info.mip_dual_bound + gb - slack
        else:
            lower = -np.inf
        has_point = info.primal_solution_status == 2 and sol.value_valid  # 2: a feasible point
        u = np.asarray(sol.col_value)[2 * self.n : 2 * self.n + self.p] if has_point else None
        value = info.objective_function_value + gb if has_point else np.inf
        return Outcome(float(lower), float(value), u, status == "Optimal")


def _counterexample(model, u: np.ndarray, label: int, lo: np.ndarray, hi: np.ndarray, margins):
    """u clipped into the inward-rounded ball [lo, hi], if its float64 equilibrium's prediction
    is not `label` (a margin ≤ 0, ties included); else None."""
    u = np.clip(u, lo, hi)[None, :]
    logits = model.predict(u, tol=EQ_TOL, raise_on_failure=False)
    return u[0] if margins(logits, np.array([label])).min() <= 0 else None


def decide_margins(model, boxes, inner, i: int, label: int, rows, lower: np.ndarray,
                   time_limit: float, margins):
    """Decide sample i: ("certified" | "falsified" | "unknown", a lower bound of its smallest
    margin, a counterexample or None). rows = (Gx (J, n), Gu (J, p), gb (J,)); lower (J,) sound
    bounds already known (margins above 0 are skipped); inner = (lo, hi) inward-rounded ball;
    margins(logits, labels) gives the per-class margins used to check a counterexample."""
    start = time.perf_counter()
    best = lower.copy()
    todo = [j for j in np.argsort(lower, kind="stable") if lower[j] <= 0]
    if not todo:
        return "certified", float(best.min()), None
    milp = MILP(model, boxes, i)
    for j in todo:
        left = time_limit - (time.perf_counter() - start)
        if left <= 0:
            return "unknown", float(best.min()), None
        out = milp.minimize(rows[0][j], rows[1][j], rows[2][j], left)
        best[j] = max(best[j], out.lower)
        if out.u is not None and out.value < 0:
            u = _counterexample(model, out.u, label, inner[0][i], inner[1][i], margins)
            if u is not None:
                return "falsified", float(best.min()), u
        if best[j] <= 0:
            return "unknown", float(best.min()), None
    return "certified", float(best.min()), None


def margin_range(model, boxes, i: int, gx, gu, gb: float, time_limit: float = 60.0) -> Outcome:
    """The exact minimum of gxᵀx + guᵀu + gb over the equilibria of sample i's input box.

    A mixed-integer program (ReLU-type states), solved to optimality within the time limit:
    Outcome.lower ≤ minimum, and Outcome.value is the objective at the solver's best point (the
    minimum up to the solver's tolerances).

    Parameters
    ----------
    model : ImplicitModel
        A model with relu, leaky_relu or identity states.
    boxes : Boxes
        Per-sample boxes containing every equilibrium, e.g. `robust.boxes.lp_boxes`.
    i : int
        The sample.
    gx : ndarray, shape (n,)
        State coefficients.
    gu : ndarray, shape (p,)
        Input coefficients.
    gb : float
        Constant.
    time_limit : float, default=60.0
        Seconds for the solver.

    Returns
    -------
    Outcome
        lower (a proven lower bound), value, u (the minimizing input or None), finished.

    Raises
    ------
    ValueError
        If the model has other activations.

    Examples
    --------
    The smallest margin of sample 2 over its ε = 0.2 ball:

    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> from implicit_cvx.robust.boxes import lp_boxes
    >>> Gx, Gu, gb, skip = robust.margin_rows(model, y)
    >>> out = robust.margin_range(model, lp_boxes(model, U, 0.2, domain=(0, 1)), 2, Gx[2, 0], Gu[2, 0], gb[2, 0])
    >>> round(out.lower, 4), out.u.round(4), out.finished
    (0.4222, array([0.6, 0.4]), True)
    """
    return MILP(model, boxes, i).minimize(gx, gu, gb, time_limit, decide=False)
