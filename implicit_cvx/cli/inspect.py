"""`implicit-cvx info` and `implicit-cvx predict`."""

from __future__ import annotations

import json
import time

import numpy as np

from ..data import load_file
from ..files import OutputDirectory
from ..numerics import predicted_labels
from ..report import base_report, write_report
from .common import class_indices, load_model, positive_int, print_table, write_csv


def cmd_info(args) -> int:
    model = load_model(args.model)
    print(args.model)
    print_table([(k, json.dumps(v) if isinstance(v, (dict, list)) else v)
                  for k, v in model.describe().items()])
    return 0


def cmd_predict(args) -> int:
    t0 = time.perf_counter()
    model = load_model(args.model)
    ds = load_file(args.data, seed=0, test_size=0.5, label=args.label)
    X, labels = ds.X, (None if ds.task == "unlabelled" else ds.y)
    Yhat = model.predict(X)
    classes = model.metadata.get("classes")
    task = "classification" if classes is not None else "regression"
    report = base_report("predict", method=model.metadata.get("method"), task=task,
                         dataset=str(args.data), seed=None)
    report["samples"] = len(X)
    if task == "classification":
        pred = predicted_labels(Yhat)
        rows, header = [[i, classes[k]] for i, k in enumerate(pred)], ["row", "prediction"]
        if labels is not None:
            report["accuracy"] = float(np.mean(pred == class_indices(model, labels)))
            print(f"accuracy: {report['accuracy']:.4f} on {len(X)} samples")
    else:
        rows = [[i, *r] for i, r in enumerate(Yhat.tolist())]
        header = ["row"] + [f"y{j}" for j in range(Yhat.shape[1])]
        if labels is not None:
            report["rmse"] = float(np.sqrt(np.mean((Yhat.reshape(labels.shape) - labels.astype(float)) ** 2)))
            print(f"rmse: {report['rmse']:.4f} on {len(X)} samples")
    if args.out:
        with OutputDirectory(args.out) as out:
            write_csv(out.path / "predictions.csv", header, rows)
            report["seconds"] = time.perf_counter() - t0
            write_report(out.path, report)
        print(f"wrote {out.path / 'predictions.csv'} and {out.path / 'report.json'}")
    elif not args.quiet:
        for r in rows[: args.show]:
            print(*r)
        if len(rows) > args.show:
            print(f"... ({len(rows)} rows; --out DIR writes them all)")
    return 0


def add_commands(sub, formatter) -> None:
    s = sub.add_parser("info", formatter_class=formatter,
                       help="shapes, κ, ‖A‖_∞, λ_pf(|A|), block structure, inputs, provenance")
    s.add_argument("model", help="a model file (.npz) or a run directory holding model.npz")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("predict", formatter_class=formatter,
                       help="predict on your data (.npz with X[,y], or .csv with a label column)")
    s.add_argument("model", help="a model file (.npz) or a run directory holding model.npz")
    s.add_argument("--data", required=True, help=".npz (arrays X, optional y) or .csv file, raw inputs")
    s.add_argument("--label", default=None, help="label column of a .csv (default: label/y/target/class)")
    s.add_argument("--out", default=None, help="directory for predictions.csv and report.json")
    s.add_argument("--show", type=positive_int, default=20, help="rows printed without --out")
    s.add_argument("--quiet", action="store_true", help="print nothing but the accuracy / RMSE")
    s.set_defaults(func=cmd_predict)
