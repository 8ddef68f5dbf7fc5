"""Run logging for iterative fits: JSON-lines history, atomic checkpoints, resume, early stopping.

A run directory holds `history.jsonl` (one record per outer iteration, flushed per line) and
checkpoints `ckpt_<iteration>/` (model.npz via ImplicitModel.save, state.json, arrays.npz, and
any extra models such as the best one so far). A checkpoint directory is built under a temporary
name and renamed into place, then the `LATEST` pointer is replaced atomically: a run killed at any
moment (even SIGKILL) resumes from a complete checkpoint. Determinism on resume needs every random
draw to come from a Generator whose state is checkpointed (`rng_state` / `restore_rng`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import uuid
from dataclasses import dataclass, field

import numpy as np

from ..files import to_jsonable, write_text_atomic
from ..model import ImplicitModel

HISTORY = "history.jsonl"
LATEST = "LATEST"
RUN_JSON = "run.json"  # the config a run was started with (checked on resume)


def rng_state(rng: np.random.Generator) -> dict:
    """The JSON-able state of a Generator (its bit generator's state dict)."""
    return to_jsonable(rng.bit_generator.state)


def restore_rng(state: dict) -> np.random.Generator:
    """A Generator continuing exactly where the one whose `rng_state` was taken stopped."""
    bitgen = getattr(np.random, state["bit_generator"])()
    bitgen.state = state
    return np.random.Generator(bitgen)


@dataclass
class Checkpoint:
    """What a resumed run continues from."""

    iteration: int
    model: ImplicitModel
    state: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)


class RunLog:
    """History + checkpoints of one run in `out_dir`; `resume=True` loads the latest checkpoint.

    After construction with resume=True, `self.resumed` is the Checkpoint (or None when the
    directory has none) and history.jsonl holds only the records up to its iteration. A damaged
    latest checkpoint falls back to the previous good one (`self.notes` says so). Without
    resume, a directory that already holds a run is refused unless `overwrite` (then the run's
    files are removed; nothing else is). `config` (JSON) is recorded in run.json by a fresh run
    and must equal the recorded one on resume — the differing keys are named otherwise.
    """

    def __init__(self, out_dir, checkpoint_every: int = 1, resume: bool = False, keep: int = 2,
                 overwrite: bool = False, config: dict | None = None):
        if int(checkpoint_every) < 1:
            raise ValueError(f"checkpoint_every={checkpoint_every!r} must be a positive integer")
        if int(keep) < 1:
            raise ValueError(f"keep={keep!r} must be at least 1 checkpoint")
        self.out_dir = os.fspath(out_dir)
        self.checkpoint_every = int(checkpoint_every)
        self.keep = int(keep)
        self.notes: list[str] = []
        os.makedirs(self.out_dir, exist_ok=True)
        if resume:
            self._check_config(config)
            self.resumed = self._load_latest()
            self._truncate_history(self.resumed.iteration if self.resumed is not None else -1)
            return
        self.resumed = None
        if self._run_files() and not overwrite:
            raise FileExistsError(
                f"{self.out_dir} already holds a run ({', '.join(self._run_files()[:4])}): pass "
                "resume=True to continue it, overwrite=True to replace it, or use another directory")
        self._clear()
        if config is not None:
            write_text_atomic(os.path.join(self.out_dir, RUN_JSON),
                              json.dumps(to_jsonable({"config": config}), indent=2) + "\n")

    # ---- history -----------------------------------------------------------------------------
    @property
    def history_path(self) -> str:
        return os.path.join(self.out_dir, HISTORY)

    def log(self, record: dict) -> None:
        """Append one record (must carry an integer 'iteration') and flush it to the OS."""
        if "iteration" not in record:
            raise ValueError(f"history record needs an 'iteration' key, got keys {sorted(record)}")
        with open(self.history_path, "a") as fh:
            fh.write(json.dumps(to_jsonable(record)) + "\n")
            fh.flush()

    def history(self) -> list[dict]:
        """The records written so far (a torn last line from a killed run is skipped)."""
        return read_history(self.history_path)

    def _truncate_history(self, last_iteration: int) -> None:
        keep = [r for r in self.history() if r["iteration"] <= last_iteration]
        write_text_atomic(self.history_path, "".join(json.dumps(r) + "\n" for r in keep))

    def _run_files(self) -> list[str]:
        return sorted(n for n in os.listdir(self.out_dir)
                      if n.startswith(("ckpt_", ".ckpt-")) or n in (HISTORY, LATEST, RUN_JSON))

    def _clear(self) -> None:
        for name in self._run_files():
            path = os.path.join(self.out_dir, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)

    def _check_config(self, config: dict | None) -> None:
        """On resume: the run's recorded config must equal `config` (keys named otherwise)."""
        path = os.path.join(self.out_dir, RUN_JSON)
        if config is None or not os.path.exists(path):
            return
        with open(path) as fh:
            recorded = json.load(fh)["config"]
        changed = _differences(recorded, to_jsonable(config))
        if changed:
            raise ValueError(
                f"cannot resume the run in {self.out_dir}: its config differs in "
                + ", ".join(f"{k} ({a!r} → {b!r})" for k, a, b in changed[:8])
                + "; resume with the run's own config (and seed), or start a new run elsewhere")

    # ---- checkpoints -------------------------------------------------------------------------
    def due(self, iteration: int, final: bool = False) -> bool:
        """Whether outer iteration `iteration` (0-based) should be checkpointed."""
        return final or (iteration + 1) % self.checkpoint_every == 0

    def checkpoint(self, iteration: int, model: ImplicitModel, state: dict | None = None,
                   arrays: dict | None = None, models: dict | None = None) -> str:
        """Write a complete checkpoint atomically; returns its directory."""
        tmp = os.path.join(self.out_dir, f".ckpt-{uuid.uuid4().hex[:12]}")
        os.mkdir(tmp)  # usual permissions (mkdtemp's are 0700); renamed into place when complete
        model.save(os.path.join(tmp, "model.npz"))
        for name, extra in (models or {}).items():
            extra.save(os.path.join(tmp, f"model_{name}.npz"))
        arrays = {k: np.asarray(v) for k, v in (arrays or {}).items()}
        bad = [k for k, v in arrays.items() if v.dtype == object]
        if bad:
            raise ValueError(f"checkpoint arrays {bad} have dtype object; store numeric arrays")
        np.savez(os.path.join(tmp, "arrays.npz"), **arrays)
        meta = {"iteration": int(iteration), "state": state or {}, "models": sorted(models or {})}
        with open(os.path.join(tmp, "state.json"), "w") as fh:
            json.dump(to_jsonable(meta), fh)
        final = os.path.join(self.out_dir, f"ckpt_{int(iteration):08d}")
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_text_atomic(os.path.join(self.out_dir, LATEST), os.path.basename(final))
        self._prune()
        return final

    def _checkpoint_dirs(self) -> list[str]:
        return sorted(d for d in os.listdir(self.out_dir) if d.startswith("ckpt_"))

    def _prune(self) -> None:
        for name in self._checkpoint_dirs()[: -self.keep]:
            shutil.rmtree(os.path.join(self.out_dir, name), ignore_errors=True)

    def _load_latest(self) -> Checkpoint | None:
        """The newest loadable checkpoint (LATEST's first, then older ones), noting each damaged
        one skipped; None when there is none at all."""
        names = self._checkpoint_dirs()[::-1]
        pointer = os.path.join(self.out_dir, LATEST)
        if os.path.exists(pointer):
            with open(pointer) as fh:
                first = fh.read().strip()
            names = [first] + [n for n in names if n != first]
        damaged = []
        for name in names:
            try:
                ck = load_checkpoint(os.path.join(self.out_dir, name))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                damaged.append(f"{name} ({type(exc).__name__}: {str(exc)[:120]})")
                continue
            if damaged:
                self.notes.append(f"damaged checkpoint(s) {'; '.join(damaged)} skipped; resuming "
                                  f"from {name} (iteration {ck.iteration})")
            return ck
        if damaged:
            raise ValueError(f"no loadable checkpoint in {self.out_dir}: {'; '.join(damaged)}; "
                             "start the run again with --overwrite")
        return None


def load_checkpoint(path: str) -> Checkpoint:
    """Read one checkpoint directory written by RunLog.checkpoint."""
    with open(os.path.join(path, "state.json")) as fh:
        meta = json.load(fh)
    with np.load(os.path.join(path, "arrays.npz"), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    models = {n: ImplicitModel.load(os.path.join(path, f"model_{n}.npz")) for n in meta["models"]}
    return Checkpoint(meta["iteration"], ImplicitModel.load(os.path.join(path, "model.npz")),
                      meta["state"], arrays, models)


def _differences(a, b, prefix: str = "") -> list[tuple]:
    """(dotted key, old, new) for every leaf where two JSON mappings differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if a == b else [(prefix, a, b)]


def read_history(path: str) -> list[dict]:
    """Records of a history.jsonl; a torn (unparseable) final line is ignored."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as fh:
        for line in fh:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


class EarlyStopping:
    """Stop when a monitored value (lower is better) has not improved by min_delta for
    `patience` consecutive checks. State is JSON-able for checkpoints."""

    def __init__(self, patience: int, min_delta: float = 0.0):
        if int(patience) < 1:
            raise ValueError(f"patience={patience!r} must be a positive integer")
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.best = math.inf
        self.best_iteration = -1
        self.bad = 0

    def update(self, value: float, iteration: int) -> bool:
        """Record a value; True if it is a new best."""
        if value < self.best - self.min_delta:
            self.best, self.best_iteration, self.bad = float(value), int(iteration), 0
            return True
        self.bad += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad >= self.patience

    def state(self) -> dict:
        return {"best": self.best if math.isfinite(self.best) else None,
                "best_iteration": self.best_iteration, "bad": self.bad}

    def load_state(self, state: dict) -> None:
        best = state.get("best")
        self.best = math.inf if best is None else float(best)
        self.best_iteration, self.bad = int(state["best_iteration"]), int(state["bad"])


_SHOWN = ("train_loss", "val_loss", "objective", "eta", "certified")  # keys a progress line shows
_LABELS = {"eta": "step size", "certified": "certified at the largest ε, so far"}


def _summary_line(record: dict) -> dict:
    return {_LABELS.get(k, k): f"{record[k]:.4g}" for k in _SHOWN
            if isinstance(record.get(k), (int, float))}


class Progress:
    """Progress of an iterative fit: a tqdm bar on a terminal; otherwise, when enabled, one plain
    log line per iteration on stderr (readable in a CI log or a file); silent when disabled."""

    def __init__(self, total: int, enabled: bool, desc: str, initial: int = 0):
        self.enabled, self.desc, self.total, self.count = enabled, desc, total, initial
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, initial=initial, leave=False)

    def update(self, record: dict | None = None) -> None:
        self.count += 1
        shown = _summary_line(record or {})
        if self.bar is not None:
            self.bar.update()
            self.bar.set_postfix(shown)
        elif self.enabled:
            text = "  ".join(f"{k} {v}" for k, v in shown.items())
            print(f"{self.desc} {self.count}/{self.total}  {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def progress_bar(total: int, progress: bool = False, desc: str | None = None, initial: int = 0):
    """A Progress reporter (see Progress) for `total` iterations."""
    return Progress(total, progress, desc or "fit", initial)
