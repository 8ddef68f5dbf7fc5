"""Scalar activations: componentwise non-expansive (CONE) functions with their derivatives.

Well-posedness needs |φ(a) − φ(b)| ≤ |a − b| (Thm 2.2); only activations known to satisfy it are
offered, and anything else is refused with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """One scalar CONE activation: value and derivative act elementwise on arrays.

    Componentwise non-expansive: |φ(a) − φ(b)| ≤ |a − b|, which well-posedness needs (Thm 2.2);
    expansive functions (gelu, swish, selu, ...) are refused with the reason.

    Parameters
    ----------
    name : str
        The function: "relu", "leaky_relu", "tanh", "sigmoid" or "identity".
    alpha : float, default=0.0
        leaky_relu's slope for negative inputs, in [0, 1] (ignored by the others).

    Raises
    ------
    ValueError
        If the name is unknown or expansive, or alpha lies outside [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import Activation
    >>> tanh = Activation("tanh")
    >>> tanh.value(np.array([0.0, 1.0])).round(4), tanh.lipschitz
    (array([0.    , 0.7616]), 1.0)
    >>> Activation("leaky_relu", alpha=0.1).value(np.array([-1.0, 2.0]))
    array([-0.1,  2. ])
    """

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


def scalar_activation(spec) -> Activation:
    """A scalar Activation from a name ("relu"), a dict ({"name": "leaky_relu", "alpha": 0.1})
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
