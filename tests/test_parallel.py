"""map_chunks backends give the same results in order; row solvers give the same model on each."""

import numpy as np
import pytest
from test_rows import FORMULATIONS, make_data

from implicit_cvx.convex.gram import gram_stats
from implicit_cvx.convex.rows import RowSpec, solve_rows
from implicit_cvx.convex.solvers import RowProblem, solve
from implicit_cvx.parallel import map_chunks


def test_map_chunks_keeps_order_and_validates():
    assert map_chunks(abs, [-3, 1, -2]) == [3, 1, 2]
    assert map_chunks(abs, [-3, 1, -2], backend="loky", n_jobs=2) == [3, 1, 2]
    assert map_chunks(abs, [], backend="loky", n_jobs=2) == []
    with pytest.raises(ValueError, match="backend must be one of"):
        map_chunks(abs, [1], backend="spark")
    with pytest.raises(ValueError, match="n_jobs"):
        map_chunks(abs, [1], n_jobs=0)


def test_same_model_on_serial_loky_and_dask():
    R, T = make_data(k=5)
    stats, spec = gram_stats(R, T), RowSpec(**FORMULATIONS["robust_B_ball"])
    ref = solve_rows(stats, spec)
    problem = RowProblem(stats, spec)
    for backend in ("loky", "dask"):
        sol = solve(problem, "native", n_jobs=2, backend=backend)
        np.testing.assert_array_equal(sol.rows, np.arange(5))
        np.testing.assert_allclose(sol.objective, ref.objective, rtol=1e-9)
        np.testing.assert_allclose(sol.W, ref.W, atol=1e-9)
    cv = solve(problem, "clarabel", n_jobs=2, backend="loky")
    np.testing.assert_allclose(cv.objective, ref.objective, rtol=1e-9)
