"""Method `gradient`: projected Adam/SGD with implicit gradients."""

import numpy as np
import pytest

import implicit_cvx.train.gradient as gradient_mod
from implicit_cvx.train.gradient import fit_gradient, implicit_gradients
from implicit_cvx.train.init import random_model
from implicit_cvx.train.objective import loss_value
from implicit_cvx.wellposed import BALL_RTOL, inf_norm


def _regression(m=40, seed=0):
    rng = np.random.default_rng(seed)
    U = rng.uniform(-1, 1, (m, 2))
    return U, np.sin(2 * U[:, :1]) + U[:, 1:] ** 2


def _true_loss(model, U, Y):
    return loss_value("squared", model.predict(U, tol=1e-13), Y)


def test_loss_decreases_and_history_is_complete():
    U, Y = _regression()
    res = fit_gradient(U, Y, task="regression", n_states=10, lr=1e-2, epochs=60, seed=0)
    losses = [r["train_loss"] for r in res.history]
    assert len(losses) == 60 and losses[-1] < 0.5 * losses[0]
    assert res.summary["train_loss"] == pytest.approx(_true_loss(res.model, U, Y), rel=1e-8)
    for key in ("train_rmse", "train_residual", "inf_norm_A", "seconds", "iteration"):
        assert key in res.history[-1]
    assert res.summary["outer_iterations"] == 60 and res.summary["equilibrium_residual"] <= 1e-10


def test_A_is_projected_after_every_step(monkeypatch):
    calls = []
    real = gradient_mod.project_inf_ball

    def spy(A, kappa):
        out = real(A, kappa)
        calls.append((inf_norm(A), inf_norm(out), kappa))
        return out

    monkeypatch.setattr(gradient_mod, "project_inf_ball", spy)
    U, Y = _regression(m=30)
    res = fit_gradient(U, Y, task="regression", n_states=8, kappa=0.5, lr=0.1, epochs=5,
                       batch_size=7, seed=2)
    assert len(calls) == 5 * 5  # ceil(30 / 7) = 5 mini-batches per epoch
    assert all(after <= k * (1 + BALL_RTOL) for _, after, k in calls)
    assert any(before > k * (1 + 1e-6) for before, _, k in calls)  # the projection was active
    assert inf_norm(res.model.A) <= 0.5 * (1 + BALL_RTOL)


def test_sgd_step_changes_loss_by_minus_lr_grad_squared():
    """A tiny SGD step (projection inactive) moves the true loss by ≈ −lr‖g‖²: the implicit
    gradient on this path agrees with the loss it is the gradient of."""
    U, Y = _regression(m=25, seed=3)
    init = random_model(6, 2, 1, kappa=0.95, seed=4, activation="tanh")
    grads, _ = implicit_gradients(init, U, Y, "squared", tol=1e-13)
    g2 = sum(float(np.sum(grads[k] ** 2)) for k in ("A", "B", "C", "D", "b_x", "b_y"))
    lr = 1e-5
    res = fit_gradient(U, Y, task="regression", init=init, n_states=None, lr=lr, epochs=1,
                       optimizer="sgd", tol=1e-13)
    change = _true_loss(res.model, U, Y) - _true_loss(init, U, Y)
    assert change == pytest.approx(-lr * g2, rel=1e-3)


def test_adam_reaches_reasonable_loss_on_teacher_data():
    rng = np.random.default_rng(5)
    teacher = random_model(8, 3, 1, kappa=0.5, seed=6)
    U = rng.uniform(-1, 1, (60, 3))
    Y = teacher.predict(U)
    res = fit_gradient(U, Y, task="regression", n_states=12, lr=1e-2, epochs=100, seed=1)
    assert res.summary["train_rmse"] < 0.15 * np.std(Y)


def test_classification_validation_and_early_stopping():
    rng = np.random.default_rng(7)
    U = rng.standard_normal((60, 2))
    y = (U[:, 0] * U[:, 1] > 0).astype(int)
    res = fit_gradient(U[:40], y[:40], task="classification", n_states=8, lr=0.05, epochs=200,
                       U_val=U[40:], Y_val=y[40:], early_stopping=True, patience=5, seed=0)
    val = [r["val_loss"] for r in res.history]
    best = int(np.argmin(val))
    assert len(val) < 200 and len(val) - 1 - best == 5  # stopped after 5 epochs without progress
    X = res.model.equilibrium(U[40:], tol=1e-13)
    assert loss_value("cross_entropy", res.model.output(X, U[40:]), y[40:]) == pytest.approx(val[best], rel=1e-8)
    assert res.history[-1]["train_accuracy"] > 0.6


@pytest.mark.parametrize(
    "kwargs, match",
    [({"batch_size": 0}, "batch_size"), ({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr"),
     ({"kappa": 1.5}, "kappa"), ({"optimizer": "rmsprop"}, "optimizer"), ({"U_val": np.zeros((2, 2))}, "U_val")],
)
def test_bad_arguments(kwargs, match):
    U, Y = _regression(m=10)
    with pytest.raises(ValueError, match=match):
        fit_gradient(U, Y, task="regression", n_states=3, **kwargs)
