"""Method `adjoint`: alternating certified convex steps with adjoint state targets.

Per outer iteration, at the equilibrium X of (A, B):
 1. (C, D, b_y) ← certified convex fit of the loss on [X, U] (proximal anchor at the current value);
 2. V ← the implicit adjoint ∂L/∂Z (paper App. G), Z = XAᵀ + UBᵀ + b_x;
 3. (A, B, b_x) ← the state-matching row problem with targets Z − η·m·V on regressors [X, U, 1],
    rows of A in the ℓ1 ball of radius κ, proximal anchor μ‖W − W_k‖², penalties scaled by 2η (a
    proximal-gradient step in the metric G + μI, so η → 0 returns W_k);
 4. accept iff the TRUE objective (equilibrium loss + penalties) decreased, else shrink η and retry.
Without penalties step 3 moves W by `−ηV[X; U]ᵀ([X; U][X; U]ᵀ + μI)⁻¹`: a preconditioned descent
direction, so a small enough η decreases the loss, and every step is a convex program.

With `batch_size`, each outer iteration runs steps 1–4 on a fresh random subset of the training
rows: every step is still certified and decreases the true objective *of that subset*, the history
records the full-data true objective beside it, and the final (C, D) refit uses all rows. On digits
it generalizes better than the full-batch reference (experiments/results/training_digits.md).
With `full_every` = k the full data's equilibria (and its record) are solved only every k-th
iteration and before the final refit; the other iterations solve their subset's states from the
held ones, so the steps are the same to the equilibrium tolerance, at a fraction of the cost
when m is large.

Every per-sample quantity (equilibria, adjoints, Gram sums, losses, the cross-entropy fit and its
certificate) is computed per row partition where the partition lives (train/partitioned.py) and
reduced by sums; in memory that is one partition in this process, on Dask (run.data_backend) the
partitions and their equilibria stay on the workers and only (d × d), (d × k) matrices travel.
Memory per worker: O(rows held × (n + p) + d²), rows held = m / workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import option
from ..convex.gram import GramStats, gram_sums, reduce_gram
from ..convex.losses import Samples as OutputSamples
from ..convex.losses import fit_output_samples
from ..convex.rows import RowSpec
from ..convex.solvers import RowProblem, solve_certified, uncertified_record
from ..gradients import implicit_adjoint
from ..model import ImplicitModel
from ..numerics import in_ball, inf_norm, project_l1_ball_rows
from ..parallel import Cluster
from ..partitions import is_partitioned
from ..robust.training import check_s_bound
from .driver import AlternatingMethod, FitResult, Step, fit_function
from .init import init_model
from .objective import penalty_value
from .options import (
    CertifiedStepOptions,
    LoopOptions,
    PartitionOptions,
    RowParallelOptions,
    StateModelOptions,
)
from .partitioned import (
    Samples,
    load_prepared,
    loss_grad_rows,
    loss_sum,
    open_cluster,
    row_locations,
    score,
    score_sums,
    take_rows,
)
from .steps import output_step

ETA_GROW = 2.0  # η after an accepted step
ETA_SHRINK = 0.25  # η after a rejected trial
MAX_TRIALS = 10  # trials of one (A, B) step before "no progress"
EQ_TOL = 1e-12  # equilibrium tolerance of every true-objective evaluation


@dataclass
class AdjointOptions(StateModelOptions, RowParallelOptions, CertifiedStepOptions, LoopOptions,
                     PartitionOptions):
    max_outer: int = option(50, low=1, estimator="max_iter", help="outer iterations")
    batch_size: int | None = option(None, kind="int", low=2,
                                    help="rows per outer iteration (null: full batch)")
    full_every: int = option(1, low=1,
                             help="with batch_size: solve the full data's states and record its "
                                  "objective every k-th outer iteration (and at the end); the "
                                  "others solve and record only their subset")
    eta: float = option(1.0, low=0, open_low=True,
                        help="step η of the state targets Z − η·m·V (adapted: ×2 after an "
                             "accepted full-batch step, ×¼ per rejected trial)")
    anchor_mu: float = option(1e-2, low=0, open_low=True,
                              help="proximal anchor μ, relative to the mean Gram diagonal")
    lam_l1: float = option(0.0, low=0, estimator="lam_l1", help="ℓ1 penalty on A, B, C, D")
    lam_l2: float = option(0.0, low=0, estimator="lam_l2", help="squared ℓ2 penalty on A, B, C, D")
    s_bound: float | None = option(None, kind="float", low=0, open_low=True,
                                   help="every (C, D) step keeps ‖S‖_∞ ≤ s_bound (Thm 4.3)")
    beta: float | None = option(None, kind="float", low=0, open_low=True,
                                help="every (A, B) step keeps ‖b_i‖_1 ≤ β on the rows of B (the "
                                     "initial B is projected there): with ‖A‖_∞ ≤ κ each state's "
                                     "ℓ∞ gain from u is ≤ β/(1 − κ)")
    tol: float = option(1e-9, low=0, open_low=True,
                        help="relative duality-gap tolerance of the (A, B) row problems")
    output_tol: float = option(1e-8, low=0, open_low=True,
                               help="relative duality-gap tolerance of the (C, D) fit")
    min_rel_decrease: float = option(1e-7, low=0,
                                     help="full batch: stop when the relative decrease falls below")


@dataclass
class AdjointState:
    model: ImplicitModel
    rng: np.random.Generator
    X: np.ndarray | None  # the exact equilibrium of every training row (None: held by the workers)
    objective: float | None  # the full data's true objective (None: not evaluated since (A, B) moved)
    eta: float
    fresh: bool = True  # X (or the workers' states) are the equilibria of `model`
    count: int = 0  # outer iterations done


# ---- per-partition work -----------------------------------------------------------------------
def _equilibrium_part(item, model: ImplicitModel):
    """The equilibrium of `model` on a partition, warm-started at its previous states (if any)."""
    (U, _), X0 = item
    return model.equilibrium(U, method="reproducible", X0=X0, tol=EQ_TOL)


def _record_part(item, model: ImplicitModel, loss: str, task: str):
    """Loss sum, score sums and the measured equilibrium residual at a partition's states."""
    (U, Y), X = item
    Yhat = model.output(X, U)
    residual = float(np.abs(X - model.phi(X @ model.A.T + U @ model.B.T + model.b_x)).max(initial=0.0))
    return loss_sum(loss, Yhat, Y), score_sums(Yhat, Y, task), residual


def _features_part(item, include_D: bool):
    """(F̃ = [X, U, 1] or [X, 1], targets, Σ‖F‖²) of a partition: the output step's samples."""
    (U, Y), X = item
    F = np.column_stack([X, U]) if include_D else X
    return np.column_stack([F, np.ones(len(F))]), Y, float(np.einsum("ij,ij->", F, F))


def _output_part(item):
    Ft, Y, _ = item
    return Ft, Y


def _feature_square(item):
    return item[2]


def _state_part(item, model: ImplicitModel, loss: str, m: int):
    """A partition's share of the (A, B) step: Gram sums of R = [X, U, 1] against the adjoint V
    (App. G) of the mean loss over all m samples, and Σ Z², Σ Z ⊙ V per state (Z = R W_kᵀ)."""
    (U, Y), X = item
    V = implicit_adjoint(model, U, X, loss_grad_rows(loss, model.output(X, U), Y, m))
    R = np.column_stack([X, U, np.ones(len(U))])
    Z = R @ np.column_stack([model.A, model.B, model.b_x]).T
    return gram_sums(R, V), np.einsum("ij,ij->j", Z, Z), np.einsum("ij,ij->j", Z, V)


# ---- the (A, B) step ----------------------------------------------------------------------------
class StateStep:
    """The (A, B, b_x) row problems of one outer iteration, for any step size η.

    Regressors R = [X, U, 1]; since Z = R W_kᵀ, the targets Z − η m V give H(η) = G W_kᵀ − η m RᵀV/m
    and c(η) = (ΣZ² − 2ηm ΣZ⊙V + η²m² ΣV²)/m per state, so the statistics are sums over samples,
    formed once per outer iteration (from the partitions' `_state_part` results).
    """

    def __init__(self, model, parts: list, *, kappa, lam_l1, lam_l2, anchor_mu, beta=None):
        n, p = model.n_states, model.n_inputs
        stats = reduce_gram(part[0] for part in parts)
        self.G, self.HV, self.m = stats.G, stats.H, stats.m
        self.VV = stats.c * stats.m
        self.ZZ = sum(part[1] for part in parts)
        self.ZV = sum(part[2] for part in parts)
        self.Wk = np.column_stack([model.A, model.B, model.b_x])
        self.mu = anchor_mu * float(max(np.trace(self.G) / self.G.shape[0], 1e-12))
        self.mask = np.append(np.ones(n + p), 0.0)  # the bias column is never penalized
        self.kappa, self.lam_l1, self.lam_l2, self.n = kappa, lam_l1, lam_l2, n
        self.balls = [(np.arange(n), kappa)] + ([] if beta is None else [(np.arange(n, n + p), beta)])

    @classmethod
    def of(cls, model, X, U, V, **options) -> StateStep:
        """The step on samples in memory with the adjoint V given (m, n)."""
        R = np.column_stack([X, U, np.ones(len(U))])
        Z = R @ np.column_stack([model.A, model.B, model.b_x]).T
        part = (gram_sums(R, V), np.einsum("ij,ij->j", Z, Z), np.einsum("ij,ij->j", Z, V))
        return cls(model, [part], **options)

    def problem(self, eta: float) -> RowProblem:
        """The row problems for step η."""
        scale = 2.0 * eta  # penalties enter as a proximal-gradient step of length η
        em = eta * self.m
        H = self.G @ self.Wk.T - em * self.HV
        G = self.G + (scale * self.lam_l2) * np.diag(self.mask) if self.lam_l2 else self.G
        c = np.maximum(self.ZZ - 2.0 * em * self.ZV + em * em * self.VV, 0.0) / self.m
        spec = RowSpec(penalty=(scale * self.lam_l1) * self.mask, free=[len(self.mask) - 1],
                       balls=self.balls, anchor=self.Wk, mu=self.mu)
        return RowProblem(GramStats(G, H, c, self.m), spec)

    def solve(self, eta: float, *, tol, accept_uncertified=False, **parallel):
        """Rows of the new [A B b_x] for step η, certified (RowFitError otherwise)."""
        return solve_certified(self.problem(eta), tol=tol, step="(A, B) rows",
                               accept_uncertified=accept_uncertified, warm_start=self.Wk, **parallel)

    def model(self, model, W: np.ndarray):
        n = self.n
        for (idx, radius), name in zip(self.balls, "AB", strict=False):  # certified rows lie in their balls
            if not in_ball(W[:, idx], radius):
                raise RuntimeError(f"(A, B) step left ‖{name}‖_∞ = {inf_norm(W[:, idx])!r} > {radius}")
        return model.with_weights(A=W[:, :n], B=W[:, n:-1], b_x=W[:, -1])


# ---- the samples a step works on ------------------------------------------------------------------
@dataclass
class _Work:
    """Training samples on a cluster and the current equilibrium of each partition (handles)."""

    samples: Samples
    X: list

    @property
    def m(self) -> int:
        return self.samples.m

    def items(self, X=None) -> list:
        return list(zip(self.samples.parts, self.X if X is None else X, strict=True))

    def solve(self, model, X0=None) -> list:
        """Handles of the equilibria of `model`, warm-started at the current ones (or X0)."""
        return self.samples.submit_with(_equilibrium_part, self.X if X0 is None else X0, model)

    def replace(self, X: list) -> None:
        self.X = X  # the old handles are dropped: their workers free them


class AdjointMethod(AlternatingMethod):
    """Fit an implicit model by alternating certified convex steps with adjoint state targets."""

    name = "adjoint"
    Options = AdjointOptions
    State = AdjointState

    def solver_kw(self) -> dict:
        """The row solvers join the data's cluster when both run on Dask."""
        o = self.opts
        return dict(**self._cluster.row_parallel(o.backend, o.n_jobs, o.address),
                    accept_uncertified=o.accept_uncertified)

    # ---- sums over the partitions ----------------------------------------------------------------
    def _record(self, work: _Work, model, X=None) -> dict:
        """The training record of `model` at the states X (default: the current ones)."""
        d = self.data
        parts = self.cluster_map(work, _record_part, X, model, d.loss, d.task)
        loss = sum(p[0] for p in parts) / work.m
        key = "accuracy" if d.task == "classification" else "rmse"
        return {"train_objective": loss + penalty_value(model, *self.penalties), "train_loss": loss,
                f"train_{key}": score([p[1] for p in parts], d.task),
                "train_residual": max(p[2] for p in parts)}

    @staticmethod
    def cluster_map(work: _Work, fn, X, *args) -> list:
        return work.samples.cluster.map(fn, work.items(X), *args)

    def _objective(self, work: _Work, model, X=None) -> float:
        return self._record(work, model, X)["train_objective"]

    def _output_step(self, work: _Work, model):
        """The certified (C, D, b_y) fit on the partitions' features, anchored at the current
        weights (μ relative to the mean Gram diagonal of [F, 1])."""
        o, d = self.opts, self.data
        cluster = work.samples.cluster
        feats = cluster.submit(_features_part, work.items(), o.include_D)
        n_feat = model.n_states + (model.n_inputs if o.include_D else 0)
        mean_diag = (sum(cluster.map(_feature_square, feats)) / work.m + 1.0) / (n_feat + 1)
        mu = float(o.anchor_mu * max(mean_diag, 1e-12))
        if o.s_bound is not None:  # the ‖S‖_∞ ≤ s fit takes the samples in memory
            (U, Y), X = work.items()[0]
            return output_step(model, X, U, Y, d.loss, include_D=o.include_D, mu=mu,
                               lam_l1=o.lam_l1, lam_l2=o.lam_l2, tol=o.output_tol,
                               s_bound=o.s_bound, **self.solver_kw())
        samples = OutputSamples(cluster, cluster.submit(_output_part, feats), work.m)
        W0 = np.column_stack([model.C, model.D]) if o.include_D else np.asarray(model.C, float)
        W, b, info = fit_output_samples(
            samples, d.loss, q=model.n_outputs, d=n_feat, lam_l1=o.lam_l1, lam_l2=o.lam_l2,
            anchor=(W0, model.b_y, mu), tol=o.output_tol, warm_start=(W0, model.b_y),
            **self.solver_kw())
        n = model.n_states
        changes = {"C": W[:, :n], "b_y": b, **({"D": W[:, n:]} if o.include_D else {})}
        return model.with_weights(**changes), info

    # ---- the protocol --------------------------------------------------------------------------------
    def start(self, rng) -> AdjointState:
        o, d = self.opts, self.data
        if o.s_bound is not None and (o.data_backend != "memory" or (o.partitions or 1) > 1):
            raise ValueError("s_bound (‖S‖_∞ ≤ s) fits (C, D) on the samples in one process: use "
                             "run.data_backend 'memory' with one partition")
        self._open()
        U_init = None if is_partitioned(d.U) else d.U
        model = init_model(o.init, n_inputs=self._n_inputs(), n_outputs=self._n_outputs(),
                           n_states=o.n_states, kappa=o.kappa, seed=rng, activation=o.activation,
                           include_D=o.include_D, U=U_init)
        if o.beta is not None:  # start inside the (A, B) step's ball ‖b_i‖_1 ≤ β
            model = model.with_weights(B=project_l1_ball_rows(np.asarray(model.B, dtype=float), o.beta))
        self._work.replace(self._work.solve(model))
        return AdjointState(model, rng, self._held_X(), self._objective(self._work, model), o.eta)

    def _open(self) -> None:
        """Enter the cluster; partition the training data and load each partition where it lives."""
        o, d = self.opts, self.data
        self._cluster = open_cluster(o).__enter__()
        samples = Samples.of(self._cluster, d.U, d.Y, o)
        samples.parts = self._cluster.submit(load_prepared, samples.parts, d.loss)
        self._work = _Work(samples, [None] * len(samples.rows))

    def _n_outputs(self) -> int:
        if self.data.n_outputs:
            return self.data.n_outputs
        labels = self._cluster.map(_label_range, self._work.samples.parts, self.data.loss)
        return labels[0][1] if self.data.loss == "squared" else max(2, max(lab[0] for lab in labels) + 1)

    def _n_inputs(self) -> int:
        return self._cluster.map(_n_columns, self._work.samples.parts[:1])[0]

    def _held_X(self):
        """The states for the checkpoint: the array in memory, None when the workers hold them."""
        if self._cluster.client is not None:
            return None
        return np.vstack(self._work.X) if len(self._work.X) > 1 else self._work.X[0]

    def _resume(self, state: AdjointState) -> None:
        """After a resume: the cluster, the samples and their equilibria (from the checkpoint in
        memory, else solved again)."""
        if getattr(self, "_work", None) is not None:
            return
        self._open()
        if state.X is not None and len(self._work.X) == 1:
            self._work.X = [state.X]
        else:
            self._work.replace(self._work.solve(state.model))

    def _state_step(self, work: _Work, model, obj: float, eta: float):
        """Backtracking (A, B) step: (model, X handles, objective, η used, accepted, trials, gaps,
        notes)."""
        o = self.opts
        parts = self.cluster_map(work, _state_part, None, model, self.data.loss, work.m)
        step = StateStep(model, parts, kappa=o.kappa, lam_l1=o.lam_l1, lam_l2=o.lam_l2,
                         anchor_mu=o.anchor_mu, beta=o.beta)
        gaps, notes = [], []
        for trial in range(1, MAX_TRIALS + 1):
            sol = step.solve(eta, tol=o.tol, **self.solver_kw())
            gaps.append(sol.max_gap)
            notes += uncertified_record("(A, B) rows", sol)
            cand = step.model(model, sol.W)
            X_new = work.solve(cand)
            obj_new = self._objective(work, cand, X_new)
            if obj_new < obj:
                return cand, X_new, obj_new, eta, True, trial, max(gaps), notes
            eta *= ETA_SHRINK
        return model, None, obj, eta, False, MAX_TRIALS, max(gaps), notes

    def _batch(self, state: AdjointState) -> _Work:
        """A random subset of batch_size training rows, gathered into one partition in memory,
        with the equilibria of state.model (re-solved from the held states when those are stale)."""
        w = self._work
        rows = np.sort(state.rng.choice(w.m, self.opts.batch_size, replace=False))
        local = row_locations(w.samples.rows, rows)
        got = self._cluster.map(take_rows, [(*it, loc) for it, loc in zip(w.items(), local, strict=True)])
        U, Y, X = (np.concatenate([g[i] for g in got]) for i in range(3))
        if state.fresh is False:
            X = state.model.equilibrium(U, method="reproducible", X0=X, tol=EQ_TOL)
        return _Work(Samples(Cluster("memory"), [(U, Y)], [len(U)]), [X])

    def step(self, state: AdjointState) -> Step:
        o = self.opts
        self._resume(state)
        work = self._work
        batched = o.batch_size is not None and o.batch_size < work.m
        count = (state.count or 0) + 1
        full = not batched or count % o.full_every == 0
        bw = self._batch(state) if batched else work
        before = self._objective(bw, state.model) if batched else state.objective
        model, cd = self._output_step(bw, state.model)
        mid = self._objective(bw, model)
        if o.s_bound is not None:  # that step restores ‖S‖_∞ ≤ s after (A, B) moved: it may rise
            before = mid
        model, X_b, after, eta_used, accepted, trials, gap_ab, notes = self._state_step(
            bw, model, mid, state.eta)
        fresh = full or (state.fresh is not False and not accepted)  # states of (A, B) held?
        if full:
            if batched:  # the full data's states of the new (A, B), warm-started at the held ones
                X_b = work.solve(model)
            if X_b is not None:  # (a rejected step leaves (A, B) and so the states unchanged)
                work.replace(X_b)
            rec = self._record(work, model)
            objective = rec.pop("train_objective")
            rec = {"objective": objective, **rec, "equilibrium_residual": rec["train_residual"]}
        else:  # the subset's record only; the full data's states are solved at a later iteration
            brec = self._record(bw, model, X_b)  # X_b None: (A, B) unchanged
            objective = None
            rec = {"objective": None, **{"batch_" + k[6:]: v for k, v in brec.items()
                                         if k != "train_objective"},
                   "equilibrium_residual": brec["train_residual"]}
        rec = {**rec, "eta": eta_used, "accepted": accepted, "trials": trials, "max_gap_AB": gap_ab,
               "status_AB": "uncertified" if any(n["step"] == "(A, B) rows" for n in notes) else "optimal",
               "max_gap_CD": cd.gap, "status_CD": cd.status, "max_duality_gap": max(gap_ab, cd.gap),
               "inf_norm_A": inf_norm(model.A)}
        if cd.status == "uncertified":
            notes.append({"step": "(C, D) fit", "rows": "all", "solver": cd.solver, "max_gap": cd.gap})
        if notes:
            rec["uncertified"] = notes
        if batched:
            rec.update(batch_size=int(o.batch_size), batch_objective_before=before,
                       batch_objective=after)
        eta = state.eta if batched else (eta_used * ETA_GROW if accepted else eta_used)
        rel = (before - after) / max(abs(before), 1e-300)
        stop = not batched and (not accepted or rel < o.min_rel_decrease)
        return Step(AdjointState(model, state.rng, self._held_X(), objective, eta, fresh, count),
                    rec, stop)

    def finish(self, state: AdjointState, model) -> FitResult:
        """Final (C, D) refit on the final states of `model` (all rows), checks and the summary;
        closes the cluster."""
        o, d = self.opts, self.data
        self._resume(state)
        with self._cluster:
            work = self._work
            if model is not state.model:
                work.replace(work.solve(model, X0=[None] * len(work.X)))
            elif state.fresh is False:  # batched steps since the last full-data solve
                work.replace(work.solve(model))
            model, cd = self._output_step(work, model)
            rec = self._record(work, model)
            rec.update(samples=work.m, partitions=len(work.X), data_backend=o.data_backend)
        self._work = None
        result = finish_summary(model, rec, cd, o.kappa, "adjoint", d.task, s_bound=o.s_bound)
        result.summary.update(beta=o.beta, inf_norm_B=inf_norm(model.B))
        return result


def _label_range(item, loss: str):
    """(largest label, number of target columns) of a partition's targets."""
    _, Y = item
    return (int(np.max(Y)) if loss != "squared" else 0), (Y.shape[1] if loss == "squared" else 1)


def _n_columns(item) -> int:
    return int(item[0].shape[1])


def finish_summary(model, rec: dict, cd, kappa: float, method: str, task: str, *,
                   s_bound=None) -> FitResult:
    """The checks an alternating method ends with (ball, residual ≤ 1e-8) and its summary; `cd`
    is the final (C, D) fit, `rec` the training record at the final states."""
    norm = inf_norm(model.A)
    if not in_ball(model.A, kappa):
        raise RuntimeError(f"{method} fit left ‖A‖_∞ = {norm!r} > κ = {kappa}; this is a bug")
    if rec["train_residual"] > 1e-8:
        raise RuntimeError(f"final equilibrium residual {rec['train_residual']:.3g} > 1e-8")
    model.metadata.update(method=method, kappa=kappa)
    if task == "classification" and model.metadata.get("classes") is None:
        model.metadata["classes"] = list(range(max(2, model.n_outputs)))
    final = [] if cd.status != "uncertified" else [
        {"iteration": "final", "step": "(C, D) fit", "solver": cd.solver, "max_gap": cd.gap}]
    summary = {**rec, "equilibrium_residual": rec["train_residual"], "inf_norm_A": norm,
               "kappa": kappa, "final_output_fit": cd.to_dict(), "max_duality_gap": cd.gap,
               "final_uncertified": final, "s_bound": s_bound,
               "sensitivity_inf_norm": None if s_bound is None else check_s_bound(model, s_bound)}
    return FitResult(model, [], summary)


fit_adjoint = fit_function(AdjointMethod)
