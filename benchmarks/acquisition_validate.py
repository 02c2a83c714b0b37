"""Validation of the acquisition estimator (issue 5, item 6).

On a small problem (k = 3, additive, a few runs), score a handful of candidates two ways:
  * estimator: importance reweighting of posterior draws with fantasy outcomes (acquisition.py);
  * brute force: for each fantasy outcome, refit the posterior with NUTS on data + that outcome,
    and recompute the expected excess loss at the target.
Report both expected reductions and their Spearman rank agreement.

    .venv/bin/python benchmarks/acquisition_validate.py [--candidates 6 --fantasies 4]
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from planner.core.jaxsetup import configure_jax

configure_jax()  # float64 and the compilation cache, before JAX starts
from planner.decide.acquisition import decision_state, make_fantasies, score_candidates
from planner.decide.optimum import recommend
from planner.decide.space import Space, sample_candidates
from planner.infer.dispatch import fit
from planner.model.runs import runs_from_frame

TRUTH = {"E": 1.7, "C": [2.0, 4.0, 1.5], "g": [0.35, 0.6, 0.5], "A": 0.45, "a": 0.32, "B": 0.55, "b": 0.28}
TN, TD = 7e9, 1.5e11


def main() -> None:
    import jax.numpy as jnp

    from planner.model.laws import get_law, scale_inputs

    ap = argparse.ArgumentParser()
    ap.add_argument("--candidates", type=int, default=6)
    ap.add_argument("--fantasies", type=int, default=4)
    ap.add_argument("--runs", type=int, default=16)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    domains = ("code", "web", "books")
    space = Space(domains, 1e6, 1e8, 1e8, 3e9)
    truth = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in TRUTH.items()}
    law = get_law("additive")

    def observe(c):
        logn, logd = scale_inputs(c.N, c.D)
        L = np.asarray(law.predict(truth, logn, logd, jnp.asarray(c.H)))
        return L * np.exp(0.005 * rng.standard_normal(len(L)))

    base = sample_candidates(space, a.runs, seed=3, faces=0.2)
    df = base.frame()
    df["loss_web"] = observe(base)
    kw = {"num_warmup": 200, "num_samples": 200, "seed": 0}
    post = fit(runs_from_frame(df), law="additive", method="nuts", **kw)
    state = decision_state(post, TN, TD)
    cand = sample_candidates(space, a.candidates, seed=11, faces=0.0)
    fant = make_fantasies(state, a.fantasies, seed=5)
    est = score_candidates(state, fant, cand.N, cand.D, cand.H)
    eel0 = recommend(post, TN, TD)["expected_excess_loss"]
    brute = []
    mu = np.log(post.loss_draws("web", cand.N, cand.D, cand.H))    # (S, C)
    sig = post["web"].draws["sigma"]
    for c in range(len(cand)):
        after = []
        for m in range(a.fantasies):
            s = fant.s[m]
            y = float(np.exp(mu[s, c] + sig[s] * fant.eps[0, m]))
            row = cand.subset([c]).frame()
            row["loss_web"] = y
            p2 = fit(runs_from_frame(pd.concat([df, row], ignore_index=True)), law="additive",
                     method="nuts", **kw)
            after.append(recommend(p2, TN, TD)["expected_excess_loss"])
        brute.append(eel0 - float(np.mean(after)))
        print(json.dumps({"candidate": c, "N": float(cand.N[c]), "D": float(cand.D[c]),
                          "estimator": float(est[c]), "brute_force": brute[-1]}), flush=True)
    rho = spearmanr(est, brute)[0]
    print(json.dumps({"spearman_estimator_vs_brute_force": float(rho),
                      "eel_now_estimator": state.eel_now, "eel_now_refit": eel0}))


if __name__ == "__main__":
    main()
