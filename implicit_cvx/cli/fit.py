"""`implicit-cvx fit CONFIG --out DIR`: a config in, a model and its report out."""

from __future__ import annotations

from pathlib import Path

from ..train.fit import load_config, run_fit
from .common import print_table

SHOWN = ("train_accuracy", "test_accuracy", "train_rmse", "test_rmse", "teacher_accuracy",
         "teacher_rmse", "params_fraction_of_teacher", "train_loss", "outer_iterations",
         "max_duality_gap", "rows_escalated", "kappa", "inf_norm_A", "equilibrium_residual", "nnz",
         "n_params", "seconds")


def cmd_fit(args) -> int:
    cfg = load_config(args.config)
    if args.seed is not None:
        cfg["seed"] = args.seed
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite contradict each other; give one")
    print(f"fitting {cfg['method']!r} on {cfg['dataset']['name']!r} (seed {cfg['seed']}) → {args.out}")
    model, report = run_fit(cfg, args.out, config_path=args.config, resume=args.resume,
                            overwrite=args.overwrite, progress=not args.no_progress)
    for note in report.get("notes", []):
        print(f"note: {note}")
    print_table((k, report[k]) for k in SHOWN if report.get(k) is not None)
    uncertified = report.get("uncertified_steps") or []
    if uncertified:
        print(f"  WARNING: {len(uncertified)} step(s) accepted without a certificate "
              "(accept_uncertified); see report.json 'uncertified_steps'")
    print(f"wrote {Path(args.out) / 'model.npz'}, report.json, A_sparsity.png")
    return 0


def add_commands(sub, formatter) -> None:
    s = sub.add_parser("fit", formatter_class=formatter,
                       help="fit a model from a YAML config (methods sim, adjoint, fenchel, gradient)")
    s.add_argument("config", help="YAML config, e.g. configs/adjoint_digits.yaml")
    s.add_argument("--out", required=True,
                   help="output directory (model.npz, report.json, history, checkpoints); must be "
                        "new or empty unless --resume / --overwrite")
    s.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (same config and seed)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (only the files a fit writes are removed)")
    s.add_argument("--seed", type=int, default=None, help="override the config's seed")
    s.add_argument("--no-progress", action="store_true", help="no progress bar / progress lines")
    s.set_defaults(func=cmd_fit)
