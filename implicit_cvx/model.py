"""ImplicitModel: x = φ(Ax + Bu + b_x), ŷ = Cx + Du + b_y, with samples as rows at the boundary."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .activations import ActivationMap


def _as_matrix(name: str, M, shape: tuple[int | None, int | None]):
    """Validate one weight matrix: 2-D, expected shape, finite; keep sparse as CSR."""
    if sp.issparse(M):
        M = sp.csr_matrix(M, dtype=float)
        data = M.data
    else:
        try:
            M = np.array(M, dtype=float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be a numeric matrix: {exc}") from None
        data = M
    if M.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {M.shape}")
    for axis, want in enumerate(shape):
        if want is not None and M.shape[axis] != want:
            raise ValueError(
                f"{name} has shape {M.shape}, expected {tuple('?' if s is None else s for s in shape)}"
            )
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{name} (shape {M.shape}) contains NaN or inf")
    return M


def _as_vector(name: str, v, size: int) -> np.ndarray:
    if v is None:
        return np.zeros(size)
    v = np.asarray(v, dtype=float)
    if v.ndim != 1 or v.shape[0] != size:
        raise ValueError(f"{name} has shape {v.shape}, expected ({size},)")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} (shape {v.shape}) contains NaN or inf")
    return v


class ImplicitModel:
    """An implicit model (DESIGN §2). Weights may be dense arrays or scipy.sparse matrices.

    `metadata` carries what the model file stores beside the weights: kappa, preprocessing,
    classes, provenance (config, seed, versions), method.
    """

    def __init__(self, A, B, C, D, b_x=None, b_y=None, activation="relu", metadata=None):
        A = _as_matrix("A", A, (None, None))
        n = A.shape[0]
        if A.shape[1] != n:
            raise ValueError(f"A must be square (n×n), got shape {A.shape}")
        B = _as_matrix("B", B, (n, None))
        p = B.shape[1]
        C = _as_matrix("C", C, (None, n))
        q = C.shape[0]
        D = _as_matrix("D", D, (q, p))
        self.A, self.B, self.C, self.D = A, B, C, D
        self.b_x = _as_vector("b_x", b_x, n)
        self.b_y = _as_vector("b_y", b_y, q)
        self.activation = ActivationMap.build(activation, n)
        self.metadata = dict(metadata or {})

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def n_states(self) -> int:
        return self.A.shape[0]

    @property
    def n_inputs(self) -> int:
        return self.B.shape[1]

    @property
    def n_outputs(self) -> int:
        return self.C.shape[0]

    @property
    def n_params(self) -> int:
        """Entries of A, B, C, D, b_x, b_y (DESIGN §9)."""
        n, p, q = self.n_states, self.n_inputs, self.n_outputs
        return n * n + n * p + q * n + q * p + n + q

    @property
    def nnz(self) -> int:
        """Nonzero entries of A, B, C, D, b_x, b_y."""
        total = 0
        for M in (self.A, self.B, self.C, self.D):
            total += int(M.count_nonzero()) if sp.issparse(M) else int(np.count_nonzero(M))
        return total + int(np.count_nonzero(self.b_x)) + int(np.count_nonzero(self.b_y))

    # ---- evaluation --------------------------------------------------------------------------
    def phi(self, Z: np.ndarray) -> np.ndarray:
        return self.activation.value(Z)

    def check_inputs(self, U) -> np.ndarray:
        """U as a finite float array of shape (m, p); a clear error otherwise."""
        U = np.asarray(U, dtype=float)
        if U.ndim == 1 and self.n_inputs == U.shape[0]:
            U = U[None, :]
        if U.ndim != 2 or U.shape[1] != self.n_inputs:
            raise ValueError(
                f"inputs U have shape {U.shape}, expected (m, {self.n_inputs}): one row per sample"
            )
        if not np.all(np.isfinite(U)):
            raise ValueError("inputs U contain NaN or inf")
        return U

    def equilibrium(self, U, method: str = "auto", return_info: bool = False, **options):
        """X (m, n) solving X = φ(XAᵀ + UBᵀ + b_x); options go to `solve_equilibrium`."""
        from .equilibrium import solve_equilibrium

        U = self.check_inputs(U)
        X, info = solve_equilibrium(self, U, method=method, **options)
        return (X, info) if return_info else X

    def output(self, X: np.ndarray, U: np.ndarray) -> np.ndarray:
        """Ŷ = XCᵀ + UDᵀ + b_y for given states."""
        return np.asarray(self.C @ X.T).T + np.asarray(self.D @ U.T).T + self.b_y

    def predict(self, U, **options) -> np.ndarray:
        """Linear outputs Ŷ (m, q) at the equilibrium (logits for a classifier)."""
        U = self.check_inputs(U)
        return self.output(self.equilibrium(U, **options), U)
