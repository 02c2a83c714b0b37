"""Calibration on real runs (issue 7): RegMix, target Pile-CC.

Fit the law on the "1M" (512 + 256) and "60M" (256) runs, all at 1B tokens, predict the 64 "1B"
runs (25B tokens), and report the coverage of the 50 % and 90 % predictive intervals, their mean
relative widths, the mean relative error and the Spearman correlation, without and with the
model-discrepancy term. The discrepancy is calibrated inside the training data only: the "1M"
runs are fitted alone and the "60M" runs held out (``planner.calibrate.checks.holdout_check``).

    .venv/bin/python benchmarks/regmix_calibration.py [--method nuts|map] [--warmup 500]
        [--samples 500] [--chains 2] [--inner-samples N] [--out result.json]
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

REGMIX = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "regmix"


def _r(v):
    return round(v, 4) if isinstance(v, float) else v


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="nuts")
    ap.add_argument("--law", default="additive")
    ap.add_argument("--target", default="pile_cc")
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--inner-warmup", type=int, default=None)
    ap.add_argument("--inner-samples", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=str(REGMIX))
    ap.add_argument("--out", default=None, help="also write the full result as JSON")
    a = ap.parse_args()
    df = load_regmix(a.data)
    # all three scales; holdout_check holds out the largest (the 64 "1B" runs)
    table = runs_from_frame(df.drop(columns="scale"), targets=[a.target])
    kw = {}
    if a.method == "nuts":
        kw = {"num_warmup": a.warmup, "num_samples": a.samples, "num_chains": a.chains}
    inner = {k: v for k, v in (("num_warmup", a.inner_warmup), ("num_samples", a.inner_samples))
             if v is not None}
    t0 = time.perf_counter()
    res = holdout_check(table, law=a.law, targets=[a.target], method=a.method, seed=a.seed,
                        inner_fit_kwargs=inner or None, **kw)
    secs = time.perf_counter() - t0
    r = res["targets"][a.target]
    d = r["discrepancy"]
    keys = ("coverage_90", "coverage_50", "width_90_rel", "width_50_rel", "mean_relative_error",
            "mean_log_error", "spearman", "abs_log_error_q40", "abs_log_error_q97",
            "centred_bands_reachable")
    summary = {
        "law": a.law, "method": a.method, "target": a.target, "n_train": res["n_train_rows"],
        "n_heldout": r["n_heldout"], "split": res["split"],
        "without_discrepancy": {k: _r(r["without_discrepancy"][k]) for k in keys},
        "with_discrepancy": {k: _r(r["with_discrepancy"][k]) for k in keys},
        "discrepancy": {"kind": d["kind"], "s1": round(d["s1"], 5),
                        "s1_log_sd": round(d["s1_log_sd"], 3),
                        "evidence": {k: (round(v, 5) if isinstance(v, float) else v)
                                     for k, v in d["evidence"].items()}},
        "seconds": {"fit_without": res["seconds"]["fit"], "fit_plus_calibration":
                    res["seconds"]["total"], "all": round(secs, 1)},
    }
    print(json.dumps(summary, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
