"""ImplicitModel: construction checks, save/load round trips, refusal of bad files, copies."""

import json
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp

from implicit_cvx.activations import ActivationMap
from implicit_cvx.files import package_versions
from implicit_cvx.model import FORMAT_NAME, FORMAT_VERSION, ImplicitModel

N, P, Q = 5, 3, 2
METADATA = {
    "kappa": 0.95,
    "preprocessing": {"kind": "none"},
    "input": {
        "transform": {"offset": [0.5, 0.0, -1.0], "scale": [2.0, 1.0, 0.25], "steps": ["scale"]},
        "domain": {"low": [0.0, None, -2.0], "high": [1.0, None, 3.0]},
        "train_range": None,
    },
    "classes": ["cat", "dog"],
    "method": "sim",
    "provenance": {"config": {"lambda": 0.01}, "seed": 7},
}
PER_BLOCK = [("relu", 2), ({"name": "leaky_relu", "alpha": 0.1}, 2), ("tanh", 1)]


def _model(sparse=False, activation="relu", metadata=METADATA, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(N, N)) * (rng.random((N, N)) < 0.5)
    A *= 0.9 / np.abs(A).sum(axis=1).max()  # inside the κ = 0.95 ball the metadata claims
    B, C, D = rng.normal(size=(N, P)), rng.normal(size=(Q, N)), rng.normal(size=(Q, P))
    if sparse:
        A, B = sp.csr_matrix(A), sp.random(N, P, density=0.4, random_state=seed, format="csr")
    return ImplicitModel(A, B, C, D, rng.normal(size=N), rng.normal(size=Q), activation, metadata)


def _assert_same_arrays(m1, m2):
    for name in ("A", "B", "C", "D"):
        M1, M2 = getattr(m1, name), getattr(m2, name)
        assert sp.issparse(M1) == sp.issparse(M2), name
        if sp.issparse(M1):
            assert M1.shape == M2.shape and (M1 != M2).nnz == 0, name
        else:
            assert np.array_equal(M1, M2), name
    assert np.array_equal(m1.b_x, m2.b_x) and np.array_equal(m1.b_y, m2.b_y)


def _rewrite(path, **changes):
    """Rewrite a saved model's arrays (None deletes one); `header` edits the JSON header."""
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(arrays["__header__"].tobytes())
    header.update(changes.pop("header", {}))
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    for key, value in changes.items():
        arrays.pop(key) if value is None else arrays.__setitem__(key, value)
    np.savez(path, **arrays)


# ---- round trips -------------------------------------------------------------------------------
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("activation", ["relu", PER_BLOCK])
def test_roundtrip_exact(tmp_path, sparse, activation):
    model = _model(sparse, activation)
    written = model.save(tmp_path / "m.npz")
    loaded = ImplicitModel.load(written)
    _assert_same_arrays(model, loaded)
    assert loaded.activation == model.activation
    expected = {
        **METADATA,
        "provenance": {**METADATA["provenance"], "versions": package_versions()},
    }
    assert loaded.metadata == expected
    assert loaded.metadata["provenance"]["versions"]["numpy"] == np.__version__
    assert model.metadata == METADATA  # saving does not mutate the model


def test_resave_is_stable_and_keeps_versions(tmp_path):
    versions = {"implicit_cvx": "0.0.1", "numpy": "1.0"}
    model = _model(metadata={"provenance": {"versions": versions}})
    once = ImplicitModel.load(model.save(tmp_path / "a.npz"))
    twice = ImplicitModel.load(once.save(tmp_path / "b.npz"))
    assert twice.metadata == once.metadata
    assert once.metadata["provenance"] == {"config": None, "seed": None, "versions": versions}
    assert once.metadata["kappa"] is None and once.metadata["classes"] is None
    assert once.metadata["preprocessing"] == {"kind": "none"} and once.metadata["method"] is None


def test_save_appends_suffix_overwrites_and_leaves_no_temp_files(tmp_path):
    path = _model().save(tmp_path / "model")
    assert path == tmp_path / "model.npz" and path.is_file()
    _model(seed=1).save(path)  # overwrite in place
    _assert_same_arrays(ImplicitModel.load(path), _model(seed=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def test_save_converts_numpy_metadata_and_refuses_non_json(tmp_path):
    model = _model(metadata={"kappa": np.float64(0.9), "classes": np.array([3, 5])})
    loaded = ImplicitModel.load(model.save(tmp_path / "m.npz"))
    assert loaded.metadata["kappa"] == 0.9 and loaded.metadata["classes"] == [3, 5]
    with pytest.raises(ValueError, match="JSON"):
        _model(metadata={"config": object()}).save(tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _model().save(tmp_path / "missing_dir" / "m.npz")


def test_header_is_uint8_json_not_pickle(tmp_path):
    path = _model(activation=PER_BLOCK).save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as npz:
        raw = npz["__header__"]
        assert all(npz[k].dtype != object for k in npz.files)
    assert raw.dtype == np.uint8
    header = json.loads(raw.tobytes())
    assert header["format"] == FORMAT_NAME and header["format_version"] == FORMAT_VERSION == 2
    assert header["activation"] == [
        [{"name": "relu"}, 2],
        [{"name": "leaky_relu", "alpha": 0.1}, 2],
        [{"name": "tanh"}, 1],
    ]


# ---- refusing bad files ------------------------------------------------------------------------
_UNPICKLED = []


def _mark():
    _UNPICKLED.append(True)


class _Bomb:
    def __reduce__(self):
        return (_mark, ())


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        ImplicitModel.load(tmp_path / "nope.npz")


@pytest.mark.parametrize("damage", ["truncate", "flip", "random", "empty"])
def test_damaged_files_give_clear_errors(tmp_path, damage):
    path = _model().save(tmp_path / "m.npz")
    raw = path.read_bytes()
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        mid = len(raw) // 3
        raw = raw[:mid] + bytes(b ^ 0xFF for b in raw[mid : mid + 16]) + raw[mid + 16 :]
    elif damage == "random":
        raw = np.random.default_rng(0).bytes(2000)
    else:
        raw = b""
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=r"m\.npz.*(corrupt|malformed|unreadable|missing)"):
        ImplicitModel.load(path)


def test_foreign_npz_and_npy(tmp_path):
    np.savez(tmp_path / "other.npz", weights=np.ones(3))
    with pytest.raises(
        ValueError, match=r"other\.npz.*not written by ImplicitModel\.save.*weights"
    ):
        ImplicitModel.load(tmp_path / "other.npz")
    np.save(tmp_path / "single.npy", np.ones(3))
    with pytest.raises(ValueError, match=r"single\.npy.*not an \.npz archive"):
        ImplicitModel.load(tmp_path / "single.npy")


def test_object_arrays_are_never_unpickled(tmp_path):
    path = _model().save(tmp_path / "m.npz")
    _rewrite(path, extra=np.array([_Bomb()], dtype=object))
    with pytest.raises(ValueError, match=r"m\.npz.*extra\.npy holds an object array"):
        ImplicitModel.load(path)
    np.savez(tmp_path / "o.npz", __header__=np.array([_Bomb()], dtype=object))
    with pytest.raises(ValueError, match=r"o\.npz.*corrupt"):
        ImplicitModel.load(tmp_path / "o.npz")
    assert _UNPICKLED == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"header": {"format_version": 3}}, r"version 3.*upgrade implicit_cvx"),
        ({"header": {"format_version": "1"}}, "invalid format version"),
        ({"header": {"format": "other.thing"}}, r"'other\.thing' is not 'implicit_cvx\.model'"),
        ({"header": {"storage": {"A": "coo"}}}, "unknown storage 'coo' for matrix A"),
        ({"header": {"activation": "gelu"}}, "inconsistent.*gelu.*not componentwise non-expansive"),
        ({"B": None}, r"\['B'\] missing"),
        ({"b_y": None}, r"\['b_y'\] missing"),
        ({"B": np.ones((N + 1, P))}, r"inconsistent.*B has shape \(6, 3\)"),
        ({"b_x": np.ones(N - 1)}, r"inconsistent.*b_x has shape \(4,\)"),
        ({"__header__": np.zeros(3)}, "header is unreadable.*uint8"),
        (
            {"__header__": np.frombuffer(b"[1, 2]", dtype=np.uint8)},
            "header is unreadable.*JSON object",
        ),
        ({"__header__": np.frombuffer(b"{not json", dtype=np.uint8)}, "header is unreadable"),
    ],
)
def test_bad_contents_named(tmp_path, changes, message):
    path = _model().save(tmp_path / "m.npz")
    _rewrite(path, **changes)
    with pytest.raises(ValueError, match=r"m\.npz: .*" + message):
        ImplicitModel.load(path)


def test_malformed_sparse_matrix(tmp_path):
    path = _model(sparse=True).save(tmp_path / "m.npz")
    with np.load(path) as npz:
        indices = npz["A__csr_indices"].copy()
    indices[0] = N + 10
    _rewrite(path, A__csr_indices=indices)
    with pytest.raises(ValueError, match=r"m\.npz: sparse matrix A is malformed"):
        ImplicitModel.load(path)


# ---- construction checks -----------------------------------------------------------------------
def _parts():
    rng = np.random.default_rng(1)
    return {
        "A": rng.normal(size=(N, N)),
        "B": rng.normal(size=(N, P)),
        "C": rng.normal(size=(Q, N)),
        "D": rng.normal(size=(Q, P)),
        "b_x": rng.normal(size=N),
        "b_y": rng.normal(size=Q),
    }


@pytest.mark.parametrize(
    ("name", "shape", "message"),
    [
        ("A", (N, N + 1), r"A must be square.*\(5, 6\)"),
        ("A", (N,), r"A must be a 2-D matrix, got shape \(5,\)"),
        ("B", (N + 1, P), r"B has shape \(6, 3\), expected \(5, \?\)"),
        ("C", (Q, N - 1), r"C has shape \(2, 4\), expected \(\?, 5\)"),
        ("D", (Q, P + 1), r"D has shape \(2, 4\), expected \(2, 3\)"),
        ("b_x", (N + 2,), r"b_x has shape \(7,\), expected \(5,\)"),
        ("b_y", (Q, 1), r"b_y has shape \(2, 1\), expected \(2,\)"),
    ],
)
def test_wrong_shapes_named(name, shape, message):
    parts = _parts()
    parts[name] = np.ones(shape)
    with pytest.raises(ValueError, match=message):
        ImplicitModel(**parts)


@pytest.mark.parametrize("name", ["A", "B", "C", "D", "b_x", "b_y"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_named(name, bad):
    parts = _parts()
    parts[name] = parts[name].copy()
    parts[name].flat[0] = bad
    with pytest.raises(ValueError, match=f"{name} .*contains NaN or inf"):
        ImplicitModel(**parts)
    if name in ("A", "B"):
        parts[name] = sp.csr_matrix(parts[name])
        with pytest.raises(ValueError, match=f"{name} .*contains NaN or inf"):
            ImplicitModel(**parts)


@pytest.mark.parametrize(
    ("activation", "message"),
    [
        ("gelu", "not componentwise non-expansive"),
        ("softplus2", "unknown activation 'softplus2'"),
        (np.tanh, "custom callables are refused"),
        ({"name": "leaky_relu", "alpha": 2.0}, "expansive"),
        ([("relu", 2), ("tanh", 2)], "cover 4 states but the model has 5"),
    ],
)
def test_bad_activations_refused(activation, message):
    with pytest.raises(ValueError, match=message):
        ImplicitModel(**_parts(), activation=activation)


# ---- copies and summaries ----------------------------------------------------------------------
@pytest.mark.parametrize("sparse", [False, True])
def test_copy_is_independent(sparse):
    model = _model(sparse, PER_BLOCK)
    twin = model.copy()
    _assert_same_arrays(model, twin)
    assert twin.activation == model.activation and twin.metadata == model.metadata

    def entries(M):
        return M.data if sparse else M.reshape(-1)  # views of the stored values

    entries(twin.A)[0] += 1.0
    twin.b_x[0] += 1.0
    twin.metadata["provenance"]["seed"] = 99
    assert entries(model.A)[0] != entries(twin.A)[0]
    assert model.b_x[0] != twin.b_x[0] and model.metadata == METADATA


def test_with_weights():
    model = _model(activation=PER_BLOCK)
    new_C = np.zeros((Q, N))
    changed = model.with_weights(C=new_C, b_y=np.ones(Q))
    assert np.array_equal(changed.C, new_C) and np.array_equal(changed.b_y, np.ones(Q))
    assert np.array_equal(changed.A, model.A) and changed.A is not model.A
    assert changed.activation == model.activation and changed.metadata == model.metadata
    smaller = model.with_weights(
        A=np.zeros((2, 2)), B=np.ones((2, P)), C=np.ones((Q, 2)), b_x=np.zeros(2), activation="tanh"
    )
    assert smaller.n_states == 2 and smaller.activation.uniform.name == "tanh"
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['E'\]"):
        model.with_weights(E=1)
    with pytest.raises(ValueError, match="B has shape"):
        model.with_weights(B=np.ones((N + 1, P)))


def test_describe_and_repr():
    model = _model(sparse=True, activation=PER_BLOCK)
    info = model.describe()
    dense_A = model.A.toarray()
    assert info["inf_norm_A"] == pytest.approx(np.abs(dense_A).sum(axis=1).max(), rel=1e-14)
    assert info["n_states"] == N and info["shapes"]["B"] == [N, P] and info["sparse"]["A"]
    assert info["nnz"] == model.nnz and info["n_params"] == N * N + N * P + Q * N + Q * P + N + Q
    assert info["activation"] == model.activation.to_json() and info["kappa"] == 0.95
    assert info["well_posed"] or info["pf_eigenvalue"] >= 1  # Thm 2.2
    assert info["classes"] == ["cat", "dog"]
    lam = np.abs(np.linalg.eigvals(np.abs(dense_A))).max()
    assert info["pf_eigenvalue"] == pytest.approx(lam, rel=1e-8)
    json.dumps(info)  # the CLI prints it as JSON
    text = repr(model)
    assert "n_states=5" in text and "relu[2]+leaky_relu[2]+tanh[1]" in text and "sparse" in text


def test_activation_map_json_roundtrip_matches_model():
    amap = ActivationMap.build(PER_BLOCK, N)
    assert ActivationMap.from_json(json.loads(json.dumps(amap.to_json())), N) == amap


def test_zipfile_is_standard(tmp_path):
    path = _model().save(tmp_path / "m.npz")
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        assert {"A.npy", "B.npy", "__header__.npy"} <= set(zf.namelist())
