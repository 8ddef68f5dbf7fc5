"""Input importance from S (robust/importance.py) against S formed with an explicit inverse."""

import numpy as np
import pytest

from implicit_cvx.robust.importance import input_importance, model_importance, plot_importance
from implicit_cvx.train.init import random_model


def _explicit_S(model):
    n = model.n_states
    inv = np.linalg.inv(np.eye(n) - np.abs(model.A))
    return np.abs(model.C) @ inv @ np.abs(model.B) + np.abs(model.D)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_importance_matches_explicit_S(seed):
    model = random_model(7, 16, 3, 0.8, seed=seed)
    S = _explicit_S(model)
    imp = model_importance(model)
    assert imp.per_class.shape == (3, 16) and imp.overall.shape == (16,)
    assert np.allclose(imp.per_class, S, rtol=1e-10, atol=0)
    assert np.allclose(imp.overall, S.sum(axis=0), rtol=1e-10, atol=0)
    assert np.all(imp.per_class >= S * (1 - 1e-15))  # verified upper bound
    # the overall ranking is the sensitivity attack's ranking
    assert np.argmax(imp.overall) == np.argmax(S.sum(axis=0))


def test_input_importance_of_a_given_S():
    S = np.array([[1.0, 0.0, 2.0], [0.5, 3.0, 0.0]])
    imp = input_importance(S)
    assert imp.overall.tolist() == [1.5, 3.0, 2.0]
    assert imp.per_class.tolist() == S.tolist()


def test_plot_writes_a_png(tmp_path):
    model = random_model(5, 16, 3, 0.8, seed=0)
    S = model_importance(model).per_class
    path = tmp_path / "imp.png"
    plot_importance(S, (4, 4), path, class_names=["a", "b", "c"], title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="nonnegative"):
        input_importance(np.array([[-1.0, 2.0]]))
    with pytest.raises(ValueError, match="nonnegative"):
        input_importance(np.ones(3))
    with pytest.raises(ValueError, match="image_shape"):
        plot_importance(np.ones((2, 16)), (3, 5), tmp_path / "x.png")
    with pytest.raises(ValueError, match="class_names"):
        plot_importance(np.ones((2, 16)), (4, 4), tmp_path / "x.png", class_names=["a"])
