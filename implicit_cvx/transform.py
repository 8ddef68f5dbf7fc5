"""Affine input transforms u = (x − offset) ⊙ scale, folded exactly into a model's weights.

A model fitted on transformed inputs u takes raw inputs x once the transform is folded in:
B' = B diag(s), D' = D diag(s), b_x' = b_x − B' μ, b_y' = b_y − D' μ, because
B u = B diag(s) (x − μ). `unfold` is the fold of the inverse transform. The model's metadata
"input" records what was folded, the input domain and the training range, in raw units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

_SCALERS = ("StandardScaler", "MinMaxScaler", "MaxAbsScaler")


def _vector(name: str, v) -> np.ndarray:
    """A finite real scalar (0-d) or 1-D float array, or a ValueError naming it."""
    if np.iscomplexobj(v):
        raise ValueError(f"transform {name} must be real, got complex values")
    try:
        v = np.array(v, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"transform {name} must be a number or a list of numbers, got {v!r}") from None
    if v.ndim > 1 or not np.all(np.isfinite(v)):
        raise ValueError(f"transform {name} must be a finite scalar or 1-D array, got {v!r}")
    return v


@dataclass(frozen=True, eq=False)
class InputTransform:
    """u = (x − offset) ⊙ scale, featurewise (1-D arrays) or the same for all features (scalars).

    `steps` names what the transform is made of, in order (provenance only).
    """

    offset: np.ndarray
    scale: np.ndarray
    steps: tuple = ()

    def __post_init__(self):
        offset, scale = _vector("offset", self.offset), _vector("scale", self.scale)
        if offset.ndim and scale.ndim and offset.shape != scale.shape:
            raise ValueError(f"transform offset has {offset.size} entries but scale has {scale.size}")
        if np.any(scale == 0):
            raise ValueError("transform scale has a zero entry: the transform would not be invertible")
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "steps", tuple(str(s) for s in self.steps))

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def identity(cls) -> InputTransform:
        return cls(0.0, 1.0)

    @classmethod
    def standardizer(cls, X, name: str = "standardize") -> InputTransform:
        """Per-feature (x − mean) / std of the rows of X; a constant feature keeps std 1."""
        X = np.asarray(X, dtype=float)
        std = X.std(axis=0)
        std[std == 0] = 1.0
        return cls(X.mean(axis=0), 1.0 / std, (name,))

    @classmethod
    def from_spec(cls, spec: dict | None) -> InputTransform:
        """From a stored preprocessing {"kind": "none" | "scale" | "standardize", "offset", "scale"}."""
        spec = spec or {"kind": "none"}
        if not isinstance(spec, dict):
            raise ValueError(f"preprocessing must be a dict with a 'kind', got {spec!r}")
        kind = spec.get("kind", "none")
        if kind == "none":
            return cls.identity()
        if kind not in ("scale", "standardize"):
            raise ValueError(
                f"unknown preprocessing kind {kind!r}; expected 'none', 'scale' or 'standardize'"
            )
        missing = [k for k in ("offset", "scale") if k not in spec]
        if missing:
            raise ValueError(f"preprocessing of kind {kind!r} lacks {missing}")
        return cls(spec["offset"], spec["scale"], (kind,))

    @classmethod
    def from_json(cls, record) -> InputTransform:
        if not isinstance(record, dict) or not {"offset", "scale"} <= set(record):
            raise ValueError(f"a transform needs 'offset' and 'scale', got {record!r}")
        steps = record.get("steps", [])
        if not isinstance(steps, list):
            raise ValueError(f"transform steps must be a list of names, got {steps!r}")
        return cls(record["offset"], record["scale"], tuple(steps))

    @classmethod
    def from_sklearn(cls, scaler, name: str | None = None) -> InputTransform:
        """A fitted StandardScaler, MinMaxScaler or MaxAbsScaler as an InputTransform."""
        kind = type(scaler).__name__
        label = f"'{name}' ({kind})" if name else kind
        if kind not in _SCALERS or type(scaler).__module__.split(".")[0] != "sklearn":
            raise ValueError(
                f"step {label} is not an affine scaler that can be folded into the model; "
                f"supported: {', '.join(_SCALERS)}"
            )
        if not hasattr(scaler, "n_features_in_"):
            raise ValueError(f"step {label} is not fitted; fit the pipeline first")
        step = (f"sklearn.preprocessing.{kind}",)
        if kind == "StandardScaler":
            mean = scaler.mean_ if scaler.with_mean else 0.0  # mean_ is fitted even if unused
            return cls(mean, 1.0 / scaler.scale_ if scaler.with_std else 1.0, step)
        if kind == "MaxAbsScaler":
            return cls(0.0, 1.0 / scaler.scale_, step)
        if scaler.clip:
            raise ValueError(f"step {label} has clip=True, which is not affine; use clip=False")
        return cls(-scaler.min_ / scaler.scale_, scaler.scale_, step)  # u = x·scale_ + min_

    def to_json(self) -> dict:
        return {"offset": self.offset.tolist(), "scale": self.scale.tolist(),
                "steps": list(self.steps)}

    # ---- algebra -----------------------------------------------------------------------------
    @property
    def is_identity(self) -> bool:
        return bool(np.all(self.offset == 0) and np.all(self.scale == 1))

    def apply(self, X) -> np.ndarray:
        """u = (x − offset) ⊙ scale for the rows of X."""
        return (np.asarray(X, dtype=float) - self.offset) * self.scale

    def invert(self, U) -> np.ndarray:
        """x = u ⊘ scale + offset for the rows of U."""
        return np.asarray(U, dtype=float) / self.scale + self.offset

    def then(self, other: InputTransform) -> InputTransform:
        """This transform followed by `other`: ((x − μ1)s1 − μ2)s2 = (x − (μ1 + μ2/s1)) s1 s2."""
        return InputTransform(self.offset + other.offset / self.scale, self.scale * other.scale,
                              self.steps + other.steps)

    def inverse(self) -> InputTransform:
        """x = u/s + μ = (u − (−μ s)) ⊙ (1/s)."""
        return InputTransform(-self.offset * self.scale, 1.0 / self.scale,
                              tuple(f"inverse of {s}" for s in reversed(self.steps)))

    def vectors(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        """(offset, scale) as p-vectors, or a ValueError if the transform has another length."""
        for name, v in (("offset", self.offset), ("scale", self.scale)):
            if v.ndim and v.size != p:
                raise ValueError(f"transform {name} has {v.size} entries but the model takes {p} inputs")
        return np.broadcast_to(self.offset, p).copy(), np.broadcast_to(self.scale, p).copy()

    def describe(self) -> str:
        if self.is_identity:
            return "raw input units"
        return "transformed input units: " + (" then ".join(self.steps) or "u = (x − offset) ⊙ scale")

    # ---- models ------------------------------------------------------------------------------
    def fold(self, model, *, domain=None, train_range=None):
        """The model on raw inputs x whose outputs equal `model` on u = (x − μ) ⊙ s (exactly, up to
        rounding): B' = B diag(s), D' = D diag(s), b_x' = b_x − B'μ, b_y' = b_y − D'μ.

        `domain` and `train_range` are (low, high) pairs in raw units (scalars or per feature;
        None or ±inf where unbounded); metadata "input" records them and the folded transform.
        """
        mu, s = self.vectors(model.n_inputs)
        B, D = _scale_columns(model.B, s), _scale_columns(model.D, s)
        folded = model.with_weights(B=B, D=D, b_x=model.b_x - _matvec(B, mu),
                                    b_y=model.b_y - _matvec(D, mu))
        previous = (model.metadata.get("input") or {}).get("transform")
        total = self if previous is None else self.then(InputTransform.from_json(previous))
        folded.metadata["input"] = {
            "transform": total.to_json(),
            "domain": _bounds(domain, model.n_inputs, "domain"),
            "train_range": _bounds(train_range, model.n_inputs, "train_range"),
        }
        folded.metadata["preprocessing"] = {"kind": "none"}
        return folded

    def unfold(self, model):
        """The model on u = (x − μ) ⊙ s whose outputs equal `model` on raw x (the fold of the
        inverse transform); its metadata "input" is dropped, raw-unit facts no longer apply."""
        unfolded = self.inverse().fold(model)
        unfolded.metadata.pop("input")
        return unfolded


def _scale_columns(M, s: np.ndarray):
    """M diag(s), sparse stays sparse."""
    return sp.csr_matrix(M.multiply(s[None, :])) if sp.issparse(M) else M * s[None, :]


def _matvec(M, v: np.ndarray) -> np.ndarray:
    return np.asarray(M @ v, dtype=float).ravel()


def _bound_vector(v, p: int, unbounded: float) -> np.ndarray:
    """One side of a bound as p floats: a scalar or p entries, None for `unbounded` (±inf)."""
    if v is None:
        return np.full(p, unbounded)
    if np.ndim(v):
        v = [unbounded if e is None else e for e in v]
    return np.broadcast_to(np.array(v, dtype=float), p).copy()


def _bounds(pair, p: int, name: str):
    """{"low": [...], "high": [...]} per feature in JSON form (None where unbounded), or None."""
    if pair is None:
        return None
    if isinstance(pair, dict):
        pair = (pair.get("low"), pair.get("high"))
    try:
        low, high = pair
        low, high = _bound_vector(low, p, -np.inf), _bound_vector(high, p, np.inf)
    except (TypeError, ValueError):
        raise ValueError(f"input {name} must be a pair (low, high) of numbers or of {p} numbers "
                         f"each, got {pair!r}") from None
    if np.any(np.isnan(low) | np.isnan(high) | (low > high) | (low == np.inf) | (high == -np.inf)):
        raise ValueError(f"input {name} needs low ≤ high per feature (−inf or None below, +inf or "
                         f"None above), got {pair!r}")
    return {"low": [None if np.isinf(e) else float(e) for e in low],
            "high": [None if np.isinf(e) else float(e) for e in high]}


def bounds_arrays(record) -> tuple[np.ndarray, np.ndarray] | None:
    """(low, high) float arrays from a stored {"low", "high"} record, ±inf where unbounded."""
    if record is None:
        return None
    low = np.array([-np.inf if v is None else v for v in record["low"]], dtype=float)
    high = np.array([np.inf if v is None else v for v in record["high"]], dtype=float)
    return low, high


def check_input_record(record, p: int) -> dict:
    """A model's metadata "input" validated for p inputs (a ValueError naming the field)."""
    if not isinstance(record, dict):
        raise ValueError(f"metadata 'input' must be a dict, got {type(record).__name__}")
    unknown = sorted(set(record) - {"transform", "domain", "train_range", "note"})
    if unknown:
        raise ValueError(f"metadata 'input' has unknown key(s) {unknown}")
    if record.get("transform") is not None:
        try:
            InputTransform.from_json(record["transform"]).vectors(p)
        except ValueError as exc:
            raise ValueError(f"metadata 'input.transform': {exc}") from None
    for name in ("domain", "train_range"):
        value = record.get(name)
        if value is None:
            continue
        ok = (isinstance(value, dict) and set(value) == {"low", "high"}
              and all(isinstance(value[k], list) and len(value[k]) == p for k in ("low", "high")))
        if not ok:
            raise ValueError(f"metadata 'input.{name}' must be {{'low': [...], 'high': [...]}} "
                             f"with {p} entries each")
        try:
            _bounds(value, p, name)
        except ValueError as exc:
            raise ValueError(f"metadata 'input.{name}': {exc}") from None
    return record


def describe_input_record(record) -> str | None:
    """One line for `implicit-cvx info`: what was folded and the domain, or None."""
    if not record:
        return None
    steps = (record.get("transform") or {}).get("steps") or ["an affine transform"]
    text = "raw inputs (folded: " + " then ".join(steps) + ")"
    domain = record.get("domain")
    if domain is not None:
        pairs = {(lo, hi) for lo, hi in zip(domain["low"], domain["high"], strict=True)}
        text += ("; domain [{}, {}] for every feature".format(*pairs.pop()) if len(pairs) == 1
                 else "; domain per feature")
    return text


def fold_outputs(model, offset, scale):
    """The model whose outputs are ŷ ⊙ scale + offset of `model`'s (e.g. undoing a target
    standardization exactly): C' = diag(scale) C, D' = diag(scale) D, b_y' = b_y ⊙ scale + offset."""
    q = model.n_outputs
    offset = np.broadcast_to(_vector("output offset", offset), q).copy()
    scale = np.broadcast_to(_vector("output scale", scale), q).copy()

    def rows(M):
        return sp.csr_matrix(M.multiply(scale[:, None])) if sp.issparse(M) else M * scale[:, None]

    return model.with_weights(C=rows(model.C), D=rows(model.D), b_y=model.b_y * scale + offset)
