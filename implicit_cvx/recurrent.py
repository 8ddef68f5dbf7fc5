"""Recurrent networks unrolled over T steps as one implicit model (paper §3.5, Remark on LSTMs).

Weights follow torch.nn.RNN / torch.nn.LSTM (one layer, batch_first inputs): W_ih (G·h, p),
W_hh (G·h, h), biases b_ih, b_hh (G·h), with G = 1 (RNN) or 4 gates (i, f, g, o) for the LSTM.
An input row is the sequence u = (u_1, …, u_T) flattened time-major (T·p values), initial
states are 0. The hidden states of step t only read step t − 1, so A is strictly block
triangular with W_hh repeated below the diagonal: well-posed for any weights (Thm 2.8/2.9) and
solved exactly by one sweep in time order.

What the construction allows for the LSTM. An implicit model applies φ to an affine function of
the states, while an LSTM multiplies signals: c_t = σ(f_t)∘c_{t−1} + σ(i_t)∘tanh(g_t) and
h_t = σ(o_t)∘tanh(c_t). Each product is a gate block (blip.GateBlock) on the pair of affine
signals it multiplies, and c_t, a sum of two gate outputs, is affine in the states. This is exact
and feed-forward in time. The forget product σ(f)∘c is not Lipschitz (c is unbounded), so the
BLIP condition cannot certify it inside a cycle: an LSTM is representable unrolled (block
triangular), not as a weight-tied cyclic equilibrium, and the robustness bounds, which need
finite Lipschitz constants, refuse it.
"""

from __future__ import annotations

import numpy as np

from .activations import GateBlock
from .model import ImplicitModel
from .network import Builder, Expr
from .numerics import check_matrix


def _check(weight_ih, weight_hh, gates: int, name: str) -> tuple[np.ndarray, np.ndarray, int, int]:
    W_ih, W_hh = np.asarray(check_matrix("weight_ih", weight_ih)), np.asarray(
        check_matrix("weight_hh", weight_hh))
    h = W_hh.shape[1]
    if W_hh.shape != (gates * h, h) or W_ih.shape[0] != gates * h:
        raise ValueError(
            f"{name}: weight_hh has shape {W_hh.shape} and weight_ih {W_ih.shape}; with hidden "
            f"size h they must be ({gates}h, h) and ({gates}h, p)"
        )
    return W_ih, W_hh, h, W_ih.shape[1]


def _bias(b_ih, b_hh, size: int) -> np.ndarray:
    total = np.zeros(size)
    for name, b in (("bias_ih", b_ih), ("bias_hh", b_hh)):
        if b is not None:
            b = np.asarray(b, dtype=float)
            if b.shape != (size,):
                raise ValueError(f"{name} has shape {b.shape}, expected ({size},)")
            total = total + b
    return total


def _steps(steps) -> int:
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer (the sequence length), got {steps!r}")
    return int(steps)


def _finish(builder: Builder, hidden: list[Expr], head, outputs: str) -> ImplicitModel:
    """Outputs: the last hidden state or all of them, through an optional linear head (W, b)."""
    if outputs not in ("last", "all"):
        raise ValueError(f"outputs must be 'last' or 'all', got {outputs!r}")
    chosen = hidden[-1:] if outputs == "last" else hidden
    if head is not None:
        W, b = (head, None) if not isinstance(head, (tuple, list)) else head
        chosen = [e.map(check_matrix("head weight", W), b) for e in chosen]
    return builder.model(Expr.stack(chosen))


def from_rnn(weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, steps: int,
             activation="tanh", head=None, outputs: str = "last") -> ImplicitModel:
    """An Elman RNN h_t = φ(W_ih u_t + b_ih + W_hh h_{t−1} + b_hh), h_0 = 0, over `steps` steps.

    State x = (h_1, …, h_T); an input row is the sequence (u_1, …, u_T) flattened time-major.
    A is strictly block triangular: well-posed for any weights.

    Parameters
    ----------
    weight_ih : array_like, shape (h, p)
        Input weights (torch.nn.RNN's weight_ih_l0).
    weight_hh : array_like, shape (h, h)
        Recurrent weights.
    bias_ih : array_like, shape (h,), optional
        Input bias.
    bias_hh : array_like, shape (h,), optional
        Recurrent bias.
    steps : int
        The number of time steps T.
    activation : str, dict or Activation, default="tanh"
        φ: "tanh" or "relu" as in torch.nn.RNN, or any CONE activation.
    head : (W, b) or array_like, optional
        A linear map applied to the output.
    outputs : {"last", "all"}, default="last"
        Output h_T, or (h_1; …; h_T).

    Returns
    -------
    ImplicitModel
        A model with T·p inputs.

    Raises
    ------
    ValueError
        If the weight shapes do not fit or steps < 1.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import from_rnn
    >>> W_ih, W_hh = np.array([[0.5], [-1.0]]), np.array([[0.2, 0.0], [0.1, 0.3]])
    >>> rnn = from_rnn(W_ih, W_hh, steps=3)
    >>> u = [1.0, 0.5, -0.5]
    >>> h = np.zeros(2)
    >>> for u_t in u:
    ...     h = np.tanh(W_ih[:, 0] * u_t + W_hh @ h)
    >>> rnn.predict([u]).round(4), h.round(4)
    (array([[-0.182 ,  0.3409]]), array([-0.182 ,  0.3409]))
    """
    W_ih, W_hh, h, p = _check(weight_ih, weight_hh, 1, "from_rnn")
    b = _bias(bias_ih, bias_hh, h)
    T = _steps(steps)
    builder = Builder(T * p)
    hidden: list[Expr] = []
    for t in range(T):
        pre = builder.input(t * p, (t + 1) * p).map(W_ih, b)
        if hidden:
            pre = pre + hidden[-1].map(W_hh)
        hidden.append(builder.states(*builder.activate(pre, activation)))
    return _finish(builder, hidden, head, outputs)


def _gate(builder: Builder, a: Expr, b: Expr, left: str, right: str) -> Expr:
    """New states (ψ_l(a) ∘ ψ_r(b); 0) as one gate block; returns the live half as a signal."""
    start, stop = builder.activate(Expr.stack([a, b]), GateBlock(left, right))
    return builder.states(start, start + (stop - start) // 2)


def from_lstm(weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, steps: int, head=None,
              outputs: str = "last") -> ImplicitModel:
    """A one-layer LSTM (torch.nn.LSTM gate order i, f, g, o; h_0 = c_0 = 0) over `steps` steps.

    Per step three gate blocks: σ(f)∘c_{t−1} (from step 2 on), σ(i)∘tanh(g), and
    h_t = σ(o)∘tanh(c_t) with c_t the sum of the first two (see the module docstring for what
    this construction allows). Output h_T or (h_1; …; h_T), through the optional head.

    Parameters
    ----------
    weight_ih : array_like, shape (4h, p)
        Input weights of the gates i, f, g, o.
    weight_hh : array_like, shape (4h, h)
        Recurrent weights.
    bias_ih : array_like, shape (4h,), optional
        Input bias.
    bias_hh : array_like, shape (4h,), optional
        Recurrent bias.
    steps : int
        The number of time steps T.
    head : (W, b) or array_like, optional
        A linear map applied to the output.
    outputs : {"last", "all"}, default="last"
        Output h_T, or (h_1; …; h_T).

    Returns
    -------
    ImplicitModel
        A model with T·p inputs (time-major).

    Raises
    ------
    ValueError
        If the weight shapes do not fit or steps < 1.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import from_lstm
    >>> rng = np.random.default_rng(0)
    >>> lstm = from_lstm(0.5 * rng.normal(size=(8, 1)), 0.5 * rng.normal(size=(8, 2)), steps=3)
    >>> lstm.n_inputs, lstm.n_outputs
    (3, 2)
    >>> lstm.predict([[1.0, 0.5, -0.5]]).round(4)
    array([[0.0027, 0.003 ]])
    """
    W_ih, W_hh, h, p = _check(weight_ih, weight_hh, 4, "from_lstm")
    b = _bias(bias_ih, bias_hh, 4 * h)
    T = _steps(steps)
    builder = Builder(T * p)
    hidden: list[Expr] = []
    cell: Expr | None = None
    for t in range(T):
        z = builder.input(t * p, (t + 1) * p).map(W_ih, b)
        if hidden:
            z = z + hidden[-1].map(W_hh)
        i, f, g, o = (z.map(np.eye(4 * h)[k * h : (k + 1) * h]) for k in range(4))
        new = _gate(builder, i, g, "sigmoid", "tanh")
        cell = new if cell is None else _gate(builder, f, cell, "sigmoid", "identity") + new
        hidden.append(_gate(builder, o, cell, "sigmoid", "tanh"))
    return _finish(builder, hidden, head, outputs)
