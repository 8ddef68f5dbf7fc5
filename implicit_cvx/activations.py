"""Componentwise non-expansive (CONE) activations, their derivatives, and per-block maps.

Well-posedness (DESIGN §3) needs |φ(a) − φ(b)| ≤ |a − b|; only activations known to satisfy it
are offered, and anything else is refused with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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

    def value(self, z: np.ndarray) -> np.ndarray:
        return _FUNCTIONS[self.name][0](np.asarray(z, dtype=float), self.alpha)

    def derivative(self, z: np.ndarray) -> np.ndarray:
        """Derivative (at a ReLU kink, the right derivative 1 for z > 0 only: φ'(0) = 0)."""
        return _FUNCTIONS[self.name][1](np.asarray(z, dtype=float), self.alpha)

    @property
    def positively_homogeneous(self) -> bool:
        """φ(t z) = t φ(z) for t > 0: what the diagonal rescaling of DESIGN §3 needs."""
        return self.name in ("relu", "leaky_relu", "identity")

    def to_dict(self) -> dict:
        return {"name": self.name, "alpha": self.alpha} if self.name == "leaky_relu" else {
            "name": self.name
        }


def _sigmoid(z, _):
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


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


def _unknown_message(name: str) -> str:
    allowed = ", ".join(NAMES)
    if name in _EXPANSIVE:
        return (
            f"activation {name!r} is not componentwise non-expansive ({_EXPANSIVE[name]}), so "
            f"well-posedness cannot be guaranteed; choose one of: {allowed}"
        )
    return f"unknown activation {name!r}; choose one of: {allowed} (each is non-expansive)"


def get_activation(spec) -> Activation:
    """An Activation from a name ("relu"), a dict ({"name": "leaky_relu", "alpha": 0.1}),
    or an Activation (returned as is)."""
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, str):
        return Activation(spec.strip().lower())
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

    `blocks` is a tuple of (Activation, start, stop) covering 0..n without gaps.
    Arrays passed to `value`/`derivative` have states on the last axis.
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
                blocks.append((act, start, start + size))
                start += size
            if start != n:
                raise ValueError(f"activation blocks cover {start} states but the model has {n}")
            return cls(tuple(blocks), n)
        return cls(((get_activation(spec), 0, n),), n)

    @property
    def uniform(self) -> Activation | None:
        return self.blocks[0][0] if len(self.blocks) == 1 else None

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
        return self._apply(z, "derivative")

    def __call__(self, z) -> np.ndarray:
        return self.value(z)

    @property
    def positively_homogeneous(self) -> bool:
        return all(act.positively_homogeneous for act, _, _ in self.blocks)

    def subset(self, keep: np.ndarray) -> ActivationMap:
        """The map restricted to the states `keep` (sorted indices), e.g. after pruning states."""
        keep = np.asarray(keep, dtype=int)
        names = [self.activation_of(i) for i in keep]
        pairs = []
        for act in names:
            if pairs and pairs[-1][0] == act:
                pairs[-1][1] += 1
            else:
                pairs.append([act, 1])
        if not pairs:
            return ActivationMap(((self.blocks[0][0], 0, 0),), 0)
        return ActivationMap.build([tuple(p) for p in pairs], len(keep))

    def activation_of(self, i: int) -> Activation:
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
