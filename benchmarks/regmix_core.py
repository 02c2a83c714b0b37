"""Real data check for the core fit (issue 2): RegMix Pile-CC.

Fit the additive law on the 512 + 256 "1M" runs and the 256 "60M" runs (all at 1B tokens),
predict the 64 "1B" runs (25B tokens), and report Spearman rank correlation, mean relative
error, the rank among the 64 of the mixture the fit prefers, and 90 % interval coverage.

    .venv/bin/python benchmarks/regmix_core.py [--method nuts|map] [--samples 300]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from planner.core.jaxsetup import configure_jax

configure_jax()  # float64 and the compilation cache, before JAX starts
from planner.infer.dispatch import fit
from planner.model.regmix import load_regmix
from planner.model.runs import runs_from_frame

REGMIX = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "regmix"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="nuts")
    ap.add_argument("--law", default="additive")
    ap.add_argument("--target", default="pile_cc")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=str(REGMIX))
    a = ap.parse_args()
    df = load_regmix(a.data)
    train = runs_from_frame(df[df.scale != "1B"].drop(columns="scale"), targets=[a.target])
    test = df[df.scale == "1B"].reset_index(drop=True)
    t0 = time.perf_counter()
    post = fit(train, law=a.law, targets=[a.target], method=a.method, seed=a.seed,
               num_warmup=a.warmup, num_samples=a.samples)
    secs = time.perf_counter() - t0
    design = test.drop(columns=[c for c in test.columns if c.startswith("loss_")])
    pred = post.predict(design, targets=[a.target])
    y = test[f"loss_{a.target}"].to_numpy()
    p = pred[f"pred_{a.target}"].to_numpy()
    lo, hi = pred[f"pred_{a.target}_lo"].to_numpy(), pred[f"pred_{a.target}_hi"].to_numpy()
    best_pred = int(np.argmin(p))
    rank = int((y < y[best_pred]).sum()) + 1  # 1 = the truly best of the 64
    out = {"law": a.law, "method": a.method, "fit_seconds": round(secs, 1),
           "n_train": len(train.frame), "n_test": len(y),
           "spearman": round(float(spearmanr(p, y)[0]), 4),
           "mean_relative_error": round(float(np.mean(np.abs(p - y) / y)), 4),
           "rank_of_preferred_mixture": f"{rank} of {len(y)}",
           "coverage_90": round(float(np.mean((y >= lo) & (y <= hi))), 3),
           "mean_interval_width_rel": round(float(np.mean((hi - lo) / p)), 4),
           "diagnostics": {k: v for k, v in post[a.target].diagnostics.items()
                           if k in ("r_hat_max", "ess_bulk_min", "divergences",
                                    "mean_leapfrog_steps", "huber_objective")}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
