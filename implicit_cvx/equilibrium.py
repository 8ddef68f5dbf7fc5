"""Equilibrium states X = φ(XAᵀ + UBᵀ + b_x): Picard, Anderson and structure-aware solvers.

Picard converges when λ_pf(|A|) < 1 (Thm 2.2; ‖A‖_∞ < 1 suffices). The structured solver
sweeps the strongly connected components of A in topological order (Thm 2.8/2.9): acyclic
levels are one matrix product each, only cyclic components are iterated. Solvers are plain
functions `solver(A, K, phi, X0, tol, max_iter) -> (X, EquilibriumInfo)` with K = UBᵀ + b_x,
registered by name in `SOLVERS`. Samples are rows.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .numerics import inf_norm, times_transpose
from .structure import BlockStructure, block_structure
from .wellposed import wellposedness_report

ANDERSON_MEMORY = 5
# Anderson is chosen over Picard when ‖A_block‖_∞ reaches this (Picard's worst-case rate).
ANDERSON_FROM_RATE = 0.8
ANDERSON_FROM_RATE_SPARSE = 0.95
# Anderson mixing coefficients with ‖γ‖_1 above this are treated as an ill-conditioned step.
_GAMMA_MAX = 1e4
_RIDGE = 1e-12  # Tikhonov term of the Anderson least squares, relative to the largest Gram entry
# A row whose max residual grows by more than this factor in one step restarts its history.
_RESTART_FACTOR = 2.0
# A row whose best residual has not shrunk by _PROGRESS within _PATIENCE Anderson steps
# restarts from its best iterate with Picard steps (_PATIENCE·2^k of them at its k-th stall).
_PROGRESS = 0.9
_PATIENCE = 20
_CHUNK_BYTES = 256 * 2**20  # Anderson history budget; larger batches are solved in row chunks
# "adaptive": Picard steps of a race's probe, rows of its sample, and steps timed before a check.
_PROBE, _SAMPLE, _TIMED = 5, 32, 1
_MIN_SECONDS = 0.02  # Picard's predicted time left below which no race is run (Picard goes on)
_RACE_SHARE = 0.05  # the share of Picard's predicted time left all races together may take
_TINY = 100_000  # m·(nnz(A) + n) below which "adaptive" defers to `choose_kernel`
_COST_P0, _COST_PN, _COST_SPARSE, _COST_A0, _COST_AN = 255.0, 72.0, 6.1, 3340.0, 345.0


@dataclass
class EquilibriumInfo:
    """Status of one equilibrium solve; `residual` is max |X − φ(XAᵀ + UBᵀ + b_x)|.

    Attributes
    ----------
    solver : str
        The solver that ran ("picard", "anderson", "adaptive", "structured", ...).
    iterations : int
        Iterations run.
    residual : float
        The final max abs fixed-point residual.
    converged : bool
        Whether the residual reached the tolerance.
    residual_trace : list of float
        The residual after each iteration.
    seconds : float
        Wall time of the solve.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, solve_equilibrium
    >>> model = ImplicitModel(A=[[0.5, 0.6], [0.3, 0.4]], B=np.eye(2), C=np.eye(2), D=np.zeros((2, 2)))
    >>> X, info = solve_equilibrium(model, np.array([[1.0, 2.0]]))
    >>> info.converged, info.residual < 1e-10
    (True, True)
    """

    solver: str
    iterations: int = 0
    residual: float = float("inf")
    converged: bool = False
    residual_trace: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class EquilibriumError(RuntimeError):
    """A solver stopped before the tolerance; `.info` holds its EquilibriumInfo and trace.

    Parameters
    ----------
    info : EquilibriumInfo
        The failed solve's status (kept as ``.info``).
    tol : float
        The tolerance it missed.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, solve_equilibrium
    >>> model = ImplicitModel(A=[[0.5, 0.6], [0.3, 0.4]], B=np.eye(2), C=np.eye(2), D=np.zeros((2, 2)))
    >>> try:
    ...     solve_equilibrium(model, np.array([[1.0, 2.0]]), method="picard", max_iter=1)
    ... except Exception as error:
    ...     print(type(error).__name__, error.info.iterations)
    EquilibriumError 1
    """

    def __init__(self, info: EquilibriumInfo, tol: float):
        self.info = info
        super().__init__(
            f"equilibrium solver {info.solver!r} did not converge: residual {info.residual:.3e} "
            f"after {info.iterations} iterations, tolerance {tol:.1e}. Raise max_iter, use "
            "method='anderson', or train/project A to a smaller kappa (‖A‖_∞ ≤ κ < 1) for "
            "faster contraction; raise_on_failure=False returns the last iterate instead"
        )


class IllPosedError(ValueError):
    """No sufficient well-posedness condition holds for A (with its activation).

    The message names the conditions that fail and what to do (project A onto the κ-ball,
    rescale it, or pass force=True to try the solver anyway).

    Examples
    --------
    >>> from implicit_cvx import ImplicitModel
    >>> model = ImplicitModel(A=[[2.0]], B=[[1.0]], C=[[1.0]], D=[[0.0]], activation="tanh")
    >>> model.predict([[1.0]])
    Traceback (most recent call last):
    ...
    implicit_cvx.equilibrium.IllPosedError: A (shape (1, 1)) is not known to be well-posed: ...
    """


# ---- small numerical helpers ----------------------------------------------------------------
def _index(idx: np.ndarray):
    """A contiguous sorted index array as a slice (views, no copies), else the array itself."""
    if idx.size and idx[-1] - idx[0] + 1 == idx.size:
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def sub_block(M, rows, cols):
    """M[rows, cols] for dense or sparse M, with rows/cols slices or index arrays."""
    return M[rows, :][:, cols]


def input_term(model, U: np.ndarray) -> np.ndarray:
    """K = UBᵀ + b_x (m, n), skipping the rows of a dense B that are zero (e.g. deep layers)."""
    B = model.B
    if sp.issparse(B):
        return times_transpose(U, B) + model.b_x
    used = np.flatnonzero(np.any(B != 0, axis=1))
    if used.size == B.shape[0]:
        return U @ B.T + model.b_x
    K = np.empty((U.shape[0], B.shape[0]))
    K[:] = model.b_x
    rows = _index(used)
    K[:, rows] += U @ B[rows].T
    return K


def equilibrium_residual(model, U, X) -> float:
    """max |X − φ(XAᵀ + UBᵀ + b_x)| over all samples and states."""
    U = model.check_inputs(U)
    X = np.asarray(X, dtype=float)
    if X.shape != (U.shape[0], model.n_states):
        raise ValueError(f"states X have shape {X.shape}, expected {(U.shape[0], model.n_states)}")
    R = X - model.activation.value(times_transpose(X, model.A) + input_term(model, U))
    return float(np.abs(R).max(initial=0.0))


# ---- fixed-point kernels on a map g(X_rows, rows) ----------------------------------------------
class KernelRun(NamedTuple):
    X: np.ndarray
    trace: list
    converged: bool
    iterations: int
    residual: float
    G: np.ndarray | None = None  # g(X): the next Picard iterate, already computed
    anderson_from: int | None = None  # "adaptive": the step Anderson took over at (None: never)


def _rows(active: np.ndarray):
    return _index(active) if active.size else active


def _iterate(g, X0, tol, max_iter, step, deadline: float | None = None) -> KernelRun:
    """Shared loop of the fixed-point kernels: evaluate g on the unconverged rows, freeze rows
    whose max residual is ≤ tol, let `step` propose the next iterate; stop unconverged after
    max_iter evaluations or once time.perf_counter() passes `deadline`.

    Every returned row is a point whose residual was evaluated, so `residual` is exact. Frozen
    rows leave the work arrays once ≥ 5% of the active rows are done.
    """
    X = np.array(X0, dtype=float)
    GX = np.empty_like(X)
    active = np.arange(X.shape[0])
    Xa, trace, state, frozen = X, [], {}, 0.0
    for it in range(max_iter):
        Ga = g(Xa, _rows(active))
        F = Ga - Xa
        r = np.abs(F).max(axis=1, initial=0.0)
        trace.append(float(r.max(initial=0.0)))
        done = r <= tol
        late = deadline is not None and time.perf_counter() > deadline
        if done.all() or it == max_iter - 1 or late:
            X[active], GX[active] = Xa, Ga
            return KernelRun(X, trace, bool(done.all()), it + 1, max(frozen, trace[-1]), GX)
        if 20 * done.sum() >= active.size:
            X[active[done]], GX[active[done]] = Xa[done], Ga[done]
            frozen = max(frozen, float(r[done].max()))
            keep = ~done
            active, Xa, Ga, F, r = active[keep], Xa[keep], Ga[keep], F[keep], r[keep]
            state = {k: v[keep] for k, v in state.items()}
        Xa = step(Xa, Ga, F, r, state)
    raise AssertionError("unreachable: max_iter ≥ 1 is validated")


def _picard_step(Xa, Ga, F, r, state):
    return Ga


def _anderson_step(memory: int):
    """Per-sample Anderson (type II) step with memory `memory`: each row solves its own small
    least squares min ‖F − ΔF γ‖ (samples are independent fixed-point problems).

    Safeguards, per row: a ridge-regularised Gram matrix; a non-finite or huge γ (‖γ‖_1 > 1e4:
    an ill-conditioned least squares) is replaced by a plain Picard step; a max residual more
    than _RESTART_FACTOR times the previous one clears the row's history. A row that stalls
    (Anderson can cycle or diverge at the kinks of φ) restarts from its best iterate with a
    fresh history and a phase of Picard steps, doubling at each stall. With ‖A‖_∞ ≤ κ < 1
    Picard shrinks the residual by κ per step and the best residual never grows, so every row
    converges, within O(_PATIENCE·log(steps)) steps of what Picard alone needs.
    """

    def step(Xa, Ga, F, r, s):
        m, n = F.shape
        if "dF" not in s:
            s.update(
                dF=np.zeros((m, memory, n)), dG=np.zeros((m, memory, n)),
                H=np.zeros((m, memory, memory)), F=F, G=Ga, r=r, slot=np.zeros(m, dtype=int),
                best_r=r, best_G=Ga.copy(), mark=r, since=np.zeros(m, dtype=int),
                picard_left=np.zeros(m, dtype=int), stalls=np.zeros(m, dtype=int),
            )
            return Ga
        better = r < s["best_r"]
        s["best_r"] = np.where(better, r, s["best_r"])
        s["best_G"][better] = Ga[better]
        reset = (s["best_r"] <= _PROGRESS * s["mark"]) | (s["picard_left"] > 0)
        s["mark"] = np.where(reset, s["best_r"], s["mark"])
        s["since"] = np.where(reset, 0, s["since"] + 1)
        stalled = s["since"] >= _PATIENCE
        s["picard_left"][stalled] = _PATIENCE << np.minimum(s["stalls"][stalled], 20)
        s["stalls"] += stalled
        s["since"][stalled] = 0
        dF, dG, H = s["dF"], s["dG"], s["H"]
        j = int(s["slot"][0]) % memory
        dF[:, j] = F - s["F"]
        dG[:, j] = Ga - s["G"]
        col = np.einsum("mkn,mn->mk", dF, dF[:, j])
        H[:, j, :] = col
        H[:, :, j] = col
        forget = stalled | (r > _RESTART_FACTOR * s["r"])
        if forget.any():
            dF[forget] = 0.0
            dG[forget] = 0.0
            H[forget] = 0.0
        s["slot"] += 1
        s["F"], s["G"], s["r"] = F, Ga, r
        rhs = np.einsum("mkn,mn->mk", dF, F)
        scale = np.einsum("mkk->mk", H).max(axis=1)
        ridge = (_RIDGE * scale + np.finfo(float).tiny)[:, None, None] * np.eye(memory)
        with np.errstate(all="ignore"):
            gamma = spd_solve(H + ridge, rhs)
        bad = ~np.all(np.isfinite(gamma), axis=1) | (np.abs(gamma).sum(axis=1) > _GAMMA_MAX)
        picard = s["picard_left"] > 0
        gamma[bad | picard] = 0.0
        s["picard_left"] -= picard
        X_next = Ga - np.einsum("mk,mkn->mn", gamma, dG)
        X_next[stalled] = s["best_G"][stalled]
        return X_next

    return step


def spd_solve(H: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve H_s x_s = b_s for a stack (m, k, k) of small SPD matrices: a Cholesky factorisation
    vectorised over the stack (k² numpy steps; much faster than a batched LAPACK call for k ≈ 5).
    A non-positive pivot gives non-finite entries, which the caller rejects."""
    m, k, _ = H.shape
    L = np.zeros_like(H)
    for j in range(k):
        L[:, j, j] = np.sqrt(H[:, j, j] - np.einsum("mi,mi->m", L[:, j, :j], L[:, j, :j]))
        for i in range(j + 1, k):
            dot = np.einsum("mi,mi->m", L[:, i, :j], L[:, j, :j])
            L[:, i, j] = (H[:, i, j] - dot) / L[:, j, j]
    y = np.empty((m, k))
    for i in range(k):
        y[:, i] = (b[:, i] - np.einsum("mi,mi->m", L[:, i, :i], y[:, :i])) / L[:, i, i]
    x = np.empty((m, k))
    for i in reversed(range(k)):
        x[:, i] = (y[:, i] - np.einsum("mi,mi->m", L[:, i + 1 :, i], x[:, i + 1 :])) / L[:, i, i]
    return x


def run_kernel(kind: str, g, X0, tol, max_iter, memory: int = ANDERSON_MEMORY,
               cost: float | None = None) -> KernelRun:
    """Fixed-point iteration X = g(X) by "picard", "anderson" or "adaptive" (Picard, or Anderson
    where measured to pay: `_adaptive`, given `cost` = `anderson_cost(A)` of the map's A);
    g(X_rows, rows) evaluates the map on some rows.
    Anderson runs in row chunks that keep its history within budget (rows are independent
    problems), reporting the most iterations and the worst residual."""
    if kind == "picard":
        return _iterate(g, X0, tol, max_iter, _picard_step)
    if kind == "adaptive":
        return _adaptive(g, X0, tol, max_iter, memory, cost)
    return _chunked(g, X0, tol, max_iter, lambda g_rows: _anderson_step(memory), memory)


def _chunked(g, X0, tol, max_iter, make_step, memory) -> KernelRun:
    """`_iterate` with a fresh step `make_step(g_chunk)` per row chunk of at most _CHUNK_BYTES
    of Anderson history (`g_chunk`: the map on the chunk's rows)."""
    m, n = X0.shape
    chunk = max(1, int(_CHUNK_BYTES // (8 * max(n, 1) * (2 * memory + 5))))
    if m <= chunk:
        return _iterate(g, X0, tol, max_iter, make_step(g))
    X = np.empty(X0.shape)
    runs = []
    for a in range(0, m, chunk):
        b = min(a + chunk, m)

        def g_chunk(Xr, rows, a=a):
            return g(Xr, _shift(rows, a))

        runs.append(_iterate(g_chunk, X0[a:b], tol, max_iter, make_step(g_chunk)))
        X[a:b] = runs[-1].X
    return _merge(X, runs)


def _merge(X, runs) -> KernelRun:
    """One KernelRun for runs on disjoint rows of X: most iterations, elementwise-max trace."""
    length = max(run.iterations for run in runs)
    trace = [max(run.trace[min(i, run.iterations - 1)] for run in runs) for i in range(length)]
    return KernelRun(
        X, trace, all(run.converged for run in runs), length, max(run.residual for run in runs)
    )


def _adaptive(g, X0, tol, max_iter, memory, cost=None) -> KernelRun:
    """Picard, or Anderson where measured to pay (`_adaptive_step`), in one fixed-point loop per
    row chunk; the steps the sample rows took in a race they kept count in the iterations, and
    `anderson_from` is the first step at which Anderson took over in a chunk."""
    races = []

    def make_step(g_rows):
        step, chunk_races = _adaptive_step(g_rows, tol, memory, 1.0 if cost is None else cost)
        races.append(chunk_races)
        return step

    run = _chunked(g, X0, tol, max_iter, make_step, memory)
    races = [race for chunk in races for race in chunk]
    return run._replace(iterations=max([run.iterations] + [k + steps for k, steps, _ in races]),
                        anderson_from=min((k for k, _, won in races if won), default=None))


def _adaptive_step(g, tol, memory, cost):
    """The step of `_adaptive` on the map g, and the list (step, steps, Anderson won) of its
    races, whose sample rows are kept.

    Picard steps cost no measuring but at checks (step _TIMED + 1, then doubling intervals):
    there the time of the last _TIMED steps gives Picard's step time t_P, and the contraction
    over them its time still to go, at least (early steps contract fastest). If that is
    _MIN_SECONDS or more, and races so far took less than _RACE_SHARE of it, Anderson and
    Picard race on _SAMPLE rows no earlier race advanced (`_race`). If Anderson wins, it runs
    for the rest of the solve, the sample rows from their race iterates; else Picard goes on.
    Anderson's memory and safeguards are its own: a step it rejects for a sample (an
    ill-conditioned mixing, a residual jump, a stall) is a Picard step for that sample."""
    anderson = _anderson_step(memory)
    kept = []
    run = {"steps": 0, "check": _TIMED + 1, "anderson": False, "races": 0, "spent": 0.0}

    def step(Xa, Ga, F, r, s):
        if run["anderson"]:
            return anderson(Xa, Ga, F, r, s)
        run["steps"] = k = run["steps"] + 1
        if k == 1:
            s["rows"] = np.arange(len(Xa))  # the active rows (filtered as rows freeze)
        if k == run["check"] - _TIMED:
            run["clock"], run["r0"] = time.perf_counter(), float(r.max(initial=0.0))
        if k < run["check"]:
            return Ga
        run["check"] *= 2
        now = time.perf_counter()
        t_p, r1 = (now - run["clock"]) / _TIMED, float(r.max(initial=0.0))
        seconds = _steps_left(run["r0"], r1, tol, _TIMED) * t_p
        if seconds < max(_MIN_SECONDS, run["spent"] / _RACE_SHARE):
            return Ga
        stride = max(1, len(Xa) // _SAMPLE)
        pos = np.arange(0, len(Xa), stride)[:_SAMPLE] + run["races"] % stride
        rows = s["rows"][pos]
        wins, race = _race(lambda Xr, rr: g(Xr, rows[rr]), Ga[pos], tol, r1, cost, memory,
                           t_p, run["spent"])
        run["races"] += 1
        run["spent"] += time.perf_counter() - now
        kept.append((k, race.iterations, wins))
        if not wins:
            Ga = Ga.copy()
            Ga[pos] = race.X
            return Ga
        run["anderson"] = True
        X_next = anderson(Xa, Ga, F, r, s).copy()  # its history starts at (Xa, Ga), evaluated
        X_next[pos] = race.X
        return X_next

    return step, kept


def _race(g, X, tol, r, cost, memory, t_p, spent) -> tuple[bool, KernelRun]:
    """Anderson against Picard on sample rows, both from X (batch residual r) to half of the way
    to tol (in log): whether Anderson pays, and the run of the rows to keep.

    _PROBE Picard steps predict Picard's steps to tol, `left`, at their last contraction (a
    contraction that only slows: early steps contract faster). Anderson is tried only if it
    could pay, left > cost·(memory + 2) (`cost`: the predicted step-time ratio Anderson/Picard,
    `anderson_cost`; memory + 2: the steps Anderson needs to build its history), for at most
    _RACE_SHARE·left·t_P seconds less those `spent` by earlier races, and for at most
    4·left / cost steps (beyond, it could not pay even if Picard were four times slower than
    predicted). Its steps to tol, n_A, are its steps to half-way plus the rest at its last
    contraction, at most as many again (it accelerates). It pays if cost·n_A < left, else if
    Picard does not reach half-way within cost·n_A / 2 steps (twice that to tol: a linear
    rate). Out of time, Picard stays."""
    start = time.perf_counter()
    half = np.sqrt(tol * max(r, tol))
    probe = _iterate(g, X, half, _PROBE, _picard_step)
    if probe.converged:
        return False, probe
    left = _PROBE + _steps_left(probe.trace[-3], probe.trace[-1], tol)
    deadline = start + _RACE_SHARE * left * t_p - spent
    if not cost * (memory + 2) < left < np.inf or deadline <= start:
        return False, probe
    trial = _iterate(g, X, half, int(4 * left / cost) + memory + 2, _anderson_step(memory),
                     deadline)
    if not trial.converged:
        return False, probe
    k = trial.iterations
    rest = _steps_left(trial.trace[-3], trial.trace[-1], tol) if k >= 3 else k
    n_a = k + min(k, max(rest, 0.0))
    if cost * n_a < left:
        return True, trial
    picard = _picard_within(g, probe.G, half, int(cost * n_a / 2) - _PROBE, deadline)
    if picard is None:
        return True, trial
    return False, picard._replace(iterations=_PROBE + picard.iterations)


def _picard_within(g, X, target, steps, deadline) -> KernelRun | None:
    """Picard's run from X to `target` if it gets there within `steps` steps, else None. It runs
    _PROBE steps at a time and gives up as soon as its last contraction predicts more steps
    (its contraction slows: early steps contract faster); a run cut by the deadline comes back
    unconverged."""
    done = 0
    while done < steps:
        size = min(_PROBE, steps - done)
        run = _iterate(g, X, target, size, _picard_step, deadline)
        done += run.iterations
        if run.converged or run.iterations < size:  # there, or out of time
            return run._replace(iterations=done)
        if size >= 3 and done + _steps_left(run.trace[-3], run.trace[-1], target) > steps:
            return None
        X = run.G
    return None


def _steps_left(r0, r1, tol, apart: int = 2) -> float:
    """Picard steps from residual r1 down to tol at the contraction since r0, `apart` steps
    earlier."""
    rate = (r1 / r0) ** (1 / apart) if r0 > 0 else 0.0
    return np.log(tol / r1) / np.log(rate) if 0 < rate < 1 else np.inf


def anderson_cost(A, memory: int = ANDERSON_MEMORY) -> float:
    """Predicted time of an Anderson step over a Picard step (map included), per sample:
    Picard ~ _COST_P0 + _COST_PN·n + nnz(A)·(1, or _COST_SPARSE for CSR), Anderson adds
    ~ (_COST_A0 + _COST_AN·n)·memory/5, in units of one dense entry of A; fitted to step
    times measured on the benchmark grid (n = 3 to 1000), within a factor ~1.5."""
    n = A.shape[0]
    entries = A.nnz * _COST_SPARSE if sp.issparse(A) else np.count_nonzero(A)
    picard = _COST_P0 + _COST_PN * n + entries
    return 1.0 + (_COST_A0 + _COST_AN * n) * memory / 5 / picard


def _shift(rows, offset: int):
    if isinstance(rows, slice):
        return slice(rows.start + offset, rows.stop + offset)
    return rows + offset


def _kernel_for(A, m: int) -> tuple[str, float | None]:
    """("adaptive", anderson_cost(A)) for the fixed point of A on m samples; but when a step
    costs next to nothing (m·(nnz(A) + n) < _TINY), timings are noise and the worst-case rate
    rule `choose_kernel` decides."""
    nnz = A.nnz if sp.issparse(A) else np.count_nonzero(A)
    if m * (nnz + A.shape[0]) < _TINY:
        return choose_kernel(A), None
    return "adaptive", anderson_cost(A)


def choose_kernel(A) -> str:
    """Picard when ‖A‖_∞ (its worst-case rate) is below ANDERSON_FROM_RATE (dense A) or
    ANDERSON_FROM_RATE_SPARSE (sparse A: a product is cheap next to Anderson's O(memory·m·n)
    step); else Anderson."""
    threshold = ANDERSON_FROM_RATE_SPARSE if sp.issparse(A) else ANDERSON_FROM_RATE
    return "picard" if inf_norm(A) < threshold else "anderson"


def _affine_map(A, K, phi):
    """g(X, rows) = φ(XAᵀ + K[rows]): the equilibrium map restricted to some samples."""
    return lambda X, rows: phi(times_transpose(X, A) + K[rows])


def _start(X0, K):
    return np.zeros_like(K) if X0 is None else X0


# ---- solvers ------------------------------------------------------------------------------
def _kernel_solver(kind: str):
    def solver(A, K, phi, X0, tol, max_iter):
        inner, cost = _kernel_for(A, K.shape[0]) if kind == "adaptive" else (kind, None)
        run = run_kernel(inner, _affine_map(A, K, phi), _start(X0, K), tol, max_iter, cost=cost)
        return run.X, EquilibriumInfo(kind, run.iterations, run.residual, run.converged, run.trace)

    solver.__name__ = kind
    solver.__doc__ = (
        f"{kind.capitalize()} iteration X ← φ(XAᵀ + K) over the whole batch (rows converge and "
        "freeze independently); convergence on the max abs residual."
    )
    return solver


picard = _kernel_solver("picard")
anderson = _kernel_solver("anderson")
adaptive = _kernel_solver("adaptive")


@dataclass(frozen=True)
class _Step:
    """States solved together in the structured sweep, with the earlier states they read
    (`deps`) and the later states that read them (`users`, for the adjoint sweep). `kind`:
    "explicit" (acyclic: one evaluation), "selfloop" (independent scalar states each reading
    only itself: closed form, Remark 2.5) or "cyclic" (a component iterated to a fixed point)."""

    states: object  # slice or index array
    deps: object | None
    users: object | None
    phi: object
    kind: str

    @property
    def cyclic(self) -> bool:
        return self.kind != "explicit"


def _pattern_digest(A) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(A.shape).encode())
    if sp.issparse(A):
        A = A.tocsr()
        h.update(A.indptr.tobytes())
        h.update(A.indices.tobytes())
        h.update(np.packbits(A.data != 0).tobytes())
    else:
        h.update(np.packbits(np.asarray(A) != 0).tobytes())
    return h.digest()


_PLANS: OrderedDict = OrderedDict()
_PLANS_MAX = 32


def _level_groups(structure: BlockStructure, level, activation) -> list:
    """(states, kind) of one level: its acyclic components together, its scalar self-loops
    together, and each other cyclic component alone (components of a level are independent)."""
    comps, cyc = structure.components, structure.cyclic
    acyclic = [comps[k] for k in level if not cyc[k]]
    loops = [comps[k] for k in level if cyc[k] and comps[k].size == 1
             and activation.activation_of(int(comps[k][0])).componentwise]
    groups = [(np.sort(np.concatenate(acyclic)), "explicit")] if acyclic else []
    groups += [(np.sort(np.concatenate(loops)), "selfloop")] if loops else []
    single = {int(c[0]) for c in loops}
    groups += [(comps[k], "cyclic") for k in level
               if cyc[k] and not (comps[k].size == 1 and int(comps[k][0]) in single)]
    return groups


def sweep_plan(A, activation) -> tuple[BlockStructure, tuple[_Step, ...]]:
    """The block structure of A (block activations kept whole) and its sweep steps in
    topological order, cached by A's sparsity pattern and the activation map (weights may
    change; the pattern rarely does)."""
    key = (_pattern_digest(A), activation)
    if key in _PLANS:
        _PLANS.move_to_end(key)
        return _PLANS[key]
    structure = block_structure(A, activation.groups)
    P = sp.csr_matrix(A != 0) if not sp.issparse(A) else (A != 0).tocsr()
    PT = P.T.tocsr()
    steps = []
    for level in structure.levels:
        for idx, kind in _level_groups(structure, level, activation):
            deps = np.setdiff1d(P[idx].indices, idx)
            users = np.setdiff1d(PT[idx].indices, idx)
            steps.append(_Step(
                _index(idx),
                _index(deps) if deps.size else None,
                _index(users) if users.size else None,
                activation.subset(idx),
                kind,
            ))
    plan = (structure, tuple(steps))
    _PLANS[key] = plan
    if len(_PLANS) > _PLANS_MAX:
        _PLANS.popitem(last=False)
    return plan


def diagonal_of(A, states) -> np.ndarray:
    """A[i, i] for the given states (slice or index array) of a dense or sparse A."""
    return np.asarray(A.diagonal() if sp.issparse(A) else np.diagonal(A))[states]


def _solve_selfloops(A, st: _Step, Ks: np.ndarray) -> tuple[np.ndarray, float, bool]:
    """x_i = φ_i(a_i x_i + c_i) in closed form (Remark 2.5) for states reading only themselves;
    returns the states, their residual, and whether it is at rounding level (it is not when
    a forced, ill-posed self-loop has no solution)."""
    a = diagonal_of(A, st.states)
    X = st.phi.solve_selfloop(a, Ks)
    with np.errstate(invalid="ignore", over="ignore"):
        Z = a * X + Ks
        R = np.abs(X - st.phi.value(Z))
        slack = 16 * np.finfo(float).eps * (np.abs(X) + np.abs(Z) + np.abs(Ks))
    ok = bool(np.all(R <= slack))
    return X, float(np.max(np.where(np.isnan(R), np.inf, R), initial=0.0)), ok


def structured(A, K, phi, X0, tol, max_iter, timed: bool = True):
    """One sweep over A's components in topological order (Thm 2.8/2.9): each acyclic level is
    one matrix product on the states it reads; scalar self-loops x_i = φ(a_i x_i + c_i) are
    solved in closed form (Remark 2.5); each other cyclic component is iterated alone by the
    "adaptive" kernel (Picard, or Anderson where measured to pay) with earlier states fixed —
    or, with timed=False, by the kernel of the worst-case rate rule (`choose_kernel`).

    Exact in one pass for feed-forward A. `iterations` counts the sweep plus the inner
    iterations; the trace concatenates the inner traces; the residual is the largest final
    residual of the cyclic blocks (acyclic states are exact by construction).
    """
    _, steps = sweep_plan(A, phi)
    X = np.zeros_like(K) if X0 is None else np.array(X0, dtype=float)
    iterations, trace, residual, converged = 1, [], 0.0, True
    for st in steps:
        Ks = K[:, st.states]
        if st.deps is not None:
            Ks = Ks + times_transpose(X[:, st.deps], sub_block(A, st.states, st.deps))
        if st.kind == "explicit":
            X[:, st.states] = st.phi(Ks)
            continue
        if st.kind == "selfloop":
            X[:, st.states], r, ok = _solve_selfloops(A, st, Ks)
            residual, converged = max(residual, r), converged and ok
            continue
        block = sub_block(A, st.states, st.states)
        kind, cost = _kernel_for(block, Ks.shape[0]) if timed else (choose_kernel(block), None)
        run = run_kernel(kind, _affine_map(block, Ks, st.phi), X[:, st.states], tol, max_iter,
                         cost=cost)
        X[:, st.states] = run.X
        iterations += run.iterations
        trace += run.trace
        residual = max(residual, run.residual)
        converged &= run.converged
    return X, EquilibriumInfo("structured", iterations, residual, converged, trace or [residual])


def reproducible(A, K, phi, X0, tol, max_iter):
    """"auto" without timing: the structured sweep (or, for one cyclic block, its kernel) with
    every cyclic block's kernel chosen by the worst-case rate rule (`choose_kernel`). The same
    inputs give the same iterates on every run, which fits need (a resumed or a cluster fit
    equals the uninterrupted serial one bit for bit); "adaptive" chooses by measured time."""
    if choose_method(A, sweep_plan(A, phi)[0]) == "adaptive":
        return SOLVERS[choose_kernel(A)](A, K, phi, X0, tol, max_iter)
    return structured(A, K, phi, X0, tol, max_iter, timed=False)


SOLVERS = {"picard": picard, "anderson": anderson, "adaptive": adaptive, "structured": structured,
           "reproducible": reproducible}


def choose_method(A, structure: BlockStructure) -> str:
    """The "auto" rule: "structured" unless A is one single cyclic block (then the sweep has
    nothing to exploit); for one block, "adaptive" (Picard, switching to Anderson when a race
    on a sample of rows says it pays)."""
    if structure.n_components == 1 and structure.cyclic[0] and structure.components[0].size > 1:
        return "adaptive"
    return "structured"  # a lone self-loop too: solved in closed form there (Remark 2.5)


# ---- well-posedness gate --------------------------------------------------------------------
_VERDICTS: OrderedDict = OrderedDict()


def _value_digest(A) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((A.shape, sp.issparse(A))).encode())
    if sp.issparse(A):
        A = A.tocsr()
        for part in (A.indptr, A.indices, A.data):
            h.update(np.ascontiguousarray(part).tobytes())
    else:
        h.update(np.ascontiguousarray(A).tobytes())
    return h.digest()


def require_well_posed(A, structure: BlockStructure, activation=None) -> None:
    """Raise IllPosedError unless a sufficient condition for well-posedness holds: A triangular
    after a permutation (`structure` keeps block activations whole), ‖A‖_∞ < 1 with every
    Lipschitz constant ≤ 1, or what `wellposedness_report(A, activation=...)` certifies
    (cached per A and activation)."""
    lipschitz = 1.0 if activation is None else activation.lipschitz
    if structure.is_triangular or (inf_norm(A) < 1.0 and lipschitz <= 1.0):
        return
    key = (_value_digest(A), activation)
    if key not in _VERDICTS:
        report = wellposedness_report(A, activation=activation)
        _VERDICTS[key] = (bool(report["well_posed"]), str(report.get("reason", "")))
        if len(_VERDICTS) > _PLANS_MAX:
            _VERDICTS.popitem(last=False)
    ok, reason = _VERDICTS[key]
    if not ok:
        raise IllPosedError(
            f"A (shape {A.shape}) is not known to be well-posed: {reason}. Project A onto "
            "‖A‖_∞ ≤ κ < 1 (or rescale it); force=True lets an expert try the solver anyway"
        )


def _check_options(method, tol, max_iter, X0, m, n):
    if method != "auto" and method not in SOLVERS:
        raise ValueError(
            f"unknown equilibrium method {method!r}; choose 'auto' or one of {sorted(SOLVERS)}"
        )
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    if X0 is None:
        return None
    X0 = np.asarray(X0, dtype=float)
    if X0.shape != (m, n):
        raise ValueError(f"warm start X0 has shape {X0.shape}, expected {(m, n)}: one row per sample")
    if not np.all(np.isfinite(X0)):
        raise ValueError("warm start X0 contains NaN or inf")
    return X0


def solve_equilibrium(
    model,
    U,
    method: str = "auto",
    *,
    tol: float = 1e-10,
    max_iter: int = 10_000,
    X0=None,
    raise_on_failure: bool = True,
    force: bool = False,
):
    """States X (m, n) with X = φ(XAᵀ + UBᵀ + b_x) and an EquilibriumInfo.

    Refuses an A with no sufficient well-posedness condition unless force=True.

    Parameters
    ----------
    model : ImplicitModel
        The model; it validates U.
    U : array_like, shape (m, p)
        Inputs, one row per sample.
    method : {"auto", "picard", "anderson", "adaptive", "structured", "reproducible"}, default="auto"
        "auto" (see `choose_method`), Picard iteration, Anderson acceleration, "adaptive"
        (Picard, Anderson where measured to pay), "structured" (block by block in
        topological order), or "reproducible" ("auto" with kernels chosen without timing: the
        same iterates on every run; the fitting methods use it).
    tol : float, default=1e-10
        Tolerance on the max abs residual.
    max_iter : int, default=10000
        Iteration limit.
    X0 : ndarray, shape (m, n), optional
        Warm start.
    raise_on_failure : bool, default=True
        Raise EquilibriumError if the tolerance is not reached (else return the last iterate
        with ``info.converged`` False).
    force : bool, default=False
        Run even when no sufficient well-posedness condition holds.

    Returns
    -------
    X : ndarray, shape (m, n)
        The states.
    info : EquilibriumInfo
        The solve's status.

    Raises
    ------
    IllPosedError
        If no sufficient well-posedness condition holds and force is False.
    EquilibriumError
        If the residual has not reached `tol` within `max_iter` iterations.
    ValueError
        If U, X0 or max_iter are invalid.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, solve_equilibrium
    >>> model = ImplicitModel(A=[[0.5, 0.6], [0.3, 0.4]], B=np.eye(2), C=np.eye(2), D=np.zeros((2, 2)))
    >>> X, info = solve_equilibrium(model, np.array([[1.0, 2.0]]))
    >>> X.round(4), info.converged
    (array([[15.    , 10.8333]]), True)
    """
    start = time.perf_counter()
    U = np.asarray(U, dtype=float)
    if U.ndim != 2 or U.shape[1] != model.n_inputs:
        raise ValueError(f"inputs U have shape {U.shape}, expected (m, {model.n_inputs})")
    X0 = _check_options(method, tol, max_iter, X0, U.shape[0], model.n_states)
    structure, _ = sweep_plan(model.A, model.activation)
    if not force:
        require_well_posed(model.A, structure, model.activation)
    name = choose_method(model.A, structure) if method == "auto" else method
    K = input_term(model, U)
    X, info = SOLVERS[name](model.A, K, model.activation, X0, tol, int(max_iter))
    info.seconds = time.perf_counter() - start
    if not info.converged and raise_on_failure:
        raise EquilibriumError(info, tol)
    return X, info
