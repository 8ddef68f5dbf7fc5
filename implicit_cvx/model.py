"""ImplicitModel: x = φ(Ax + Bu + b_x), ŷ = Cx + Du + b_y, with samples as rows at the boundary."""

from __future__ import annotations

import copy as _copy
import json
import os
import uuid
import zipfile
import zlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .activations import ActivationMap

FORMAT_NAME = "implicit_cvx.model"
FORMAT_VERSION = 1
_HEADER_KEY = "__header__"
_WEIGHTS = ("A", "B", "C", "D")
_VECTORS = ("b_x", "b_y")
_CSR_PARTS = ("data", "indices", "indptr", "shape")
# Every model file carries these metadata keys (DESIGN §9), with these defaults when absent.
_DEFAULT_METADATA = {
    "kappa": None,
    "preprocessing": {"kind": "none"},
    "classes": None,
    "method": None,
    "provenance": None,
}


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
                f"{name} has shape {M.shape}, expected "
                f"({', '.join('?' if s is None else str(s) for s in shape)})"
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


def _json_default(obj):
    """numpy scalars and arrays become plain JSON; anything else is refused."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} object {obj!r} is not JSON-serialisable")


def _file_metadata(metadata: dict) -> dict:
    """The metadata a model file carries: every standard key present, versions filled in."""
    from .report import package_versions

    meta = _copy.deepcopy({**_DEFAULT_METADATA, **metadata})
    meta["preprocessing"] = meta["preprocessing"] or _DEFAULT_METADATA["preprocessing"]
    provenance = meta["provenance"] or {}
    if not isinstance(provenance, dict):
        raise ValueError(
            f"metadata['provenance'] must be a dict (config, seed, versions), got {provenance!r}"
        )
    provenance = {"config": None, "seed": None, **provenance}
    if not provenance.get("versions"):
        provenance["versions"] = package_versions()
    meta["provenance"] = provenance
    return meta


def _encode_matrix(name: str, M) -> tuple[dict, str]:
    """Arrays storing one weight matrix, and its storage kind ("dense" or "csr")."""
    if not sp.issparse(M):
        return {name: M}, "dense"
    M = sp.csr_matrix(M)
    parts = (M.data, M.indices, M.indptr, np.asarray(M.shape, dtype=np.int64))
    return {f"{name}__csr_{part}": a for part, a in zip(_CSR_PARTS, parts, strict=True)}, "csr"


def _decode_matrix(path: Path, arrays: dict, name: str, storage):
    """The weight matrix `name` from the archive's arrays, with a clear error if absent/broken."""
    if storage == "dense":
        keys = [name]
    elif storage == "csr":
        keys = [f"{name}__csr_{part}" for part in _CSR_PARTS]
    else:
        raise ValueError(f"{path}: unknown storage {storage!r} for matrix {name}")
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ValueError(
            f"{path}: array(s) {missing} missing from the model file; it is incomplete or was "
            "not written by ImplicitModel.save"
        )
    if storage == "dense":
        return arrays[name]
    data, indices, indptr, shape = (arrays[k] for k in keys)
    try:
        M = sp.csr_matrix((data, indices, indptr), shape=tuple(int(s) for s in shape))
        M.check_format(full_check=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: sparse matrix {name} is malformed ({exc})") from None
    return M


def _read_npz(path: Path) -> dict:
    """All arrays of an .npz archive, never unpickling; a clear error for anything unreadable."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array, not an .npz archive")
        with archive:
            return {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, KeyError, ValueError) as exc:
        raise ValueError(
            f"{path}: cannot read the model file ({type(exc).__name__}: {exc}); it is corrupt, "
            "truncated, or not an archive written by ImplicitModel.save"
        ) from None


def _read_header(path: Path, arrays: dict) -> dict:
    """The JSON header of a model archive, checked for format name and version."""
    raw = arrays.get(_HEADER_KEY)
    if raw is None:
        raise ValueError(
            f"{path}: no '{_HEADER_KEY}' entry, so this .npz was not written by "
            "ImplicitModel.save (arrays found: " + ", ".join(sorted(arrays)) + ")"
        )
    try:
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError(f"expected a 1-D uint8 array, got {raw.dtype} of shape {raw.shape}")
        header = json.loads(raw.tobytes().decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError(f"expected a JSON object, got {type(header).__name__}")
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: the model header is unreadable ({exc})") from None
    if header.get("format") != FORMAT_NAME:
        raise ValueError(
            f"{path}: format {header.get('format')!r} is not {FORMAT_NAME!r}; this file was not "
            "written by ImplicitModel.save"
        )
    version = header.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{path}: invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: written with model format version {version}, but this implicit_cvx reads "
            f"versions up to {FORMAT_VERSION}; upgrade implicit_cvx to load it"
        )
    missing = [k for k in ("storage", "activation", "metadata") if k not in header]
    if missing or not isinstance(header["storage"], dict):
        raise ValueError(f"{path}: the model header lacks {missing or ['storage']}")
    return header


def _atomic_savez(path: Path, arrays: dict) -> None:
    """Write an .npz next to `path` and rename it into place, so readers never see half a file."""
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"cannot save model to {path}: directory {path.parent} does not exist"
        )
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as fh:
            np.savez_compressed(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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

    # ---- copies ------------------------------------------------------------------------------
    def with_weights(self, **changes) -> ImplicitModel:
        """A new model with some of A, B, C, D, b_x, b_y (or the activation) replaced;
        everything else, metadata included, is copied."""
        names = _WEIGHTS + _VECTORS
        unknown = sorted(set(changes) - set(names) - {"activation"})
        if unknown:
            raise ValueError(
                f"with_weights got unknown field(s) {unknown}; allowed: {', '.join(names)}, activation"
            )
        parts = {k: changes[k] if k in changes else getattr(self, k).copy() for k in names}
        return type(self)(
            **parts,
            activation=changes.get("activation", self.activation),
            metadata=_copy.deepcopy(self.metadata),
        )

    def copy(self) -> ImplicitModel:
        """An independent deep copy (arrays and metadata)."""
        return self.with_weights()

    # ---- persistence -------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write one compressed .npz (arrays + JSON header, no pickles) atomically; ".npz" is
        appended if missing. Returns the path written."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        header = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "storage": {},
            "activation": self.activation.to_json(),
            "metadata": _file_metadata(self.metadata),
        }
        arrays = {"b_x": self.b_x, "b_y": self.b_y}
        for name in _WEIGHTS:
            parts, header["storage"][name] = _encode_matrix(name, getattr(self, name))
            arrays.update(parts)
        try:
            text = json.dumps(header, default=_json_default)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"model metadata cannot be saved as JSON ({exc}); keep it to numbers, strings, "
                "lists and dicts"
            ) from None
        arrays[_HEADER_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        _atomic_savez(path, arrays)
        return path

    @classmethod
    def load(cls, path) -> ImplicitModel:
        """Read a model written by `save`; any other or damaged file gives a ValueError naming it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} does not exist")
        arrays = _read_npz(path)
        header = _read_header(path, arrays)
        parts = {
            name: _decode_matrix(path, arrays, name, header["storage"].get(name))
            for name in _WEIGHTS
        }
        missing = [name for name in _VECTORS if name not in arrays]
        if missing:
            raise ValueError(f"{path}: array(s) {missing} missing from the model file")
        try:
            return cls(
                **parts,
                b_x=arrays["b_x"],
                b_y=arrays["b_y"],
                activation=header["activation"],
                metadata=header["metadata"],
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: inconsistent model file: {exc}") from None

    # ---- summaries ---------------------------------------------------------------------------
    def describe(self) -> dict:
        """Sizes, sparsity, ‖A‖_∞, λ_pf(|A|), well-posedness and activation: `implicit-cvx info`."""
        from .wellposed import wellposedness_report

        report = wellposedness_report(self.A, activation=self.activation)
        return {
            "n_states": self.n_states,
            "n_inputs": self.n_inputs,
            "n_outputs": self.n_outputs,
            "shapes": {k: list(getattr(self, k).shape) for k in _WEIGHTS + _VECTORS},
            "sparse": {k: bool(sp.issparse(getattr(self, k))) for k in _WEIGHTS},
            "n_params": self.n_params,
            "nnz": self.nnz,
            "nnz_fraction": self.nnz / self.n_params if self.n_params else 0.0,
            "inf_norm_A": report["inf_norm"],
            "pf_eigenvalue": report["pf_eigenvalue"],
            "well_posed": report["well_posed"],
            "wellposedness": report["reason"],
            "activation": self.activation.to_json(),
            "kappa": self.metadata.get("kappa"),
            "method": self.metadata.get("method"),
            "classes": self.metadata.get("classes"),
        }

    def __repr__(self) -> str:
        acts = "+".join(f"{act.name}[{b - a}]" for act, a, b in self.activation.blocks)
        sparse = ", sparse" if any(sp.issparse(getattr(self, k)) for k in _WEIGHTS) else ""
        return (
            f"ImplicitModel(n_states={self.n_states}, n_inputs={self.n_inputs}, "
            f"n_outputs={self.n_outputs}, activation={acts}, nnz={self.nnz}/{self.n_params}"
            f"{sparse})"
        )
