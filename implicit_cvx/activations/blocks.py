"""Block activations: vector maps R^k → R^k on one block of states, blockwise Lipschitz (BLIP,
Thm 2.7) instead of componentwise: max-pooling, softmax, and multiplicative gates.

Representation of blocks with fewer outputs than inputs. A max-pooling block reads the k = C·H·W
pre-activations of a feature map but has only C·Ho·Wo outputs; a gate reads 2h and gives h. The
block still maps R^k → R^k, so A stays square and a block is just a range of states: the outputs
fill the first `live` states (channel-major (C, Ho, Wo) for pooling) and the remaining states are
identically 0. Later layers read only the live states; the zero states cost memory but no
accuracy, and padding with zeros (rather than, e.g., repeating each window's max over the window)
keeps the ℓ∞ *and* ℓ2 Lipschitz constants of non-overlapping pooling at 1 and makes the interval
bounds of the padding exact (0).

Every class offers: value, vjp (row vector times Jacobian), jacobian, interval (sound bounds on a
box), lipschitz (ℓ∞ → ℓ∞ constant γ of the block map), majorant (a nonnegative k×k matrix J with
|φ(z) − φ(z')| ≤ J|z − z'| componentwise), to_dict/from_dict (JSON).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from .scalar import Activation, scalar_activation

_EPS = np.finfo(float).eps


def _pair(name: str, value, minimum: int) -> tuple[int, int]:
    pair = (value, value) if np.isscalar(value) else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v < minimum for v in pair):
        raise ValueError(f"maxpool {name} must be an integer ≥ {minimum} or a pair, got {value!r}")
    return int(pair[0]), int(pair[1])


def _scalar(spec, role: str) -> Activation:
    if isinstance(spec, _Block) or (isinstance(spec, (str, dict)) and _block_name(spec)):
        raise ValueError(f"{role} must be a scalar activation, got block activation {_block_name(spec) or spec.name!r}")
    return scalar_activation(spec)


def _block_name(spec) -> str | None:
    name = spec if isinstance(spec, str) else spec.get("name", "") if isinstance(spec, dict) else ""
    name = str(name).strip().lower()
    return name if name in ("maxpool", "softmax", "gate") else None


class _Block:
    """Shared protocol defaults of block activations."""

    componentwise: ClassVar[bool] = False
    size: ClassVar[int | None] = None

    def check_size(self, k: int) -> None:
        if self.size is not None and k != self.size:
            raise ValueError(
                f"block activation {self.name!r} acts on {self.size} states but its block has {k}"
            )

    def live(self, k: int) -> int:
        """Number of outputs (the first states of the block); the rest are identically 0."""
        return k


@dataclass(frozen=True)
class MaxPoolBlock(_Block):
    """ψ(max over a window) of a (C, H, W) block, flattened channel-major.

    torch.nn.MaxPool2d semantics: stride defaults to the kernel, padding counts as −∞. ψ is a
    nondecreasing scalar activation (default identity), so ψ∘max = max∘ψ: a conv layer, its ReLU
    and the pooling after it are one block. The C·Ho·Wo pooled values are the first states; the
    rest are 0. ℓ∞-Lipschitz with γ = Lip(ψ).

    Parameters
    ----------
    shape : tuple of int
        (C, H, W) of the block's input map; the block has C·H·W states.
    kernel : int or tuple of int, default=(2, 2)
        Window size.
    stride : int or tuple of int, optional
        Window step (default: the kernel).
    padding : int or tuple of int, default=(0, 0)
        Padding on each side, at most half the kernel.
    inner : Activation, default=Activation("identity")
        The nondecreasing scalar ψ applied before the max.

    Raises
    ------
    ValueError
        If the shape, kernel, stride or padding do not fit together.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import MaxPoolBlock
    >>> pool = MaxPoolBlock(shape=(1, 2, 2))
    >>> pool.value(np.array([[1.0, 3.0, -2.0, 0.0]])), pool.lipschitz
    (array([[3., 0., 0., 0.]]), 1.0)
    """

    shape: tuple
    kernel: tuple = (2, 2)
    stride: tuple | None = None
    padding: tuple = (0, 0)
    inner: Activation = Activation("identity")
    name: ClassVar[str] = "maxpool"

    def __post_init__(self):
        shape = tuple(int(v) for v in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"maxpool shape must be (C, H, W) of positive sizes, got {self.shape!r}")
        kernel = _pair("kernel", self.kernel, 1)
        stride = kernel if self.stride is None else _pair("stride", self.stride, 1)
        padding = _pair("padding", self.padding, 0)
        if any(2 * p > k for p, k in zip(padding, kernel, strict=True)):
            raise ValueError(f"maxpool padding {padding} must be at most half the kernel {kernel}")
        for name, value in (("shape", shape), ("kernel", kernel), ("stride", stride),
                            ("padding", padding), ("inner", _scalar(self.inner, "maxpool inner"))):
            object.__setattr__(self, name, value)
        C, H, W = shape
        Ho, Wo = self.out_shape[1:]
        if Ho < 1 or Wo < 1 or Ho * Wo > H * W:
            raise ValueError(
                f"maxpool kernel {kernel}, stride {stride}, padding {padding} on a {H}×{W} map "
                f"gives {Ho}×{Wo} windows; need between 1 and {H * W} per channel"
            )

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def out_shape(self) -> tuple[int, int, int]:
        C, H, W = self.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        return C, (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1

    def live(self, k: int | None = None) -> int:
        return int(np.prod(self.out_shape))

    @cached_property
    def windows(self) -> np.ndarray:
        """(live, kh·kw) state indices of every window, −1 for padding positions."""
        C, H, W = self.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        _, Ho, Wo = self.out_shape
        c, i, j, a, b = np.ix_(*(np.arange(s) for s in (C, Ho, Wo, kh, kw)))
        r, s = i * sh - ph + a, j * sw - pw + b
        flat = np.where((r >= 0) & (r < H) & (s >= 0) & (s < W), (c * H + r) * W + s, -1)
        return np.broadcast_to(flat, (C, Ho, Wo, kh, kw)).reshape(C * Ho * Wo, kh * kw)

    def _gather(self, z: np.ndarray) -> np.ndarray:
        """z over every window (..., live, kh·kw); padding reads −∞ (index −1 of the padded z)."""
        pad = np.full((*z.shape[:-1], 1), -np.inf)
        return np.concatenate([z, pad], axis=-1)[..., self.windows]

    def _argmax(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(window max (m, live), state index of the first maximiser (m, live))."""
        g = self._gather(z)
        arg = g.argmax(axis=-1)
        pos = np.take_along_axis(np.broadcast_to(self.windows, g.shape), arg[..., None], -1)[..., 0]
        return np.take_along_axis(g, arg[..., None], -1)[..., 0], pos

    def value(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=float)
        out = np.zeros_like(z)
        out[..., : self.live()] = self.inner.value(self._gather(z).max(axis=-1))
        return out

    def vjp(self, z: np.ndarray, w: np.ndarray) -> np.ndarray:
        """The output weights flow to each window's first maximiser (a valid choice at ties)."""
        m, k = z.shape
        mx, pos = self._argmax(z)
        coef = w[:, : self.live()] * self.inner.derivative(mx)
        flat = (np.arange(m)[:, None] * k + pos).ravel()
        return np.bincount(flat, weights=coef.ravel(), minlength=m * k).reshape(m, k)

    def jacobian(self, z: np.ndarray) -> np.ndarray:
        m, k = z.shape
        mx, pos = self._argmax(z)
        J = np.zeros((m, k, k))
        rows = np.broadcast_to(np.arange(self.live()), pos.shape)
        J[np.arange(m)[:, None], rows, pos] = self.inner.derivative(mx)
        return J

    def interval(self, zl: np.ndarray, zu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact: max and ψ are nondecreasing in every argument (ψ rounded outward)."""
        lo, hi = np.zeros_like(zl, dtype=float), np.zeros_like(zu, dtype=float)
        live = self.live()
        lo[..., :live], hi[..., :live] = self.inner.interval(
            self._gather(zl).max(axis=-1), self._gather(zu).max(axis=-1)
        )
        return lo, hi

    @property
    def lipschitz(self) -> float:
        return self.inner.lipschitz

    def rounding(self, x: np.ndarray) -> np.ndarray:
        """The max is exact; only ψ rounds (padding states are exactly 0)."""
        return self.inner.rounding(x)

    def majorant(self, k: int | None = None) -> sp.csr_matrix:
        """|ψ(max z_W) − ψ(max z'_W)| ≤ Lip(ψ)·Σ_{j∈W} |z_j − z'_j|: the window's indicator row."""
        rows = np.repeat(np.arange(self.live()), self.windows.shape[1])
        cols = self.windows.ravel()
        ok = cols >= 0
        data = np.full(int(ok.sum()), self.inner.lipschitz)
        return sp.csr_matrix((data, (rows[ok], cols[ok])), shape=(self.size, self.size))

    @property
    def positively_homogeneous(self) -> bool:
        return self.inner.positively_homogeneous

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "kernel": list(self.kernel),
                "stride": list(self.stride), "padding": list(self.padding),
                "inner": self.inner.to_dict()}

    @classmethod
    def from_dict(cls, spec: dict) -> MaxPoolBlock:
        return _from_dict(cls, spec, required=("shape",),
                          optional=("kernel", "stride", "padding", "inner"))


@dataclass(frozen=True)
class SoftmaxBlock(_Block):
    """p = softmax(z) over the block (a normalization onto the probability simplex).

    Its Jacobian diag(p) − ppᵀ has ℓ∞ norm max_i 2p_i(1 − p_i) ≤ 1/2, so γ = 1/2. It takes no
    parameters.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import SoftmaxBlock
    >>> SoftmaxBlock().value(np.array([[0.0, 0.0]])), SoftmaxBlock.lipschitz
    (array([[0.5, 0.5]]), 0.5)
    """

    name: ClassVar[str] = "softmax"

    def value(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=float)
        e = np.exp(z - z.max(axis=-1, keepdims=True, initial=-np.inf))
        return e / e.sum(axis=-1, keepdims=True)

    def vjp(self, z: np.ndarray, w: np.ndarray) -> np.ndarray:
        p = self.value(z)
        return p * (w - (w * p).sum(axis=-1, keepdims=True))

    def jacobian(self, z: np.ndarray) -> np.ndarray:
        p = self.value(z)
        return p[..., :, None] * (np.eye(p.shape[-1]) - p[..., None, :])

    def interval(self, zl: np.ndarray, zu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """p_i increases in z_i and decreases in z_j (j ≠ i): it lies between
        1/(1 + Σ_{j≠i} e^{zu_j − zl_i}) and 1/(1 + Σ_{j≠i} e^{zl_j − zu_i}), rounded outward."""
        k = zl.shape[-1]
        off = 1.0 - np.eye(k)
        with np.errstate(over="ignore"):
            s_hi = (np.exp(zu[..., None, :] - zl[..., :, None]) * off).sum(axis=-1)
            s_lo = (np.exp(zl[..., None, :] - zu[..., :, None]) * off).sum(axis=-1)
        err = 4 * (k + 4) * _EPS
        lo = np.clip(1.0 / (1.0 + s_hi * (1 + err)) * (1 - err), 0.0, 1.0)
        hi = np.clip(1.0 / (1.0 + s_lo * (1 - err)) * (1 + err), 0.0, 1.0)
        return lo, hi

    lipschitz: ClassVar[float] = 0.5

    def rounding(self, x: np.ndarray) -> np.ndarray:
        """exp, a k-term sum and a division: relative error ≤ (k + 4)u, doubled, plus underflow."""
        k = x.shape[-1]
        return 2 * (k + 4) * _EPS * np.abs(x) + 4 * np.finfo(float).tiny

    def majorant(self, k: int) -> np.ndarray:
        """sup |∂p_i/∂z_j| = 1/4 (p_i(1 − p_i) and p_i p_j are at most 1/4): the tightest
        linear componentwise majorant is (1/4)𝟙𝟙ᵀ."""
        return np.full((k, k), 0.25)

    @property
    def positively_homogeneous(self) -> bool:
        return False

    def to_dict(self) -> dict:
        return {"name": self.name}

    @classmethod
    def from_dict(cls, spec: dict) -> SoftmaxBlock:
        return _from_dict(cls, spec, required=(), optional=())


@dataclass(frozen=True)
class GateBlock(_Block):
    """A multiplicative gate on a block of 2h states (a; b): x = (ψ_a(a) ∘ ψ_b(b); 0).

    E.g. an LSTM's σ(z_i)∘tanh(z_g) or the elementwise product of two models' outputs (identity ×
    identity). γ = Lip(ψ_a)·sup|ψ_b| + sup|ψ_a|·Lip(ψ_b): 5/4 for sigmoid × tanh, infinite
    when a factor is unbounded — then only block-triangular (feed-forward) use is well-posed.

    Parameters
    ----------
    left : Activation, default=Activation("identity")
        ψ_a, applied to the first half a.
    right : Activation, default=Activation("identity")
        ψ_b, applied to the second half b.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import Activation, GateBlock
    >>> gate = GateBlock(left=Activation("sigmoid"), right=Activation("tanh"))
    >>> gate.value(np.array([[0.0, 1.0]])).round(4), gate.lipschitz
    (array([[0.3808, 0.    ]]), 1.25)
    """

    left: Activation = Activation("identity")
    right: Activation = Activation("identity")
    name: ClassVar[str] = "gate"

    def __post_init__(self):
        object.__setattr__(self, "left", _scalar(self.left, "gate left factor"))
        object.__setattr__(self, "right", _scalar(self.right, "gate right factor"))

    def check_size(self, k: int) -> None:
        if k % 2:
            raise ValueError(f"a gate block has 2h states (a; b), got an odd size {k}")

    def live(self, k: int) -> int:
        return k // 2

    def _factors(self, z):
        h = z.shape[-1] // 2
        a, b = z[..., :h], z[..., h:]
        return a, b, self.left.value(a), self.right.value(b)

    def value(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=float)
        _, _, fa, fb = self._factors(z)
        return np.concatenate([fa * fb, np.zeros_like(fa)], axis=-1)

    def vjp(self, z: np.ndarray, w: np.ndarray) -> np.ndarray:
        a, b, fa, fb = self._factors(z)
        wo = w[..., : a.shape[-1]]
        return np.concatenate([wo * self.left.derivative(a) * fb,
                               wo * fa * self.right.derivative(b)], axis=-1)

    def jacobian(self, z: np.ndarray) -> np.ndarray:
        a, b, fa, fb = self._factors(z)
        m, h = a.shape
        J = np.zeros((m, 2 * h, 2 * h))
        i = np.arange(h)
        J[:, i, i] = self.left.derivative(a) * fb
        J[:, i, h + i] = fa * self.right.derivative(b)
        return J

    def interval(self, zl: np.ndarray, zu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The product of the factors' intervals (min and max of the four corner products),
        each product rounded outward by one ulp."""
        h = zl.shape[-1] // 2
        al, au = self.left.interval(zl[..., :h], zu[..., :h])
        bl, bu = self.right.interval(zl[..., h:], zu[..., h:])
        corners = np.stack([al * bl, al * bu, au * bl, au * bu])
        zeros = np.zeros_like(al)
        lo = np.nextafter(corners.min(axis=0), -np.inf)
        hi = np.nextafter(corners.max(axis=0), np.inf)
        return np.concatenate([lo, zeros], axis=-1), np.concatenate([hi, zeros], axis=-1)

    def rounding(self, x: np.ndarray) -> np.ndarray:
        """Two factors within 4 ulps each and one product: ≤ 20 ulps, plus underflow."""
        return 20 * np.spacing(np.abs(x)) + 4 * np.finfo(float).tiny

    @property
    def lipschitz(self) -> float:
        return _product(self.left.lipschitz, self.right.bound) + _product(
            self.left.bound, self.right.lipschitz
        )

    def majorant(self, k: int) -> sp.csr_matrix:
        """|Δ(ψ_a ψ_b)_i| ≤ Lip(ψ_a) sup|ψ_b| |Δa_i| + sup|ψ_a| Lip(ψ_b) |Δb_i| (finite γ only)."""
        h = k // 2
        i = np.arange(h)
        data = np.concatenate([np.full(h, _product(self.left.lipschitz, self.right.bound)),
                               np.full(h, _product(self.left.bound, self.right.lipschitz))])
        return sp.csr_matrix((data, (np.concatenate([i, i]), np.concatenate([i, h + i]))),
                             shape=(k, k))

    @property
    def positively_homogeneous(self) -> bool:
        return False

    def to_dict(self) -> dict:
        return {"name": self.name, "left": self.left.to_dict(), "right": self.right.to_dict()}

    @classmethod
    def from_dict(cls, spec: dict) -> GateBlock:
        return _from_dict(cls, spec, required=(), optional=("left", "right"))


def _product(a: float, b: float) -> float:
    return 0.0 if a == 0 or b == 0 else a * b


def _from_dict(cls, spec: dict, required: tuple, optional: tuple):
    fields = {k: v for k, v in spec.items() if k != "name"}
    missing = [k for k in required if k not in fields]
    extra = sorted(set(fields) - set(required) - set(optional))
    if missing or extra:
        raise ValueError(
            f"block activation {cls.name!r} needs {list(required)} (optional {list(optional)}); "
            f"missing {missing}, unknown {extra}"
        )
    return cls(**fields)


BLOCK_ACTIVATIONS = {c.name: c for c in (MaxPoolBlock, SoftmaxBlock, GateBlock)}
