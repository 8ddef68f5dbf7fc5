"""Converters (paper §3) against direct forward passes of the original networks."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler
from threadpoolctl import threadpool_limits

from implicit_cvx.convert import (
    Conv2d,
    cascade,
    conv2d_matrix,
    from_conv2d,
    from_layers,
    from_sklearn,
    residual_block,
    stack_parallel,
)
from implicit_cvx.model import ImplicitModel

TOL = 1e-10
RELU = lambda z: np.maximum(z, 0.0)  # noqa: E731
LEAKY = lambda z: np.where(z > 0, z, 0.1 * z)  # noqa: E731
SIGMOID = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731


def _dense(M):
    return M.toarray() if sp.issparse(M) else np.asarray(M)


def _max_diff(a, b) -> float:
    assert a.shape == b.shape
    return float(np.max(np.abs(a - b)))


def _mlp(sizes, seed):
    rng = np.random.default_rng(seed)
    Ws = [rng.normal(size=(o, i)) / np.sqrt(i) for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    bs = [rng.normal(size=o) for o in sizes[1:]]
    return Ws, bs


def _forward(Ws, bs, acts, U):
    """Direct forward pass h ← φ_l(h W_lᵀ + b_l); the last layer is linear."""
    H = U
    for W, b, act in zip(Ws[:-1], bs[:-1], acts, strict=True):
        H = act(H @ _dense(W).T + b)
    return H @ _dense(Ws[-1]).T + bs[-1]


def _conv_reference(x, weight, stride, padding):
    """Cross-correlation by explicit loops over output positions (torch.nn.Conv2d semantics)."""
    (sh, sw), (ph, pw) = stride, padding
    out_c, _, kh, kw = weight.shape
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw)))
    Ho, Wo = (xp.shape[1] - kh) // sh + 1, (xp.shape[2] - kw) // sw + 1
    out = np.zeros((out_c, Ho, Wo))
    for o in range(out_c):
        for i in range(Ho):
            for j in range(Wo):
                out[o, i, j] = np.sum(weight[o] * xp[:, i * sh : i * sh + kh, j * sw : j * sw + kw])
    return out


# ---- feed-forward ------------------------------------------------------------------------------
def test_from_layers_matches_forward_pass_and_layout():
    sizes = [6, 5, 4, 3, 2]
    Ws, bs = _mlp(sizes, 0)
    acts = ["relu", "tanh", {"name": "leaky_relu", "alpha": 0.1}]
    model = from_layers(Ws, bs, activation=acts)
    U = np.random.default_rng(1).normal(size=(40, 6))
    assert _max_diff(model.predict(U), _forward(Ws, bs, [RELU, np.tanh, LEAKY], U)) <= TOL
    # layout: x = (x_3, x_2, x_1) with sizes (3, 4, 5)
    A = model.A
    assert np.array_equal(A[0:3, 3:7], Ws[2]) and np.array_equal(A[3:7, 7:12], Ws[1])
    assert np.count_nonzero(A) == Ws[1].size + Ws[2].size and not np.tril(A).any()
    assert np.array_equal(model.B[7:], Ws[0]) and not model.B[:7].any()
    assert np.array_equal(model.C[:, :3], Ws[3]) and not model.C[:, 3:].any()
    assert not model.D.any() and np.array_equal(model.b_y, bs[3])
    assert np.array_equal(model.b_x, np.concatenate([bs[2], bs[1], bs[0]]))
    names = [(act.name, b - a) for act, a, b in model.activation.blocks]
    assert names == [("leaky_relu", 3), ("tanh", 4), ("relu", 5)]


def test_from_layers_uniform_output_activation_and_sparse():
    Ws, bs = _mlp([4, 6, 3], 2)
    U = np.random.default_rng(3).normal(size=(25, 4))
    uniform = from_layers(Ws, bs)
    assert uniform.activation.uniform.name == "relu"
    squashed = from_layers(Ws, bs, output_activation="sigmoid")
    assert squashed.n_states == 9 and squashed.activation.blocks[0][0].name == "sigmoid"
    assert _max_diff(squashed.predict(U), SIGMOID(_forward(Ws, bs, [RELU], U))) <= TOL
    sparse = from_layers([sp.csr_matrix(Ws[0]), Ws[1]], bs)
    assert all(sp.issparse(M) for M in (sparse.A, sparse.B, sparse.C, sparse.D))
    assert _max_diff(sparse.predict(U), uniform.predict(U)) <= TOL


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"weights": [np.ones((3, 4)), np.ones((2, 5))]},
            r"layer 1 has shape \(2, 5\).*layer 0 has 3 outputs",
        ),
        ({"weights": [np.ones((3, 4))]}, "at least two layers"),
        (
            {"weights": [np.ones((3, 4)), np.ones((2, 3))], "biases": [None]},
            "1 biases for 2 weight",
        ),
        (
            {"weights": [np.ones((3, 4)), np.ones((2, 3))], "activation": ["relu", "tanh"]},
            "2 activations for 1 hidden",
        ),
        (
            {"weights": [np.ones((3, 4)), np.ones((2, 3))], "activation": "gelu"},
            "not componentwise non-expansive",
        ),
        (
            {"weights": [np.ones((3, 4)), np.ones((2, 3))], "biases": [np.ones(4), None]},
            r"bias of layer 0 has shape \(4,\)",
        ),
        ({"weights": [np.ones((3, 4, 1)), np.ones((2, 3))]}, r"layer 0: weight must be a 2-D"),
        (
            {"weights": [np.ones((3, 4)), {"kind": "conv2d", "weight": np.ones((1, 3, 1, 1))}]},
            "layer 1: Conv2d needs input_shape",
        ),
        ({"weights": [{"kind": "pool"}, np.ones((2, 3))]}, "kind='conv2d'"),
        (
            {"weights": [{"kind": "conv2d", "weights": 1}, np.ones((2, 3))]},
            "layer 0: bad conv2d fields",
        ),
    ],
)
def test_from_layers_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        from_layers(**kwargs)


# ---- scikit-learn ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def _fit(estimator, X, y):
    # one BLAS thread: on a loaded 2-core machine threaded BLAS makes this fit ~15× slower
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y)


def _sklearn_forward(est, X):
    acts = {"relu": RELU, "tanh": np.tanh, "logistic": SIGMOID, "identity": lambda z: z}
    H = X
    for W, b in zip(est.coefs_[:-1], est.intercepts_[:-1], strict=True):
        H = acts[est.activation](H @ W + b)
    return H @ est.coefs_[-1] + est.intercepts_[-1]


def test_from_sklearn_multiclass_digits(digits):
    X, y = digits
    est = _fit(MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=15, random_state=0), X, y)
    model = from_sklearn(est)
    logits = model.predict(X)
    assert _max_diff(logits, _sklearn_forward(est, X)) <= TOL
    classes = np.array(model.metadata["classes"])
    assert np.array_equal(classes[np.argmax(logits, axis=1)], est.predict(X))
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    assert _max_diff(z / z.sum(axis=1, keepdims=True), est.predict_proba(X)) <= TOL
    assert (
        model.metadata["classes"] == list(range(10)) and model.metadata["output_link"] == "softmax"
    )
    assert model.n_states == 96 and model.metadata["task"] == "classification"


def test_from_sklearn_binary_has_one_logit(digits):
    X, y = digits
    labels = np.where(y < 5, "low", "high")
    est = _fit(
        MLPClassifier(hidden_layer_sizes=(16,), activation="tanh", max_iter=20, random_state=1),
        X,
        labels,
    )
    model = from_sklearn(est)
    logit = model.predict(X)
    assert logit.shape == (len(X), 1) and model.metadata["output_link"] == "logistic"
    classes = np.array(model.metadata["classes"])
    assert np.array_equal(classes[(logit[:, 0] > 0).astype(int)], est.predict(X))
    assert _max_diff(SIGMOID(logit[:, 0]), est.predict_proba(X)[:, 1]) <= TOL


@pytest.mark.parametrize("activation", ["logistic", "identity", "relu"])
def test_from_sklearn_regressor(digits, activation):
    X, _ = digits
    X = X[:300]
    T = np.column_stack([X[:, 10] - X[:, 20], X[:, 30] * 2.0])
    est = _fit(
        MLPRegressor(
            hidden_layer_sizes=(12, 7), activation=activation, max_iter=20, random_state=0
        ),
        X,
        T,
    )
    model = from_sklearn(est)
    assert _max_diff(model.predict(X), est.predict(X)) <= TOL
    assert model.metadata["task"] == "regression" and "classes" not in model.metadata


def test_from_sklearn_refuses():
    with pytest.raises(ValueError, match="not fitted"):
        from_sklearn(MLPClassifier())
    with pytest.raises(
        ValueError, match=r"converts MLPClassifier and MLPRegressor \(.*\), got LogisticRegression"
    ):
        from_sklearn(LogisticRegression())


# A Pipeline of scalers folds into the model, which then takes the Pipeline's raw inputs.
PIPELINES = {
    "standard+multiclass": ([("std", StandardScaler())], MLPClassifier, "y"),
    "minmax+maxabs+passthrough+binary": (
        [("mm", MinMaxScaler(feature_range=(-1, 1))), ("ma", MaxAbsScaler()), ("nothing", "passthrough")],
        MLPClassifier, "binary"),
    "maxabs+standard+regressor": ([("ma", MaxAbsScaler()), ("std", StandardScaler())],
                                  MLPRegressor, "targets"),
}


@pytest.mark.parametrize("name", list(PIPELINES))
def test_from_sklearn_pipeline_on_raw_inputs(digits, name, tmp_path):
    scalers, cls, target = PIPELINES[name]
    X, y = digits[0][:600] * 16.0 + 3.0, digits[1][:600]  # raw pixels, shifted off zero
    Y = {"y": y, "binary": np.where(y < 5, "low", "high"),
         "targets": np.column_stack([X[:, 10] - X[:, 20], X[:, 30] * 2.0])}[target]
    pipe = _fit(Pipeline([*scalers, ("mlp", cls(hidden_layer_sizes=(16, 8), max_iter=30,
                                                random_state=0))]), X, Y)
    model = ImplicitModel.load(from_sklearn(pipe).save(tmp_path / "pipe.npz"))
    out = model.predict(X)
    assert _max_diff(out, _sklearn_forward(pipe[-1], pipe[:-1].transform(X))) <= TOL
    if cls is MLPRegressor:
        assert _max_diff(out, pipe.predict(X)) <= TOL
    else:
        classes = np.array(model.metadata["classes"])
        labels = (out[:, 0] > 0).astype(int) if out.shape[1] == 1 else out.argmax(axis=1)
        np.testing.assert_array_equal(classes[labels], pipe.predict(X))
        proba = (SIGMOID(out[:, 0]) if out.shape[1] == 1 else
                 np.exp(out) / np.exp(out).sum(axis=1, keepdims=True))
        assert _max_diff(proba, pipe.predict_proba(X)[:, -1] if out.shape[1] == 1
                         else pipe.predict_proba(X)) <= TOL
    record = model.metadata["input"]
    folded = [f"sklearn.preprocessing.{type(s).__name__}" for _, s in scalers if s != "passthrough"]
    assert record["transform"]["steps"] == folded
    assert model.metadata["preprocessing"] == {"kind": "none"}
    if isinstance(scalers[0][1], MinMaxScaler):
        assert record["train_range"]["low"] == X.min(axis=0).tolist()


def test_from_sklearn_pipeline_refuses_other_steps_by_name(digits):
    X, y = digits[0][:200], digits[1][:200]
    with pytest.raises(ValueError, match=r"step 'pca' \(PCA\) is not an affine scaler"):
        from_sklearn(_fit(Pipeline([("pca", PCA(5)), ("mlp", MLPClassifier(max_iter=5))]), X, y))
    with pytest.raises(ValueError, match=r"final step 'lr' \(LogisticRegression\)"):
        from_sklearn(_fit(Pipeline([("s", StandardScaler()), ("lr", LogisticRegression())]), X, y))
    clipped = Pipeline([("mm", MinMaxScaler(clip=True)), ("mlp", MLPClassifier(max_iter=5))])
    with pytest.raises(ValueError, match="clip=True"):
        from_sklearn(_fit(clipped, X, y))


# ---- convolutions ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("in_shape", "out_c", "kernel", "stride", "padding"),
    [
        ((2, 7, 6), 3, (3, 3), 2, 1),
        ((3, 5, 8), 2, (2, 3), (1, 2), (0, 1)),
        ((1, 4, 4), 1, (4, 4), 1, 0),
        ((2, 6, 5), 4, (1, 1), 3, 2),
    ],
)
def test_conv2d_matrix_matches_direct_convolution(in_shape, out_c, kernel, stride, padding):
    rng = np.random.default_rng(4)
    weight = rng.normal(size=(out_c, in_shape[0], *kernel))
    M, out_shape = conv2d_matrix(weight, in_shape, stride, padding)
    pair = lambda v: (v, v) if np.isscalar(v) else v  # noqa: E731
    for _ in range(3):
        x = rng.normal(size=in_shape)
        ref = _conv_reference(x, weight, pair(stride), pair(padding))
        assert out_shape == ref.shape and M.shape == (ref.size, x.size)
        assert _max_diff(M @ x.ravel(), ref.ravel()) <= TOL
    assert sp.isspmatrix_csr(M) and M.nnz <= out_c * np.prod(out_shape[1:]) * weight[0].size


def test_conv2d_matrix_errors():
    w = np.ones((2, 3, 3, 3))
    with pytest.raises(ValueError, match=r"4-D"):
        conv2d_matrix(np.ones((3, 3)), (3, 5, 5))
    with pytest.raises(ValueError, match=r"C = 3 input channels.*\(2, 5, 5\)"):
        conv2d_matrix(w, (2, 5, 5))
    with pytest.raises(ValueError, match=r"stride must be an integer ≥ 1"):
        conv2d_matrix(w, (3, 5, 5), stride=0)
    with pytest.raises(ValueError, match=r"does not fit input 2×2"):
        conv2d_matrix(w, (3, 2, 2))


def test_conv_layers_then_dense():
    rng = np.random.default_rng(5)
    w1, b1 = rng.normal(size=(4, 2, 3, 3)), rng.normal(size=4)
    w2, b2 = rng.normal(size=(3, 4, 2, 2)), rng.normal(size=3)
    conv1 = {
        "kind": "conv2d",
        "weight": w1,
        "bias": b1,
        "stride": 2,
        "padding": 1,
        "input_shape": (2, 8, 7),
    }
    conv2 = Conv2d(w2, stride=1, padding=0)  # input shape inferred from conv1: (4, 4, 4)
    W3, b3 = rng.normal(size=(5, 3 * 3 * 3)), rng.normal(size=5)
    W4, b4 = rng.normal(size=(2, 5)), rng.normal(size=2)
    model = from_layers(
        [conv1, conv2, W3, W4], [None, b2, b3, b4], activation=["relu", "tanh", "relu"]
    )
    assert sp.issparse(model.A) and sp.issparse(model.B)
    U = rng.normal(size=(6, 2 * 8 * 7))
    expected = []
    for u in U:
        h = RELU(_conv_reference(u.reshape(2, 8, 7), w1, (2, 2), (1, 1)) + b1[:, None, None])
        h = np.tanh(_conv_reference(h, w2, (1, 1), (0, 0)) + b2[:, None, None])
        expected.append(RELU(W3 @ h.ravel() + b3) @ W4.T + b4)
    assert _max_diff(model.predict(U), np.array(expected)) <= TOL
    single = from_conv2d(w1, (2, 8, 7), bias=b1, stride=2, padding=1, activation="relu")
    direct = [
        RELU(_conv_reference(u.reshape(2, 8, 7), w1, (2, 2), (1, 1)) + b1[:, None, None]).ravel()
        for u in U
    ]
    assert _max_diff(single.predict(U), np.array(direct)) <= TOL
    with pytest.raises(ValueError, match="layer 1: conv bias given both"):
        from_layers([conv1, Conv2d(w2, bias=b2), W3], [None, b2, None])


# ---- residual blocks and composition -----------------------------------------------------------
@pytest.mark.parametrize("sparse", [False, True])
def test_residual_block_matches_formula(sparse):
    rng = np.random.default_rng(6)
    W1, W2, b1, b2 = (
        rng.normal(size=(7, 4)),
        rng.normal(size=(4, 7)),
        rng.normal(size=7),
        rng.normal(size=4),
    )
    block = residual_block(sp.csr_matrix(W1) if sparse else W1, W2, b1, b2)
    U = rng.normal(size=(30, 4))
    expected = RELU(U + RELU(U @ W1.T + b1) @ W2.T + b2)
    assert _max_diff(block.predict(U), expected) <= TOL
    assert sp.issparse(block.A) == sparse and block.n_states == 11
    with pytest.raises(ValueError, match=r"W2 has shape \(7, 4\).*must be \(4, 7\)"):
        residual_block(W1, W1)


def _general_model(p, n, q, seed, activation="relu", cyclic=False):
    """A model with nonzero D and biases; A strictly upper triangular, or a contraction if cyclic."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n))
    A = 0.4 * A / np.abs(A).sum(axis=1, keepdims=True) if cyclic else np.triu(A, 1)
    return ImplicitModel(
        A,
        rng.normal(size=(n, p)),
        rng.normal(size=(q, n)),
        rng.normal(size=(q, p)),
        rng.normal(size=n),
        rng.normal(size=q),
        activation,
    )


@pytest.mark.parametrize("variant", ["dense", "sparse", "cyclic"])
def test_cascade_matches_composition(variant):
    cyclic = variant == "cyclic"
    m1 = _general_model(4, 5, 3, 7, activation=[("tanh", 2), ("relu", 3)], cyclic=cyclic)
    m2 = _general_model(3, 6, 2, 8, activation="sigmoid", cyclic=cyclic)
    if variant == "sparse":
        m1 = m1.with_weights(A=sp.csr_matrix(m1.A), B=sp.csr_matrix(m1.B))
    m1.metadata["preprocessing"] = {"kind": "scale", "offset": [0.0] * 4, "scale": [1.0] * 4}
    m2.metadata["classes"] = ["a", "b"]
    both = cascade(m1, m2)
    U = np.random.default_rng(9).normal(size=(20, 4))
    opts = {"tol": 1e-14} if cyclic else {}
    assert _max_diff(both.predict(U, **opts), m2.predict(m1.predict(U, **opts), **opts)) <= TOL
    assert sp.issparse(both.A) == (variant == "sparse")
    assert [(act.name, b - a) for act, a, b in both.activation.blocks] == [
        ("sigmoid", 6),
        ("tanh", 2),
        ("relu", 3),
    ]
    assert both.metadata == {"preprocessing": m1.metadata["preprocessing"], "classes": ["a", "b"]}
    with pytest.raises(ValueError, match="second model takes 4 inputs but the first gives 2"):
        cascade(m2, m1)


def test_cascade_of_mlps_is_deeper_mlp():
    Ws, bs = _mlp([5, 4, 3, 2], 10)
    first, second = (
        from_layers(Ws[:2], bs[:2], output_activation="relu"),
        from_layers(Ws[2:] + [np.eye(2)], bs[2:] + [np.zeros(2)]),
    )
    U = np.random.default_rng(11).normal(size=(15, 5))
    assert (
        _max_diff(cascade(first, second).predict(U), RELU(_forward(Ws, bs, [RELU, RELU], U))) <= TOL
    )


@pytest.mark.parametrize("combine", ["concat", "sum"])
def test_stack_parallel_matches_outputs(combine):
    m1 = _general_model(4, 5, 3, 12, activation="tanh")
    m2 = _general_model(4, 3, 3, 13)
    m2 = m2.with_weights(A=sp.csr_matrix(m2.A))
    both = stack_parallel(m1, m2, combine=combine)
    U = np.random.default_rng(14).normal(size=(20, 4))
    y1, y2 = m1.predict(U), m2.predict(U)
    expected = np.hstack([y1, y2]) if combine == "concat" else y1 + y2
    assert _max_diff(both.predict(U), expected) <= TOL
    assert sp.issparse(both.A) and both.n_states == 8
    assert [(act.name, b - a) for act, a, b in both.activation.blocks] == [("tanh", 5), ("relu", 3)]


def test_stack_parallel_errors():
    m1, m2 = _general_model(4, 2, 3, 0), _general_model(5, 2, 2, 1)
    with pytest.raises(ValueError, match="take 4 and 5 inputs"):
        stack_parallel(m1, m2)
    with pytest.raises(ValueError, match="combine must be 'concat' or 'sum'"):
        stack_parallel(m1, m1, combine="max")
    with pytest.raises(ValueError, match="outputs of sizes 3 and 2 differ"):
        stack_parallel(m1, _general_model(4, 2, 2, 1), combine="sum")


def test_converted_sparse_model_roundtrips(tmp_path):
    rng = np.random.default_rng(15)
    conv = Conv2d(
        rng.normal(size=(2, 1, 3, 3)), rng.normal(size=2), padding=1, input_shape=(1, 5, 5)
    )
    model = from_layers([conv, rng.normal(size=(3, 50))])
    loaded = ImplicitModel.load(model.save(tmp_path / "conv.npz"))
    U = rng.normal(size=(4, 25))
    assert np.array_equal(loaded.predict(U), model.predict(U)) and sp.issparse(loaded.B)
