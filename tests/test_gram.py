"""Gram reduction: chunked = one-shot, streaming, exact ridge/anchor folding, exact Schur elimination."""

import numpy as np
import pytest

from implicit_cvx.convex.gram import eliminate_free, gram_stats, regularize


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    R = np.hstack([rng.normal(size=(103, 5)), np.ones((103, 1))])
    T = rng.normal(size=(103, 3))
    return R, T


def test_chunked_equals_one_shot_and_streaming(data):
    R, T = data
    one = gram_stats(R, T)
    for chunked in (gram_stats(R, T, chunk_size=10), gram_stats((R[i : i + 7], T[i : i + 7]) for i in range(0, 103, 7))):
        assert chunked.m == 103
        for a, b in ((one.G, chunked.G), (one.H, chunked.H), (one.c, chunked.c)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_objective_is_the_mean_squared_residual(data):
    R, T = data
    W = np.random.default_rng(1).normal(size=(3, 6))
    np.testing.assert_allclose(gram_stats(R, T).objective(W), ((T - R @ W.T) ** 2).mean(0), rtol=1e-12)


def test_ridge_and_anchor_fold_exactly(data):
    R, T = data
    rng = np.random.default_rng(2)
    W0, W = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    alpha, mu = 0.3, 0.7
    folded = regularize(gram_stats(R, T), alpha, W0, mu)
    direct = ((T - R @ W.T) ** 2).mean(0) + alpha * (W**2).sum(1) + mu * ((W - W0) ** 2).sum(1)
    np.testing.assert_allclose(folded.objective(W), direct, rtol=1e-12)


def test_free_elimination_is_partial_minimisation(data):
    R, T = data
    stats = gram_stats(R, T)
    red, elim = eliminate_free(stats, [5])
    W_S = np.random.default_rng(3).normal(size=(3, 5))
    W = elim.recover(W_S)
    np.testing.assert_allclose(red.objective(W_S), stats.objective(W), rtol=1e-12)
    # the recovered bias is the least-squares bias: residual has zero mean
    np.testing.assert_allclose((T - R @ W.T).mean(0), 0, atol=1e-12)


def test_singular_free_block_and_bad_shapes_raise(data):
    R, T = data
    Rz = np.hstack([R, np.zeros((103, 1))])
    with pytest.raises(ValueError, match="free coordinates .*singular"):
        eliminate_free(gram_stats(Rz, T), [6])
    with pytest.raises(ValueError, match="T has 5 rows, expected 103"):
        gram_stats(R, T[:5])
    with pytest.raises(ValueError, match="NaN"):
        gram_stats(R * np.nan, T)
    with pytest.raises(ValueError, match="do not match"):
        gram_stats([(R, T), (R[:, :3], T)])
    with pytest.raises(ValueError, match="chunk_size"):
        gram_stats(R, T, chunk_size=0)
