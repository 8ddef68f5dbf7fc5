"""RunLog: history, atomic checkpoints, resume after a real SIGKILL, early stopping, init models."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from implicit_cvx.model import ImplicitModel
from implicit_cvx.train.init import init_model, random_model
from implicit_cvx.train.runlog import (
    EarlyStopping,
    RunLog,
    load_checkpoint,
    progress_bar,
    read_history,
    restore_rng,
    rng_state,
)


def _model(seed=0):
    return random_model(5, 3, 2, kappa=0.9, seed=seed)


# ---- init ------------------------------------------------------------------------------------
def test_random_model_is_in_ball_and_seeded():
    m1, m2 = random_model(20, 4, 3, kappa=0.8, seed=3), random_model(20, 4, 3, kappa=0.8, seed=3)
    assert np.abs(m1.A).sum(axis=1).max() <= 0.8
    assert np.array_equal(m1.A, m2.A) and np.array_equal(m1.C, m2.C)
    assert not np.array_equal(m1.B, random_model(20, 4, 3, kappa=0.8, seed=4).B)
    assert (m1.A.shape, m1.B.shape, m1.C.shape, m1.D.shape) == ((20, 20), (20, 4), (3, 20), (3, 4))
    assert not np.any(random_model(20, 4, 3, kappa=0.8, seed=3, include_D=False).D)
    assert np.array_equal(m1.b_x, m2.b_x) and np.all(m1.b_x != 0) and not np.any(m1.b_y)
    assert not np.any(random_model(20, 4, 3, kappa=0.8, seed=3, bias_scale=0.0).b_x)


def test_init_model_sources_and_errors(tmp_path):
    m = _model()
    path = m.save(tmp_path / "m.npz")
    for src in (m, str(path)):
        got = init_model(src, n_inputs=3, n_outputs=2, kappa=0.9)
        assert np.array_equal(got.A, m.A) and got.A is not m.A
    assert init_model("random", n_inputs=3, n_outputs=2, n_states=7, kappa=0.9).n_states == 7
    with pytest.raises(ValueError, match="4 inputs"):
        init_model(m, n_inputs=4, n_outputs=2, kappa=0.9)
    with pytest.raises(ValueError, match="n_states"):
        init_model(m, n_inputs=3, n_outputs=2, n_states=6, kappa=0.9)
    with pytest.raises(ValueError, match="‖A‖_∞"):
        init_model(m, n_inputs=3, n_outputs=2, kappa=0.1)
    with pytest.raises(ValueError, match="neither"):
        init_model(str(tmp_path / "missing.npz"), n_inputs=3, n_outputs=2, kappa=0.9)
    with pytest.raises(ValueError, match="kappa"):
        random_model(3, 2, 1, kappa=1.0)


def test_data_init_starts_every_state_active_on_part_of_the_data():
    U = np.random.default_rng(0).uniform(0, 1, (300, 10))  # inputs in [0, 1], like digits
    kw = dict(n_inputs=10, n_outputs=3, n_states=40, kappa=0.9, seed=1)
    plain, placed = init_model("random", **kw), init_model("data", U=U, **kw)
    dead = (plain.equilibrium(U) <= 0).all(axis=0)
    assert dead.sum() >= 3  # the defect spread_biases removes: states inactive on every row
    active = (placed.equilibrium(U) > 0).mean(axis=0)
    assert active.min() >= 0.05 and active.max() <= 0.95
    for name in ("A", "B", "C", "D"):  # only the biases move; the draw is the "random" one
        assert np.array_equal(getattr(plain, name), getattr(placed, name))
    assert np.array_equal(placed.b_x, init_model("data", U=U, **kw).b_x)  # seeded
    with pytest.raises(ValueError, match="pass U"):
        init_model("data", **kw)


# ---- history and checkpoints -----------------------------------------------------------------
def test_history_checkpoint_resume_roundtrip(tmp_path):
    run = RunLog(tmp_path, checkpoint_every=2, keep=2)
    rng = np.random.default_rng(5)
    for it in range(5):
        run.log({"iteration": it, "loss": np.float64(1.0 / (it + 1)), "bad": float("nan")})
        if run.due(it):
            run.checkpoint(it, _model(it), state={"rng": rng_state(rng), "step": it},
                           arrays={"m": np.arange(it + 1.0)}, models={"best": _model(99)})
            expected_next = rng.standard_normal(3)
    assert [r["iteration"] for r in run.history()] == [0, 1, 2, 3, 4]
    assert run.history()[0]["bad"] is None
    # keep=2: only the last two checkpoints remain; no temporary directories left behind
    assert sorted(d for d in os.listdir(tmp_path) if "ckpt" in d) == ["ckpt_00000001", "ckpt_00000003"]
    with open(tmp_path / "history.jsonl", "a") as fh:  # a torn line, as a SIGKILL can leave
        fh.write('{"iteration": 5, "lo')
    res = RunLog(tmp_path, checkpoint_every=2, resume=True).resumed
    assert res.iteration == 3 and res.state["step"] == 3
    assert np.array_equal(res.arrays["m"], np.arange(4.0))
    assert np.array_equal(res.model.A, _model(3).A) and np.array_equal(res.models["best"].B, _model(99).B)
    assert np.array_equal(restore_rng(res.state["rng"]).standard_normal(3), expected_next)
    assert [r["iteration"] for r in read_history(tmp_path / "history.jsonl")] == [0, 1, 2, 3]
    assert load_checkpoint(tmp_path / "ckpt_00000003").iteration == 3
    # a fresh run replaces the run only when asked to
    fresh = RunLog(tmp_path, overwrite=True)
    assert fresh.history() == [] and not any("ckpt" in d for d in os.listdir(tmp_path))
    assert RunLog(tmp_path, resume=True).resumed is None


def test_checkpoint_refuses_object_arrays_and_bad_args(tmp_path):
    run = RunLog(tmp_path)
    with pytest.raises(ValueError, match="dtype object"):
        run.checkpoint(0, _model(), arrays={"x": np.array([{}, 1], dtype=object)})
    with pytest.raises(ValueError, match="checkpoint_every"):
        RunLog(tmp_path, checkpoint_every=0)
    with pytest.raises(ValueError, match="iteration"):
        run.log({"loss": 1.0})


def test_early_stopping_and_progress():
    es = EarlyStopping(patience=2, min_delta=0.1)
    assert es.update(1.0, 0) and not es.update(0.95, 1) and not es.should_stop
    assert not es.update(0.99, 2) and es.should_stop and es.best_iteration == 0
    es2 = EarlyStopping(patience=2)
    es2.load_state(json.loads(json.dumps(es.state())))
    assert (es2.best, es2.bad, es2.best_iteration) == (1.0, 2, 0)



def test_progress_prints_plain_lines_when_not_a_terminal(capsys):
    bar = progress_bar(10, progress=True, desc="adjoint")  # stderr is not a TTY under pytest
    bar.update({"train_loss": 0.5, "eta": 2.0, "accepted": True})
    bar.close()
    err = capsys.readouterr().err
    assert err.startswith("adjoint 1/10") and "train_loss 0.5" in err and "step size 2" in err
    assert "eta" not in err
    silent = progress_bar(10, progress=False)
    silent.update({"train_loss": 1.0})
    assert capsys.readouterr().err == ""


# ---- resume after a real SIGKILL, for every method ---------------------------------------------
_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from implicit_cvx.train.runlog import RunLog
    from implicit_cvx.train import adjoint, fenchel, gradient, sim

    class SlowRunLog(RunLog):  # leaves time to kill the run between checkpoints
        def checkpoint(self, *args, **kwargs):
            out = super().checkpoint(*args, **kwargs)
            time.sleep(float(sys.argv[4]))
            return out

    method, out, resume, n = sys.argv[1], sys.argv[2], sys.argv[3] == "1", STEPS
    rng = np.random.default_rng(0)
    U = rng.uniform(-1, 1, (36, 2))
    Y = np.sin(2 * U[:, :1]) + U[:, 1:] ** 2
    run = SlowRunLog(out, checkpoint_every=1, resume=resume)
    common = dict(task="regression", seed=1, run=run)
    if method == "gradient":
        res = gradient.fit_gradient(U, Y, n_states=6, lr=1e-2, epochs=n, batch_size=8, **common)
    elif method == "adjoint":  # random 12-row subsets: the resumed run must draw the same ones
        res = adjoint.fit_adjoint(U, Y, n_states=6, kappa=0.8, max_outer=n, batch_size=12, **common)
    elif method == "fenchel":
        res = fenchel.fit_fenchel(U, Y, n_states=6, kappa=0.8, max_outer=n, x_iter=50, **common)
    else:  # one step: a killed fit restarts from scratch
        from sklearn.neural_network import MLPRegressor
        teacher = MLPRegressor(hidden_layer_sizes=(8, 6), max_iter=400, random_state=0).fit(U, Y[:, 0])
        res = sim.fit_sim(U, Y, teacher=teacher, kappa=0.9, **common)
    res.model.save(out + "/final.npz")
    """
)
STEPS = 10
METHOD_NAMES = ("adjoint", "fenchel", "gradient", "sim")


def _launch(method, out, resume, sleep):
    script = _SCRIPT.replace("STEPS", str(STEPS))
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", script, method, str(out), "1" if resume else "0",
                             str(sleep)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _latest_iteration(out):
    try:
        with open(out / "LATEST") as fh:
            return int(fh.read().strip().split("_")[1])
    except (FileNotFoundError, ValueError, IndexError):
        return -1


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_resume_after_sigkill_reaches_same_model(tmp_path, method):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = _launch(method, killed, resume=False, sleep=0.5)
    if method == "sim":  # one step: killed within it, or finished (resume then reloads it)
        time.sleep(1.0)
        proc.kill()
        proc.wait()
        (killed / "final.npz").unlink(missing_ok=True)
    else:
        deadline = time.time() + 90
        while _latest_iteration(killed) < 3 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
        assert not (killed / "final.npz").exists()
        assert 3 <= _latest_iteration(killed) < STEPS - 1

    resumed = _launch(method, killed, resume=True, sleep=0)
    uninterrupted = _launch(method, clean, resume=False, sleep=0)
    for p in (resumed, uninterrupted):
        assert p.wait(timeout=180) == 0, p.stderr.read().decode()[-2000:]
    a, b = ImplicitModel.load(killed / "final.npz"), ImplicitModel.load(clean / "final.npz")
    for name in ("A", "B", "C", "D", "b_x", "b_y"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=0, atol=1e-9)
    hist, clean_hist = read_history(killed / "history.jsonl"), read_history(clean / "history.jsonl")
    assert [r["iteration"] for r in hist] == [r["iteration"] for r in clean_hist]
    key = "stages" if method == "sim" else "train_loss"
    assert [r[key] for r in hist] == pytest.approx([r[key] for r in clean_hist], abs=1e-9) \
        if method != "sim" else len(hist) == len(clean_hist) == 1


def test_a_run_directory_is_not_silently_replaced(tmp_path):
    run = RunLog(tmp_path, checkpoint_every=1)
    run.log({"iteration": 0, "loss": 1.0})
    run.checkpoint(0, _model())
    with pytest.raises(FileExistsError, match="already holds a run"):
        RunLog(tmp_path)
    (tmp_path / "mine.txt").write_text("keep me")
    RunLog(tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_resume_refuses_a_different_config_naming_the_keys(tmp_path):
    cfg = {"seed": 0, "adjoint": {"max_outer": 5, "eta": 1.0}}
    RunLog(tmp_path, config=cfg).log({"iteration": 0})
    with pytest.raises(ValueError, match=r"adjoint.max_outer \(5 → 6\), seed \(0 → 1\)"):
        RunLog(tmp_path, resume=True, config={"seed": 1, "adjoint": {"max_outer": 6, "eta": 1.0}})
    assert RunLog(tmp_path, resume=True, config=cfg).resumed is None  # same config: accepted


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path):
    run = RunLog(tmp_path, checkpoint_every=1, keep=3)
    for it in range(3):
        run.log({"iteration": it})
        run.checkpoint(it, _model(seed=it))
    (tmp_path / "ckpt_00000002" / "state.json").write_text("{broken")
    resumed = RunLog(tmp_path, resume=True)
    assert resumed.resumed.iteration == 1
    assert "ckpt_00000002" in resumed.notes[0] and "resuming from ckpt_00000001" in resumed.notes[0]
    assert [r["iteration"] for r in resumed.history()] == [0, 1]
    for name in ("ckpt_00000000", "ckpt_00000001"):
        (tmp_path / name / "model.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="no loadable checkpoint"):
        RunLog(tmp_path, resume=True)


def test_history_seconds_are_not_counted_twice_after_a_checkpoint(tmp_path):
    from implicit_cvx.train.adjoint import fit_adjoint

    rng = np.random.default_rng(0)
    U = rng.standard_normal((40, 3))
    y = (U[:, 0] > 0).astype(int)
    t0 = time.perf_counter()
    res = fit_adjoint(U, y, task="classification", n_states=4, max_outer=4, min_rel_decrease=0.0,
                      run=RunLog(tmp_path, checkpoint_every=1))
    wall = time.perf_counter() - t0
    seconds = [r["seconds"] for r in res.history]
    assert len(seconds) >= 3 and seconds == sorted(seconds)
    assert seconds[-1] <= wall and res.summary["seconds"] <= wall
