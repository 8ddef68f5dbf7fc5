"""Activations of all states: `get_activation` (scalar or block, by name) and `ActivationMap`, one
activation per contiguous block of states."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

# Activations that users sometimes ask for but that are expansive somewhere (max slope > 1).
from .blocks import BLOCK_ACTIVATIONS
from .scalar import Activation, scalar_activation


def get_activation(spec):
    """An activation from a name, a dict, or an activation object (returned as is).

    Names ("relu") and dicts ({"name": "leaky_relu", "alpha": 0.1}, {"name": "maxpool", ...})
    of block activations give the classes of `blocks.py` (MaxPoolBlock, SoftmaxBlock,
    GateBlock); the others give a scalar Activation.

    Parameters
    ----------
    spec : str, dict, Activation or block activation
        What to build.

    Returns
    -------
    Activation or block activation
        The activation.

    Raises
    ------
    ValueError
        If the name is unknown or the activation is expansive (well-posedness could not be
        guaranteed), listing the choices.

    Examples
    --------
    >>> from implicit_cvx import get_activation
    >>> get_activation({"name": "leaky_relu", "alpha": 0.1})
    Activation(name='leaky_relu', alpha=0.1)
    >>> get_activation("softmax")
    SoftmaxBlock()
    >>> get_activation("gelu")
    Traceback (most recent call last):
    ...
    ValueError: activation 'gelu' is not componentwise non-expansive (its slope reaches about 1.13), ...
    """
    if isinstance(spec, (Activation, *BLOCK_ACTIVATIONS.values())):
        return spec
    if isinstance(spec, str) and spec.strip().lower() in BLOCK_ACTIVATIONS:
        return BLOCK_ACTIVATIONS[spec.strip().lower()].from_dict({})
    if isinstance(spec, dict) and str(spec.get("name", "")).lower() in BLOCK_ACTIVATIONS:
        return BLOCK_ACTIVATIONS[str(spec["name"]).lower()].from_dict(spec)
    return scalar_activation(spec)


@dataclass(frozen=True)
class ActivationMap:
    """The activation of every state: one per contiguous block of states (one block = uniform).

    A scalar Activation acts on each state of its block alone; a block activation maps the whole
    block R^k → R^k and couples its states. Arrays have states on the last axis. Build one with
    `ActivationMap.build(spec, n)`.

    Parameters
    ----------
    blocks : tuple of (activation, start, stop)
        The blocks, covering 0..n without gaps.
    n : int, default=0
        Number of states.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ActivationMap
    >>> amap = ActivationMap.build([("relu", 2), ("softmax", 2)], 4)
    >>> amap.value(np.array([[-1.0, 1.0, 0.0, 0.0]]))
    array([[0. , 1. , 0.5, 0.5]])
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
