"""Sharp as well as honest (issue 14, item 5): predictive intervals at a held-out larger scale.

Per case and target, ``holdout_check`` fits every scale but the largest, learns the model
discrepancy inside the fitted part, and predicts the held-out scale. Printed, without and with
the discrepancy: the 90 % intervals' coverage of the held-out losses, their mean relative
width, the narrowest interval centred on the prediction that covers as many rows (coverage
taken into [85, 95] %, ``planner.calibrate.checks.sharpness``) and the ratio of the two.
Goals: coverage in [85, 95] % and ratio <= 2.

  paper   the simulated paper-shaped table (``tests.support.sim.paper_table``: 7 domains,
          40 mixtures x 5 sizes 3e8-1.2e9, 4-6 checkpoints); the 1.2e9 runs are held out
  regmix  RegMix's 1M and 60M runs (1B tokens each), target pile_cc; the 60M runs are held out

    PYTHONPATH=. .venv/bin/python benchmarks/sharpness.py [--cases paper,regmix]
        [--targets arxiv,book] [--law additive] [--method nuts] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from planner.core.jaxsetup import configure_jax

configure_jax()  # float64 and the compilation cache, before JAX starts
from planner.calibrate.checks import holdout_check
from planner.model.regmix import load_regmix
from planner.model.runs import runs_from_frame
from tests.support.sim import paper_table

REGMIX = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "regmix"
KEYS = ("coverage_90", "width_90_rel", "narrowest_centred_width_90", "width_ratio_90",
        "mean_relative_error")


def tables(names, seed: int, data: str, targets):
    if "paper" in names:
        df, _ = paper_table(seed=seed)
        table = runs_from_frame(df)
        yield "paper", table, list(targets or table.targets)
    if "regmix" in names:
        df = load_regmix(data)
        yield "regmix", runs_from_frame(df[df.scale != "1B"].drop(columns="scale"),
                                        targets=["pile_cc"]), ["pile_cc"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="paper,regmix")
    ap.add_argument("--targets", default=None, help="paper targets (default: all 7)")
    ap.add_argument("--law", default="additive")
    ap.add_argument("--method", default="nuts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=str(REGMIX))
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    targets = a.targets.split(",") if a.targets else None
    rows = []
    print(f"law {a.law}, method {a.method}; goals: coverage_90 in [0.85, 0.95], ratio <= 2")
    print(f"{'case':7} {'target':14} {'discrepancy':11} {'cov90':>6} {'width':>7} "
          f"{'narrow':>7} {'ratio':>6} {'MRE':>7} {'s':>6}")
    for case, table, ts in tables(a.cases.split(","), a.seed, a.data, targets):
        for t in ts:
            t0 = time.perf_counter()
            res = holdout_check(table, law=a.law, targets=[t], method=a.method, seed=a.seed)
            secs = time.perf_counter() - t0
            r = res["targets"][t]
            for which in ("without_discrepancy", "with_discrepancy"):
                m = {k: r[which].get(k) for k in KEYS}
                ok = (0.85 <= m["coverage_90"] <= 0.95) and m["width_ratio_90"] <= 2.0
                rows.append({"case": case, "target": t, "which": which, "seconds": secs,
                             "split": res["split"], "n_heldout": r["n_heldout"], **m,
                             "goals_met": ok})
                print(f"{case:7} {t:14} {which.split('_')[0]:11} {m['coverage_90']:6.3f} "
                      f"{m['width_90_rel']:7.4f} {m['narrowest_centred_width_90']:7.4f} "
                      f"{m['width_ratio_90']:6.2f} {m['mean_relative_error']:7.4f} "
                      f"{secs:6.1f}{'' if ok else '  goal missed'}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"law": a.law, "method": a.method, "rows": rows},
                                           indent=1, default=str))


if __name__ == "__main__":
    main()
