"""Layer-by-layer converters (CNN with pooling, ResNet with BatchNorm folded, Elman RNN, LSTM)
and the gated / feedback compositions, each against a direct numpy implementation of the
original network on random inputs (hypothesis), plus their well-posedness checks and refusals."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from implicit_cvx.compose import feedback, gated
from implicit_cvx.convert import Conv2d
from implicit_cvx.equilibrium import IllPosedError
from implicit_cvx.model import ImplicitModel
from implicit_cvx.network import BatchNorm, Flatten, Linear, MaxPool2d, Residual, from_sequential
from implicit_cvx.recurrent import from_lstm, from_rnn
from implicit_cvx.wellposed import wellposedness_report

TOL = 1e-10
SETTINGS = dict(max_examples=12, deadline=None, derandomize=True)


# ---- direct implementations (loops over positions; no code shared with the converters) ---------
def conv(x, w, b, stride=1, pad=0):
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    oc, _, kh, kw = w.shape
    Ho, Wo = (xp.shape[1] - kh) // stride + 1, (xp.shape[2] - kw) // stride + 1
    out = np.empty((oc, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            patch = xp[:, i * stride : i * stride + kh, j * stride : j * stride + kw]
            out[:, i, j] = np.tensordot(w, patch, axes=3) + b
    return out


def maxpool(x, k, s, pad=0):
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    Ho, Wo = (xp.shape[1] - k) // s + 1, (xp.shape[2] - k) // s + 1
    return np.array([[[xp[c, i * s : i * s + k, j * s : j * s + k].max() for j in range(Wo)]
                      for i in range(Ho)] for c in range(x.shape[0])])


def batchnorm(x, bn):
    g, b, mu, var, eps = (np.asarray(v) for v in bn)
    return (x - mu[:, None, None]) / np.sqrt(var[:, None, None] + eps) * g[:, None, None] + b[:, None, None]


def random_bn(rng, c):
    return (rng.normal(size=c), rng.normal(size=c), rng.normal(size=c), rng.uniform(0.5, 2, c), 1e-5)


relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731


# ---- CNN -----------------------------------------------------------------------------------------
@settings(**SETTINGS)
@given(seed=st.integers(0, 2**32 - 1), pool=st.sampled_from([(2, 2, 0), (3, 2, 1), (2, 1, 0)]),
       stride=st.integers(1, 2), act=st.sampled_from(["relu", "tanh"]))
def test_cnn_with_pooling_matches_direct_forward(seed, pool, stride, act):
    rng = np.random.default_rng(seed)
    w1, b1 = rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3)
    bn = random_bn(rng, 3)
    k, s, pad = pool
    phi = relu if act == "relu" else np.tanh
    h1 = maxpool(phi(batchnorm(conv(np.zeros((2, 9, 9)), w1, b1, stride, 1), bn)), k, s, pad)
    w2, b2 = rng.normal(size=(2, 3, 2, 2)), rng.normal(size=2)
    flat = conv(h1, w2, b2).size
    W3, b3 = rng.normal(size=(4, flat)), rng.normal(size=4)
    layers = [Conv2d(w1, b1, stride, 1), BatchNorm(*bn), act, MaxPool2d(k, s, pad),
              Conv2d(w2, b2), "relu", Flatten(), Linear(W3, b3)]
    model = from_sequential(layers, (2, 9, 9))
    U = rng.normal(size=(6, 2 * 81))

    def direct(u):
        h = maxpool(phi(batchnorm(conv(u.reshape(2, 9, 9), w1, b1, stride, 1), bn)), k, s, pad)
        return W3 @ relu(conv(h, w2, b2)).ravel() + b3

    ref = np.array([direct(u) for u in U])
    assert np.abs(model.predict(U) - ref).max() <= TOL * max(1.0, np.abs(ref).max())
    assert wellposedness_report(model.A, activation=model.activation)["triangular"]


def test_pooling_fuses_with_the_activation_before_it():
    rng = np.random.default_rng(0)
    fused = from_sequential([Conv2d(rng.normal(size=(2, 1, 3, 3)), padding=1), "relu",
                             MaxPool2d(2), Flatten(), Linear(rng.normal(size=(3, 32)))], (1, 8, 8))
    assert fused.n_states == 2 * 8 * 8 and fused.activation.uniform.name == "maxpool"
    assert fused.activation.uniform.inner.name == "relu"
    unfused = from_sequential([Conv2d(rng.normal(size=(2, 1, 3, 3)), padding=1), MaxPool2d(2),
                               "relu", Flatten()], (1, 8, 8))
    assert [a.name for a, _, _ in unfused.activation.blocks] == ["maxpool", "relu"]


# ---- ResNet --------------------------------------------------------------------------------------
@settings(**SETTINGS)
@given(seed=st.integers(0, 2**32 - 1), blocks=st.integers(1, 3))
def test_resnet_with_batchnorm_matches_direct_forward(seed, blocks):
    rng = np.random.default_rng(seed)
    c = 3
    stem = (rng.normal(size=(c, 1, 3, 3)) * 0.5, rng.normal(size=c))
    res = [(rng.normal(size=(c, c, 3, 3)) * 0.3, random_bn(rng, c),
            rng.normal(size=(c, c, 3, 3)) * 0.3, random_bn(rng, c)) for _ in range(blocks)]
    proj = (rng.normal(size=(2 * c, c, 1, 1)), random_bn(rng, 2 * c))
    wide = (rng.normal(size=(2 * c, c, 3, 3)) * 0.3, random_bn(rng, 2 * c))
    head = (rng.normal(size=(5, 2 * c * 6 * 6)), rng.normal(size=5))
    zero = lambda n: np.zeros(n)  # noqa: E731
    layers = [Conv2d(*stem, padding=1), "relu"]
    for w1, bn1, w2, bn2 in res:
        layers.append(Residual([Conv2d(w1, padding=1), BatchNorm(*bn1), "relu",
                                Conv2d(w2, padding=1), BatchNorm(*bn2)]))
    layers += [Residual([Conv2d(wide[0], padding=1), BatchNorm(*wide[1])], "relu",
                        [Conv2d(proj[0]), BatchNorm(*proj[1])]), Flatten(), Linear(*head)]
    model = from_sequential(layers, (1, 6, 6))

    def direct(u):
        h = relu(conv(u.reshape(1, 6, 6), *stem, pad=1))
        for w1, bn1, w2, bn2 in res:
            body = batchnorm(conv(relu(batchnorm(conv(h, w1, zero(c), pad=1), bn1)), w2, zero(c), pad=1), bn2)
            h = relu(body + h)
        body = batchnorm(conv(h, wide[0], zero(2 * c), pad=1), wide[1])
        h = relu(body + batchnorm(conv(h, proj[0], zero(2 * c)), proj[1]))
        return head[0] @ h.ravel() + head[1]

    U = rng.normal(size=(5, 36))
    ref = np.array([direct(u) for u in U])
    assert np.abs(model.predict(U) - ref).max() <= TOL * max(1.0, np.abs(ref).max())
    assert wellposedness_report(model.A, activation=model.activation)["triangular"]


# ---- recurrent -----------------------------------------------------------------------------------
def torch_style_weights(rng, gates, h, p):
    s = 1 / np.sqrt(h)
    return (rng.uniform(-s, s, (gates * h, p)), rng.uniform(-s, s, (gates * h, h)),
            rng.uniform(-s, s, gates * h), rng.uniform(-s, s, gates * h))


@settings(**SETTINGS)
@given(seed=st.integers(0, 2**32 - 1), T=st.integers(1, 7), h=st.integers(1, 5),
       act=st.sampled_from(["tanh", "relu"]), outputs=st.sampled_from(["last", "all"]))
def test_elman_rnn_matches_direct_recursion(seed, T, h, act, outputs):
    rng = np.random.default_rng(seed)
    p = 3
    W_ih, W_hh, b_ih, b_hh = torch_style_weights(rng, 1, h, p)
    W_hh *= 3  # recurrent weights far outside any norm ball: still exact (triangular)
    head = (rng.normal(size=(2, h)), rng.normal(size=2))
    model = from_rnn(W_ih, W_hh, b_ih, b_hh, steps=T, activation=act, head=head, outputs=outputs)
    U = rng.normal(size=(8, T, p))
    phi = np.tanh if act == "tanh" else relu
    H, outs = np.zeros((8, h)), []
    for t in range(T):
        H = phi(U[:, t] @ W_ih.T + b_ih + H @ W_hh.T + b_hh)
        outs.append(H @ head[0].T + head[1])
    ref = outs[-1] if outputs == "last" else np.hstack(outs)
    assert np.abs(model.predict(U.reshape(8, -1)) - ref).max() <= TOL * max(1, np.abs(ref).max())
    assert model.n_states == T * h


@settings(**SETTINGS)
@given(seed=st.integers(0, 2**32 - 1), T=st.integers(1, 6), h=st.integers(1, 4))
def test_lstm_matches_direct_recursion(seed, T, h):
    rng = np.random.default_rng(seed)
    p = 2
    W_ih, W_hh, b_ih, b_hh = torch_style_weights(rng, 4, h, p)
    model = from_lstm(W_ih, W_hh, b_ih, b_hh, steps=T, outputs="all")
    U = rng.normal(size=(6, T, p)) * 2
    H, Cs, outs = np.zeros((6, h)), np.zeros((6, h)), []
    for t in range(T):
        z = U[:, t] @ W_ih.T + b_ih + H @ W_hh.T + b_hh
        i, f, g, o = (z[:, k * h : (k + 1) * h] for k in range(4))
        Cs = sigmoid(f) * Cs + sigmoid(i) * np.tanh(g)
        H = sigmoid(o) * np.tanh(Cs)
        outs.append(H)
    assert np.abs(model.predict(U.reshape(6, -1)) - np.hstack(outs)).max() <= TOL
    report = wellposedness_report(model.A, activation=model.activation)
    assert report["triangular"]
    assert (report["blip_eigenvalue"] == np.inf) == (T > 1)  # σ(f)∘c (t ≥ 2) is not Lipschitz


def test_recurrent_refusals():
    rng = np.random.default_rng(0)
    W_ih, W_hh, b_ih, b_hh = torch_style_weights(rng, 1, 3, 2)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        from_rnn(W_ih, W_hh, steps=0)
    with pytest.raises(ValueError, match=r"\(4h, h\)"):
        from_lstm(W_ih, W_hh, steps=2)
    with pytest.raises(ValueError, match="bias_hh has shape"):
        from_rnn(W_ih, W_hh, b_ih, b_hh[:2], steps=2)
    with pytest.raises(ValueError, match="'last' or 'all'"):
        from_rnn(W_ih, W_hh, steps=2, outputs="mean")


# ---- compositions ---------------------------------------------------------------------------------
def contraction_model(rng, n, p, q, kappa, activation="relu", gain=1.0):
    A = rng.normal(size=(n, n))
    A *= kappa / np.abs(A).sum(axis=1, keepdims=True)
    return ImplicitModel(A, rng.normal(size=(n, p)) * gain, rng.normal(size=(q, n)) * gain,
                         rng.normal(size=(q, p)) * gain, rng.normal(size=n), rng.normal(size=q),
                         activation)


@settings(**SETTINGS)
@given(seed=st.integers(0, 2**32 - 1), gate=st.sampled_from(["identity", "sigmoid", "tanh"]))
def test_gated_matches_product_of_outputs(seed, gate):
    rng = np.random.default_rng(seed)
    m1 = contraction_model(rng, 5, 3, 2, 0.9)
    m2 = contraction_model(rng, 4, 3, 2, 0.8, "tanh")
    U = rng.normal(size=(10, 3))
    psi = {"identity": lambda v: v, "sigmoid": sigmoid, "tanh": np.tanh}[gate]
    ref = psi(m1.predict(U, tol=1e-14)) * m2.predict(U, tol=1e-14)
    model = gated(m1, m2, gate)
    assert np.abs(model.predict(U, tol=1e-14) - ref).max() <= TOL * max(1, np.abs(ref).max())
    assert model.n_states == 5 + 4 + 2 * 2


@settings(**SETTINGS)
@given(seed=st.integers(0, 2**32 - 1), unity=st.booleans())
def test_feedback_matches_the_iterated_loop(seed, unity):
    rng = np.random.default_rng(seed)
    m1 = contraction_model(rng, 5, 3, 3 if unity else 2, 0.5, gain=0.15)
    m2 = None if unity else contraction_model(rng, 4, 2, 3, 0.5, "tanh", gain=0.15)
    model = feedback(m1, m2)
    U = rng.normal(size=(8, 3))
    y1, y2 = None, np.zeros((8, 3))
    for _ in range(300):  # the loop itself: u_1 = u + ŷ_2, u_2 = ŷ_1 (a contraction here)
        new = m1.predict(U + y2, tol=1e-15)
        y2 = new if unity else m2.predict(new, tol=1e-15)
        settled = y1 is not None and np.abs(new - y1).max() <= 1e-15
        y1 = new
        if settled:
            break
    assert np.abs(model.predict(U, tol=1e-15) - y1).max() <= TOL


def test_composition_refusals():
    rng = np.random.default_rng(1)
    ok = contraction_model(rng, 3, 2, 2, 0.5)
    ill = ImplicitModel(np.array([[0.0, 2.0], [2.0, 0.0]]), np.ones((2, 2)), np.ones((2, 2)),
                        np.zeros((2, 2)))
    with pytest.raises(IllPosedError, match="gated: the second model is not known"):
        gated(ok, ill)
    loud = contraction_model(rng, 3, 2, 2, 0.5, gain=5.0)
    with pytest.raises(IllPosedError, match="feedback: the closed loop is not known"):
        feedback(loud)
    singular = ImplicitModel(np.zeros((1, 1)), np.ones((1, 1)), np.ones((1, 1)), np.eye(1))
    with pytest.raises(ValueError, match="I − D_1 D_2 is singular"):
        feedback(singular)
    with pytest.raises(ValueError, match="must map 2→2"):
        feedback(ok, contraction_model(rng, 2, 3, 2, 0.5))


def test_layer_refusals_name_the_layer():
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="layer 0 \\(MaxPool2d\\): max-pooling needs"):
        from_sequential([MaxPool2d(2)], 4)
    with pytest.raises(ValueError, match="layer 1 \\(BatchNorm\\)"):
        from_sequential([Linear(rng.normal(size=(5, 4))), BatchNorm(*random_bn(rng, 3))], 4)
    with pytest.raises(ValueError, match="body gives 3 values, the shortcut 4"):
        from_sequential([Residual([Linear(rng.normal(size=(3, 4)))])], 4)
    with pytest.raises(ValueError, match="unknown activation 'conv'"):
        from_sequential(["conv"], 4)


def test_block_models_save_and_load(tmp_path):
    rng = np.random.default_rng(3)
    cnn = from_sequential([Conv2d(rng.normal(size=(2, 1, 3, 3)), padding=1), "relu",
                           MaxPool2d(2), Flatten(), Linear(rng.normal(size=(3, 32)))], (1, 8, 8))
    W_ih, W_hh, b_ih, b_hh = torch_style_weights(rng, 4, 3, 2)
    lstm = from_lstm(W_ih, W_hh, b_ih, b_hh, steps=3)
    for model, p in ((cnn, 64), (lstm, 6)):
        back = ImplicitModel.load(model.save(tmp_path / "m"))
        assert back.activation == model.activation
        U = rng.normal(size=(4, p))
        np.testing.assert_array_equal(back.predict(U), model.predict(U))
