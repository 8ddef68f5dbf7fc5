"""Bad inputs, faults and interruptions at the command line: each ends in a one-line error with the
documented exit code (2 bad input, 1 failed computation, 130 Ctrl-C), or in the documented
behaviour — never in a traceback, a hang, a silent acceptance or a lost file."""

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from implicit_cvx import files
from implicit_cvx.cli import main
from implicit_cvx.files import OutputDirectory
from implicit_cvx.train.init import random_model

SMALL_FIT = {"method": "adjoint", "seed": 0, "dataset": {"name": "digits", "max_train": 120},
             "model": {"n_states": 6, "kappa": 0.9, "include_D": False}, "loss": "cross_entropy",
             "adjoint": {"max_outer": 2, "batch_size": 60}, "run": {"checkpoint_every": 1}}


@pytest.fixture
def model_file(tmp_path):
    model = random_model(4, 3, 2, kappa=0.5, seed=0)
    model.metadata.update(classes=["no", "yes"], kappa=0.5)
    return str(model.save(tmp_path / "m.npz"))


def _csv(path, rows, header="a,b,c,label"):
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return str(path)


def _config(path, cfg=None, text=None):
    path.write_text(text if text is not None else yaml.safe_dump(cfg or SMALL_FIT))
    return str(path)


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str, fragment: str):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "error:" in lines[0] and fragment in lines[0], lines[0]


CASES = {
    # name: (argv builder, exit code, fragment of the one-line message)
    "out is a file": (lambda t, m: ["predict", m, "--data", _csv(t / "d.csv", [[1, 2, 3, "no"]]),
                                    "--out", _csv(t / "f.csv", [])], 2, "is a file"),
    "config is a directory": (lambda t, m: ["fit", str(t), "--out", str(t / "o")], 2, "is not a file"),
    "data is a directory": (lambda t, m: ["predict", m, "--data", str(t)], 2, "is a directory"),
    "missing model": (lambda t, m: ["info", str(t / "none.npz")], 2, "does not exist"),
    "directory without a model": (lambda t, m: ["info", str(t)], 2, "without a model.npz"),
    "yaml alias bomb": (lambda t, m: ["fit", _config(t / "c.yaml", text="a: &a [1]\nb: [*a, *a]\n"),
                                      "--out", str(t / "o")], 2, "anchors"),
    "section not a mapping": (lambda t, m: ["fit", _config(t / "c.yaml", text="model: false\n"),
                                            "--out", str(t / "o")], 2, "must be a mapping"),
    "duplicate key": (lambda t, m: ["fit", _config(t / "c.yaml", text="seed: 1\nseed: 2\n"),
                                    "--out", str(t / "o")], 2, "duplicate config key 'seed'"),
    "mismatched X and y": (lambda t, m: ["predict", m, "--data", _npz(t, 5, 4)], 2, "one label per row"),
    "unknown label": (lambda t, m: ["predict", m, "--data", _csv(t / "d.csv", [[1, 2, 3, "maybe"]])],
                      2, "not among the model's classes"),
    "no split recorded": (lambda t, m: ["certify", m, "--eps", "0.1", "--out", str(t / "o")], 2,
                          "records no data split"),
    "resume and overwrite": (lambda t, m: ["fit", _config(t / "c.yaml"), "--out", str(t / "o"),
                                           "--resume", "--overwrite"], 2, "contradict"),
    "huge model": (lambda t, m: ["fit", _config(t / "c.yaml", {**SMALL_FIT, "model": {"n_states": 10_000_000}}),
                                 "--out", str(t / "o"), "--no-progress"], 1, "out of memory"),
}


def _npz(t, m, my):
    np.savez(t / "d.npz", X=np.zeros((m, 3)), y=np.zeros(my, dtype=int))
    return str(t / "d.npz")


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_ends_in_one_clear_line(case, tmp_path, model_file, capsys):
    build, code, fragment = CASES[case]
    got, _, err = _run(capsys, build(tmp_path, model_file))
    assert got == code
    _one_line_error(err, fragment)


@pytest.mark.parametrize("flag", ["-5", "0", "x"])
def test_limit_must_be_positive(flag, model_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["certify", model_file, "--dataset", "digits", "--eps", "0.1", "--limit", flag,
              "--out", str(tmp_path)])
    assert exc.value.code == 2 and "--limit: must be an integer ≥ 1" in capsys.readouterr().err


def test_a_one_row_csv_is_predicted(model_file, tmp_path, capsys):
    code, out, _ = _run(capsys, ["predict", model_file, "--data", _csv(tmp_path / "d.csv", [[1, 2, 3, "no"]])])
    assert code == 0 and "accuracy" in out and "on 1 samples" in out


def test_info_finds_the_model_of_a_run_directory_and_version(model_file, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.replace(model_file, run_dir / "model.npz")
    assert _run(capsys, ["info", str(run_dir)])[0] == 0
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and "implicit-cvx" in capsys.readouterr().out


def test_fit_refuses_a_non_empty_out_and_keeps_its_files(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = _run(capsys, ["fit", _config(tmp_path / "c.yaml"), "--out", str(out)])
    assert code == 2
    _one_line_error(err, "is not empty")
    assert (out / "notes.txt").read_text() == "mine"
    assert _run(capsys, ["fit", _config(tmp_path / "c.yaml"), "--out", str(out), "--overwrite",
                         "--no-progress"])[0] == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.npz").exists()
    code, _, err = _run(capsys, ["fit", _config(tmp_path / "c.yaml"), "--out", str(out), "--resume",
                                 "--seed", "1", "--no-progress"])
    assert code == 2
    _one_line_error(err, "seed (0 → 1)")


def test_a_second_writer_is_refused(tmp_path, capsys):
    with OutputDirectory(tmp_path / "o"):
        code, _, err = _run(capsys, ["fit", _config(tmp_path / "c.yaml"), "--out", str(tmp_path / "o")])
    assert code == 1
    _one_line_error(err, "is in use by implicit-cvx pid")


def test_a_failed_write_keeps_the_earlier_file_and_leaves_no_temporary(model_file, tmp_path, capsys,
                                                                      monkeypatch):
    data, out = _csv(tmp_path / "d.csv", [[1, 2, 3, "no"], [0, 0, 1, "yes"]]), tmp_path / "o"
    assert _run(capsys, ["predict", model_file, "--data", data, "--out", str(out)])[0] == 0
    before = (out / "predictions.csv").read_text()
    assert oct((out / "report.json").stat().st_mode & 0o777) == oct(0o666 & ~_umask())

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full_disk)
    code, _, err = _run(capsys, ["predict", model_file, "--data", data, "--out", str(out)])
    assert code == 1
    _one_line_error(err, "No space left on device")
    assert (out / "predictions.csv").read_text() == before
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_stale_temporary_files_are_removed(model_file, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / ".report.json.0123abcd.tmp").write_text("half a file")
    data = _csv(tmp_path / "d.csv", [[1, 2, 3, "no"]])
    assert _run(capsys, ["predict", model_file, "--data", data, "--out", str(out)])[0] == 0
    assert not (out / ".report.json.0123abcd.tmp").exists()


def test_an_unreachable_scheduler_is_named(tmp_path, capsys, monkeypatch):
    from implicit_cvx import parallel

    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT", "1s")
    cfg = {**SMALL_FIT, "run": {"backend": "dask", "address": "tcp://127.0.0.1:9", "n_jobs": 2}}
    code, _, err = _run(capsys, ["fit", _config(tmp_path / "c.yaml", cfg), "--out", str(tmp_path / "o"),
                                 "--no-progress"])
    assert code == 1
    _one_line_error(err, "cannot reach the dask scheduler at 'tcp://127.0.0.1:9'")


def test_a_failing_computation_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    from implicit_cvx.equilibrium import EquilibriumError, EquilibriumInfo
    from implicit_cvx.train import driver

    def broken(*args, **kwargs):
        raise EquilibriumError(EquilibriumInfo("picard", 10, 1.0), 1e-10)

    monkeypatch.setattr(driver, "drive", broken)
    argv = ["fit", _config(tmp_path / "c.yaml"), "--out", str(tmp_path / "o"), "--no-progress"]
    code, _, err = _run(capsys, argv)
    assert code == 1
    _one_line_error(err, "did not converge")
    with pytest.raises(EquilibriumError):
        main([*argv[:3], str(tmp_path / "o2"), "--debug"])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _restore_sigint():
    """Default SIGINT in the child: a shell starts background jobs with SIGINT ignored, which the
    child would inherit (Python then installs no KeyboardInterrupt handler and Ctrl-C does nothing)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*args, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "implicit_cvx.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_restore_sigint, **kwargs)


def test_ctrl_c_leaves_a_checkpoint_to_resume(tmp_path):
    cfg = {**SMALL_FIT, "adjoint": {"max_outer": 40, "batch_size": 60}}
    out = tmp_path / "o"
    proc = _cli("fit", _config(tmp_path / "c.yaml", cfg), "--out", str(out), "--no-progress")
    deadline = time.time() + 120
    while not (out / "LATEST").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert err.decode().strip().splitlines()[-1] == "implicit-cvx fit: interrupted; continue with --resume"
    resumed = _cli("fit", str(tmp_path / "c.yaml"), "--out", str(out), "--resume", "--no-progress")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()[-2000:]
    assert (out / "model.npz").exists()


def test_a_closed_pipe_ends_quietly(model_file, tmp_path):
    data = _csv(tmp_path / "d.csv", [[1, 2, 3, "no"]] * 500)
    proc = _cli("predict", model_file, "--data", data, "--show", "500")
    proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "Error" not in err, err
