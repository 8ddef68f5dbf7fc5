"""PyTorch interop: from_torch / to_torch round trips (outputs equal to 1e-12), the implicit-gradient
backward against finite differences (torch.autograd.gradcheck) and against loss_gradients, sparse
weights, training steps, and refusals. Skipped when torch is not installed."""

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

torch = pytest.importorskip("torch")
nn = torch.nn

from implicit_cvx.gradients import loss_gradients  # noqa: E402
from implicit_cvx.model import ImplicitModel  # noqa: E402
from implicit_cvx.torch_interop import ImplicitModule, Residual, from_torch, to_torch  # noqa: E402

DT = torch.float64


def _randomize_batchnorm(net):
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen, dtype=DT))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen, dtype=DT) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=gen, dtype=DT))
                m.bias.copy_(torch.randn(m.num_features, generator=gen, dtype=DT))
    return net.eval()


def cnn():
    torch.manual_seed(0)
    return _randomize_batchnorm(nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                               nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))),
        nn.Flatten(), nn.Linear(64, 20), nn.Tanh(), nn.BatchNorm1d(20), nn.Linear(20, 10),
    ).to(DT))


def mlp():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 8), nn.LeakyReLU(0.1), nn.Identity(), nn.Linear(8, 5),
                         nn.Sigmoid(), nn.Linear(5, 3)).to(DT)


@pytest.mark.parametrize("make, shape", [(cnn, (1, 8, 8)), (mlp, None)])
def test_round_trip_outputs_equal(make, shape):
    net = make()
    U = torch.rand(12, *(shape or (6,)), dtype=DT)
    ref = net(U).detach().numpy()
    model = from_torch(net, shape)
    flat = U.reshape(12, -1).numpy()
    assert np.abs(model.predict(flat, tol=1e-13) - ref).max() <= 1e-12
    module = to_torch(model)
    assert np.abs(module(U).detach().numpy() - ref).max() <= 1e-12
    back = from_torch(module)
    for name in ("A", "B", "C", "D"):
        a, b = getattr(back, name), getattr(model, name)
        assert (abs(a - b).max() if sp.issparse(a) else np.abs(a - b).max()) == 0
    assert back.activation == model.activation


def small_model(activation="tanh", sparse=False, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(6, 6)) * (rng.random((6, 6)) < (0.5 if sparse else 1.0))
    A *= 0.8 / np.maximum(np.abs(A).sum(axis=1, keepdims=True), 1e-12)
    parts = [A, rng.normal(size=(6, 3)), rng.normal(size=(2, 6)), rng.normal(size=(2, 3))]
    if sparse:
        parts[:2] = [sp.csr_matrix(parts[0]), sp.csr_matrix(parts[1] * (rng.random((6, 3)) < 0.5))]
    return ImplicitModel(*parts, rng.normal(size=6), rng.normal(size=2), activation)


@pytest.mark.parametrize("sparse", [False, True])
def test_backward_passes_gradcheck(sparse):
    """Finite differences (torch.autograd.gradcheck, float64) of every input and parameter."""
    from implicit_cvx.torch_interop import _Equilibrium

    module = to_torch(small_model(sparse=sparse), tol=1e-14)
    params = list(module.parameters())  # the order forward passes them to the Function

    def f(u, *values):
        with torch.no_grad():  # the Function reads the weights from the module
            for p, v in zip(params, values, strict=True):
                p.copy_(v)
        return _Equilibrium.apply(module, u, *values)

    U = torch.randn(4, 3, dtype=DT, requires_grad=True)
    inputs = (U, *(p.detach().clone().requires_grad_(True) for p in params))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-8, rtol=1e-7)


@pytest.mark.parametrize("sparse", [False, True])
def test_backward_equals_loss_gradients(sparse):
    model = small_model(activation="relu", sparse=sparse, seed=3)
    module = to_torch(model)
    U = torch.randn(7, 3, dtype=DT, requires_grad=True)
    G = torch.randn(7, 2, dtype=DT)
    (module(U) * G).sum().backward()
    X = model.equilibrium(U.detach().numpy(), tol=1e-12)
    ref = loss_gradients(model, U.detach().numpy(), X, G.numpy())
    assert np.abs(U.grad.numpy() - ref["U"]).max() <= 1e-8
    for name in ("A", "B", "C", "D"):
        W = getattr(model, name)
        if sp.issparse(W):
            got = getattr(module, f"{name}_values").grad.numpy()
            want = np.asarray(ref[name][W.nonzero()]).ravel()
        else:
            got, want = getattr(module, name).grad.numpy(), np.asarray(ref[name])
        assert np.abs(got - want).max() <= 1e-8, name
    for name in ("b_x", "b_y"):
        assert np.abs(getattr(module, name).grad.numpy() - ref[name]).max() <= 1e-8


def test_a_training_step_with_a_torch_optimizer_lowers_the_loss():
    module = to_torch(small_model())
    U, Y = torch.randn(32, 3, dtype=DT), torch.randn(32, 2, dtype=DT)
    opt = torch.optim.SGD(module.parameters(), lr=0.05)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = ((module(U) - Y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert isinstance(module, ImplicitModule) and module.to_model().n_states == 6


def test_refusals_name_the_module():
    with pytest.raises(ValueError, match="cannot convert GELU"):
        from_torch(nn.Sequential(nn.Linear(3, 3), nn.GELU()))
    bn = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    with pytest.raises(ValueError, match="call module.eval"):
        from_torch(bn.train())
    with pytest.raises(ValueError, match="needs input_shape"):
        from_torch(nn.Sequential(nn.Conv2d(1, 2, 3)))
    with pytest.raises(ValueError, match="groups=1"):
        from_torch(nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)), (2, 5, 5))
    with pytest.raises(ValueError, match="to_torch needs an ImplicitModel"):
        to_torch(nn.Linear(2, 2))


def test_import_implicit_cvx_does_not_import_torch():
    code = "import sys, implicit_cvx; assert 'torch' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_softmax_head_is_a_block_state():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3), nn.Softmax(dim=1)).to(DT)
    U = torch.randn(5, 4, dtype=DT)
    model = from_torch(net)
    assert model.activation.blocks[-1][0].name == "softmax"
    assert np.abs(model.predict(U.numpy()) - net(U).detach().numpy()).max() <= 1e-15
    with pytest.raises(ValueError, match="Flatten first"):
        from_torch(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Softmax(dim=1)), (1, 4, 4))
