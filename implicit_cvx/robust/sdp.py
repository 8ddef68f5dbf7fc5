"""SDP relaxation of the margin problem for ReLU implicit models (paper §4.6), with a dual
certificate we evaluate ourselves.

With v = (1, x, u) and z = Fv, F = [b_x, A, B], a lifted P ⪰ 0 with P_00 = 1 stands for vvᵀ. The
relaxation keeps everything the LP of Thm 4.5 has, as linear constraints on the first row of P
(x ≥ 0, x ≥ z, the upper chord x ≤ s∘z + c, the boxes of x, z, u), and adds the quadratic facts
of the ReLU fixed point: x_i(x_i − z_i) = 0 and (w − l)(h − w) ≥ 0 for every boxed w ∈ {x, z, u}.
Every true (u, x) gives the feasible P = vvᵀ, so its minimum is a lower bound of the true worst
margin, and since it contains the LP's constraints it is never looser than the LP on the same
boxes.

Certificate (weak duality, never the solver's value): for any multipliers λ (≥ 0 on inequalities)
and τ, with M = Q_obj − Σ λ_k Q_k − τE₀₀, every feasible P has ⟨Q_obj, P⟩ ≥ τ + ⟨M, P⟩ ≥
τ + T·min(0, λ_min(M)), where T ≥ tr P follows from the box quadratics (P_ww ≤ max(l², h²)).
The multipliers come from the solver (SCS by default, Clarabel for small cases); τ is re-optimized
(the bound is concave in τ); M's rounding and the eigenvalue error are charged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..numerics import golden_section_max
from .bounds import UNIT_ROUNDOFF, dense, gamma
from .boxes import Boxes, chords, lp_boxes
from .certify import check_labels

__all__ = ["SDP_SOLVERS", "SdpRelaxation", "sdp_margin_lower_bounds"]

SDP_SOLVERS = ("auto", "SCS", "CLARABEL")
CLARABEL_MAX_SIZE = 60  # "auto" uses Clarabel when 1 + n + p ≤ this, SCS above
_CLARABEL = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}
_SCS = {"eps_abs": 1e-6, "eps_rel": 1e-6, "max_iters": 5000}  # looser: only loosens our bound
_TAU_STEPS = 100  # golden-section steps for τ: the bracket shrinks by 0.618¹⁰⁰


def _sym_row(a: np.ndarray) -> np.ndarray:
    """sym(e₀aᵀ) = (e₀aᵀ + ae₀ᵀ)/2: ⟨sym(e₀aᵀ), vvᵀ⟩ = aᵀv when v₀ = 1."""
    Q = np.zeros((a.size, a.size))
    Q[0] += a / 2
    Q[:, 0] += a / 2
    return Q


class SdpRelaxation:
    """One parametrized cvxpy SDP per model (DPP): load a sample's boxes, then bound margins."""

    def __init__(self, model, solver: str = "auto"):
        import cvxpy as cp

        if solver not in SDP_SOLVERS:
            raise ValueError(f"SDP solver must be one of {SDP_SOLVERS}, got {solver!r}")
        if model.activation.uniform is None or model.activation.uniform.name != "relu":
            raise ValueError("the SDP relaxation is for ReLU models (every state relu), got "
                             f"{model.activation!r}")
        n, p = model.n_states, model.n_inputs
        N = 1 + n + p
        self.model, self.n, self.p, self.N = model, n, p, N
        self.solver = solver if solver != "auto" else ("CLARABEL" if N <= CLARABEL_MAX_SIZE else "SCS")
        self.F = np.column_stack([model.b_x, dense(model.A), dense(model.B)])
        self.par = {k: cp.Parameter(n) for k in ("xl", "xu", "zl", "zu", "s", "c", "sx", "px", "sz", "pz")}
        self.par.update({k: cp.Parameter(p) for k in ("ul", "uu", "su", "pu")})
        self.par["g"] = cp.Parameter(N)
        self.P = P = cp.Variable((N, N), PSD=True)
        par, F = self.par, self.F
        p0 = P[0, :]
        x, u, z = p0[1:n + 1], p0[n + 1:], F @ p0
        X = P[1:n + 1, :]
        self.groups = {  # name: (constraint, kind) with expr ≥ 0 or == 0
            "x": x >= 0, "x-z": x - z >= 0, "chord": cp.multiply(par["s"], z) + par["c"] - x >= 0,
            "xl": x - par["xl"] >= 0, "xu": par["xu"] - x >= 0, "zl": z - par["zl"] >= 0,
            "zu": par["zu"] - z >= 0, "ul": u - par["ul"] >= 0, "uu": par["uu"] - u >= 0,
            "comp": cp.diag(X[:, 1:n + 1]) - cp.sum(cp.multiply(X, F), axis=1) == 0,
            "qx": -cp.diag(X[:, 1:n + 1]) + cp.multiply(par["sx"], x) - par["px"] >= 0,
            "qu": -cp.diag(P[n + 1:, n + 1:]) + cp.multiply(par["su"], u) - par["pu"] >= 0,
            "qz": -cp.sum(cp.multiply(F @ P, F), axis=1) + cp.multiply(par["sz"], z) - par["pz"] >= 0,
            "one": P[0, 0] == 1,
        }
        self.problem = cp.Problem(cp.Minimize(par["g"] @ p0), list(self.groups.values()))
        self._solver_error = cp.SolverError

    def set_sample(self, boxes: Boxes, i: int) -> None:
        """Load sample i's boxes and upper chords."""
        b = {k: getattr(boxes, k)[i] for k in ("xl", "xu", "zl", "zu", "ul", "uu")}
        P, _, s, c = chords(self.model, b["zl"], b["zu"])
        b["s"], b["c"] = np.zeros(self.n), np.zeros(self.n)
        b["s"][P], b["c"][P] = s, c
        for w in ("x", "z", "u"):
            b["s" + w], b["p" + w] = b[w + "l"] + b[w + "u"], b[w + "l"] * b[w + "u"]
        self.sample = b
        for k, v in b.items():
            self.par[k].value = v

    def lower_bound(self, g: np.ndarray) -> float:
        """Certified lower bound of min gᵀv (v = (1, x, u)) over the relaxation: our certificate at
        the multipliers of the first solver (self.solver, then the other one) that returns them;
        −inf if none does."""
        self.par["g"].value = g
        for solver in dict.fromkeys((self.solver, "SCS", "CLARABEL")):
            try:
                self.problem.solve(solver=solver, **(_CLARABEL if solver == "CLARABEL" else _SCS))
            except (self._solver_error, ValueError):
                continue
            duals = {k: c.dual_value for k, c in self.groups.items()}
            if all(v is not None for v in duals.values()):
                return self.certificate(g, {k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in duals.items()})
        return -np.inf

    def _multiplier_sum(self, lam: dict, absolute: bool = False) -> np.ndarray:
        """Σ_k λ_k Q_k over every constraint but P₀₀ = 1 (or Σ |λ_k||Q_k| entrywise, for the
        rounding bound); λ of inequalities clipped to ≥ 0."""
        n, p, N, F, b = self.n, self.p, self.N, self.F, self.sample
        f = np.abs if absolute else (lambda v: v)
        Fa = f(F)
        ex, eu = np.zeros((n, N)), np.zeros((p, N))
        ex[:, 1:n + 1], eu[:, n + 1:] = np.eye(n), np.eye(p)
        e0 = np.zeros(N)
        e0[0] = 1.0
        lin = {"x": ex, "x-z": ex - F, "chord": b["s"][:, None] * F + np.outer(b["c"], e0) - ex,
               "xl": ex - np.outer(b["xl"], e0), "xu": np.outer(b["xu"], e0) - ex,
               "zl": F - np.outer(b["zl"], e0), "zu": np.outer(b["zu"], e0) - F,
               "ul": eu - np.outer(b["ul"], e0), "uu": np.outer(b["uu"], e0) - eu,
               "qx": b["sx"][:, None] * ex - np.outer(b["px"], e0),
               "qu": b["su"][:, None] * eu - np.outer(b["pu"], e0),
               "qz": b["sz"][:, None] * F - np.outer(b["pz"], e0)}
        row = sum(f(lam[k]) @ f(a) for k, a in lin.items())
        total = _sym_row(row)
        comp = np.zeros((N, N))  # Σ λ_i (e_x e_xᵀ − sym(e_x F_iᵀ))
        comp[1:n + 1, :] = -f(lam["comp"])[:, None] * Fa / 2
        comp = comp + comp.T
        comp[1:n + 1, 1:n + 1] += np.diag(f(lam["comp"]))
        quad = np.zeros((N, N))  # −Σ λ e_w e_wᵀ (x, u) − Σ λ F_i F_iᵀ (z)
        quad[1:n + 1, 1:n + 1] -= np.diag(f(lam["qx"]))
        quad[n + 1:, n + 1:] -= np.diag(f(lam["qu"]))
        quad -= Fa.T @ (f(lam["qz"])[:, None] * Fa)
        if absolute:
            return total + np.abs(comp) + np.abs(quad)
        return total + comp + quad

    def certificate(self, g: np.ndarray, duals: dict) -> float:
        """max over τ of τ + T·min(0, λ_min(M)) at the given multipliers (module docstring; concave
        in τ, golden section on a bracket that holds the maximizer), rounding and eigenvalue errors
        charged; the equality multipliers are tried with both signs (any sign is valid)."""
        lam = {k: (v if k in ("comp", "one") else np.maximum(v, 0.0)) for k, v in duals.items()}
        b = self.sample
        T = 1 + np.sum(np.maximum(b["xl"] ** 2, b["xu"] ** 2)) + np.sum(np.maximum(b["ul"] ** 2, b["uu"] ** 2))
        T = float(np.nextafter(T * (1 + gamma(self.N + 1)), np.inf))
        K = sum(np.size(v) for v in lam.values()) + 4  # terms summed into an entry of M, at most
        best = -np.inf
        for sign in (1.0, -1.0):
            lam_s = {**lam, "comp": sign * lam["comp"]}
            M0 = _sym_row(g) - self._multiplier_sum(lam_s)
            Mabs = np.abs(_sym_row(g)) + self._multiplier_sum(lam_s, absolute=True)

            def value(tau, M0=M0, Mabs=Mabs):
                tau = float(tau)
                M = M0.copy()
                M[0, 0] -= tau
                err = gamma(K) * np.linalg.norm(Mabs) + gamma(K) * abs(tau)
                err += 10 * self.N * UNIT_ROUNDOFF * np.linalg.norm(M)
                low = np.linalg.eigvalsh(M)[0] - err
                return tau + T * min(0.0, low) - gamma(4) * (abs(tau) + T * abs(low))

            best = max(best, float(golden_section_max(np.vectorize(value), *_tau_bracket(M0), _TAU_STEPS)))
        return float(np.nextafter(best, -np.inf))


def _tau_bracket(M0: np.ndarray) -> tuple[float, float]:
    """[lo, hi] holding the maximizer of f(τ) = τ + T·min(0, λ_min(M0 − τE₀₀)), T ≥ 1: f(τ) ≤ τ and
    f(τ) ≤ T·m₀₀ − (T − 1)τ (λ_min ≤ the (0, 0) entry), so the maximizer is ≤ m₀₀; f rises with
    slope 1 until the Schur threshold τ* = m₀₀ − mᵀR⁻¹m (R the rest of M0, shifted to be PD)."""
    m00, m, R = M0[0, 0], M0[0, 1:], M0[1:, 1:]
    if R.size == 0:
        return m00 - 1.0, m00
    shift = max(0.0, -np.linalg.eigvalsh(R)[0]) + 1e-12 * (1 + np.abs(R).max())
    reach = float(m @ np.linalg.solve(R + shift * np.eye(len(R)), m))
    return m00 - 2 * (1 + abs(m00) + abs(reach)), m00


@dataclass
class SdpMargins:
    """Certified margin lower bounds (m, q) (+inf at j = y) from the SDP relaxation.

    Over the boxes certify's lp method relaxes over (interval boxes, pre-activations tightened).

    Attributes
    ----------
    lower : ndarray, shape (m, q)
        The certified bounds: the certificate's max with the interval bound (the SDP keeps the
        boxes, so it is never below it in exact arithmetic).
    certificate : ndarray, shape (m, q)
        The SDP's dual bound alone.
    solver : str
        Whose multipliers.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> sdp = robust.sdp_margin_lower_bounds(model, U[2:], y[2:], 0.2, domain=(0, 1))
    >>> sdp.lower.round(3)
    array([[0.422,   inf]])
    """

    lower: np.ndarray
    certificate: np.ndarray
    solver: str


def sdp_margin_lower_bounds(model, U, y, eps, domain=None, solver: str = "auto") -> SdpMargins:
    """Lower bounds of ŷ_y − ŷ_j over the ℓ∞ ball by the SDP relaxation.

    The ball has radius eps (clipped to domain); the relaxation works on the boxes certify's lp
    method uses, and is sound by our dual certificate whatever the solver's accuracy.

    Parameters
    ----------
    model : ImplicitModel
        A classifier with ReLU-type states.
    U : array_like, shape (m, p)
        Inputs.
    y : array_like, shape (m,)
        Labels.
    eps : float or array_like of shape (p,)
        The radius.
    domain : (lo, hi), optional
        The input domain.
    solver : str, default="auto"
        The SDP solver ("auto", "CLARABEL", "SCS").

    Returns
    -------
    SdpMargins
        The certified bounds and the certificates.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel, robust
    >>> model = ImplicitModel(A=[[0, 0.5], [0.2, 0]], B=[[1, -1], [0.5, 1]],
    ...                       C=[[1, -1], [-1, 1]], D=np.zeros((2, 2)))
    >>> U = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    >>> y = np.array([0, 1, 1])
    >>> sdp = robust.sdp_margin_lower_bounds(model, U[2:], y[2:], 0.2, domain=(0, 1))
    >>> bool(sdp.lower[0, 0] > 0)
    True
    """
    from .certify import margin_lower_bounds

    U = model.check_inputs(U)
    y = check_labels(y, U.shape[0], model.n_outputs)
    boxes = lp_boxes(model, U, eps, domain)
    sdp = SdpRelaxation(model, solver)
    C, D = dense(model.C), dense(model.D)
    out = np.full((len(y), model.n_outputs), np.inf)
    for i, c in enumerate(y):
        sdp.set_sample(boxes, i)
        for j in range(model.n_outputs):
            if j != c:
                g = np.r_[model.b_y[c] - model.b_y[j], C[c] - C[j], D[c] - D[j]]
                out[i, j] = sdp.lower_bound(g)
    interval = margin_lower_bounds(model, U, y, eps, "interval", domain=domain)
    return SdpMargins(np.maximum(out, interval), out, sdp.solver)
