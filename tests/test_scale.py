"""Partitioned data and the data-parallel paths: every source yields the same rows; Gram sums
reduce exactly; SIM, the cross-entropy (C, D) step, adjoint and certify on a real 2-worker
LocalCluster equal the in-memory path (one partition) to 1e-9."""

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from implicit_cvx.convert import from_layers
from implicit_cvx.convex.gram import gram_stats, gram_sums, reduce_gram
from implicit_cvx.convex.losses import (
    Samples,
    _Regularizer,
    certify,
    fit_output_layer,
    fit_output_samples,
)
from implicit_cvx.data import DATA_ENV, load_dataset
from implicit_cvx.parallel import Cluster
from implicit_cvx.partitions import gather, generated, partition
from implicit_cvx.robust import certify as certify_in_memory
from implicit_cvx.robust import certify_partitioned, merge_certify_results
from implicit_cvx.train.adjoint import fit_adjoint
from implicit_cvx.train.sim import fit_sim

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"


@pytest.fixture(scope="module")
def cluster():
    """One real LocalCluster of 2 single-threaded worker processes for the module's tests."""
    with Cluster("dask", workers=2) as c:
        yield c


def _teacher(seed=0, sizes=(6, 8, 5, 3)):
    rng = np.random.default_rng(seed)
    Ws = [1.3 * rng.standard_normal((o, i)) / np.sqrt(i) for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    return from_layers(Ws, [0.2 * rng.standard_normal(o) for o in sizes[1:]], "relu")


# ---- data sources -------------------------------------------------------------------------------
def test_every_source_gives_the_same_rows(tmp_path):
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(0)
    U, y = rng.integers(0, 256, (23, 4)).astype(np.uint8), rng.integers(0, 3, 23)
    np.save(tmp_path / "U.npy", U)
    shards = tmp_path / "shards"
    shards.mkdir()
    np.savez(shards / "a.npz", X=U[:10], y=y[:10])
    np.savez(shards / "b.npz", X=U[10:], y=y[10:])
    sources = {"array": partition(U, y, partitions=3), "npy": partition(tmp_path / "U.npy", y, rows=5),
               "shards": partition(shards), "dask": partition(da.from_array(U, chunks=7), y, partitions=4)}
    assert [p.rows for p in sources["npy"]] == [5, 5, 5, 5, 3]
    assert [p.rows for p in sources["shards"]] == [10, 13]
    for name, parts in sources.items():
        got_U, got_y = gather(parts)
        np.testing.assert_array_equal(got_U, U.astype(float), err_msg=name)
        np.testing.assert_array_equal(got_y, y, err_msg=name)
        assert got_U.dtype == np.float64


def test_bad_sources_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="targets have 3 rows but the inputs have 4"):
        partition(np.zeros((4, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="neither a .npy file nor a directory"):
        partition(str(tmp_path / "missing.npy"))
    with pytest.raises(ValueError, match="no .npy/.npz shards"):
        partition(tmp_path)
    with pytest.raises(ValueError, match="no rows"):
        partition(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="NaN or inf"):
        partition(np.array([[1.0, np.nan]]))[0].load()


def test_generated_rows_are_made_where_they_load():
    parts = generated(lambda seed, rows: (np.full((rows, 2), float(seed)), None), [2, 3], seed=5)
    U, y = gather(parts)
    assert y is None and U[:, 0].tolist() == [5, 5, 6, 6, 6]


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(1, 59), max_size=6, unique=True), seed=st.integers(0, 10))
def test_gram_sums_of_any_partition_reduce_to_the_in_memory_statistics(cuts, seed):
    rng = np.random.default_rng(seed)
    R, T = rng.standard_normal((60, 5)), rng.standard_normal((60, 3))
    edges = [0, *sorted(cuts), 60]
    stats = reduce_gram(gram_sums(R[a:b], T[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True))
    ref = gram_stats(R, T)
    assert stats.m == 60
    for got, want in ((stats.G, ref.G), (stats.H, ref.H), (stats.c, ref.c)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


# ---- MNIST -----------------------------------------------------------------------------------------
def test_mnist_not_found_says_where_to_put_it(monkeypatch, tmp_path):
    import implicit_cvx.data as data

    monkeypatch.setenv(DATA_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="IMPLICIT_CVX_DATA points to .*nowhere"):
        load_dataset("mnist")
    monkeypatch.delenv(DATA_ENV)

    def offline():
        raise OSError("no network")

    monkeypatch.setattr(data, "_fetch_mnist", offline)
    with pytest.raises(FileNotFoundError, match=r"put mnist.npz .* \$IMPLICIT_CVX_DATA .* dataset.path"):
        load_dataset("mnist")


def test_full_mnist_split_and_partitions():
    path = os.environ.get(DATA_ENV) or (SHARED_MNIST if SHARED_MNIST.is_file() else None)
    if path is None:
        pytest.skip("the full MNIST file is not here (set IMPLICIT_CVX_DATA)")
    ds = load_dataset("mnist", path=path)
    assert ds.X.dtype == np.uint8 and ds.X.shape == (70000, 784)
    assert len(ds.train_index) == 60000 and len(ds.test_index) == 10000
    parts = ds.partitioned("test", partitions=3)
    U, y = gather(parts)
    U_ref, y_ref = ds.split("test")
    np.testing.assert_array_equal(U, U_ref)
    np.testing.assert_array_equal(y, y_ref)
    assert U.max() == 1.0 and np.bincount(y_ref)[1] == 1135  # published test count of class 1


# ---- the distributed paths equal the in-memory path -----------------------------------------------
def test_sim_on_two_workers_equals_in_memory(cluster):
    teacher = _teacher()
    U = np.random.default_rng(1).standard_normal((900, 6))
    ref = fit_sim(U, teacher=teacher, task="regression", lam=1e-3, kappa=0.9)
    got = fit_sim(U, teacher=teacher, task="regression", lam=1e-3, kappa=0.9, data_backend="dask",
                  address=cluster.address, partitions=4)
    streamed = fit_sim(U, teacher=teacher, task="regression", lam=1e-3, kappa=0.9, chunk_size=250)
    assert got.summary["partitions"] == 4 and streamed.summary["partitions"] == 4
    for res in (got, streamed):
        for stage, stage_ref in zip(res.history[0]["stages"], ref.history[0]["stages"], strict=True):
            assert abs(stage["objective"] - stage_ref["objective"]) <= 1e-9 * max(1, abs(stage_ref["objective"]))
        for k in "ABCD":
            np.testing.assert_allclose(getattr(res.model, k), getattr(ref.model, k), atol=1e-9)
        assert res.summary["max_duality_gap"] <= 1e-8 and res.summary["uncertified_steps"] == []
        assert res.summary["train_agreement_with_teacher"] == pytest.approx(
            ref.summary["train_agreement_with_teacher"], abs=1e-12)


def _split_parts(cluster, F, y, k):
    Ft = np.column_stack([F, np.ones(len(F))])
    edges = np.linspace(0, len(y), k + 1).astype(int)
    items = [(Ft[a:b], y[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return Samples(cluster, cluster.submit(lambda item: item, items), len(y))


def test_cross_entropy_step_on_two_workers_equals_in_memory(cluster):
    rng = np.random.default_rng(2)
    F = rng.standard_normal((300, 5))
    y = np.argmax(F @ rng.standard_normal((5, 3)) + 0.5 * rng.standard_normal((300, 3)), axis=1)
    anchor = (0.1 * rng.standard_normal((3, 5)), np.zeros(3), 0.05)
    kw = dict(lam_l1=1e-3, lam_l2=1e-3, anchor=anchor, tol=1e-11)
    W0, b0, info0 = fit_output_layer(F, y, "cross_entropy", **kw)
    W1, b1, info1 = fit_output_samples(_split_parts(cluster, F, y, 3), "cross_entropy", q=3, d=5, **kw)
    assert info0.status == info1.status == "optimal"
    assert abs(info1.objective - info0.objective) <= 1e-9 * abs(info0.objective)
    np.testing.assert_allclose(W1, W0, atol=1e-7)
    # the certificate itself: per-partition sums give the in-memory primal and gap
    reg = _Regularizer(3, 5, 1e-3, 1e-3, anchor, ())
    theta = np.column_stack([W1, b1])
    samples = _split_parts(cluster, F, y, 3)
    from implicit_cvx.convex.losses import certify_samples

    p1, g1 = certify_samples("cross_entropy", samples, theta, reg, samples.softmax(theta))
    from scipy.special import softmax

    Ft = np.column_stack([F, np.ones(len(F))])
    p0, g0 = certify("cross_entropy", Ft, y, theta, reg, softmax(Ft @ theta.T, axis=1))
    assert abs(p1 - p0) <= 1e-12 * abs(p0) and abs(g1 - g0) <= 1e-12 * max(1.0, abs(p0))


def test_adjoint_on_two_workers_equals_in_memory(cluster):
    rng = np.random.default_rng(3)
    U = rng.standard_normal((120, 4))
    y = (U[:, 0] * U[:, 1] > 0).astype(int) + (U[:, 2] > 1).astype(int)
    kw = dict(task="classification", n_states=5, kappa=0.8, max_outer=1, lam_l2=1e-2, seed=0)
    ref = fit_adjoint(U, y, **kw)
    got = fit_adjoint(U, y, data_backend="dask", address=cluster.address, partitions=3, **kw)
    objs = [h["objective"] for h in got.history]
    np.testing.assert_allclose(objs, [h["objective"] for h in ref.history], rtol=1e-9)
    for k in "ABCD":
        np.testing.assert_allclose(getattr(got.model, k), getattr(ref.model, k), atol=1e-9)
    assert got.summary["partitions"] == 3 and got.summary["data_backend"] == "dask"


def test_certify_partitioned_merges_to_the_in_memory_result(cluster):
    teacher = _teacher(4)
    U = np.random.default_rng(4).standard_normal((70, 6))
    y = teacher.predict(U).argmax(axis=1)
    y[::7] = (y[::7] + 1) % 3  # some clean errors
    eps = [0.0, 0.02, 0.1]
    ref = certify_in_memory(teacher, U, y, eps)
    got = certify_partitioned(teacher, U, y, eps, partitions=3, address=cluster.address)
    np.testing.assert_array_equal(got.certified, ref.certified)
    np.testing.assert_array_equal(got.predictions, ref.predictions)
    np.testing.assert_allclose(got.clean_margins, ref.clean_margins, rtol=1e-12)
    assert got.certified_accuracy == ref.certified_accuracy and got.clean_accuracy == ref.clean_accuracy
    other = certify_in_memory(teacher, U[:5], y[:5], [0.0, 0.05])
    with pytest.raises(ValueError, match="disagree on CertifyResult field 'eps'"):
        merge_certify_results([ref, other])


def test_certify_cli_on_the_cluster_equals_the_in_memory_cli(cluster, tmp_path):
    """`implicit-cvx certify --address`: partitions certified on the workers, one samples.csv."""
    import json

    from implicit_cvx.cli import main

    teacher = _teacher(5)
    teacher.metadata["classes"] = [0, 1, 2]  # a classifier: certify needs its labels
    U = np.random.default_rng(5).standard_normal((40, 6))
    y = teacher.predict(U).argmax(axis=1)
    data = tmp_path / "data.npz"
    np.savez(data, X=U, y=y)
    teacher.save(tmp_path / "model.npz")
    base = ["certify", str(tmp_path / "model.npz"), "--data", str(data), "--eps", "0.01,0.05",
            "--eps-units", "raw", "--domain=-10,10", "--method", "interval"]
    assert main([*base, "--out", str(tmp_path / "mem")]) == 0
    assert main([*base, "--address", cluster.address, "--partitions", "3",
                 "--out", str(tmp_path / "dask")]) == 0
    for name in ("samples.csv",):
        assert (tmp_path / "dask" / name).read_text() == (tmp_path / "mem" / name).read_text()
    reps = [json.loads((tmp_path / d / "report.json").read_text()) for d in ("mem", "dask")]
    assert reps[0]["certified_accuracy"] == reps[1]["certified_accuracy"]
    assert main([*base, "--partitions", "3", "--out", str(tmp_path / "bad")]) == 2


def test_run_options_reach_the_methods_from_a_config():
    from implicit_cvx.config import ConfigError
    from implicit_cvx.train.fit import load_config, method_options

    opts = method_options(load_config(Path(__file__).resolve().parents[1] / "configs" / "adjoint_mnist.yaml"))
    assert (opts["data_backend"], opts["workers"], opts["partitions"]) == ("dask", 2, 4)
    with pytest.raises(ConfigError, match="data_backend"):
        fit_sim(np.zeros((4, 2)), teacher=_teacher(), task="regression", data_backend="spark")


def test_methods_without_partitions_refuse_partitioned_data():
    from implicit_cvx.train.gradient import fit_gradient

    parts = partition(np.zeros((6, 2)), np.array([0, 1] * 3), partitions=2)
    with pytest.raises(ValueError, match="'gradient' needs the samples in memory"):
        fit_gradient(parts, task="classification")
