"""Networks written layer by layer, assembled as one implicit model.

A `Builder` grows the state vector one block at a time. Every signal is an affine expression
`Expr` of the states created so far and of the input u; a block's pre-activation is such an
expression, so z = Ax + Bu + b_x is assembled exactly, with affine layers (dense, convolution,
eval-mode BatchNorm, residual sums) folded into the weights and only activated signals becoming
states. States are ordered by creation: a feed-forward network gives a strictly block *lower*
triangular A (well-posed for any weights, solved by one sweep, Thm 2.8/2.9).

`from_sequential(layers, input_shape)` reads a list of layer specs: `Linear`, `Conv2d`
(convert.py), `BatchNorm`, `MaxPool2d`, `Flatten`, `Residual`, and activations (a name, a dict or
an activation object). Inputs and feature maps are flattened channel-major (C, H, W) like
`torch.flatten`. A max-pooling right after an activation fuses with it into one block
(ψ∘max = max∘ψ for nondecreasing ψ), whose first states are the pooled map (see blip.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .activations import ActivationMap, MaxPoolBlock, get_activation
from .convert import Conv2d
from .model import ImplicitModel
from .numerics import check_matrix, check_vector

_SPARSE_MIN_SIZE = 4096  # matrices with fewer entries are always dense
_SPARSE_DENSITY = 0.15  # larger ones with fewer nonzeros than this share stay sparse


def _pad(M: sp.csr_matrix, cols: int) -> sp.csr_matrix:
    """M with zero columns appended up to `cols` (a state added after M was written)."""
    if M.shape[1] == cols:
        return M
    return sp.csr_matrix((M.data, M.indices, M.indptr), shape=(M.shape[0], cols))


def _keep_sparse(M: sp.csr_matrix) -> bool:
    """Large matrices that are mostly zeros (e.g. an unrolled RNN's A and B) stay sparse."""
    size = M.shape[0] * M.shape[1]
    return size >= _SPARSE_MIN_SIZE and M.nnz < _SPARSE_DENSITY * size


@dataclass(frozen=True, eq=False)
class Expr:
    """An affine signal Mx·x + Mu·u + c of dimension d (Mx has as many columns as there were
    states when it was formed; later states enter with zero coefficients)."""

    Mx: sp.csr_matrix
    Mu: sp.csr_matrix
    c: np.ndarray

    @property
    def dim(self) -> int:
        return self.c.shape[0]

    def map(self, W, b=None) -> Expr:
        """W·(this) + b for a dense or sparse W of shape (out, d)."""
        W = sp.csr_matrix(W) if not sp.issparse(W) else W.tocsr()
        if W.shape[1] != self.dim:
            raise ValueError(f"a layer of shape {W.shape} gets a signal of size {self.dim}")
        b = check_vector("bias", b, W.shape[0])
        return Expr((W @ self.Mx).tocsr(), (W @ self.Mu).tocsr(), W @ self.c + b)

    def scale(self, s: np.ndarray, t: np.ndarray) -> Expr:
        """s ∘ (this) + t (a per-entry affine map, e.g. eval-mode BatchNorm)."""
        D = sp.diags(s)
        return Expr((D @ self.Mx).tocsr(), (D @ self.Mu).tocsr(), s * self.c + t)

    def __add__(self, other: Expr) -> Expr:
        if other.dim != self.dim:
            raise ValueError(f"cannot add signals of sizes {self.dim} and {other.dim}")
        n = max(self.Mx.shape[1], other.Mx.shape[1])
        return Expr(_pad(self.Mx, n) + _pad(other.Mx, n), self.Mu + other.Mu, self.c + other.c)

    @staticmethod
    def stack(parts) -> Expr:
        """The signals one above the other (e.g. the two inputs (a; b) of a gate)."""
        n = max(e.Mx.shape[1] for e in parts)
        return Expr(sp.vstack([_pad(e.Mx, n) for e in parts], format="csr"),
                    sp.vstack([e.Mu for e in parts], format="csr"),
                    np.concatenate([e.c for e in parts]))


class Builder:
    """Grows an implicit model block by block; see the module docstring."""

    def __init__(self, n_inputs: int):
        self.p = int(n_inputs)
        self.n = 0
        self.blocks: list[tuple[ActivationMap, Expr]] = []  # activation and pre-activation
        self.sparse = False  # return sparse matrices (set by convolution and pooling layers)

    def input(self, start: int = 0, stop: int | None = None) -> Expr:
        """The input coordinates start..stop−1 as a signal."""
        stop = self.p if stop is None else stop
        d = stop - start
        Mu = sp.csr_matrix((np.ones(d), (np.arange(d), np.arange(start, stop))), shape=(d, self.p))
        return Expr(sp.csr_matrix((d, self.n)), Mu, np.zeros(d))

    def states(self, start: int, stop: int) -> Expr:
        """The states start..stop−1 as a signal."""
        d = stop - start
        Mx = sp.csr_matrix((np.ones(d), (np.arange(d), np.arange(start, stop))), shape=(d, self.n))
        return Expr(Mx, sp.csr_matrix((d, self.p)), np.zeros(d))

    def activate(self, pre: Expr, activation) -> tuple[int, int]:
        """New states x = φ(pre) (an activation spec or map of size pre.dim); returns their range.
        `pre` may read only earlier states (that is what keeps the model feed-forward)."""
        amap = ActivationMap.build(activation, pre.dim)
        start = self.n
        self.blocks.append((amap, pre))
        self.n += pre.dim
        return start, self.n

    def embed(self, model: ImplicitModel, u: Expr) -> Expr:
        """A whole implicit model fed with the signal u: its states are appended (its A becomes a
        diagonal block) and its output Cx + D u + b_y is returned."""
        if u.dim != model.n_inputs:
            raise ValueError(f"the model takes {model.n_inputs} inputs, got a signal of size {u.dim}")
        start = self.n
        pre = u.map(model.B, model.b_x)
        Mx = sp.hstack([_pad(pre.Mx, start), sp.csr_matrix(model.A)], format="csr")
        self.blocks.append((model.activation, Expr(Mx, pre.Mu, pre.c)))
        self.n += model.n_states
        self.sparse |= any(sp.issparse(M) for M in (model.A, model.B, model.C, model.D))
        return self.states(start, self.n).map(model.C) + u.map(model.D, model.b_y)

    def replace_activation(self, k: int, activation) -> None:
        """Give block k another activation of the same size (e.g. fuse a pooling into it)."""
        amap, pre = self.blocks[k]
        self.blocks[k] = (ActivationMap.build(activation, amap.n), pre)

    def model(self, out: Expr, metadata=None) -> ImplicitModel:
        """The implicit model whose output is the signal `out`."""
        n = self.n
        A = sp.vstack([_pad(pre.Mx, n) for _, pre in self.blocks], format="csr") if n else (
            sp.csr_matrix((0, 0)))
        B = sp.vstack([pre.Mu for _, pre in self.blocks], format="csr") if n else (
            sp.csr_matrix((0, self.p)))
        b_x = np.concatenate([pre.c for _, pre in self.blocks]) if n else np.zeros(0)
        mats = [A, B, _pad(out.Mx, n), out.Mu]
        if not self.sparse:
            mats = [M if _keep_sparse(M) else M.toarray() for M in mats]
        return ImplicitModel(*mats, b_x=b_x, b_y=out.c,
                             activation=ActivationMap.concat([a for a, _ in self.blocks]),
                             metadata=metadata)


# ---- layer specs ------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Linear:
    """x ↦ W x + b with W of shape (out, in) (torch.nn.Linear)."""

    weight: np.ndarray
    bias: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class BatchNorm:
    """Eval-mode batch normalization per channel (per feature for flat signals):
    x ↦ γ (x − μ)/√(σ² + ε) + β, an affine map folded exactly into the weights."""

    weight: np.ndarray
    bias: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray
    eps: float = 1e-5

    def scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        var = np.asarray(self.running_var, dtype=float)
        if np.any(var + self.eps <= 0):
            raise ValueError("BatchNorm running_var + eps must be positive")
        s = np.asarray(self.weight, dtype=float) / np.sqrt(var + self.eps)
        return s, np.asarray(self.bias, dtype=float) - np.asarray(self.running_mean) * s


@dataclass(frozen=True)
class MaxPool2d:
    """Max-pooling over kernel windows of a (C, H, W) map (torch.nn.MaxPool2d semantics)."""

    kernel_size: int | tuple = 2
    stride: int | tuple | None = None
    padding: int | tuple = 0


@dataclass(frozen=True)
class Flatten:
    """(C, H, W) → C·H·W: a no-op on the channel-major flattened signal."""


@dataclass(frozen=True, eq=False)
class Residual:
    """y = φ(body(x) + shortcut(x)): `body` a list of layers, `shortcut` a list of layers (empty:
    the identity, e.g. [Conv2d 1×1, BatchNorm] for a projection), φ the activation after the
    sum (None: no activation)."""

    body: list = field(default_factory=list)
    activation: object = "relu"
    shortcut: list = field(default_factory=list)


@dataclass
class _Signal:
    expr: Expr
    shape: tuple | None  # (C, H, W) of a feature map, None for a flat vector
    fusable: int | None = None  # block index if the signal is exactly that block's activation


def _apply(builder: Builder, sig: _Signal, layer, index: str) -> _Signal:
    """One layer on the signal; errors name the layer's position."""
    try:
        return _LAYERS.get(type(layer), _activation)(builder, sig, layer)
    except ValueError as exc:
        raise ValueError(f"layer {index} ({type(layer).__name__}): {exc}") from None


def _linear(builder, sig, layer: Linear) -> _Signal:
    return _Signal(sig.expr.map(check_matrix("weight", layer.weight), layer.bias), None)


def _conv(builder, sig, layer: Conv2d) -> _Signal:
    if sig.shape is None and layer.input_shape is None:
        raise ValueError("a convolution needs a (C, H, W) input: give input_shape")
    M, bias, shape = layer.linear_map(sig.shape)
    if M.shape[1] != sig.expr.dim:
        raise ValueError(f"expects {M.shape[1]} inputs, the signal has {sig.expr.dim}")
    builder.sparse = True
    return _Signal(sig.expr.map(M, bias), shape)


def _batchnorm(builder, sig, layer: BatchNorm) -> _Signal:
    s, t = layer.scale_shift()
    reps = sig.expr.dim // s.size if s.size else 0
    if s.size * reps != sig.expr.dim or (sig.shape is not None and sig.shape[0] != s.size):
        raise ValueError(f"{s.size} channels do not divide a signal of size {sig.expr.dim}")
    return _Signal(sig.expr.scale(np.repeat(s, reps), np.repeat(t, reps)), sig.shape)


def _pool(builder, sig, layer: MaxPool2d) -> _Signal:
    if sig.shape is None:
        raise ValueError("max-pooling needs a (C, H, W) feature map, got a flat signal")
    builder.sparse = True
    fuse = sig.fusable is not None and builder.blocks[sig.fusable][0].uniform is not None and (
        builder.blocks[sig.fusable][0].uniform.componentwise)
    inner = builder.blocks[sig.fusable][0].uniform if fuse else "identity"
    pool = MaxPoolBlock(sig.shape, layer.kernel_size, layer.stride, layer.padding, inner)
    if fuse:  # the fusable block is the newest one: its states are the last
        builder.replace_activation(sig.fusable, pool)
        start = builder.n - pool.size
    else:
        start, _ = builder.activate(sig.expr, pool)
    return _Signal(builder.states(start, start + pool.live()), pool.out_shape)


def _flatten(builder, sig, layer: Flatten) -> _Signal:
    return _Signal(sig.expr, None, sig.fusable)


def _residual(builder, sig, layer: Residual) -> _Signal:
    entry = _Signal(sig.expr, sig.shape)
    body = _run(builder, entry, layer.body, "body ")
    short = _run(builder, entry, layer.shortcut, "shortcut ")
    if body.expr.dim != short.expr.dim:
        raise ValueError(f"body gives {body.expr.dim} values, the shortcut {short.expr.dim}")
    total = _Signal(body.expr + short.expr, body.shape)
    return total if layer.activation is None else _activation(builder, total, layer.activation)


def _activation(builder, sig, layer) -> _Signal:
    act = get_activation(layer)
    if act.name == "softmax" and sig.shape is not None:
        raise ValueError(
            "softmax over a (C, H, W) feature map would normalise all its values together "
            "(torch's Softmax(dim=1) normalises each position over channels); Flatten first"
        )
    start, stop = builder.activate(sig.expr, act)
    return _Signal(builder.states(start, stop), sig.shape, len(builder.blocks) - 1)


_LAYERS = {Linear: _linear, Conv2d: _conv, BatchNorm: _batchnorm, MaxPool2d: _pool,
           Flatten: _flatten, Residual: _residual}


def _run(builder: Builder, sig: _Signal, layers, prefix: str = "") -> _Signal:
    for i, layer in enumerate(layers):
        sig = _apply(builder, sig, layer, f"{prefix}{i}")
    return sig


def _input_shape(input_shape) -> tuple[int, tuple | None]:
    if np.isscalar(input_shape):
        return int(input_shape), None
    shape = tuple(int(v) for v in input_shape)
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise ValueError(f"input_shape must be a size p, (p,) or (C, H, W), got {input_shape!r}")
    return int(np.prod(shape)), (shape if len(shape) == 3 else None)


def from_sequential(layers, input_shape) -> ImplicitModel:
    """The implicit model of a sequential network (see the module docstring for the layers).

    States are the activated signals in order; affine layers and BatchNorm are folded into
    A, B, b_x, C, D. The output is the last signal (linear if the network ends with an affine
    layer).

    Parameters
    ----------
    layers : list
        Layer specs: `Linear`, `Conv2d`, `BatchNorm`, `MaxPool2d`, `Flatten`, `Residual`, and
        activations (a name, a dict or an activation object).
    input_shape : int or tuple of int
        The input size p, or (C, H, W) for images flattened channel-major.

    Returns
    -------
    ImplicitModel
        The network as one implicit model (block triangular A).

    Raises
    ------
    ValueError
        If a layer is unknown or its sizes do not fit, naming the layer.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import from_sequential
    >>> from implicit_cvx.network import Linear
    >>> layers = [Linear(np.array([[1.0, -1.0], [0.5, 0.5]])), "relu", Linear(np.array([[1.0, 2.0]]))]
    >>> model = from_sequential(layers, input_shape=2)
    >>> model.n_states, model.predict([[1.0, 0.0]])
    (2, array([[2.]]))
    """
    p, shape = _input_shape(input_shape)
    builder = Builder(p)
    out = _run(builder, _Signal(builder.input(), shape), list(layers))
    return builder.model(out.expr)
