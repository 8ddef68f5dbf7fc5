"""State-driven implicit modeling, method `sim` (DESIGN §6.1; Tsai et al. 2022).

Teacher states (U, Z, X, Ŷ) are data, so the weights are fitted row by row with the shared convex
engine: rows of (A, B, b_x) on regressors [X, U, 1] with targets Z and ‖a_i‖_1 ≤ κ; then the new
model's equilibrium X' on the training inputs; then rows of (C, D, b_y) on [X', U, 1] with targets
the teacher's outputs Ŷ (state matching of the outputs).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..convex.cvx import solve_group_lasso, solve_rows_cvxpy, solve_rows_equality
from ..convex.gram import gram_stats
from ..convex.rows import RowSolution, RowSpec, merge_solutions, solve_path, solve_rows
from ..equilibrium import EquilibriumError
from ..model import ImplicitModel
from ..report import model_fields
from ..robust.training import check_s_bound, check_s_value, s_bound_scaling, s_bound_weights
from ..wellposed import BALL_RTOL, check_kappa, inf_norm
from .objective import TASKS, FitResult, metrics, predicted_labels
from .states import TeacherStates, teacher_states

FORMULATIONS = ("l1", "elastic_net", "equality", "robust", "group_lasso")
SOLVERS = ("native", "SCS", "CLARABEL")
_PROGRESS_BATCHES = 20
_DEAD_COLUMN = 1e-6  # a state is dead when its column of (A; C) has ℓ2 norm below this
_PIVOTS_PER_COORD = 5  # native active-set pivot budget per row: 5·d + 100, then Clarabel takes over
CVXPY_TOL = 1e-7  # cvxpy rows are certified to max(tol, CVXPY_TOL): interior-point accuracy


# ---- options -------------------------------------------------------------------------------
@dataclass
class SimOptions:
    """Everything `fit_sim` needs besides the data, validated once."""

    task: str
    kappa: float = 0.99
    formulation: str = "l1"
    lam: float = 1e-3
    l2: float = 0.0
    beta: float | None = None
    gamma: float | None = None
    s_bound: float | None = None
    group_lam: float = 0.0
    solver: str = "native"
    extra: object = None
    include_D: bool = True
    threshold: float = 1e-8
    chunk_size: int | None = None
    n_jobs: int = 1
    backend: str = "serial"
    address: str | None = None
    tol: float = 1e-9
    progress: bool = False
    seed: int | None = None
    preprocessing: dict | None = None

    def __post_init__(self):
        _choice("task", self.task, TASKS)
        _choice("formulation", self.formulation, FORMULATIONS)
        _choice("solver", self.solver, SOLVERS)
        self.kappa = check_kappa(self.kappa)
        for name in ("lam", "l2", "group_lam", "threshold"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number ≥ 0, got {value!r}")
        if not (np.isfinite(self.tol) and self.tol > 0):
            raise ValueError(f"tol must be > 0, got {self.tol!r}")
        if self.formulation == "elastic_net" and self.l2 <= 0:
            raise ValueError("formulation 'elastic_net' needs l2 > 0 (the ridge weight); got l2=0")
        if self.formulation == "equality" and self.l2 > 0:
            raise ValueError("formulation 'equality' takes no ridge: use l2=0 or 'elastic_net'")
        if self.formulation == "robust" and self.beta is None and self.gamma is None:
            raise ValueError("formulation 'robust' needs beta (‖b_i‖_1 ≤ β) and/or gamma "
                             "(‖c_i‖_1 + ‖d_i‖_1 ≤ γ); both are None")
        for name in ("beta", "gamma"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a radius > 0, got {value!r}")
        if self.s_bound is not None:
            self.s_bound = check_s_value(self.s_bound)
            if self.formulation == "robust" and self.gamma is not None:
                raise ValueError("s_bound (‖S‖_∞ ≤ s) and gamma (‖c_i‖_1 + ‖d_i‖_1 ≤ γ) both "
                                 "constrain the (C, D) rows; give one of them")
        if self.formulation == "group_lasso" and self.group_lam <= 0:
            raise ValueError("formulation 'group_lasso' needs group_lam > 0 (the weight of the "
                             "column-group norms over states); got group_lam=0")

    @property
    def uses_cvxpy(self) -> bool:
        return self.solver != "native" or self.extra is not None


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


# ---- row problems --------------------------------------------------------------------------
def _regressors(X: np.ndarray, U: np.ndarray | None) -> np.ndarray:
    """[X, U, 1] (or [X, 1]): the last column is the bias, a free coordinate."""
    parts = [X] if U is None else [X, U]
    return np.hstack([*parts, np.ones((X.shape[0], 1))])


def _row_spec(n: int, p: int, lam: float, balls: list) -> RowSpec:
    """λ on the n + p weights, bias (index n + p) free, the given balls."""
    penalty = np.full(n + p + 1, float(lam))
    penalty[-1] = 0.0
    return RowSpec(penalty=penalty, free=[n + p], balls=balls)


def _gram(opts: SimOptions, R, T):
    """Gram statistics with the elastic-net ridge l2‖w‖² folded in on the weights only (the bias,
    the last coordinate, is never penalized)."""
    stats = gram_stats(R, T, chunk_size=opts.chunk_size)
    if opts.l2:
        stats.G = stats.G + np.diag(np.r_[np.full(stats.d - 1, opts.l2), 0.0])
    return stats


def ab_spec(opts: SimOptions, n: int, p: int, lam: float | None = None) -> RowSpec:
    """Rows of (A, B, b_x): ‖a_i‖_1 ≤ κ; robust adds ‖b_i‖_1 ≤ β (DESIGN §6.1, §7)."""
    balls = [(np.arange(n), opts.kappa)]
    if opts.formulation == "robust" and opts.beta is not None:
        balls.append((np.arange(n, n + p), opts.beta))
    return _row_spec(n, p, opts.lam if lam is None else lam, balls)


def cd_spec(opts: SimOptions, n: int, p: int, lam: float | None = None) -> RowSpec:
    """Rows of (C, D, b_y); robust adds ‖c_i‖_1 + ‖d_i‖_1 ≤ γ."""
    balls = []
    if opts.formulation == "robust" and opts.gamma is not None:
        balls.append((np.arange(n + p), opts.gamma))
    return _row_spec(n, p, opts.lam if lam is None else lam, balls)


def _solve(opts: SimOptions, R, T, spec: RowSpec, warm=None, label="rows") -> RowSolution:
    """One stage's rows with the engine chosen by `opts` (tqdm over row batches if asked)."""
    stats = _gram(opts, R, T)
    batches = [np.arange(stats.k)]
    if opts.progress and stats.k > 1:
        from tqdm.auto import tqdm

        batches = tqdm(np.array_split(np.arange(stats.k), min(_PROGRESS_BATCHES, stats.k)),
                       desc=f"SIM {label}", unit="batch")
    start = time.perf_counter()
    sols = [_solve_batch(opts, stats, spec, rows, None if warm is None else warm[rows])
            for rows in batches]
    sol = sols[0] if len(sols) == 1 else merge_solutions(sols, time.perf_counter() - start)
    uncertified = [int(r) for r, st in zip(sol.rows, sol.status, strict=True)
                   if not str(st).startswith("optimal")]
    if uncertified and opts.extra is None:
        warnings.warn(f"SIM {label}: rows {uncertified[:10]} are not certified to tol "
                      f"(max gap {sol.max_gap:.3g}); see summary['max_duality_gap']",
                      RuntimeWarning, stacklevel=2)
    return sol


def _solve_batch(opts: SimOptions, stats, spec, rows, warm) -> RowSolution:
    """Native rows (uncertified ones escalated to Clarabel), or the cvxpy path when asked."""
    parallel = dict(n_jobs=opts.n_jobs, backend=opts.backend, address=opts.address)
    if opts.uses_cvxpy:
        solver = "SCS" if opts.solver == "native" else opts.solver
        return solve_rows_cvxpy(stats, spec, solver=solver, escalate_to="CLARABEL",
                                extra=opts.extra, rows=rows, tol=max(opts.tol, CVXPY_TOL),
                                **parallel)
    sol = solve_rows(stats, spec, tol=opts.tol, rows=rows, warm_start=warm,
                     max_iter=_max_pivots(stats.d), **parallel)
    return _escalate(opts, stats, spec, sol)


def _escalate(opts: SimOptions, stats, spec, sol: RowSolution) -> RowSolution:
    """Re-solve with Clarabel (kept if better) the rows the native solver left uncertified, or
    whose objective exceeds that of w = 0 (c_i, feasible for every ball): a relative gap
    certificate means nothing at a blown-up objective."""
    worse_than_zero = sol.objective > stats.c[sol.rows] * (1 + 1e-9) + 1e-12
    bad = np.flatnonzero(np.array([st != "optimal" for st in sol.status]) | worse_than_zero)
    sol.escalated = np.zeros(len(sol.rows), dtype=bool)
    if bad.size == 0:
        return sol
    # tol=inf: take Clarabel's answer whatever its gap; keep per row the lower objective
    fix = solve_rows_cvxpy(stats, spec, solver="CLARABEL", escalate_to=None, tol=np.inf,
                           rows=sol.rows[bad], warm_start=sol.W[bad])
    better = fix.objective < sol.objective[bad]
    idx = bad[better]
    sol.W[idx], sol.objective[idx], sol.gap[idx] = fix.W[better], fix.objective[better], fix.gap[better]
    sol.escalated[bad] = True
    tol = max(opts.tol, CVXPY_TOL)
    for i in idx:
        certified = sol.gap[i] <= tol * max(1.0, abs(sol.objective[i]))
        sol.status[i] = "optimal (Clarabel)" if certified else "inaccurate (Clarabel)"
    return sol


def _max_pivots(d: int) -> int:
    return _PIVOTS_PER_COORD * d + 100


def _threshold(W: np.ndarray, threshold: float) -> np.ndarray:
    """Zero the weights (not the bias, the last column) below `threshold` in absolute value."""
    W = W.copy()
    weights = W[:, :-1]
    weights[np.abs(weights) < threshold] = 0.0
    return W


# ---- metrics -------------------------------------------------------------------------------
def _encode(Y, classes) -> np.ndarray:
    """Labels as indices into the teacher's classes (−1 for a label it does not know)."""
    Y = np.asarray(Y).ravel()
    if classes is None:
        return Y
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup.get(v, -1) for v in Y.tolist()])


def _metric(Yhat, Y, task, classes) -> float:
    """Accuracy (classification) or RMSE (regression) of outputs Ŷ against Y."""
    return next(iter(metrics(task, Yhat, _encode(Y, classes) if task == TASKS[0] else Y).values()))


def _agreement(Yhat, Yref, task) -> float:
    """Share of samples labelled as the teacher does (classification), or RMSE to its outputs."""
    return _metric(Yhat, predicted_labels(Yref) if task == TASKS[0] else Yref, task, None)


def _teacher_params(teacher, model: ImplicitModel) -> int:
    """The teacher's own parameter count: an MLP's weights + biases, else its nonzeros."""
    if hasattr(teacher, "coefs_"):
        return int(sum(W.size for W in teacher.coefs_) + sum(b.size for b in teacher.intercepts_))
    return model.nnz


# ---- the pipeline --------------------------------------------------------------------------
@dataclass
class _Run:
    """Shared state of a fit (or of a λ path): teacher states, data, timings."""

    ts: TeacherStates
    opts: SimOptions
    teacher_params: int
    Y: np.ndarray | None
    U_test: np.ndarray | None
    Y_test: np.ndarray | None
    classes: list | None
    phases: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.ts.Z.shape[1]

    @property
    def p(self) -> int:
        return self.ts.U.shape[1]


def _start(U, Y, teacher, opts: SimOptions, U_test, Y_test) -> _Run:
    t0 = time.perf_counter()
    ts = teacher_states(teacher, U, opts.kappa)
    if Y is not None and len(Y) != ts.U.shape[0]:
        raise ValueError(f"Y has {len(Y)} rows but U has {ts.U.shape[0]}: one target per sample")
    if (U_test is None) != (Y_test is None):
        raise ValueError("give both U_test and Y_test (or neither)")
    classes = ts.model.metadata.get("classes") if opts.task == "classification" else None
    run = _Run(ts, opts, _teacher_params(teacher, ts.model), Y, U_test, Y_test, classes)
    run.phases["teacher_states"] = time.perf_counter() - t0
    return run


@dataclass
class _ABFit:
    """The (A, B, b_x) stage: its rows, the stage objective, dead states, history record."""

    sol: RowSolution
    dead: np.ndarray
    record: dict


def _fit_ab(run: _Run, lam=None) -> _ABFit:
    """Rows of (A, B, b_x) on [X, U, 1] → Z (the teacher's pre-activations)."""
    t0 = time.perf_counter()
    ts, opts = run.ts, run.opts
    spec, R = ab_spec(opts, run.n, run.p, lam), _regressors(ts.X, ts.U)
    dead = np.zeros(0, dtype=int)
    if opts.formulation == "equality":  # no strictly feasible point in Gram form: raw constraints
        solver = "CLARABEL" if opts.solver == "native" else opts.solver
        sol = solve_rows_equality(R, ts.Z, spec, solver=solver)
        record = _stage("A,B", sol)
    elif opts.formulation == "group_lasso":
        sol, dead, record = _group_lasso(run, spec, R)
    else:
        sol = _solve(opts, R, ts.Z, spec, label="A,B rows")
        record = _stage("A,B", sol)
    run.phases["fit_AB"] = run.phases.get("fit_AB", 0.0) + time.perf_counter() - t0
    return _ABFit(sol, dead, record)


def _group_lasso(run: _Run, spec: RowSpec, R):
    """Rows of (A, B) and of (C, D) fitted jointly on the teacher states with the column-group
    penalty group_lam·Σ_j ‖(A; C)[:, j]‖_2 (DESIGN §6.1, architecture optimisation); states whose
    column vanishes are dead. Returns the (A, B, b_x) rows, the dead states and the record."""
    ts, opts, n = run.ts, run.opts, run.n
    stats = _gram(opts, R, np.hstack([ts.Z, ts.Yhat]))
    k_ab = ts.Z.shape[1]
    solver = "CLARABEL" if opts.solver == "native" else opts.solver
    sol, dead = solve_group_lasso(stats, spec, opts.group_lam, np.arange(n),
                                  unballed_rows=np.arange(k_ab, stats.k),
                                  threshold=_DEAD_COLUMN, solver=solver)
    group = opts.group_lam * np.linalg.norm(sol.W[:, :n], axis=0).sum()
    record = {"phase": "A,B + C,D (group lasso)", **sol.to_dict(),
              "objective": float(np.sum(sol.objective) + group),
              "row_objectives": np.asarray(sol.objective).tolist(), "dead_states": dead.tolist()}
    rows = np.arange(k_ab)
    ab = RowSolution(sol.W[rows], sol.objective[rows], sol.gap[rows],
                     [sol.status[i] for i in rows], sol.iterations[rows], sol.seconds, rows,
                     None if sol.escalated is None else sol.escalated[rows], sol.solver)
    return ab, np.asarray(dead, dtype=int), record


def _complete(run: _Run, ab: _ABFit, lam=None, warm_cd=None) -> tuple[FitResult, RowSolution]:
    """Threshold (A, B, b_x), drop dead states, solve X', fit (C, D, b_y), check, summarize."""
    ts, opts, n, p = run.ts, run.opts, run.n, run.p
    phases = dict(run.phases)
    t0 = time.perf_counter()
    alive = np.setdiff1d(np.arange(n), ab.dead)
    W_ab = _threshold(ab.sol.W, opts.threshold)[alive]
    A, B, b_x = W_ab[:, alive], W_ab[:, n:n + p], W_ab[:, -1]
    activation = ts.model.activation if alive.size == n else ts.model.activation.subset(alive)
    n_new, q = alive.size, ts.Yhat.shape[1]
    inner = ImplicitModel(A, B, np.zeros((q, n_new)), np.zeros((q, p)), b_x, None, activation)
    if inf_norm(A) > opts.kappa * (1 + BALL_RTOL):
        raise RuntimeError(f"fitted A has ‖A‖_∞ = {inf_norm(A):.17g} > κ = {opts.kappa}: the "
                           "row solver returned a point outside the ball")
    X_new, info = _equilibrium(inner, ts.U, opts.kappa)
    phases["equilibrium"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    U_cd = ts.U if opts.include_D else None
    p_cd = p if opts.include_D else 0
    R_cd, spec_cd, scaling = _regressors(X_new, U_cd), cd_spec(opts, n_new, p_cd, lam), None
    if opts.s_bound is not None:  # ‖S‖_∞ ≤ s: a weighted ℓ1 ball, solved scaled (robust/training)
        scaling = s_bound_scaling(s_bound_weights(inner, opts.include_D), opts.s_bound)
        R_cd = scaling.features(R_cd)
        spec_cd = RowSpec(penalty=scaling.penalty(spec_cd.penalty), free=spec_cd.free,
                          balls=[scaling.ball])
        warm_cd = None if warm_cd is None else scaling.to_scaled(warm_cd)
    sol_cd = _solve(opts, R_cd, ts.Yhat, spec_cd, warm=warm_cd, label="C,D rows")
    if scaling is not None:
        sol_cd.W = scaling.from_scaled(sol_cd.W)
    W_cd = _threshold(sol_cd.W, opts.threshold)
    C = W_cd[:, :n_new]
    D = W_cd[:, n_new:n_new + p] if opts.include_D else np.zeros((q, p))
    phases["fit_CD"] = time.perf_counter() - t0

    metadata = {"kappa": opts.kappa, "method": "sim", "task": opts.task, "seed": opts.seed,
                "sim": {"formulation": opts.formulation, "lam": opts.lam if lam is None else lam,
                        "l2": opts.l2, "beta": opts.beta, "gamma": opts.gamma,
                        "s_bound": opts.s_bound,
                        "group_lam": opts.group_lam, "solver": opts.solver,
                        "kept_states": alive.tolist()}}
    if run.classes is not None:
        metadata["classes"] = list(run.classes)
    preprocessing = opts.preprocessing or ts.model.metadata.get("preprocessing")
    if preprocessing is not None:
        metadata["preprocessing"] = preprocessing
    model = ImplicitModel(A, B, C, D, b_x, W_cd[:, -1], activation, metadata)
    Yhat_train = model.output(X_new, ts.U)
    summary = _summary(run, model, info, Yhat_train, ab.sol, sol_cd, phases)
    summary["dead_states"] = ab.dead.tolist()
    if opts.s_bound is not None:
        summary["sensitivity_inf_norm"] = check_s_bound(model, opts.s_bound)
    history = [ab.record, _stage("C,D", sol_cd)]
    return FitResult(model, history, summary), sol_cd


def _equilibrium(model: ImplicitModel, U, kappa: float):
    """The default solver; if it fails, Picard, which contracts at rate ≤ ‖A‖_∞ ≤ κ < 1 and so
    reaches the tolerance within log(tol / scale) / log κ steps."""
    try:
        return model.equilibrium(U, return_info=True)
    except EquilibriumError as exc:
        warnings.warn(f"SIM: {exc}; falling back to Picard iteration", RuntimeWarning,
                      stacklevel=2)
        steps = int(np.ceil(np.log(1e-10 / 1e6) / np.log(kappa))) + 100
        return model.equilibrium(U, method="picard", return_info=True, max_iter=steps)


def _stage(name: str, sol: RowSolution) -> dict:
    return {"phase": name, **sol.to_dict(), "objective": float(np.sum(sol.objective)),
            "row_objectives": np.asarray(sol.objective).tolist()}


def _max_gap(*sols: RowSolution) -> float | None:
    """Largest certified gap over the stages (None when no stage has a certificate)."""
    gaps = np.concatenate([np.asarray(s.gap, dtype=float) for s in sols])
    gaps = gaps[~np.isnan(gaps)]
    return float(gaps.max()) if gaps.size else None


def _summary(run: _Run, model, info, Yhat_train, sol_ab, sol_cd, phases) -> dict:
    ts, opts, task = run.ts, run.opts, run.opts.task
    key = "accuracy" if task == "classification" else "rmse"
    out = model_fields(model)
    out["equilibrium_residual"] = float(info.residual)
    out.update(
        method="sim", task=task, formulation=opts.formulation,
        teacher_params=run.teacher_params,
        params_fraction_of_teacher=model.nnz / run.teacher_params,
        max_duality_gap=_max_gap(sol_ab, sol_cd),
        rows_escalated=sum(s.to_dict()["rows_escalated"] for s in (sol_ab, sol_cd)),
        teacher_rescaled=ts.rescaled, teacher_n_states=int(ts.Z.shape[1]),
        train_agreement_with_teacher=_agreement(Yhat_train, ts.Yhat, task),
    )
    out[f"train_{key}"] = None if run.Y is None else _metric(Yhat_train, run.Y, task, run.classes)
    out[f"teacher_train_{key}"] = (None if run.Y is None
                                   else _metric(ts.Yhat, run.Y, task, run.classes))
    out[f"teacher_{key}"] = out[f"teacher_train_{key}"]
    out[f"test_{key}"] = None
    if run.U_test is not None:
        t0 = time.perf_counter()
        Yhat_test = model.predict(run.U_test)
        teacher_test = ts.model.predict(run.U_test)
        out[f"test_{key}"] = _metric(Yhat_test, run.Y_test, task, run.classes)
        out[f"teacher_{key}"] = _metric(teacher_test, run.Y_test, task, run.classes)
        out["test_agreement_with_teacher"] = _agreement(Yhat_test, teacher_test, task)
        phases["evaluate"] = time.perf_counter() - t0
    out["seconds_by_phase"] = phases
    return out


# ---- public API ----------------------------------------------------------------------------
def fit_sim(U, Y=None, *, teacher, task, kappa=0.99, formulation="l1", lam=1e-3, l2=0.0,
            beta=None, gamma=None, s_bound=None, group_lam=0.0, solver="native", extra=None, include_D=True,
            threshold=1e-8, chunk_size=None, n_jobs=1, backend="serial", address=None, tol=1e-9,
            progress=False, U_test=None, Y_test=None, seed=None, preprocessing=None) -> FitResult:
    """Fit an implicit model to a feed-forward teacher's states (DESIGN §6.1).

    teacher: fitted sklearn MLPClassifier/MLPRegressor or a feed-forward ImplicitModel; it is
    rescaled into ‖A‖_∞ ≤ κ first. Y (labels or targets, optional) and U_test/Y_test are only
    used for the reported metrics: the fit matches the teacher's states and outputs.
    s_bound: the (C, D) refit is constrained to ‖S‖_∞ ≤ s_bound (DESIGN §7; any formulation but
    robust-with-gamma; the ridge l2 then acts in the ball's metric, see robust/training.py).
    """
    opts = SimOptions(task=task, kappa=kappa, formulation=formulation, lam=lam, l2=l2, beta=beta,
                      gamma=gamma, s_bound=s_bound, group_lam=group_lam, solver=solver, extra=extra,
                      include_D=include_D, threshold=threshold, chunk_size=chunk_size,
                      n_jobs=n_jobs, backend=backend, address=address, tol=tol, progress=progress,
                      seed=seed, preprocessing=preprocessing)
    run = _start(U, Y, teacher, opts, U_test, Y_test)
    return _complete(run, _fit_ab(run))[0]


def sim_path(U, Y=None, *, teacher, task, lambdas, U_test=None, Y_test=None,
             **options) -> list[FitResult]:
    """`fit_sim` along a sequence of ℓ1 weights λ: one teacher run and Gram reduction, (A, B) rows
    by the warm-started `solve_path`, (C, D) rows warm-started from the previous λ."""
    opts = SimOptions(task=task, **options)
    if opts.uses_cvxpy or opts.formulation in ("equality", "group_lasso"):
        raise ValueError(f"sim_path runs the native solver on formulations l1, elastic_net, "
                         f"robust; got solver={opts.solver!r}, formulation={opts.formulation!r}")
    run = _start(U, Y, teacher, opts, U_test, Y_test)
    t0 = time.perf_counter()
    ts = run.ts
    stats = _gram(opts, _regressors(ts.X, ts.U), ts.Z)
    spec = ab_spec(opts, run.n, run.p)
    sols = solve_path(stats, spec, [float(lam) for lam in lambdas], tol=opts.tol,
                      max_iter=_max_pivots(stats.d), n_jobs=opts.n_jobs, backend=opts.backend,
                      address=opts.address)
    sols = [_escalate(opts, stats, spec.with_penalty(float(lam)), sol)
            for lam, sol in zip(lambdas, sols, strict=True)]
    run.phases["fit_AB_path"] = time.perf_counter() - t0
    results, warm = [], None
    for lam, sol_ab in zip(lambdas, sols, strict=True):
        ab = _ABFit(sol_ab, np.zeros(0, dtype=int), _stage("A,B", sol_ab))
        result, sol_cd = _complete(run, ab, float(lam), warm)
        results.append(result)
        warm = sol_cd.W
    return results
