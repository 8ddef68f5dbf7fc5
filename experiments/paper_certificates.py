"""The paper's remaining certificates on digits (§4.4–§4.6): sparse perturbations (LP and its
attack, against the closed form and the Table 1 attacks), the SDP relaxation against lp and
interval, and the certified worst-case loss against PGD.

- Sparse: the Table 1 digits net (sklearn MLPClassifier 64-32-10, pixels /16, from_sklearn), the
  first SAMPLES test rows; k inputs changed to ANY value in [0, 1] (ε = 1: the Table 1 threat) or
  by at most ε = 0.1. Certified share by the closed form of §4.4 (bounds.sparse_perturbation_bound
  boxes), the sparse boxes, and the sparse LP; falsified share by the LP's sparse attack; success
  rates of the sensitivity / gradient attacks (Table 1, one draw) at the same k. Every sample the
  LP certifies must survive every attack (asserted).
- SDP: an `adjoint` model with n = 16 states (general A, D = 0, 10 outer iterations), SDP_SAMPLES
  test rows; the SDP (SCS, our dual certificate, on the tightened boxes lp uses) runs only on
  margins lp leaves ≤ 0, and a sample stops at its first margin the SDP leaves ≤ 0; PGD (40 steps,
  CE and margin) gives the attack bound.
- Worst-case loss: the digits net, mean over the test rows of the certified upper bound of the
  cross-entropy over the ε-ball (interval and lp margins), beside the clean loss and the loss PGD
  reaches (a lower bound of the true worst case).

Full run (the committed results):  python experiments/paper_certificates.py
Smoke run (a few samples; _quick suffix): python experiments/paper_certificates.py --quick
Writes experiments/results/paper_certificates{,_quick}.{json,md}.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from common import limit_blas, make_parser, markdown_table, provenance, write_json
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from implicit_cvx.convert import from_sklearn
from implicit_cvx.data import load_dataset
from implicit_cvx.numerics import class_margins, cross_entropy
from implicit_cvx.robust import (
    certify,
    gradient_attack,
    margin_lower_bounds,
    pgd_attack,
    sensitivity_attack,
    sparse_attack,
    sparse_closed_form_margins,
    sparse_margin_lower_bounds,
    worst_case_loss_bounds,
)
from implicit_cvx.robust.boxes import lp_boxes
from implicit_cvx.robust.sdp import SdpRelaxation
from implicit_cvx.train.adjoint import fit_adjoint

DOMAIN = (0.0, 1.0)
SAMPLES, SDP_SAMPLES = 100, 30
SPARSE = [(1, 1.0), (6, 1.0), (13, 1.0), (1, 0.1), (6, 0.1), (13, 0.1)]  # (k, ε); 6, 13 = 10%, 20%
SDP_EPS = (0.02, 0.05)
LOSS_EPS = (0.005, 0.01, 0.02)
QUICK = {"samples": 6, "sdp_samples": 2, "sparse": [(1, 1.0), (6, 0.1)], "sdp_eps": (0.05,),
         "loss_eps": (0.01,)}


def _share(mask) -> float:
    return float(np.mean(mask)) if np.size(mask) else float("nan")


def sparse_rows(net, U, y, settings) -> list[dict]:
    correct = class_margins(net.predict(U), y) > 0
    rows = []
    for k, eps in settings:
        t = time.perf_counter()
        sm = sparse_margin_lower_bounds(net, U, y, k, eps, DOMAIN)
        lp_seconds = time.perf_counter() - t
        att = sparse_attack(net, U, y, k, eps, DOMAIN, margins=sm)
        closed = sparse_closed_form_margins(net, U, y, k, eps)
        ok = {name: correct & (M.min(axis=1) > 0) for name, M in
              (("closed_form", closed), ("sparse_box", sm.box), ("sparse_lp", sm.lower))}
        table1 = {}
        if eps >= 1.0:  # the Table 1 threat: k inputs set to uniform draws from the domain
            for name, fn in (("sensitivity", sensitivity_attack), ("gradient", gradient_attack)):
                res = fn(net, U, y, k / net.n_inputs, domain=DOMAIN, rng=0)
                assert not np.any(res.changed & ok["sparse_lp"]), f"{name} broke an LP-certified sample"
                table1[f"{name}_success"] = res.success_rate
        assert not np.any(att.changed & ok["sparse_lp"]), "the LP attack broke an LP-certified sample"
        rows.append({"k": k, "eps": eps, "samples": len(y), "clean_accuracy": _share(correct),
                     **{f"certified_{n}": _share(v) for n, v in ok.items()},
                     "falsified_lp_attack": _share(att.changed & correct),
                     "lp_attack_success": att.success_rate, **table1,
                     "lp_seconds_per_sample": lp_seconds / len(y)})
        print(rows[-1])
    return rows


def sdp_rows(U, y, U_test, y_test, eps_list) -> list[dict]:
    model = fit_adjoint(U, y, task="classification", n_states=16, include_D=False, kappa=0.95,
                        max_outer=10, seed=0, lam_l2=1e-3).model
    correct = class_margins(model.predict(U_test), y_test) > 0
    rows = []
    for eps in eps_list:
        interval = margin_lower_bounds(model, U_test, y_test, eps, "interval", DOMAIN)
        lp = margin_lower_bounds(model, U_test, y_test, eps, "lp", DOMAIN)
        sdp, solves, gains, t = lp.copy(), 0, [], time.perf_counter()
        relax, boxes = SdpRelaxation(model, "SCS"), lp_boxes(model, U_test, eps, DOMAIN)
        for i in np.flatnonzero(correct & (lp.min(axis=1) <= 0)):
            relax.set_sample(boxes, i)
            for j in np.flatnonzero(lp[i] <= 0):  # a sample stops at its first uncertified margin
                c = y_test[i]
                g = np.r_[model.b_y[c] - model.b_y[j], model.C[c] - model.C[j], model.D[c] - model.D[j]]
                bound = relax.lower_bound(g)
                solves += 1
                gains.append(bound - lp[i, j])
                sdp[i, j] = max(lp[i, j], bound)
                if sdp[i, j] <= 0:
                    break
        seconds = time.perf_counter() - t
        pgd = [pgd_attack(model, U_test, y_test, eps, steps=40, domain=DOMAIN, rng=0, loss=k)
               for k in ("ce", "margin")]
        broken = pgd[0].changed | pgd[1].changed
        ok = {n: correct & (M.min(axis=1) > 0) for n, M in (("interval", interval), ("lp", lp), ("sdp", sdp))}
        assert not np.any(broken & ok["sdp"]), "PGD broke an SDP-certified sample"
        rows.append({"eps": eps, "samples": len(y_test), "clean_accuracy": _share(correct),
                     **{f"certified_{n}": _share(v) for n, v in ok.items()},
                     "pgd_leaves": _share(correct & ~broken), "sdp_margins_solved": solves,
                     "sdp_seconds_per_margin": seconds / max(solves, 1),
                     "sdp_minus_lp_max": float(max(gains)) if gains else None,
                     "sdp_minus_lp_min": float(min(gains)) if gains else None})
        print(rows[-1])
    return rows


def loss_rows(net, U, y, eps_list) -> list[dict]:
    rows = []
    for eps in eps_list:
        worst = cross_entropy(net.predict(U), y)
        for kind in ("ce", "margin"):
            adv = pgd_attack(net, U, y, eps, steps=40, domain=DOMAIN, rng=0, loss=kind).U_adv
            worst = np.maximum(worst, cross_entropy(net.predict(adv), y))
        row = {"eps": eps, "samples": len(y), "clean_ce": float(cross_entropy(net.predict(U), y).mean()),
               "pgd_ce": float(worst.mean())}
        for method in ("interval", "lp"):
            res = worst_case_loss_bounds(net, U, y, eps, method=method, domain=DOMAIN)
            assert np.all(worst <= res.per_sample), f"{method} worst-case loss below a PGD loss"
            row[f"certified_ce_{method}"] = res.mean
        rows.append(row)
        print(row)
    return rows


def main(argv=None) -> dict:
    args = make_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    q = args.quick
    suffix = "_quick" if q else ""
    t0 = time.perf_counter()
    ds = load_dataset("digits", seed=0)
    (U, y), (U_test, y_test) = ds.split("train"), ds.split("test")
    m, m_sdp = (QUICK["samples"], QUICK["sdp_samples"]) if q else (SAMPLES, SDP_SAMPLES)
    args.out.mkdir(parents=True, exist_ok=True)
    with limit_blas(args.blas_threads):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            mlp = MLPClassifier((64, 32), random_state=0, max_iter=100 if q else 300).fit(U, y)
        net = from_sklearn(mlp)
        clean = certify(net, U_test[:m], y_test[:m], [0.0]).clean_accuracy
        sparse = sparse_rows(net, U_test[:m], y_test[:m], QUICK["sparse"] if q else SPARSE)
        sdp = sdp_rows(U, y, U_test[:m_sdp], y_test[:m_sdp], QUICK["sdp_eps"] if q else SDP_EPS)
        loss = loss_rows(net, U_test[:m], y_test[:m], QUICK["loss_eps"] if q else LOSS_EPS)
    command = "python experiments/paper_certificates.py" + (" --quick" if q else "")
    report = {"command": command, **provenance(argv), "seconds": time.perf_counter() - t0,
              "dataset": "digits", "eps_units": ds.units, "domain": list(DOMAIN),
              "net_clean_accuracy": clean, "sparse": sparse, "sdp": sdp, "worst_case_loss": loss}
    write_json(args.out / f"paper_certificates{suffix}.json", report)
    text = "# The paper's remaining certificates on digits\n\n"
    for title, rows in (("Sparse perturbations (k inputs, each by ≤ ε; ε = 1: any value)", sparse),
                        ("SDP vs lp vs interval (adjoint model, n = 16)", sdp),
                        ("Certified worst-case cross-entropy (mean over samples)", loss)):
        text += f"## {title}\n\n" + markdown_table(rows, list(rows[0])) + "\n"
    text += f"Command: `{command}`; ε in {ds.units}; machine shared, timings indicative.\n"
    (args.out / f"paper_certificates{suffix}.md").write_text(text)
    print(f"done in {report['seconds']:.1f} s")
    return report


if __name__ == "__main__":
    main()
