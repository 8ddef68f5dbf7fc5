"""Multiplicative (gated) and feedback (closed-loop) connections of implicit models (paper §3).

`cascade` and `stack_parallel` (convert.py) keep A block triangular, so they are well-posed iff
their parts are. Here:
- gated(m1, m2): ŷ = ψ(ŷ_1(u)) ∘ ŷ_2(u). The product is a gate block reading both outputs, and A
  stays block triangular with diagonal blocks A_1, A_2 and the gate's 0: well-posed iff both
  parts are (Thm 2.8/2.9). Both parts are checked; an ill-posed part is refused.
- feedback(m1, m2): m1 driven by u + ŷ_2, m2 driven by ŷ_1, output ŷ_1. The loop couples the
  states both ways, so the closed loop is *not* necessarily well-posed even when both parts
  are: its A is checked (`wellposedness_report` with the activations) and refused unless a
  sufficient condition holds; the algebraic loop through D_1 D_2 must be invertible.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .activations import ActivationMap, GateBlock
from .convert import _compose_metadata
from .equilibrium import IllPosedError
from .model import ImplicitModel
from .network import Builder, Expr
from .wellposed import wellposedness_report

_LOOP_COND_MAX = 1e12  # I − D_1 D_2 with a larger condition number counts as singular


def _require_well_posed(where: str, model: ImplicitModel, what: str) -> None:
    report = wellposedness_report(model.A, activation=model.activation)
    if not report["well_posed"]:
        raise IllPosedError(f"{where}: {what} is not known to be well-posed: {report['reason']}")


def gated(m1: ImplicitModel, m2: ImplicitModel, gate="identity") -> ImplicitModel:
    """ŷ = ψ(ŷ_1(u)) ∘ ŷ_2(u) for two models on the same input with outputs of equal size.

    ψ gates the first output. State (x_1, x_2, g): g is one gate block (ψ(ŷ_1) ∘ ŷ_2; 0) and C
    reads its first half.

    Parameters
    ----------
    m1 : ImplicitModel
        The gating model.
    m2 : ImplicitModel
        The gated model (same inputs, same number of outputs).
    gate : str, dict or Activation, default="identity"
        ψ ("identity", "sigmoid", "tanh", …).

    Returns
    -------
    ImplicitModel
        The gated model.

    Raises
    ------
    ValueError
        If the input or output sizes differ.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import from_layers, gated
    >>> m1 = from_layers([np.array([[1.0, -1.0], [0.5, 0.5]]), np.eye(2)])
    >>> y1 = m1.predict([[1.0, 0.0]])
    >>> gated(m1, m1, "sigmoid").predict([[1.0, 0.0]]).round(4), (y1 / (1 + np.exp(-y1))).round(4)
    (array([[0.7311, 0.3112]]), array([[0.7311, 0.3112]]))
    """
    if m1.n_inputs != m2.n_inputs or m1.n_outputs != m2.n_outputs:
        raise ValueError(
            f"gated: models map {m1.n_inputs}→{m1.n_outputs} and {m2.n_inputs}→{m2.n_outputs}; "
            "they need the same input size and the same output size"
        )
    _require_well_posed("gated", m1, "the first model")
    _require_well_posed("gated", m2, "the second model")
    builder = Builder(m1.n_inputs)
    u = builder.input()
    y1, y2 = builder.embed(m1, u), builder.embed(m2, u)
    start, _ = builder.activate(Expr.stack([y1, y2]), GateBlock(gate, "identity"))
    out = builder.states(start, start + m1.n_outputs)
    return builder.model(out, metadata=_compose_metadata(m1, m2))


def _unity(size: int) -> ImplicitModel:
    """The stateless model ŷ = u (unity feedback)."""
    return ImplicitModel(np.zeros((0, 0)), np.zeros((0, size)), np.zeros((size, 0)), np.eye(size))


def _dense(M) -> np.ndarray:
    return M.toarray() if sp.issparse(M) else np.asarray(M, dtype=float)


def _loop_gain(D1, D2) -> np.ndarray:
    """S = (I − D_1 D_2)⁻¹, or a ValueError when the algebraic loop has no unique solution."""
    M = np.eye(D1.shape[0]) - _dense(D1) @ _dense(D2)
    cond = np.linalg.cond(M) if M.size else 1.0
    if not np.isfinite(cond) or cond > _LOOP_COND_MAX:
        raise ValueError(
            f"feedback: I − D_1 D_2 is singular (condition number {cond:.3g}), so the outputs "
            "of the loop are not determined by the states; change D_1 or D_2"
        )
    return np.linalg.inv(M)


def feedback(m1: ImplicitModel, m2: ImplicitModel | None = None) -> ImplicitModel:
    """The closed loop u_1 = u + ŷ_2, u_2 = ŷ_1, output ŷ_1 (m2=None: unity feedback ŷ_2 = ŷ_1).

    With S = (I − D_1 D_2)⁻¹: ŷ_1 = S(C_1 x_1 + D_1 C_2 x_2 + D_1 u + D_1 b_y2 + b_y1), and with
    F = [B_1 D_2; B_2] the states solve x = φ(Ax + Bu + b_x) for
    A = [[A_1, B_1 C_2], [0, A_2]] + F S [C_1, D_1 C_2], B = [B_1; 0] + F S D_1,
    b_x = (b_x1 + B_1 b_y2; b_x2) + F S (D_1 b_y2 + b_y1); C = S [C_1, D_1 C_2], D = S D_1.

    Parameters
    ----------
    m1 : ImplicitModel
        The forward model (as many outputs as inputs for unity feedback).
    m2 : ImplicitModel, optional
        The feedback model, from m1's outputs to m1's inputs; None is unity feedback.

    Returns
    -------
    ImplicitModel
        The closed loop.

    Raises
    ------
    IllPosedError
        Unless the closed loop meets a sufficient well-posedness condition.
    ValueError
        If the sizes do not fit or I − D_1 D_2 is singular.

    Examples
    --------
    y = 0.5 (u + y) closes to y = u:

    >>> from implicit_cvx import ImplicitModel, feedback
    >>> half = ImplicitModel(A=[[0.0]], B=[[1.0]], C=[[0.5]], D=[[0.0]], activation="identity")
    >>> feedback(half).predict([[1.0]])
    array([[1.]])
    """
    m2 = _unity(m1.n_outputs) if m2 is None else m2
    p, q = m1.n_inputs, m1.n_outputs
    if m2.n_inputs != q or m2.n_outputs != p:
        raise ValueError(
            f"feedback: the first model maps {p}→{q}, so the feedback model must map {q}→{p}; "
            f"it maps {m2.n_inputs}→{m2.n_outputs}"
        )
    sparse = any(sp.issparse(M) for m in (m1, m2) for M in (m.A, m.B, m.C, m.D))
    A1, B1, C1, D1, A2, B2, C2, D2 = (sp.csr_matrix(M) for m in (m1, m2)
                                      for M in (m.A, m.B, m.C, m.D))
    S = sp.csr_matrix(_loop_gain(D1, D2))
    F = sp.vstack([B1 @ D2, B2], format="csr")
    Cx = S @ sp.hstack([C1, D1 @ C2], format="csr")
    y_const = S @ (D1 @ m2.b_y + m1.b_y)
    A = sp.bmat([[A1, B1 @ C2], [None, A2]], format="csr") + F @ Cx
    B = sp.vstack([B1, sp.csr_matrix((m2.n_states, p))], format="csr") + F @ (S @ D1)
    b_x = np.concatenate([m1.b_x + B1 @ m2.b_y, m2.b_x]) + F @ y_const
    mats = [A, B, Cx, S @ D1]
    model = ImplicitModel(
        *(mats if sparse else [_dense(M) for M in mats]), b_x=b_x, b_y=y_const,
        activation=ActivationMap.concat([m1.activation, m2.activation]),
        metadata=_compose_metadata(m1, m1),
    )
    _require_well_posed("feedback", model, "the closed loop")
    return model
