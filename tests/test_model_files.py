"""Crafted model files, one per defect: each ends in a ValueError naming the file and the field
(never another exception type, a hang, a huge allocation or a silent load); format-1 files with a
stored preprocessing are folded on load; converted models without κ stay valid."""

import io
import json
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from implicit_cvx.convert import from_layers
from implicit_cvx.data import preprocess
from implicit_cvx.model import ImplicitModel

N, P, Q = 4, 3, 2
KAPPA = 0.9


def _model(classes=("a", "b"), q=Q, sparse=False, **meta):
    rng = np.random.default_rng(0)
    A = rng.normal(size=(N, N))
    A *= 0.5 * KAPPA / np.abs(A).sum(axis=1).max()
    B = sp.csr_matrix(rng.normal(size=(N, P))) if sparse else rng.normal(size=(N, P))
    metadata = {"kappa": KAPPA, "classes": list(classes) if classes else None, **meta}
    return ImplicitModel(A, B, rng.normal(size=(q, N)), rng.normal(size=(q, P)), rng.normal(size=N),
                         rng.normal(size=q), metadata=metadata)


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(array), allow_pickle=True)
    return buf.getvalue()


def _members(path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _write(path, members: dict, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, raw in members.items():
            zf.writestr(name, raw)


def _edit(path, *, header=None, arrays=None, members=None):
    """Rewrite a saved model: header fields (JSON, NaN allowed), arrays (None deletes), raw members."""
    files = _members(path)
    head = json.loads(np.lib.format.read_array(io.BytesIO(files["__header__.npy"])).tobytes())
    for key, value in (header or {}).items():
        if key.startswith("metadata."):
            head["metadata"][key.split(".", 1)[1]] = value
        else:
            head[key] = value
    files["__header__.npy"] = _npy(np.frombuffer(json.dumps(head).encode(), dtype=np.uint8))
    for name, value in (arrays or {}).items():
        files.pop(f"{name}.npy") if value is None else files.__setitem__(f"{name}.npy", _npy(value))
    files.update(members or {})
    _write(path, files)
    return path


def _huge_header(shape, dtype="<f8") -> bytes:
    """A .npy header declaring `shape` followed by a few bytes of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 64


def _lying_zip(path, model_path):
    """A valid model archive whose directory claims ~4 GB uncompressed for member A.npy."""
    files = _members(model_path)
    files["A.npy"] = _huge_header((20000, 20000))  # 3.2 GB declared
    _write(path, files)
    raw = bytearray(path.read_bytes())
    central = raw.find(b"PK\x01\x02")  # central directory entries
    while central != -1:
        name_len = struct.unpack_from("<H", raw, central + 28)[0]
        if raw[central + 46:central + 46 + name_len] == b"A.npy":
            struct.pack_into("<I", raw, central + 24, 0xFFFFFFF0)  # uncompressed size
        central = raw.find(b"PK\x01\x02", central + 4)
    path.write_bytes(bytes(raw))
    return path


CASES = {
    # κ and the ball
    "kappa above one": (dict(header={"metadata.kappa": 1.5}), r"field 'kappa' = 1\.5 is not allowed"),
    "kappa zero": (dict(header={"metadata.kappa": 0}), r"field 'kappa' = 0 is not allowed"),
    "kappa negative": (dict(header={"metadata.kappa": -0.5}), r"field 'kappa' = -0\.5"),
    "kappa text": (dict(header={"metadata.kappa": "abc"}), r"field 'kappa' = 'abc'"),
    "kappa NaN": (dict(header={"metadata.kappa": float("nan")}), r"field 'kappa' = nan"),
    "kappa bool": (dict(header={"metadata.kappa": True}), r"field 'kappa' = True"),
    "A outside the ball": ("ball", r"field 'A' has ‖A‖_∞ = 0\.99\d* > kappa = 0\.9"),
    # arrays: real, finite, shaped
    "complex A": (dict(arrays={"A": np.eye(N) * (0.1 + 0.2j)}), r"member A\.npy holds complex values"),
    "NaN in A": ("nan", r"inconsistent model file: A .*contains NaN or inf"),
    "inf in b_x": (dict(arrays={"b_x": np.array([0, np.inf, 0, 0])}), r"b_x .*contains NaN or inf"),
    "text array": (dict(arrays={"b_y": np.array(["x", "y"])}), r"member b_y\.npy holds dtype <U1"),
    "B wrong shape": (dict(arrays={"B": np.ones((N + 1, P))}), r"inconsistent model file: B has shape"),
    "A not square": (dict(arrays={"A": np.zeros((N, N + 1))}), "A must be square"),
    "b_y wrong length": (dict(arrays={"b_y": np.ones(Q + 1)}), r"b_y has shape \(3,\)"),
    "missing C": (dict(arrays={"C": None}), r"\['C'\] missing"),
    "unexpected array": (dict(arrays={"extra": np.ones(2)}), r"unexpected array\(s\) \['extra'\]"),
    "csr with float indices": ("csr", "sparse matrix B is malformed"),
    # labels, task, activation, transforms
    "three labels, ten outputs": ("labels", r"field 'classes' has 3 labels but the model has 10 outputs"),
    "one logit, three labels": ("one_logit", r"field 'classes' has 3 labels but the model has 1 outputs"),
    "repeated label": (dict(header={"metadata.classes": ["a", "a"]}), "field 'classes' repeats a label"),
    "labels not a list": (dict(header={"metadata.classes": {"a": 1}}), "field 'classes' must be a list"),
    "unknown task": (dict(header={"metadata.task": "banana"}), "field 'task' = 'banana'"),
    "activation too short": (dict(header={"activation": [[{"name": "relu"}, 2]]}),
                             "cover 2 states but the model has 4"),
    "expansive activation": (dict(header={"activation": {"name": "leaky_relu", "alpha": 3.0}}),
                             "expansive"),
    "preprocessing of the wrong length": (
        dict(header={"metadata.preprocessing": {"kind": "scale", "offset": [0.0] * 5, "scale": 1.0}}),
        r"field 'preprocessing': transform offset has 5 entries but the model takes 3 inputs"),
    "preprocessing beside a folded transform": (
        dict(header={"metadata.input": {"transform": {"offset": 0.0, "scale": 2.0}},
                     "metadata.preprocessing": {"kind": "scale", "offset": 0.0, "scale": 2.0}}),
        "field 'preprocessing'.*ambiguous"),
    "domain of the wrong length": (
        dict(header={"metadata.input": {"domain": {"low": [0.0], "high": [1.0]}}}),
        r"field 'input': metadata 'input\.domain' must be"),
    # the archive itself
    "member not .npy": (dict(members={"notes.txt": b"hello"}), r"member\(s\) \['notes\.txt'\] are not"),
    "member in a folder": (dict(members={"dir/A.npy": _npy(np.eye(N))}), r"\['dir/A\.npy'\]"),
    "bad .npy magic": (dict(members={"b_x.npy": b"NOTNUMPY" + b"\0" * 40}), r"b_x\.npy has a malformed \.npy header"),
    "object array": (dict(members={"b_x.npy": _npy(np.array([None, 1], dtype=object))}),
                     r"b_x\.npy holds an object array"),
    "320 GB declared in 17 KB": (dict(members={"A.npy": _huge_header((200000, 200000))}),
                                 r"A\.npy declares an array of shape \(200000, 200000\) \(320000000000 bytes\)"),
    "truncated data": (dict(members={"b_x.npy": _npy(np.ones(N))[:-8]}), r"b_x\.npy declares"),
    "zip lies about a member's size": ("lying_zip", r"A\.npy declares an array.*corrupt or crafted"),
    "header too new": (dict(header={"format_version": 3}), "version 3.*upgrade"),
    "metadata not an object": (dict(header={"metadata": [1, 2]}), r"field 'metadata' must be a JSON object"),
    "metadata null": (dict(header={"metadata": None}), r"field 'metadata' must be a JSON object"),
    "provenance not an object": (dict(header={"metadata.provenance": "me"}),
                                 r"field 'metadata\.provenance' must be a JSON object"),
    "bzip2 member (unbounded ratio)": ("bzip2", r"\['A\.npy'\] are encrypted or use a compression other"),
    "encrypted member": ("encrypted", r"\['A\.npy'\] are encrypted"),
}


def _craft(tmp_path, kind):
    path = _model().save(tmp_path / "m.npz")
    if isinstance(kind, dict):
        return _edit(path, **kind)
    if kind == "ball":
        A = np.zeros((N, N))
        A[0, :2] = [0.5, 0.49]  # ‖A‖_∞ = 0.99 > κ = 0.9
        return _edit(path, arrays={"A": A})
    if kind == "nan":
        A = np.zeros((N, N))
        A[1, 1] = np.nan
        return _edit(path, arrays={"A": A})
    if kind == "csr":
        path = _model(sparse=True).save(tmp_path / "m.npz")
        return _edit(path, arrays={"B__csr_indices": np.zeros(N * P, dtype=float)})
    if kind == "labels":
        path = _model(classes=None, q=10).save(tmp_path / "m.npz")
        return _edit(path, header={"metadata.classes": ["a", "b", "c"]})
    if kind == "one_logit":
        path = _model(classes=("a", "b"), q=1).save(tmp_path / "m.npz")
        return _edit(path, header={"metadata.classes": ["a", "b", "c"]})
    if kind == "bzip2":
        files = _members(path)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, raw in files.items():
                zf.writestr(name, raw, zipfile.ZIP_BZIP2 if name == "A.npy" else None)
        return path
    if kind == "encrypted":  # set the "encrypted" flag of A.npy in the central directory
        raw = bytearray(path.read_bytes())
        at = raw.find(b"PK\x01\x02")
        while raw[at + 46:at + 46 + struct.unpack_from("<H", raw, at + 28)[0]] != b"A.npy":
            at = raw.find(b"PK\x01\x02", at + 4)
        raw[at + 8] |= 0x1
        path.write_bytes(bytes(raw))
        return path
    return _lying_zip(tmp_path / "lie.npz", path)


@pytest.mark.parametrize("case", list(CASES))
def test_crafted_file_gives_a_clear_error(tmp_path, case):
    kind, message = CASES[case]
    path = _craft(tmp_path, kind)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"(m|lie)\.npz: .*" + message):
            ImplicitModel.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6, f"{case}: {peak / 1e6:.0f} MB allocated while refusing the file"


def test_the_320_gb_file_is_small():
    assert len(_huge_header((200000, 200000))) < 17_000


def test_refusals_at_save_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="cannot save model .*field 'classes' has 3 labels"):
        _model(classes=("a", "b", "c")).save(tmp_path / "m.npz")
    model = _model()
    model.metadata["kappa"] = 0.1
    with pytest.raises(ValueError, match=r"cannot save model .*‖A‖_∞ = .* > kappa = 0\.1"):
        model.save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def test_valid_variants_load(tmp_path):
    one_logit = ImplicitModel.load(_model(classes=(0, 1), q=1).save(tmp_path / "binary.npz"))
    assert one_logit.metadata["classes"] == [0, 1]
    regression = ImplicitModel.load(_model(classes=None, task="regression").save(tmp_path / "r.npz"))
    assert regression.metadata["classes"] is None
    # a converted network: no κ ("not trained in a ball"), so no ball check even with ‖A‖_∞ > 1
    rng = np.random.default_rng(1)
    net = from_layers([rng.normal(size=(5, P)) * 3, rng.normal(size=(5, 5)) * 3, rng.normal(size=(Q, 5))])
    assert np.abs(net.A).sum(axis=1).max() > 1
    loaded = ImplicitModel.load(net.save(tmp_path / "net.npz"))
    assert loaded.metadata["kappa"] is None
    np.testing.assert_array_equal(loaded.predict(np.ones((2, P))), net.predict(np.ones((2, P))))


def test_format_1_file_with_stored_preprocessing_is_folded_on_load(tmp_path):
    """A format-1 model took preprocessed inputs; loaded now, it takes raw inputs and says so."""
    spec = {"kind": "standardize", "offset": [10.0, -3.0, 200.0], "scale": [0.5, 2.0, 0.01]}
    old = _model(preprocessing=spec)
    path = _edit(old.save(tmp_path / "m.npz"), header={"format_version": 1})
    X_raw = np.random.default_rng(2).normal(size=(6, P)) * 20 + 50
    loaded = ImplicitModel.load(path)
    want = old.predict(preprocess(spec, X_raw), tol=1e-13)
    got = loaded.predict(X_raw, tol=1e-13)
    assert np.max(np.abs(got - want)) <= 1e-12 * np.max(np.abs(want))
    assert loaded.metadata["preprocessing"] == {"kind": "none"}
    note = loaded.metadata["input"]["note"]
    assert "format-1 file" in note and "folded into B, D, b_x, b_y on load" in note
    plain = ImplicitModel.load(_edit(_model().save(tmp_path / "p.npz"), header={"format_version": 1}))
    np.testing.assert_array_equal(plain.B, _model().B)  # nothing stored, nothing folded
    assert "input" not in plain.metadata
    # saved again (format 2), it stays folded: loading does not fold twice
    again = ImplicitModel.load(loaded.save(tmp_path / "again.npz"))
    np.testing.assert_array_equal(again.B, loaded.B)
    np.testing.assert_array_equal(again.b_x, loaded.b_x)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_bytes_give_a_value_error_or_a_valid_model(tmp_path, data):
    """Any corruption of a valid file: a ValueError naming the file, or a model that validates."""
    raw = bytearray((tmp_path / "base.npz").read_bytes() if (tmp_path / "base.npz").exists()
                    else _model().save(tmp_path / "base.npz").read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    path = tmp_path / "damaged.npz"
    path.write_bytes(bytes(raw))
    try:
        model = ImplicitModel.load(path)
    except ValueError as exc:
        assert "damaged.npz" in str(exc)
    else:
        assert np.all(np.isfinite(model.A)) and model.n_inputs == P
