"""State-driven implicit modeling, method `sim` (Tsai et al. 2022).

Teacher states (U, Z, X, Ŷ) are data, so the weights are fitted row by row with the shared convex
engine: rows of (A, B, b_x) on regressors [X, U, 1] with targets Z and ‖a_i‖_1 ≤ κ; then the new
model's equilibrium X' on the training inputs; then rows of (C, D, b_y) on [X', U, 1] with targets
the teacher's outputs Ŷ (state matching of the outputs).

Architecture formulations (paper §5): `group_lasso` (column norms of (A; C): deletes states),
`input_selection` (column norms of (B; D): deletes inputs) — both one coupled problem over the
rows of (A, B) and (C, D), certified by its own duality gap (convex/group.py) — and `low_rank`
(A = L Rᵀ of rank r: R from the truncated SVD of the l1 fit, columns scaled to unit ℓ1 norm, then
the rows of (L, B, b_x) refitted on [XR, U, 1] with ‖l_i‖_1 ≤ κ, which gives ‖a_i‖_1 ≤ κ).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..config import make_options, option
from ..convex.gram import GramStats, gram_sums, reduce_gram
from ..convex.rows import RowSolution, RowSpec, solve_path
from ..convex.solvers import GroupPenalty, RowProblem, escalate, merge_solutions, solve_certified
from ..equilibrium import EquilibriumError
from ..model import ImplicitModel
from ..numerics import in_ball, inf_norm, predicted_labels
from ..partitions import gather, is_partitioned
from ..report import model_fields
from ..robust.training import check_s_bound, s_bound_scaling, s_bound_weights
from .driver import FitMethod, FitResult, Step, fit_function
from .objective import TASKS, metrics
from .options import CertifiedStepOptions, PartitionOptions, RowParallelOptions
from .partitioned import Samples, load, open_cluster, score, score_sums
from .states import partition_states, rescale_into_ball, teacher_model, train_teacher

FORMULATIONS = ("l1", "elastic_net", "equality", "robust", "group_lasso", "input_selection", "low_rank")
GROUP_FORMULATIONS = ("group_lasso", "input_selection")
SOLVERS = ("native", "SCS", "CLARABEL")
_PROGRESS_BATCHES = 20
_DEAD_COLUMN = 1e-6  # a state is dead when its column of (A; C) has ℓ2 norm below this
CVXPY_TOL = 1e-7  # cvxpy rows are certified to max(tol, CVXPY_TOL): interior-point accuracy
GROUP_TOL = 1e-7  # the coupled group problems to max(tol, GROUP_TOL): first-order (ADMM) accuracy


# ---- options -------------------------------------------------------------------------------
def _check_callable(fn):
    if fn is not None and not callable(fn):
        raise ValueError(f"expected a function (w, row) → (cvxpy penalty, constraints), got {fn!r}")
    return fn


@dataclass
class SimOptions(RowParallelOptions, CertifiedStepOptions, PartitionOptions):
    """Everything `fit_sim` needs besides the data, validated once."""

    kappa: float = option(0.99, low=0, high=1, open_low=True, open_high=True, section="model",
                          estimator="kappa", help="well-posedness constraint ‖A‖_∞ ≤ κ < 1")
    include_D: bool = option(True, section="model", estimator="include_D",
                             help="fit the direct input–output path D (False: D = 0)")
    teacher: object = option(None, kind="any", section="python",
                             help="a fitted MLPClassifier/MLPRegressor or a feed-forward ImplicitModel "
                                  "(default: an MLP trained with teacher_hidden, teacher_max_iter)")
    teacher_hidden: list = option([64, 32], kind="ints", help="hidden layer sizes of the MLP teacher")
    teacher_max_iter: int = option(300, low=1, help="training iterations of the MLP teacher")
    formulation: str = option("l1", choices=FORMULATIONS,
                              help="l1 | elastic_net (needs l2) | equality | robust (beta/gamma) | "
                                   "group_lasso, input_selection (need group_lam) | low_rank "
                                   "(needs rank)")
    lam: float = option(1e-3, low=0, estimator="lam_l1", help="ℓ1 weight λ of every row problem")
    l2: float = option(0.0, low=0, estimator="lam_l2", help="ridge weight of elastic_net")
    beta: float | None = option(None, kind="float", low=0, open_low=True,
                                help="robust: ‖b_i‖_1 ≤ β on the rows of B")
    gamma: float | None = option(None, kind="float", low=0, open_low=True,
                                 help="robust: ‖c_i‖_1 + ‖d_i‖_1 ≤ γ on the rows of (C, D)")
    s_bound: float | None = option(None, kind="float", low=0, open_low=True,
                                   help="the (C, D) refit keeps ‖S‖_∞ ≤ s_bound (Thm 4.3)")
    group_lam: float = option(0.0, low=0, help="group_lasso: weight of the column norms of (A; C) "
                                                "(deletes states); input_selection: of (B; D) "
                                                "(deletes inputs)")
    rank: int | None = option(None, kind="int", low=1, help="low_rank: the rank r of A = L Rᵀ")
    solver: str = option("native", choices=SOLVERS,
                         help="native (certified active set, Clarabel for rows it leaves) | SCS | CLARABEL")
    extra: object = option(None, kind="any", section="python", check_value=_check_callable,
                           help="extra(w, row) → (cvxpy penalty, constraints) added to every row")
    threshold: float = option(1e-8, low=0, help="weights below this are set to 0 after the fit")
    chunk_size: int | None = option(None, kind="int", low=1,
                                    help="rows per partition of the Gram sums in memory "
                                         "(null: run.partitions)")
    tol: float = option(1e-9, low=0, open_low=True, help="relative duality-gap tolerance of the rows")
    U_test: object = option(None, kind="any", section="python",
                            help="test inputs for the reported test metrics (model and teacher)")
    Y_test: object = option(None, kind="any", section="python", help="test targets, with U_test")

    def __post_init__(self):
        if self.formulation == "elastic_net" and self.l2 <= 0:
            raise ValueError("formulation 'elastic_net' needs l2 > 0 (the ridge weight); got l2=0")
        if self.formulation == "equality" and self.l2 > 0:
            raise ValueError("formulation 'equality' takes no ridge: use l2=0 or 'elastic_net'")
        if self.formulation == "robust" and self.beta is None and self.gamma is None:
            raise ValueError("formulation 'robust' needs beta (‖b_i‖_1 ≤ β) and/or gamma "
                             "(‖c_i‖_1 + ‖d_i‖_1 ≤ γ); both are None")
        if self.s_bound is not None and self.formulation == "robust" and self.gamma is not None:
            raise ValueError("s_bound (‖S‖_∞ ≤ s) and gamma (‖c_i‖_1 + ‖d_i‖_1 ≤ γ) both "
                             "constrain the (C, D) rows; give one of them")
        if self.formulation in GROUP_FORMULATIONS and self.group_lam <= 0:
            raise ValueError(f"formulation {self.formulation!r} needs group_lam > 0 (the weight of "
                             "the column-group norms); got group_lam=0")
        if self.formulation == "low_rank" and self.rank is None:
            raise ValueError("formulation 'low_rank' needs rank (the rank r of A = L Rᵀ), e.g. rank=8")
        if (self.U_test is None) != (self.Y_test is None):
            raise ValueError("give both U_test and Y_test (or neither)")
        if self.formulation == "equality" and self.data_backend != "memory":
            raise ValueError("formulation 'equality' is solved on the raw samples in one process: "
                             "use run.data_backend 'memory'")

    @property
    def uses_cvxpy(self) -> bool:
        return self.solver != "native" or self.extra is not None

    @property
    def chain(self) -> tuple:
        """The solvers a row goes through until it is certified."""
        if self.extra is not None:
            return ("clarabel",) if self.solver == "CLARABEL" else ("scs", "clarabel")
        return {"native": ("native", "clarabel"), "SCS": ("scs", "clarabel"),
                "CLARABEL": ("clarabel",)}[self.solver]

    @property
    def row_tol(self) -> float:
        return max(self.tol, CVXPY_TOL) if self.uses_cvxpy else self.tol


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


def _ridge(opts: SimOptions, stats: GramStats) -> GramStats:
    """Gram statistics with the elastic-net ridge l2‖w‖² folded in on the weights only (the bias,
    the last coordinate, is never penalized)."""
    if opts.l2:
        stats.G = stats.G + np.diag(np.r_[np.full(stats.d - 1, opts.l2), 0.0])
    return stats


def ab_spec(opts: SimOptions, n: int, p: int, lam: float | None = None) -> RowSpec:
    """Rows of (A, B, b_x): ‖a_i‖_1 ≤ κ; robust adds ‖b_i‖_1 ≤ β (paper §6, §4)."""
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


def _solve(run: _Run, stats: GramStats, spec: RowSpec, warm=None, label="rows") -> RowSolution:
    """One stage's rows on reduced statistics, certified by the solver chain of the options
    (RowFitError otherwise); a progress bar over row batches if asked."""
    opts, progress = run.opts, run.progress
    batches = [np.arange(stats.k)]
    if progress and stats.k > 1:
        from tqdm.auto import tqdm

        batches = tqdm(np.array_split(np.arange(stats.k), min(_PROGRESS_BATCHES, stats.k)),
                       desc=f"SIM {label}", unit="batch")
    start = time.perf_counter()
    problem = RowProblem(stats, spec, extra=opts.extra)
    kw = dict(tol=opts.row_tol, chain=opts.chain, step=f"SIM {label}",
              accept_uncertified=opts.accept_uncertified, **run.row_parallel)
    sols = [solve_certified(problem, rows=rows, warm_start=None if warm is None else warm[rows], **kw)
            for rows in batches]
    if len(sols) == 1:
        return sols[0]
    return merge_solutions(sols, time.perf_counter() - start)


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


# ---- per-partition work (runs where the partition lives) --------------------------------------
def _ab_part(item, teacher: ImplicitModel, with_outputs: bool, task: str, classes):
    """Gram sums of [X, U, 1] → Z (and Ŷ for the group lasso) from the teacher's states of one
    partition, and the teacher's score sums on its targets (None without targets)."""
    U, Y = load(item)
    ts = partition_states(teacher, U)
    T = np.hstack([ts.Z, ts.Yhat]) if with_outputs else ts.Z
    teacher_score = None if Y is None else score_sums(ts.Yhat, _target(Y, task, classes), task)
    return gram_sums(_regressors(ts.X, U), T), teacher_score


def _cd_part(item, teacher: ImplicitModel, inner: ImplicitModel, include_D: bool, scaling, kappa,
             kept):
    """Gram sums of [X', U_kept, 1] (scaled for ‖S‖_∞ ≤ s) → the teacher's outputs, X' the
    equilibrium of the fitted (A, B, b_x) on the partition's inputs, U_kept its kept inputs."""
    U, _ = load(item)
    X_new, _ = _equilibrium(inner, U, kappa)
    R = _regressors(X_new, U[:, kept] if include_D else None)
    R = R if scaling is None else scaling.features(R)
    return gram_sums(R, partition_states(teacher, U).Yhat)


def _eval_part(item, teacher: ImplicitModel, model: ImplicitModel, kappa, task: str, classes):
    """Score sums of the fitted model on the targets (None without) and on the teacher's labels /
    outputs, and its equilibrium residual, on one partition."""
    U, Y = load(item)
    X_new, info = _equilibrium(model, U, kappa)
    Yhat, Yref = model.output(X_new, U), partition_states(teacher, U).Yhat
    ref = predicted_labels(Yref) if task == TASKS[0] else Yref
    own = None if Y is None else score_sums(Yhat, _target(Y, task, classes), task)
    return own, score_sums(Yhat, ref, task), float(info.residual)


def _target(Y, task, classes):
    return _encode(Y, classes) if task == TASKS[0] else Y


# ---- the pipeline --------------------------------------------------------------------------
@dataclass
class _Run:
    """Shared state of a fit (or of a λ path): the (rescaled) teacher, the partitioned samples,
    the reduced statistics of the (A, B) rows, timings."""

    teacher: ImplicitModel
    rescaled: bool
    samples: Samples
    opts: SimOptions
    task: str
    teacher_params: int
    has_targets: bool
    classes: list | None
    stats_ab: GramStats
    teacher_score: float | None
    row_parallel: dict
    progress: bool = False
    phases: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.teacher.n_states

    @property
    def p(self) -> int:
        return self.teacher.n_inputs

    @property
    def q(self) -> int:
        return self.teacher.n_outputs


def _start(U, Y, opts: SimOptions, task: str, cluster, seed=None, progress=False) -> _Run:
    """Teacher (trained if not given), rescaled into the κ-ball; one pass over the partitions for
    the (A, B) Gram statistics of its states."""
    t0 = time.perf_counter()
    teacher = opts.teacher
    if teacher is None:
        if Y is None:
            raise ValueError("SIM without a teacher trains one on (U, Y): give Y or a teacher")
        if is_partitioned(U):
            raise ValueError("SIM trains its default MLP teacher in memory: for partitioned data "
                             "(files, shards, dask arrays) give a fitted teacher")
        teacher = train_teacher(U, Y, task, opts.teacher_hidden, opts.teacher_max_iter, seed)
    model, rescaled = rescale_into_ball(teacher_model(teacher), opts.kappa)
    if Y is not None and not is_partitioned(U) and len(Y) != len(U):
        raise ValueError(f"Y has {len(Y)} rows but U has {len(U)}: one target per sample")
    samples = Samples.of(cluster, U, Y, opts, rows=None if opts.partitions else opts.chunk_size)
    classes = model.metadata.get("classes") if task == "classification" else None
    sums = samples.map(_ab_part, model, opts.formulation in GROUP_FORMULATIONS, task, classes)
    has_targets = sums[0][1] is not None
    run = _Run(model, rescaled, samples, opts, task, _teacher_params(teacher, model), has_targets,
               classes, _ridge(opts, reduce_gram(s[0] for s in sums)),
               score([s[1] for s in sums], task) if has_targets else None,
               cluster.row_parallel(opts.backend, opts.n_jobs, opts.address), progress)
    run.phases["teacher_states"] = time.perf_counter() - t0
    return run


@dataclass
class _ABFit:
    """The (A, B, b_x) stage: its rows, the stage objective, dead states and inputs, history
    record; for low_rank the factors (L, R) of A = L Rᵀ."""

    sol: RowSolution
    dead: np.ndarray
    record: dict
    dead_inputs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    factors: tuple | None = None


def _fit_ab(run: _Run, lam=None) -> _ABFit:
    """Rows of (A, B, b_x) on [X, U, 1] → Z (the teacher's pre-activations)."""
    t0 = time.perf_counter()
    opts = run.opts
    spec = ab_spec(opts, run.n, run.p, lam)
    if opts.formulation == "equality":  # no strictly feasible point in Gram form: raw constraints
        U, _ = gather(run.samples.parts)
        ts = partition_states(run.teacher, U)
        problem = RowProblem(run.stats_ab, spec, raw=(_regressors(ts.X, U), ts.Z))
        sol = solve_certified(problem, tol=opts.row_tol, chain=("equality",), step="SIM A,B rows",
                              accept_uncertified=opts.accept_uncertified)
        fit = _ABFit(sol, np.zeros(0, dtype=int), _stage("A,B", sol))
    elif opts.formulation in GROUP_FORMULATIONS:
        fit = _group_lasso(run, spec)
    else:
        sol = _solve(run, run.stats_ab, spec, label="A,B rows")
        fit = _ABFit(sol, np.zeros(0, dtype=int), _stage("A,B", sol))
        if opts.formulation == "low_rank":
            fit = _low_rank(run, fit, lam)
    run.phases["fit_AB"] = run.phases.get("fit_AB", 0.0) + time.perf_counter() - t0
    return fit


def _group_lasso(run: _Run, spec: RowSpec) -> _ABFit:
    """Rows of (A, B) and of (C, D) fitted jointly on the teacher states with the column-group
    penalty group_lam·Σ_j ‖W[:, j]‖_2 over the state columns (A; C) (group_lasso: deletes whole
    states) or the input columns (B; D) (input_selection: deletes inputs); columns that vanish
    are dead. One coupled problem, certified by its duality gap (native ADMM, then Clarabel)."""
    opts, n, p, stats = run.opts, run.n, run.p, run.stats_ab
    k_ab = n  # the statistics hold the targets [Z, Ŷ]: n state rows, then the output rows
    states = opts.formulation == "group_lasso"
    columns = np.arange(n) if states else np.arange(n, n + p)
    group = GroupPenalty(opts.group_lam, columns, np.arange(k_ab, stats.k), _DEAD_COLUMN)
    sol = solve_certified(RowProblem(stats, spec, group=group), tol=max(opts.row_tol, GROUP_TOL),
                          chain=("group_native", "group_lasso"), step=f"SIM {opts.formulation}",
                          accept_uncertified=opts.accept_uncertified)
    dead = columns[np.linalg.norm(sol.W[:, columns], axis=0) <= _DEAD_COLUMN]
    penalty = opts.group_lam * np.linalg.norm(sol.W[:, columns], axis=0).sum()
    key = "dead_states" if states else "dead_inputs"
    record = {"phase": f"A,B + C,D ({opts.formulation})", **sol.to_dict(),
              "objective": float(np.sum(sol.objective) + penalty), "duality_gap": sol.max_gap,
              "row_objectives": np.asarray(sol.objective).tolist(), key: (dead - columns[0]).tolist()}
    rows = np.arange(k_ab)
    ab = RowSolution(sol.W[rows], sol.objective[rows], sol.gap[rows],
                     [sol.status[i] for i in rows], sol.iterations[rows], sol.seconds, rows,
                     None if sol.escalated is None else sol.escalated[rows], sol.solver)
    if states:
        return _ABFit(ab, dead, record)
    return _ABFit(ab, np.zeros(0, dtype=int), record, dead_inputs=dead - n)


def _low_rank(run: _Run, full: _ABFit, lam=None) -> _ABFit:
    """A = L Rᵀ of rank r: R = the top r right singular vectors of the fitted A, each column
    scaled to unit ℓ1 norm, so ‖a_i‖_1 ≤ Σ_k |L_ik|‖R_:k‖_1 = ‖l_i‖_1 ≤ κ; the rows of
    (L, B, b_x) are then a certified row problem on [XR, U, 1] with the κ-ball on l_i, whose
    statistics are those of [X, U, 1] mapped by T = diag(R, I, 1): G' = TᵀGT, H' = TᵀH."""
    opts, n, p = run.opts, run.n, run.p
    r = min(int(opts.rank), n)
    _, _, Vt = np.linalg.svd(full.sol.W[:, :n])
    Rf = Vt[:r].T
    Rf = Rf / np.maximum(np.abs(Rf).sum(axis=0), 1e-300)
    T = np.zeros((n + p + 1, r + p + 1))
    T[:n, :r] = Rf
    T[n:, r:] = np.eye(p + 1)
    stats = run.stats_ab
    sol = _solve(run, GramStats(T.T @ stats.G @ T, T.T @ stats.H, stats.c, stats.m),
                 ab_spec(opts, r, p, lam), label="L,B rows")
    L = _threshold(sol.W, opts.threshold)[:, :r]
    sol.W = np.column_stack([L @ Rf.T, sol.W[:, r:]])
    record = {**_stage("L,B (rank " + str(r) + ")", sol), "rank": r}
    return _ABFit(sol, np.zeros(0, dtype=int), record, factors=(L, Rf))


def _ab_weights(ab: _ABFit, n: int, p: int, threshold: float):
    """(A, B, b_x, alive states, kept inputs) of the (A, B) stage: weights below `threshold` set
    to 0, dead states dropped, dead inputs' columns of B zeroed; A = L Rᵀ exactly for low_rank."""
    alive = np.setdiff1d(np.arange(n), ab.dead)
    kept = np.setdiff1d(np.arange(p), ab.dead_inputs)
    W_ab = _threshold(ab.sol.W, threshold)[alive]
    A, B, b_x = W_ab[:, alive], W_ab[:, n:n + p].copy(), W_ab[:, -1]
    if ab.factors is not None:
        A = ab.factors[0] @ ab.factors[1].T
    B[:, ab.dead_inputs] = 0.0
    return A, B, b_x, alive, kept


def _fit_cd(run: _Run, inner: ImplicitModel, kept, lam, warm_cd, phases: dict):
    """Rows of (C, D, b_y) on [X', U_kept, 1] → Ŷ (D = 0 without include_D; zero columns for
    dropped inputs), with the (C, D) balls or ‖S‖_∞ ≤ s_bound; one pass over the partitions for
    the statistics on the new equilibrium X' (timed in `phases`). Returns (C, D, b_y, RowSolution)."""
    opts, p, q = run.opts, run.p, run.q
    n_new = inner.n_states
    p_cd = kept.size if opts.include_D else 0
    spec_cd, scaling = cd_spec(opts, n_new, p_cd, lam), None
    if opts.s_bound is not None:  # ‖S‖_∞ ≤ s: a weighted ℓ1 ball, solved scaled (robust/training)
        weights = s_bound_weights(inner, opts.include_D)
        weights = np.concatenate([weights[:n_new], weights[n_new:][kept]]) if opts.include_D else weights
        scaling = s_bound_scaling(weights, opts.s_bound)
        spec_cd = RowSpec(penalty=scaling.penalty(spec_cd.penalty), free=spec_cd.free,
                          balls=[scaling.ball])
        warm_cd = None if warm_cd is None else scaling.to_scaled(warm_cd)
    t0 = time.perf_counter()
    sums = run.samples.map(_cd_part, run.teacher, inner, opts.include_D, scaling, opts.kappa, kept)
    phases["equilibrium"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sol_cd = _solve(run, _ridge(opts, reduce_gram(sums)), spec_cd, warm=warm_cd, label="C,D rows")
    if scaling is not None:
        sol_cd.W = scaling.from_scaled(sol_cd.W)
    W_cd = _threshold(sol_cd.W, opts.threshold)
    D = np.zeros((q, p))
    if opts.include_D:
        D[:, kept] = W_cd[:, n_new:n_new + p_cd]
    phases["fit_CD"] = time.perf_counter() - t0
    return W_cd[:, :n_new], D, W_cd[:, -1], sol_cd


def _complete(run: _Run, ab: _ABFit, lam=None, warm_cd=None) -> tuple[FitResult, RowSolution]:
    """Threshold (A, B, b_x), drop dead states, a pass for the (C, D) Gram statistics on the new
    equilibrium, fit (C, D, b_y), a pass for the metrics, check, summarize."""
    opts, n, p, q = run.opts, run.n, run.p, run.q
    phases = dict(run.phases)
    A, B, b_x, alive, kept = _ab_weights(ab, n, p, opts.threshold)
    activation = run.teacher.activation if alive.size == n else run.teacher.activation.subset(alive)
    n_new = alive.size
    inner = ImplicitModel(A, B, np.zeros((q, n_new)), np.zeros((q, p)), b_x, None, activation)
    if not in_ball(A, opts.kappa):
        raise RuntimeError(f"fitted A has ‖A‖_∞ = {inf_norm(A):.17g} > κ = {opts.kappa}: the "
                           "row solver returned a point outside the ball")
    C, D, b_y, sol_cd = _fit_cd(run, inner, kept, lam, warm_cd, phases)

    metadata = {"kappa": opts.kappa, "method": "sim", "task": run.task,
                "sim": {"formulation": opts.formulation, "lam": opts.lam if lam is None else lam,
                        "l2": opts.l2, "beta": opts.beta, "gamma": opts.gamma,
                        "s_bound": opts.s_bound, "group_lam": opts.group_lam, "rank": opts.rank,
                        "solver": opts.solver, "kept_states": alive.tolist(),
                        "kept_inputs": kept.tolist()}}
    if run.classes is not None:
        metadata["classes"] = list(run.classes)
    model = ImplicitModel(A, B, C, D, b_x, b_y, activation, metadata)
    t0 = time.perf_counter()
    train = run.samples.map(_eval_part, run.teacher, model, opts.kappa, run.task, run.classes)
    phases["evaluate_train"] = time.perf_counter() - t0
    summary = _summary(run, model, train, ab.sol, sol_cd, phases)
    summary.update(dead_states=ab.dead.tolist(), dead_inputs=ab.dead_inputs.tolist(),
                   n_inputs_kept=int(kept.size))
    if ab.factors is not None:
        summary.update(rank=int(ab.factors[0].shape[1]), rank_A=int(np.linalg.matrix_rank(A)))
    if opts.s_bound is not None:
        summary["sensitivity_inf_norm"] = check_s_bound(model, opts.s_bound)
    summary["uncertified"] = [{"step": f"SIM {name} rows", "rows": sol.uncertified.tolist(),
                               "solver": sol.solver, "max_gap": sol.max_gap}
                              for name, sol in (("A,B", ab.sol), ("C,D", sol_cd)) if len(sol.uncertified)]
    history = [ab.record, _stage("C,D", sol_cd)]
    return FitResult(model, history, summary), sol_cd


def _equilibrium(model: ImplicitModel, U, kappa: float):
    """The default solver; if it fails, Picard, which contracts at rate ≤ ‖A‖_∞ ≤ κ < 1 and so
    reaches the tolerance within log(tol / scale) / log κ steps."""
    try:
        return model.equilibrium(U, method="reproducible", return_info=True)
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


def _summary(run: _Run, model, train: list, sol_ab, sol_cd, phases) -> dict:
    """The report of a fit; `train` holds the per-partition results of _eval_part."""
    opts, task = run.opts, run.task
    key = "accuracy" if task == "classification" else "rmse"
    out = model_fields(model)
    out["equilibrium_residual"] = max(r[2] for r in train)
    out.update(
        method="sim", task=task, formulation=opts.formulation,
        teacher_params=run.teacher_params,
        params_fraction_of_teacher=model.nnz / run.teacher_params,
        max_duality_gap=_max_gap(sol_ab, sol_cd),
        certificate="solver status" if opts.formulation == "equality" or opts.extra is not None
        else "duality gap",
        rows_escalated=sum(s.to_dict()["rows_escalated"] for s in (sol_ab, sol_cd)),
        teacher_rescaled=run.rescaled, teacher_n_states=run.n,
        train_agreement_with_teacher=score([r[1] for r in train], task),
        samples=run.samples.m, partitions=len(run.samples.rows), data_backend=opts.data_backend,
    )
    out[f"train_{key}"] = score([r[0] for r in train], task) if run.has_targets else None
    out[f"teacher_train_{key}"] = run.teacher_score
    out[f"teacher_{key}"] = out[f"teacher_train_{key}"]
    out[f"test_{key}"] = None
    if opts.U_test is not None:
        t0 = time.perf_counter()
        Yhat_test = model.predict(opts.U_test)
        teacher_test = run.teacher.predict(opts.U_test)
        out[f"test_{key}"] = _metric(Yhat_test, opts.Y_test, task, run.classes)
        out[f"teacher_{key}"] = _metric(teacher_test, opts.Y_test, task, run.classes)
        out["test_agreement_with_teacher"] = _agreement(Yhat_test, teacher_test, task)
        phases["evaluate"] = time.perf_counter() - t0
    out["seconds_by_phase"] = phases
    return out


# ---- the method ----------------------------------------------------------------------------
@dataclass
class SimState:
    model: ImplicitModel
    rng: np.random.Generator
    summary: dict
    stages: list


class SimMethod(FitMethod):
    """Fit an implicit model to a feed-forward teacher's states (state-driven implicit modeling).

    The teacher (given, or an MLP trained on (U, Y)) is rescaled into ‖A‖_∞ ≤ κ first; its states
    are data, so (A, B, b_x) and then (C, D, b_y) are certified convex row fits. Y is only used to
    train a default teacher and for the reported metrics: the fit matches the teacher's states and
    outputs. One step: the driver's loop runs once.

    Data-parallel (run.data_backend, run.partitions): three passes over the row partitions — the
    teacher's states and the (A, B) Gram sums; the new equilibrium and the (C, D) Gram sums; the
    metrics — each partition loaded where it runs and dropped after, so a worker's peak memory is
    O(partition rows × (n + p) + d²), independent of m; only (d × d), (d × k) sums travel.
    U may be an array, a `.npy` path, a shard directory, a dask.array or a list of Parts.
    """

    name = "sim"
    Options = SimOptions
    State = SimState
    needs_targets = False
    iterative = False

    @property
    def max_steps(self) -> int:
        return 1

    def start(self, rng) -> SimState:
        d = self.data
        self._cluster = open_cluster(self.opts).__enter__()
        try:
            self._run = _start(d.U, d.Y, self.opts, d.task, self._cluster, self.seed, self.progress)
        except BaseException:
            self._cluster.__exit__(None, None, None)
            raise
        return SimState(self._run.teacher, rng, {}, [])

    def step(self, state: SimState) -> Step:
        with self._cluster:  # closed when the one step ends
            result = _complete(self._run, _fit_ab(self._run))[0]
        return Step(SimState(result.model, state.rng, result.summary, result.history), _record(result), True)

    def finish(self, state: SimState, model) -> FitResult:
        return FitResult(state.model, [], dict(state.summary))


fit_sim = fit_function(SimMethod)


def _record(result) -> dict:
    """The history record of one SIM fit: its stages, and the steps accepted without a
    certificate (`accept_uncertified`) if any — moved out of the summary."""
    record = {"stages": result.history}
    uncertified = result.summary.pop("uncertified")
    if uncertified:
        record["uncertified"] = uncertified
    return record


def sim_path(U, Y=None, *, task, lambdas, seed=None, **options) -> list[FitResult]:
    """`fit_sim` along a sequence of ℓ1 weights λ: one teacher run and Gram reduction, (A, B) rows
    by the warm-started `solve_path`, (C, D) rows warm-started from the previous λ."""
    opts = make_options(SimOptions, options, where="sim_path")
    if opts.uses_cvxpy or opts.formulation in ("equality", "low_rank", *GROUP_FORMULATIONS):
        raise ValueError(f"sim_path runs the native solver on formulations l1, elastic_net, "
                         f"robust; got solver={opts.solver!r}, formulation={opts.formulation!r}")
    with open_cluster(opts) as cluster:
        run = _start(U, Y, opts, task, cluster, seed)
        t0 = time.perf_counter()
        stats, spec = run.stats_ab, ab_spec(opts, run.n, run.p)
        sols = [escalate(RowProblem(stats, spec.with_penalty(float(lam))), sol, tol=opts.tol,
                         chain=opts.chain, step=f"SIM A,B rows (λ = {lam:g})",
                         accept_uncertified=opts.accept_uncertified, **run.row_parallel)
                for lam, sol in zip(lambdas, solve_path(stats, spec, [float(v) for v in lambdas],
                                                        tol=opts.tol), strict=True)]
        run.phases["fit_AB_path"] = time.perf_counter() - t0
        results, warm = [], None
        for lam, sol_ab in zip(lambdas, sols, strict=True):
            ab = _ABFit(sol_ab, np.zeros(0, dtype=int), _stage("A,B", sol_ab))
            result, sol_cd = _complete(run, ab, float(lam), warm)
            results.append(FitResult(result.model, [{"iteration": 0, **_record(result)}], result.summary))
            warm = sol_cd.W
    return results
