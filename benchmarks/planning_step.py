"""Speed of one planning step (issue 5): refit + scoring >= 2000 candidates + a batch of 8,
for k = 7 domains and 200 observations of a known additive law (0.5 % noise).

    .venv/bin/python benchmarks/planning_step.py [--method laplace|nuts] [--warmup 300
        --samples 300] [--cold]

The refit is what a campaign does after a batch: the previous fit (on the first n - 8
observations) warm-starts it (``planner.campaign.planner.warm_start``); --cold refits from scratch.
Prints the seconds of each part; run it twice to see the warm (persistent-cache) numbers.
"""
from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import numpy as np

from planner.core.jaxsetup import configure_jax

configure_jax()  # float64 and the compilation cache, before JAX starts
from planner.campaign.planner import warm_start
from planner.decide.acquisition import (
    decision_state,
    make_fantasies,
    score_candidates,
    select_batch,
)
from planner.decide.space import Space, sample_candidates
from planner.infer.dispatch import fit
from planner.model.laws import get_law, scale_inputs
from planner.model.runs import runs_from_frame


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=7)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--method", default="nuts")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--cold", action="store_true", help="refit without the previous fit")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    k = a.k
    truth = {"E": 1.7, "C": rng.uniform(1, 5, k), "g": rng.uniform(0.25, 0.75, k),
             "A": 0.45, "a": 0.32, "B": 0.55, "b": 0.28}
    domains = [f"d{i}" for i in range(k)]
    space = Space(tuple(domains), 1e6, 1e8, 1e8, 3e9)
    c = sample_candidates(space, a.n, seed=1, faces=0.2)
    logn, logd = scale_inputs(c.N, c.D)
    import jax.numpy as jnp
    L = np.asarray(get_law("additive").predict({kk: jnp.asarray(v, dtype=jnp.float64) for kk, v in truth.items()},
                                               logn, logd, jnp.asarray(c.H)))
    df = c.frame()
    df["loss_t"] = L * np.exp(0.005 * rng.standard_normal(a.n))
    table = runs_from_frame(df)
    kw = {"law": "additive", "method": a.method, "num_warmup": a.warmup, "num_samples": a.samples}
    warm = {}
    if not a.cold:  # the campaign's previous fit, one batch of 8 earlier
        prev = fit(runs_from_frame(df.iloc[:-8]), **kw)
        cfg = SimpleNamespace(law="additive", domains=domains, targets={"t": 1.0})
        warm = warm_start(prev, cfg)
    t0 = time.perf_counter()
    post = fit(table, **kw, **warm)
    t1 = time.perf_counter()
    state = decision_state(post, 7e9, 1.5e11)
    cand = sample_candidates(space, 2000, seed=2, faces=0.2)
    fant = make_fantasies(state, 24, 0)
    t2 = time.perf_counter()
    score_candidates(state, fant, cand.N, cand.D, cand.H)
    t3 = time.perf_counter()
    picks = select_batch(state, cand, 8, fant)
    t4 = time.perf_counter()
    print(json.dumps({"k": k, "observations": a.n, "method": a.method,
                      "refit": "cold" if a.cold else "warm-started from the previous fit",
                      "refit_s": round(t1 - t0, 2), "decision_state_s": round(t2 - t1, 2),
                      "score_2000_s": round(t3 - t2, 2), "batch_of_8_s": round(t4 - t3, 2),
                      "total_s": round(t4 - t0, 2), "picked": len(picks),
                      "diagnostics": {kk: post["t"].diagnostics.get(kk) for kk in
                                      ("r_hat_max", "ess_bulk_min", "mean_leapfrog_steps")}}, indent=1))


if __name__ == "__main__":
    main()
