"""Componentwise non-expansive (CONE) activations, their derivatives, and per-block maps.

Well-posedness needs |φ(a) − φ(b)| ≤ |a − b| (Thm 2.2); only activations known to satisfy it
are offered, and anything else is refused with the reason. A map may also hold vector
activations that couple the states of one block (max-pooling, softmax, gates: `blip.py`), which
are blockwise Lipschitz (BLIP, Thm 2.7) instead of componentwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

# Activations that users sometimes ask for but that are expansive somewhere (max slope > 1).
_EXPANSIVE = {
    "gelu": "its slope reaches about 1.13",
    "swish": "its slope reaches about 1.10",
    "silu": "its slope reaches about 1.10",
    "selu": "its slope is about 1.05 for positive inputs",
    "softsign_scaled": "its slope exceeds 1",
}


@dataclass(frozen=True)
class Activation:
    """One scalar CONE activation: value and derivative act elementwise on arrays."""

    name: str
    alpha: float = 0.0  # leaky_relu slope for negative inputs, in [0, 1]

    def __post_init__(self):
        if self.name not in _FUNCTIONS:
            raise ValueError(_unknown_message(self.name))
        if self.name == "leaky_relu" and not (0.0 <= self.alpha <= 1.0):
            raise ValueError(
                f"leaky_relu slope alpha={self.alpha!r} makes the activation expansive or "
                "non-monotone; use alpha in [0, 1]"
            )

    componentwise = True  # acts on each state alone (block activations set this False)
    size = None  # fits a block of any size

    def value(self, z: np.ndarray) -> np.ndarray:
        return _FUNCTIONS[self.name][0](np.asarray(z, dtype=float), self.alpha)

    def derivative(self, z: np.ndarray) -> np.ndarray:
        """Derivative (at a ReLU kink, the right derivative 1 for z > 0 only: φ'(0) = 0)."""
        return _FUNCTIONS[self.name][1](np.asarray(z, dtype=float), self.alpha)

    def vjp(self, z: np.ndarray, w: np.ndarray) -> np.ndarray:
        """w ∘ φ'(z): the row vector w times the (diagonal) Jacobian at z."""
        return self.derivative(z) * w

    def interval(self, zl: np.ndarray, zu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[φ(zl), φ(zu)] ⊇ φ([zl, zu]) (φ is nondecreasing), rounded outward by 4 ulps unless φ
        is evaluated exactly (relu, identity)."""
        lo, hi = self.value(zl), self.value(zu)
        if self.name not in ("relu", "identity"):
            lo -= 4 * np.spacing(np.abs(lo))
            hi += 4 * np.spacing(np.abs(hi))
        return lo, hi

    def rounding(self, x: np.ndarray) -> np.ndarray:
        """A bound on the evaluation error |fl(φ(z)) − φ(z)| given the computed value x."""
        return 4 * np.spacing(np.abs(x))

    @property
    def lipschitz(self) -> float:
        """The largest slope of φ (its Lipschitz constant): 1/4 for sigmoid, 1 otherwise."""
        return 0.25 if self.name == "sigmoid" else 1.0

    @property
    def bound(self) -> float:
        """sup |φ|: 1 for tanh and sigmoid, unbounded otherwise."""
        return 1.0 if self.name in ("tanh", "sigmoid") else np.inf

    @property
    def positively_homogeneous(self) -> bool:
        """φ(t z) = t φ(z) for t > 0: what the diagonal rescaling of §2.5 needs."""
        return self.name in ("relu", "leaky_relu", "identity")

    @property
    def piecewise_linear(self) -> bool:
        return self.name in ("relu", "leaky_relu", "identity")

    def selfloop_ok(self, a) -> np.ndarray:
        """Whether x = φ(a x + c) has exactly one solution for every c (Remark 2.5, extended).

        h(t) = t − aφ(t) maps the pre-activation t = ax + c to c, so uniqueness for every c is
        h bijective. Piecewise-linear φ with slopes {1, α} (relu: α = 0; identity: α = 1): h has
        slopes 1 − a and 1 − αa, bijective iff they have the same strict sign, (1 − a)(1 − αa) > 0;
        e.g. ReLU needs a < 1 and any negative a is fine. Smooth φ with slopes in [0, L]:
        a·L < 1 makes x − φ(ax + c) strictly increasing with slope ≥ min(1, 1 − aL) (sufficient).
        """
        a = np.asarray(a, dtype=float)
        if self.piecewise_linear:
            slope = 0.0 if self.name == "relu" else (1.0 if self.name == "identity" else self.alpha)
            return (1.0 - a) * (1.0 - slope * a) > 0.0
        return a * self.lipschitz < 1.0

    def solve_selfloop(self, a: np.ndarray, c: np.ndarray) -> np.ndarray:
        """The solution x of x = φ(a x + c), elementwise (a broadcast over the rows of c), for a
        with `selfloop_ok`: in closed form for piecewise-linear φ — the pre-activation is
        t = c/(1 − a) if that is > 0, else c/(1 − αa) — and by safeguarded Newton otherwise."""
        a = np.broadcast_to(np.asarray(a, dtype=float), np.shape(c))
        c = np.asarray(c, dtype=float)
        if self.piecewise_linear:
            slope = 0.0 if self.name == "relu" else (1.0 if self.name == "identity" else self.alpha)
            with np.errstate(divide="ignore", invalid="ignore"):
                t = c / (1.0 - a)
                t = np.where(t > 0, t, c / (1.0 - slope * a))
            return self.value(t)
        return _monotone_root(self, a, c)

    def to_dict(self) -> dict:
        return {"name": self.name, "alpha": self.alpha} if self.name == "leaky_relu" else {
            "name": self.name
        }


def _sigmoid(z, _):
    """1/(1 + e^{−z}) for z ≥ 0 and e^{z}/(1 + e^{z}) for z < 0: no overflow, full accuracy."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, e) / (1.0 + e)


def _dsigmoid(z, a):
    s = _sigmoid(z, a)
    return s * (1.0 - s)


_FUNCTIONS = {
    "relu": (lambda z, _: np.maximum(z, 0.0), lambda z, _: (z > 0).astype(float)),
    "leaky_relu": (
        lambda z, a: np.where(z > 0, z, a * z),
        lambda z, a: np.where(z > 0, 1.0, a),
    ),
    "tanh": (lambda z, _: np.tanh(z), lambda z, _: 1.0 - np.tanh(z) ** 2),
    "sigmoid": (_sigmoid, _dsigmoid),
    "identity": (lambda z, _: z.copy(), lambda z, _: np.ones_like(z)),
}

NAMES = tuple(_FUNCTIONS)
_RANGE = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}


def _monotone_root(act: Activation, a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The root of g(x) = x − φ(ax + c), strictly increasing when aL < 1, for bounded φ: x lies
    in φ's range, which brackets it; Newton steps that leave the bracket are bisections."""
    lo, hi = (np.full(c.shape, v) for v in _RANGE[act.name])
    x = act.value(c)
    for _ in range(200):
        g = x - act.value(a * x + c)
        lo, hi = np.where(g < 0, x, lo), np.where(g > 0, x, hi)
        slope = 1.0 - a * act.derivative(a * x + c)
        step = x - g / slope
        inside = (step > lo) & (step < hi)
        new = np.where(inside, step, 0.5 * (lo + hi))
        if np.all((new == x) | (hi - lo <= 4 * np.spacing(np.abs(x)))):
            return new
        x = new
    return x


def _unknown_message(name: str) -> str:
    allowed = ", ".join(NAMES)
    if name in _EXPANSIVE:
        return (
            f"activation {name!r} is not componentwise non-expansive ({_EXPANSIVE[name]}), so "
            f"well-posedness cannot be guaranteed; choose one of: {allowed}"
        )
    return (
        f"unknown activation {name!r}; choose one of: {allowed} (each is non-expansive), or a "
        "block activation (maxpool, softmax, gate)"
    )


def get_activation(spec):
    """An activation from a name ("relu"), a dict ({"name": "leaky_relu", "alpha": 0.1},
    {"name": "maxpool", ...}), or an activation object (returned as is). Names and dicts of
    block activations give the classes of `blip.py`."""
    from .blip import BLOCK_ACTIVATIONS

    if isinstance(spec, (Activation, *BLOCK_ACTIVATIONS.values())):
        return spec
    if isinstance(spec, str) and spec.strip().lower() in BLOCK_ACTIVATIONS:
        return BLOCK_ACTIVATIONS[spec.strip().lower()].from_dict({})
    if isinstance(spec, str):
        return Activation(spec.strip().lower())
    if isinstance(spec, dict) and str(spec.get("name", "")).lower() in BLOCK_ACTIVATIONS:
        return BLOCK_ACTIVATIONS[str(spec["name"]).lower()].from_dict(spec)
    if isinstance(spec, dict):
        extra = set(spec) - {"name", "alpha"}
        if "name" not in spec or extra:
            raise ValueError(f"activation dict needs 'name' (and optional 'alpha'), got {spec!r}")
        return Activation(str(spec["name"]).lower(), float(spec.get("alpha", 0.0)))
    raise ValueError(
        f"activation must be a name, a dict or an Activation, got {type(spec).__name__}: "
        "custom callables are refused because non-expansiveness cannot be checked"
    )


@dataclass(frozen=True)
class ActivationMap:
    """The activation of every state: one per contiguous block of states (one block = uniform).

    `blocks` is a tuple of (activation, start, stop) covering 0..n without gaps. A scalar
    Activation acts on each state of its block alone; a block activation (`blip.py`) maps the
    whole block R^k → R^k and couples its states. Arrays have states on the last axis.
    """

    blocks: tuple = field()
    n: int = 0

    @classmethod
    def build(cls, spec, n: int) -> ActivationMap:
        """From a single spec (uniform) or a list of (spec, size) pairs whose sizes sum to n."""
        if isinstance(spec, ActivationMap):
            if spec.n != n:
                raise ValueError(f"activation map covers {spec.n} states but the model has {n}")
            return spec
        if isinstance(spec, (list, tuple)) and spec and isinstance(spec[0], (list, tuple)):
            blocks, start = [], 0
            for item in spec:
                if len(item) != 2:
                    raise ValueError(f"per-block activation must be (spec, size) pairs, got {item!r}")
                act, size = get_activation(item[0]), int(item[1])
                if size <= 0:
                    raise ValueError(f"activation block size must be positive, got {size}")
                _check_block_size(act, size)
                blocks.append((act, start, start + size))
                start += size
            if start != n:
                raise ValueError(f"activation blocks cover {start} states but the model has {n}")
            return cls(tuple(blocks), n)
        act = get_activation(spec)
        if n:
            _check_block_size(act, n)
        return cls(((act, 0, n),), n)

    @classmethod
    def concat(cls, maps) -> ActivationMap:
        """The map of stacked states: the maps' blocks in order, merging equal neighbouring
        scalar blocks (a block activation always stays one block of its own)."""
        pairs: list[list] = []
        for amap in maps:
            for act, a, b in amap.blocks:
                if b == a:
                    continue
                if pairs and act.componentwise and pairs[-1][0] == act:
                    pairs[-1][1] += b - a
                else:
                    pairs.append([act, b - a])
        n = sum(size for _, size in pairs)
        return cls.build([tuple(p) for p in pairs] if pairs else "relu", n)

    @property
    def uniform(self):
        return self.blocks[0][0] if len(self.blocks) == 1 else None

    @property
    def componentwise(self) -> bool:
        """Every block is a scalar (CONE) activation: φ acts on each state alone."""
        return all(act.componentwise for act, _, _ in self.blocks)

    @property
    def groups(self) -> tuple[tuple[int, int], ...]:
        """(start, stop) of every block activation: states that must be solved together."""
        return tuple((a, b) for act, a, b in self.blocks if not act.componentwise and b > a)

    @property
    def lipschitz(self) -> float:
        """The largest ℓ∞ Lipschitz constant γ of any block (1 for CONE maps except sigmoid)."""
        return max((act.lipschitz for act, a, b in self.blocks if b > a), default=0.0)

    def _apply(self, z, which: str) -> np.ndarray:
        uni = self.uniform
        if uni is not None:
            return getattr(uni, which)(z)
        z = np.asarray(z, dtype=float)
        out = np.empty_like(z)
        for act, a, b in self.blocks:
            out[..., a:b] = getattr(act, which)(z[..., a:b])
        return out

    def value(self, z) -> np.ndarray:
        return self._apply(z, "value")

    def derivative(self, z) -> np.ndarray:
        """φ'(z) elementwise; only for componentwise maps (else use `vjp` or `jacobian`)."""
        if not self.componentwise:
            names = sorted({act.name for act, _, _ in self.blocks if not act.componentwise})
            raise ValueError(
                f"block activation {names} couples the states of its block, so φ has no "
                "elementwise derivative; use ActivationMap.vjp or .jacobian"
            )
        return self._apply(z, "derivative")

    def solve_selfloop(self, a: np.ndarray, c: np.ndarray) -> np.ndarray:
        """x with x_i = φ_i(a_i x_i + c_i) for every column i (componentwise maps only; see
        `Activation.solve_selfloop`)."""
        out = np.empty_like(np.asarray(c, dtype=float))
        a = np.asarray(a, dtype=float)
        for act, lo, hi in self.blocks:
            out[..., lo:hi] = act.solve_selfloop(a[lo:hi], c[..., lo:hi])
        return out

    def vjp(self, z, w) -> np.ndarray:
        """w J(z) for rows w (m, n): the row vectors times the block-diagonal Jacobian ∂φ/∂z."""
        z, w = np.asarray(z, dtype=float), np.asarray(w, dtype=float)
        if self.uniform is not None:
            return self.uniform.vjp(z, w)
        out = np.empty_like(w)
        for act, a, b in self.blocks:
            out[..., a:b] = act.vjp(z[..., a:b], w[..., a:b])
        return out

    def jacobian(self, z) -> np.ndarray:
        """The Jacobians ∂φ/∂z (m, n, n) of rows z (m, n), block diagonal (for small maps)."""
        z = np.asarray(z, dtype=float)
        m = z.shape[0]
        out = np.zeros((m, self.n, self.n))
        for act, a, b in self.blocks:
            if act.componentwise:
                idx = np.arange(a, b)
                out[:, idx, idx] = act.derivative(z[:, a:b])
            else:
                out[:, a:b, a:b] = act.jacobian(z[:, a:b])
        return out

    def interval(self, zl, zu) -> tuple[np.ndarray, np.ndarray]:
        """Sound bounds (xl, xu) of φ(z) over the box zl ≤ z ≤ zu (rows), rounded outward."""
        zl, zu = np.asarray(zl, dtype=float), np.asarray(zu, dtype=float)
        lo, hi = np.empty_like(zl), np.empty_like(zu)
        for act, a, b in self.blocks:
            lo[..., a:b], hi[..., a:b] = act.interval(zl[..., a:b], zu[..., a:b])
        return lo, hi

    def rounding(self, x) -> np.ndarray:
        """Per-state bounds of the evaluation error of `value`, given the computed values x."""
        x = np.asarray(x, dtype=float)
        out = np.empty_like(x)
        for act, a, b in self.blocks:
            out[..., a:b] = act.rounding(x[..., a:b])
        return out

    def majorant(self, M):
        """J M for a nonnegative M (dense or sparse, n rows), where J ≥ 0 is a componentwise
        Lipschitz majorant of φ: |φ(z) − φ(z')| ≤ J|z − z'|. M itself (J = I) when every block
        is CONE; each block activation mixes the rows of its block. Entries are rounded up."""
        if self.componentwise:
            return M
        if any(not np.isfinite(act.lipschitz) for act, _, _ in self.blocks):
            bad = sorted({act.name for act, _, _ in self.blocks if not np.isfinite(act.lipschitz)})
            raise ValueError(
                f"block activation {bad} has no finite Lipschitz constant, so no perturbation "
                "bound holds for this model"
            )
        parts = []
        for act, a, b in self.blocks:
            if act.componentwise:
                parts.append(sp.identity(b - a, format="csr"))
            else:
                parts.append(sp.csr_matrix(act.majorant(b - a)))
        J = sp.block_diag(parts, format="csr")
        width = int(np.diff(J.indptr).max(initial=1))
        out = J @ M
        scale = 1.0 + 2 * (width + 2) * np.finfo(float).eps
        if sp.issparse(out):
            out = sp.csr_matrix(out)
            out.data = np.nextafter(out.data * scale, np.inf)
            return out
        return np.nextafter(np.asarray(out) * scale, np.inf)

    def __call__(self, z) -> np.ndarray:
        return self.value(z)

    @property
    def positively_homogeneous(self) -> bool:
        return all(act.positively_homogeneous for act, _, _ in self.blocks)

    def subset(self, keep: np.ndarray) -> ActivationMap:
        """The map restricted to the states `keep` (sorted indices), e.g. after pruning states.
        A block activation is kept whole or dropped: keeping part of it is refused."""
        keep = np.asarray(keep, dtype=int)
        if keep.size > 1 and np.any(np.diff(keep) <= 0):
            raise ValueError("subset needs sorted, distinct state indices")
        parts = []
        for act, a, b in self.blocks:
            count = int(np.searchsorted(keep, b) - np.searchsorted(keep, a))
            if count and not act.componentwise and count != b - a:
                raise ValueError(
                    f"cannot keep {count} of the {b - a} states {a}..{b - 1} of block activation "
                    f"{act.name!r}: it couples them, so keep all or none"
                )
            if count:
                parts.append(ActivationMap(((act, 0, count),), count))
        if not parts:
            return ActivationMap(((self.blocks[0][0], 0, 0),), 0)
        return ActivationMap.concat(parts)

    def activation_of(self, i: int):
        for act, a, b in self.blocks:
            if a <= i < b:
                return act
        raise IndexError(f"state {i} outside 0..{self.n - 1}")

    def to_json(self):
        """JSON-ready: a dict for a uniform map, else a list of [dict, size]."""
        if self.uniform is not None:
            return self.uniform.to_dict()
        return [[act.to_dict(), b - a] for act, a, b in self.blocks]

    @classmethod
    def from_json(cls, obj, n: int) -> ActivationMap:
        return cls.build(obj, n)


def _check_block_size(act, size: int) -> None:
    """A block activation with a fixed size (e.g. max-pooling over a (C, H, W) map) must get it."""
    if not act.componentwise:
        act.check_size(size)
