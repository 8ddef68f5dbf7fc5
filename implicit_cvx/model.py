"""ImplicitModel: x = φ(Ax + Bu + b_x), ŷ = Cx + Du + b_y, with samples as rows at the boundary."""

from __future__ import annotations

import copy as _copy
import json
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .activations import ActivationMap
from .equilibrium import solve_equilibrium
from .files import package_versions, write_npz_atomic
from .numerics import check_matrix, check_vector, in_ball, inf_norm
from .transform import InputTransform, check_input_record, describe_input_record
from .wellposed import wellposedness_report

FORMAT_NAME = "implicit_cvx.model"
FORMAT_VERSION = 2  # 2: inputs are raw (transforms folded in); metadata "input"; checked on load
_HEADER_KEY = "__header__"
_MAX_DEFLATE_RATIO = 1100  # deflate expands at most ~1032:1, so a member holds ≤ this × its bytes
_WEIGHTS = ("A", "B", "C", "D")
_VECTORS = ("b_x", "b_y")
_CSR_PARTS = ("data", "indices", "indptr", "shape")
# Every model file carries these metadata keys, with these defaults when absent. "preprocessing"
# stays {"kind": "none"} after loading: a stored transform is folded into the weights on load.
_DEFAULT_METADATA = {
    "kappa": None,
    "preprocessing": {"kind": "none"},
    "classes": None,
    "method": None,
    "provenance": None,
}


def _json_default(obj):
    """numpy scalars and arrays become plain JSON; anything else is refused."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} object {obj!r} is not JSON-serialisable")


def _file_metadata(metadata: dict) -> dict:
    """The metadata a model file carries: every standard key present, versions filled in."""
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
    if any(a.dtype.kind not in "iu" or a.ndim != 1 for a in (indices, indptr, shape)) or shape.size != 2:
        raise ValueError(f"{path}: sparse matrix {name} is malformed (indices, indptr and shape "
                         "must be 1-D integer arrays, shape of length 2)")
    try:
        M = sp.csr_matrix((data, indices, indptr), shape=tuple(int(s) for s in shape))
        M.check_format(full_check=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: sparse matrix {name} is malformed ({exc})") from None
    return M


def _member_header(path: Path, fh, info: zipfile.ZipInfo):
    """(shape, fortran_order, dtype, bytes) of one .npy member, checked BEFORE anything is
    allocated: a real numeric dtype, and shape × itemsize within what the member can hold."""
    name = info.filename
    try:
        version = np.lib.format.read_magic(fh)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"unsupported .npy version {version}")
        reader = getattr(np.lib.format, f"read_array_header_{version[0]}_0")
        shape, fortran, dtype = reader(fh)
    except ValueError as exc:
        raise ValueError(f"{path}: member {name} has a malformed .npy header ({exc}); the file "
                         "is corrupt or not written by ImplicitModel.save") from None
    if dtype.hasobject or dtype.kind not in "fiu":
        what = ("complex values (model arrays must be real)" if dtype.kind == "c" else
                "an object array (pickled Python objects are never loaded)" if dtype.hasobject else
                f"dtype {dtype} (model arrays are real numbers)")
        raise ValueError(f"{path}: member {name} holds {what}; the file is corrupt or not written "
                         "by ImplicitModel.save")
    size = math.prod(shape) * dtype.itemsize
    room = info.file_size - fh.tell()  # bytes after the header
    limit = info.compress_size * (1 if info.compress_type == zipfile.ZIP_STORED else _MAX_DEFLATE_RATIO)
    if any(d < 0 for d in shape) or size > room or info.file_size > limit + 1024:
        raise ValueError(
            f"{path}: member {name} declares an array of shape {shape} ({size} bytes) but the "
            f"archive stores {room} bytes after its header ({info.compress_size} compressed); "
            "the file is corrupt or crafted"
        )
    return shape, fortran, dtype, size


def _read_member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    with zf.open(info) as fh:
        shape, fortran, dtype, size = _member_header(path, fh, info)
        data = fh.read(size)
    if len(data) != size:
        raise ValueError(f"{path}: member {info.filename} is truncated ({len(data)} of {size} "
                         "bytes); the file is corrupt")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


def _read_npz(path: Path) -> dict:
    """All arrays of an .npz archive, each .npy header checked before its data is read; never
    unpickles; a clear ValueError naming the file for anything else."""
    with open(path, "rb") as fh:
        if fh.read(6) == b"\x93NUMPY":
            raise ValueError(f"{path}: it holds a single .npy array, not an .npz archive written "
                             "by ImplicitModel.save")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = [info.filename for info in infos]
            bad = [n for n in names if not n.endswith(".npy") or "/" in n]
            if bad or len(set(names)) != len(names):
                raise ValueError(
                    f"{path}: archive member(s) {bad or sorted(n for n in names if names.count(n) > 1)}"
                    " are not (unique) .npy arrays; the file is corrupt or not written by "
                    "ImplicitModel.save"
                )
            packed = [i.filename for i in infos if i.flag_bits & 0x1
                      or i.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)]
            if packed:  # the size bound below holds for stored and deflated members only
                raise ValueError(f"{path}: archive member(s) {packed} are encrypted or use a "
                                 "compression other than deflate; not written by ImplicitModel.save")
            return {info.filename[:-4]: _read_member(path, zf, info) for info in infos}
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError) as exc:
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
    meta = header["metadata"]
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: field 'metadata' must be a JSON object, got {meta!r}")
    if meta.get("provenance") is not None and not isinstance(meta["provenance"], dict):
        raise ValueError(f"{path}: field 'metadata.provenance' must be a JSON object, got "
                         f"{meta['provenance']!r}")
    return header


def _known_arrays(storage: dict) -> set:
    names = set(_VECTORS) | {_HEADER_KEY}
    for name in _WEIGHTS:
        names |= {name} if storage.get(name) == "dense" else {f"{name}__csr_{p}" for p in _CSR_PARTS}
    return names


def _check_kappa_field(meta: dict, model, where: str) -> None:
    """κ None (not trained in a ball) or a number in (0, 1) with ‖A‖_∞ ≤ κ(1 + BALL_RTOL)."""
    kappa = meta.get("kappa")
    if kappa is None:
        return
    if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not 0 < kappa < 1:
        raise ValueError(f"{where}field 'kappa' = {kappa!r} is not allowed: κ must be a number in "
                         "(0, 1), or null for a model not trained in a ball")
    norm = inf_norm(model.A)
    if not in_ball(model.A, kappa):
        raise ValueError(f"{where}field 'A' has ‖A‖_∞ = {norm:.12g} > kappa = {kappa}: the "
                         "weights are outside the ball the file claims")


def _check_classes(meta: dict, model, where: str) -> None:
    """Class labels: distinct JSON scalars, K labels for K logits, or two for one logit."""
    classes = meta.get("classes")
    if classes is None:
        return
    if not isinstance(classes, list) or not all(
        isinstance(c, (str, int, float)) and not isinstance(c, bool) for c in classes
    ):
        raise ValueError(f"{where}field 'classes' must be a list of labels (strings or numbers), "
                         f"got {classes!r}")
    K, q = len(classes), model.n_outputs
    if len({json.dumps(c) for c in classes}) != K:
        raise ValueError(f"{where}field 'classes' repeats a label: {classes!r}")
    if not (K == q >= 2 or (q == 1 and K == 2)):
        raise ValueError(f"{where}field 'classes' has {K} labels but the model has {q} outputs; "
                         "a classifier has one logit per class, or one logit for two classes")


def check_metadata(meta: dict, model, where: str = "") -> None:
    """The metadata of a model file (JSON values) checked against its weights, a ValueError naming
    the field: κ and the ball, class labels vs outputs, task, preprocessing, the input record."""

    _check_kappa_field(meta, model, where)
    _check_classes(meta, model, where)
    if meta.get("task") not in (None, "classification", "regression"):
        raise ValueError(f"{where}field 'task' = {meta['task']!r} is not 'classification' or "
                         "'regression'")
    for key, check in (
        ("preprocessing", lambda v: InputTransform.from_spec(v).vectors(model.n_inputs)),
        ("input", lambda v: check_input_record(v, model.n_inputs)),
    ):
        if meta.get(key) is not None:
            try:
                check(meta[key])
            except ValueError as exc:
                raise ValueError(f"{where}field '{key}': {exc}") from None
    folded = (meta.get("input") or {}).get("transform") is not None
    if folded and not InputTransform.from_spec(meta.get("preprocessing")).is_identity:
        raise ValueError(f"{where}field 'preprocessing' = {meta['preprocessing']} beside a folded "
                         "input transform ('input.transform'): the weights already take raw "
                         "inputs; a second transform is ambiguous (set preprocessing to none)")


def _fold_stored_preprocessing(model, version: int):
    """A file's stored (not yet folded) preprocessing — every format-1 file with one — folded
    into B, D, b_x, b_y, so that the loaded model takes raw inputs; the metadata says so."""

    spec = model.metadata.get("preprocessing")
    transform = InputTransform.from_spec(spec)
    if transform.is_identity:
        return model
    folded = transform.fold(model)
    folded.metadata["input"]["note"] = (
        f"format-{version} file stored preprocessing {spec}; folded into B, D, b_x, b_y on load: "
        "the model takes raw inputs"
    )
    return folded


class ImplicitModel:
    """An implicit model x = φ(Ax + Bu + b_x), ŷ = Cx + Du + b_y (paper eq. (1)).

    Weights may be dense arrays or scipy.sparse matrices. Samples are rows: inputs U (m, p),
    states X (m, n), outputs Ŷ (m, q). The model is well-posed (one equilibrium per input) under
    a sufficient condition such as ‖A‖_∞ < 1 (see `wellposedness_report`).

    Parameters
    ----------
    A : array_like or sparse matrix, shape (n, n)
        State-to-state weights.
    B : array_like or sparse matrix, shape (n, p)
        Input-to-state weights.
    C : array_like or sparse matrix, shape (q, n)
        State-to-output weights.
    D : array_like or sparse matrix, shape (q, p)
        Direct input-to-output weights.
    b_x : array_like, shape (n,), optional
        State bias (default zero).
    b_y : array_like, shape (q,), optional
        Output bias (default zero).
    activation : str, dict, Activation or ActivationMap, default="relu"
        The activation φ (see `get_activation`), one for all states or one per block.
    metadata : dict, optional
        What the model file stores beside the weights: kappa, preprocessing, classes,
        provenance (config, seed, versions), method.

    Raises
    ------
    ValueError
        If a weight has the wrong shape or non-finite entries, naming it.

    Examples
    --------
    >>> import numpy as np
    >>> from implicit_cvx import ImplicitModel
    >>> model = ImplicitModel(A=[[0, 0.5], [0, 0]], B=[[1, -1], [0, 1]], C=np.eye(2),
    ...                       D=np.zeros((2, 2)), b_x=[0, 0.1])
    >>> model.n_states, model.n_inputs, model.n_outputs
    (2, 2, 2)
    >>> model.predict([[1.0, 0.0], [0.0, 1.0]]).round(3)
    array([[1.05, 0.1 ],
           [0.  , 1.1 ]])
    """

    def __init__(self, A, B, C, D, b_x=None, b_y=None, activation="relu", metadata=None):
        A = check_matrix("A", A, (None, None))
        n = A.shape[0]
        if A.shape[1] != n:
            raise ValueError(f"A must be square (n×n), got shape {A.shape}")
        B = check_matrix("B", B, (n, None))
        p = B.shape[1]
        C = check_matrix("C", C, (None, n))
        q = C.shape[0]
        D = check_matrix("D", D, (q, p))
        self.A, self.B, self.C, self.D = A, B, C, D
        self.b_x = check_vector("b_x", b_x, n)
        self.b_y = check_vector("b_y", b_y, q)
        self.activation = ActivationMap.build(activation, n)
        self.metadata = dict(metadata or {})

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def n_states(self) -> int:
        """Number of states n (the size of A).

        Examples
        --------
        >>> import numpy as np
        >>> from implicit_cvx import ImplicitModel
        >>> model = ImplicitModel(A=[[0, 0.5], [0, 0]], B=[[1, -1], [0, 1]], C=np.eye(2),
        ...                       D=np.zeros((2, 2)), b_x=[0, 0.1])
        >>> model.n_states
        2
        """
        return self.A.shape[0]

    @property
    def n_inputs(self) -> int:
        """Number of inputs p (the columns of B).

        Examples
        --------
        >>> import numpy as np
        >>> from implicit_cvx import ImplicitModel
        >>> model = ImplicitModel(A=[[0, 0.5], [0, 0]], B=[[1, -1], [0, 1]], C=np.eye(2),
        ...                       D=np.zeros((2, 2)), b_x=[0, 0.1])
        >>> model.n_inputs
        2
        """
        return self.B.shape[1]

    @property
    def n_outputs(self) -> int:
        """Number of outputs q (the rows of C).

        Examples
        --------
        >>> import numpy as np
        >>> from implicit_cvx import ImplicitModel
        >>> model = ImplicitModel(A=[[0, 0.5], [0, 0]], B=[[1, -1], [0, 1]], C=np.eye(2),
        ...                       D=np.zeros((2, 2)), b_x=[0, 0.1])
        >>> model.n_outputs
        2
        """
        return self.C.shape[0]

    @property
    def n_params(self) -> int:
        """Entries of A, B, C, D, b_x, b_y.

        Examples
        --------
        >>> import numpy as np
        >>> from implicit_cvx import ImplicitModel
        >>> model = ImplicitModel(A=[[0, 0.5], [0, 0]], B=[[1, -1], [0, 1]], C=np.eye(2),
        ...                       D=np.zeros((2, 2)), b_x=[0, 0.1])
        >>> model.n_params
        20
        """
        n, p, q = self.n_states, self.n_inputs, self.n_outputs
        return n * n + n * p + q * n + q * p + n + q

    @property
    def nnz(self) -> int:
        """Nonzero entries of A, B, C, D, b_x, b_y.

        Examples
        --------
        >>> import numpy as np
        >>> from implicit_cvx import ImplicitModel
        >>> model = ImplicitModel(A=[[0, 0.5], [0, 0]], B=[[1, -1], [0, 1]], C=np.eye(2),
        ...                       D=np.zeros((2, 2)), b_x=[0, 0.1])
        >>> model.nnz
        7
        """
        total = 0
        for M in (self.A, self.B, self.C, self.D):
            total += int(M.count_nonzero()) if sp.issparse(M) else int(np.count_nonzero(M))
        return total + int(np.count_nonzero(self.b_x)) + int(np.count_nonzero(self.b_y))

    # ---- evaluation --------------------------------------------------------------------------
    def phi(self, Z: np.ndarray) -> np.ndarray:
        """The activation φ applied to pre-activations Z (states on the last axis).

        Parameters
        ----------
        Z : ndarray, shape (..., n)
            Pre-activations, one state per entry of the last axis.

        Returns
        -------
        ndarray, shape (..., n)
            φ(Z).

        Examples
        --------
        >>> import numpy as np
        >>> from implicit_cvx import ImplicitModel
        >>> model = ImplicitModel(A=[[0, 0.5], [0, 0]], B=[[1, -1], [0, 1]], C=np.eye(2),
        ...                       D=np.zeros((2, 2)), b_x=[0, 0.1])
        >>> model.phi(np.array([[-1.0, 2.0]]))
        array([[0., 2.]])
        """
        return self.activation.value(Z)

    def check_inputs(self, U) -> np.ndarray:
        """U as a finite float array of shape (m, p); a clear error otherwise.

        Parameters
        ----------
        U : array_like, shape (m, p) or (p,)
            Inputs, one row per sample; a 1-D U of length p is one sample.

        Returns
        -------
        ndarray, shape (m, p)
            U as floats.

        Raises
        ------
        ValueError
            If U has the wrong shape or contains NaN or inf.

        Examples
        --------
        >>> import numpy as np
        >>> from implicit_cvx import ImplicitModel
        >>> model = ImplicitModel(A=[[0, 0.5], [0, 0]], B=[[1, -1], [0, 1]], C=np.eye(2),
        ...                       D=np.zeros((2, 2)), b_x=[0, 0.1])
        >>> model.check_inputs([1, 2]).shape
        (1, 2)
        >>> model.check_inputs([[1, 2, 3]])
        Traceback (most recent call last):
        ...
        ValueError: inputs U have shape (1, 3), expected (m, 2): one row per sample
        """
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
        """X (m, n) solving X = φ(XAᵀ + UBᵀ + b_x); options go to `solve_equilibrium`.

        Parameters
        ----------
        U : array_like, shape (m, p)
            Inputs, one row per sample.
        method : str, default="auto"
            Equilibrium solver ("auto", "picard", "anderson", "adaptive", "structured").
        return_info : bool, default=False
            Also return the solver's EquilibriumInfo.
        **options
            Passed to `solve_equilibrium` (tol, max_iter, X0, raise_on_failure, force).

        Returns
        -------
        X : ndarray, shape (m, n)
            The states.
        info : EquilibriumInfo
            Only with ``return_info=True``.

        Raises
        ------
        IllPosedError
            If no sufficient well-posedness condition holds for A.
        EquilibriumError
            If the solver stops before the tolerance.

        Examples
        --------
        >>> import numpy as np
        >>> from implicit_cvx import ImplicitModel
        >>> model = ImplicitModel(A=[[0, 0.5], [0, 0]], B=[[1, -1], [0, 1]], C=np.eye(2),
        ...                       D=np.zeros((2, 2)), b_x=[0, 0.1])
        >>> X, info = model.equilibrium([[1.0, 0.0]], return_info=True)
        >>> X.round(3), info.converged
        (array([[1.05, 0.1 ]]), True)
        """
        U = self.check_inputs(U)
        X, info = solve_equilibrium(self, U, method=method, **options)
        return (X, info) if return_info else X

    def output(self, X: np.ndarray, U: np.ndarray) -> np.ndarray:
        """Ŷ = XCᵀ + UDᵀ + b_y for given states.

        Parameters
        ----------
        X : ndarray, shape (m, n)
            States, e.g. from `equilibrium`.
        U : ndarray, shape (m, p)
            The inputs the states belong to.

        Returns
        -------
        ndarray, shape (m, q)
            The outputs.

        Examples
        --------
        >>> import numpy as np
        >>> from implicit_cvx import ImplicitModel
        >>> model = ImplicitModel(A=[[0, 0.5], [0, 0]], B=[[1, -1], [0, 1]], C=np.eye(2),
        ...                       D=np.zeros((2, 2)), b_x=[0, 0.1])
        >>> model.output(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]]))
        array([[1., 2.]])
        """
        return np.asarray(self.C @ X.T).T + np.asarray(self.D @ U.T).T + self.b_y

    def predict(self, U, **options) -> np.ndarray:
        """Linear outputs Ŷ (m, q) at the equilibrium (logits for a classifier).

        Parameters
        ----------
        U : array_like, shape (m, p)
            Inputs, one row per sample.
        **options
            Passed to `equilibrium` (method, tol, ...).

        Returns
        -------
        ndarray, shape (m, q)
            The outputs Ŷ = XCᵀ + UDᵀ + b_y at the equilibrium states X.

        Raises
        ------
        ValueError
            If U has the wrong shape or non-finite entries.

        Examples
        --------
        >>> import numpy as np
        >>> from implicit_cvx import ImplicitModel
        >>> model = ImplicitModel(A=[[0, 0.5], [0, 0]], B=[[1, -1], [0, 1]], C=np.eye(2),
        ...                       D=np.zeros((2, 2)), b_x=[0, 0.1])
        >>> model.predict([[1.0, 0.0], [0.0, 1.0]]).round(3)
        array([[1.05, 0.1 ],
               [0.  , 1.1 ]])
        """
        U = self.check_inputs(U)
        return self.output(self.equilibrium(U, **options), U)

    # ---- copies ------------------------------------------------------------------------------
    def with_weights(self, **changes) -> ImplicitModel:
        """A new model with some of A, B, C, D, b_x, b_y (or the activation) replaced.

        Everything else, metadata included, is copied.

        Parameters
        ----------
        **changes
            New values by name: A, B, C, D, b_x, b_y, activation.

        Returns
        -------
        ImplicitModel
            The new model.

        Raises
        ------
        ValueError
            If a name is not one of the fields above.

        Examples
        --------
        >>> import numpy as np
        >>> from implicit_cvx import ImplicitModel
        >>> model = ImplicitModel(A=[[0, 0.5], [0, 0]], B=[[1, -1], [0, 1]], C=np.eye(2),
        ...                       D=np.zeros((2, 2)), b_x=[0, 0.1])
        >>> model.with_weights(b_x=[0.0, 0.0]).predict([[0.0, 1.0]])
        array([[0., 1.]])
        """
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
        """An independent deep copy (arrays and metadata).

        Returns
        -------
        ImplicitModel
            The copy.

        Examples
        --------
        >>> import numpy as np
        >>> from implicit_cvx import ImplicitModel
        >>> model = ImplicitModel(A=[[0, 0.5], [0, 0]], B=[[1, -1], [0, 1]], C=np.eye(2),
        ...                       D=np.zeros((2, 2)), b_x=[0, 0.1])
        >>> twin = model.copy()
        >>> twin.A[0, 1] = 0.0
        >>> float(model.A[0, 1])
        0.5
        """
        return self.with_weights()

    # ---- persistence -------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write one compressed .npz (arrays + JSON header, no pickles) atomically.

        ".npz" is appended if missing.

        Parameters
        ----------
        path : str or Path
            The file to write; its directory must exist.

        Returns
        -------
        Path
            The path written.

        Raises
        ------
        ValueError
            If the metadata cannot be stored as JSON.
        FileNotFoundError
            If the directory does not exist.

        Examples
        --------
        >>> import tempfile
        >>> from pathlib import Path
        >>> import numpy as np
        >>> from implicit_cvx import ImplicitModel
        >>> model = ImplicitModel(A=[[0, 0.5], [0, 0]], B=[[1, -1], [0, 1]], C=np.eye(2),
        ...                       D=np.zeros((2, 2)), b_x=[0, 0.1])
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = model.save(Path(tmp) / "model")
        ...     print(path.name, ImplicitModel.load(path).n_states)
        model.npz 2
        """
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
        check_metadata(json.loads(text)["metadata"], self, f"cannot save model to {path}: ")
        arrays[_HEADER_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        if not path.parent.is_dir():
            raise FileNotFoundError(f"cannot save model to {path}: directory {path.parent} does not exist")
        write_npz_atomic(path, arrays)
        return path

    @classmethod
    def load(cls, path) -> ImplicitModel:
        """Read a model written by `save`.

        Any other, damaged or inconsistent file gives a ValueError naming it and the field. A stored
        preprocessing (format 1) is folded in.

        Parameters
        ----------
        path : str or Path
            The .npz file.

        Returns
        -------
        ImplicitModel
            The model, taking raw inputs.

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        ValueError
            If the file is not a valid model file (naming the field).

        Examples
        --------
        >>> import tempfile
        >>> from pathlib import Path
        >>> import numpy as np
        >>> from implicit_cvx import ImplicitModel
        >>> model = ImplicitModel(A=[[0, 0.5], [0, 0]], B=[[1, -1], [0, 1]], C=np.eye(2),
        ...                       D=np.zeros((2, 2)), b_x=[0, 0.1])
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     loaded = ImplicitModel.load(model.save(Path(tmp) / "model.npz"))
        >>> bool(np.array_equal(loaded.A, model.A))
        True
        """
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
        unknown = sorted(set(arrays) - _known_arrays(header["storage"]))
        if unknown:
            raise ValueError(f"{path}: unexpected array(s) {unknown}; the file was not written by "
                             "ImplicitModel.save")
        try:
            model = cls(**parts, b_x=arrays["b_x"], b_y=arrays["b_y"],
                        activation=header["activation"], metadata=header["metadata"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: inconsistent model file: {exc}") from None
        check_metadata(model.metadata, model, f"{path}: ")
        return _fold_stored_preprocessing(model, header["format_version"])

    # ---- summaries ---------------------------------------------------------------------------
    def describe(self) -> dict:
        """Sizes, sparsity, ‖A‖_∞, λ_pf(|A|), well-posedness and activation: `implicit-cvx info`.

        Returns
        -------
        dict
            JSON-ready summary: n_states, n_inputs, n_outputs, shapes, sparse, n_params, nnz,
            nnz_fraction, inf_norm_A, pf_eigenvalue, well_posed, wellposedness, activation, kappa,
            method, classes, inputs, ...

        Examples
        --------
        >>> import numpy as np
        >>> from implicit_cvx import ImplicitModel
        >>> model = ImplicitModel(A=[[0, 0.5], [0, 0]], B=[[1, -1], [0, 1]], C=np.eye(2),
        ...                       D=np.zeros((2, 2)), b_x=[0, 0.1])
        >>> info = model.describe()
        >>> info["inf_norm_A"], info["pf_eigenvalue"], info["well_posed"]
        (0.5, 0.0, True)
        """
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
            "inputs": describe_input_record(self.metadata.get("input")) or "as given (no transform)",
        }

    def __repr__(self) -> str:
        acts = "+".join(f"{act.name}[{b - a}]" for act, a, b in self.activation.blocks)
        sparse = ", sparse" if any(sp.issparse(getattr(self, k)) for k in _WEIGHTS) else ""
        return (
            f"ImplicitModel(n_states={self.n_states}, n_inputs={self.n_inputs}, "
            f"n_outputs={self.n_outputs}, activation={acts}, nnz={self.nnz}/{self.n_params}"
            f"{sparse})"
        )
