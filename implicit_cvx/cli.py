"""The `implicit-cvx` command line: info, predict, fit, certify, attack.

All I/O and printing of the toolkit lives here; the numerics are called as plain functions.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np


def _load_model(path):
    from .model import ImplicitModel

    return ImplicitModel.load(path)


def _print_table(rows: list[tuple[str, object]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


def cmd_info(args) -> int:
    model = _load_model(args.model)
    info = model.describe()
    print(f"{args.model}")
    _print_table([(k, json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in info.items()])
    return 0


def _user_data(model, path, label=None):
    """(U preprocessed with the model's stored preprocessing, labels or None, raw row indices)."""
    from .data import load_file, preprocess

    ds = load_file(path, seed=0, test_size=0.5, label=label)
    U = preprocess(model.metadata.get("preprocessing", {"kind": "none"}), ds.X)
    return U, (None if ds.task == "unlabelled" else ds.y)


def _labels_to_index(model, y):
    classes = model.metadata.get("classes")
    if classes is None:
        return None
    lookup = {str(c): i for i, c in enumerate(classes)}
    missing = sorted({str(v) for v in y.tolist()} - set(lookup))
    if missing:
        raise ValueError(f"labels {missing[:5]} are not among the model's classes {classes}")
    return np.array([lookup[str(v)] for v in y.tolist()])


def _class_predictions(logits: np.ndarray) -> np.ndarray:
    return (logits[:, 0] > 0).astype(int) if logits.shape[1] == 1 else np.argmax(logits, axis=1)


def cmd_predict(args) -> int:
    from .report import base_report, write_report

    t0 = time.perf_counter()
    model = _load_model(args.model)
    U, y = _user_data(model, args.data, args.label)
    Yhat = model.predict(U)
    classes = model.metadata.get("classes")
    task = "classification" if classes is not None else "regression"
    report = base_report("predict", method=model.metadata.get("method"), task=task,
                         dataset=str(args.data), seed=None)
    report["samples"] = len(U)
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    if task == "classification":
        pred_idx = _class_predictions(Yhat)
        preds = [classes[i] for i in pred_idx]
        if y is not None:
            acc = float(np.mean(pred_idx == _labels_to_index(model, y)))
            report["accuracy"] = acc
            print(f"accuracy: {acc:.4f} on {len(U)} samples")
        rows = [[i, p] for i, p in enumerate(preds)]
        header = ["row", "prediction"]
    else:
        if y is not None:
            rmse = float(np.sqrt(np.mean((Yhat.reshape(y.shape) - y.astype(float)) ** 2)))
            report["rmse"] = rmse
            print(f"rmse: {rmse:.4f} on {len(U)} samples")
        rows = [[i, *r] for i, r in enumerate(Yhat.tolist())]
        header = ["row"] + [f"y{j}" for j in range(Yhat.shape[1])]
    if out:
        with open(out / "predictions.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows)
        report["seconds"] = time.perf_counter() - t0
        write_report(out, report)
        print(f"wrote {out / 'predictions.csv'} and {out / 'report.json'}")
    elif not args.quiet:
        for r in rows[:20]:
            print(*r)
        if len(rows) > 20:
            print(f"... ({len(rows)} rows; use --out DIR to write them all)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="implicit-cvx",
        description="Implicit models x = φ(Ax + Bu + b_x), ŷ = Cx + Du + b_y, trained by convex "
        "optimization, with robustness certificates.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("info", help="shapes, κ, ‖A‖_∞, λ_pf(|A|), block structure, provenance")
    s.add_argument("model", help="a model file (.npz) written by fit or ImplicitModel.save")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("predict", help="predict on user data (.npz with X[,y] or .csv with a label column)")
    s.add_argument("model")
    s.add_argument("--data", required=True, help=".npz (arrays X, optional y) or .csv file")
    s.add_argument("--label", default=None, help="label column of a .csv (default: label/y/target/class)")
    s.add_argument("--out", default=None, help="directory for predictions.csv and report.json")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_predict)

    from . import cli_run

    cli_run.add_commands(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"implicit-cvx {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
