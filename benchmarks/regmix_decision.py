"""Is the posterior honest about *which mixture* is better at 1B? (issue 7, mixture discrepancy)

Fit the additive law to the RegMix "1M" and "60M" runs (Pile-CC, all at 1B tokens), attach the
model discrepancy learned by holding out the 60M runs (``calibration.calibrate``: its
mixture-specific share, smooth over h, becomes a per-draw random function of h at the target),
and judge the posterior's statements about the 64 "1B" runs (25B tokens), with and without that
mixture field:

- pairwise order: for each of the 2016 pairs of 1B mixtures, the posterior probability that
  the first has the lower loss, scored against the truth (Brier score, log score, and the share
  of pairs called with >= 95 % confidence that are wrong);
- the choice: the Bayes choice among the 64 (lowest posterior mean loss) and its true rank, the
  posterior probability that it is the best, and the true best's posterior probability;
- on the simplex: the h* interval widths and the expected excess loss at (1B, 25B).

    .venv/bin/python benchmarks/regmix_decision.py [--method laplace|nuts] [--out result.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from planner.core.jaxsetup import configure_jax

configure_jax()  # float64 and the compilation cache, before JAX starts
from planner.calibrate.checks import order_scores
from planner.calibrate.heldout import calibrate
from planner.decide.optimum import optimum_draws, recommend
from planner.infer.dispatch import fit
from planner.model.regmix import load_regmix
from planner.model.runs import design_from_frame, runs_from_frame

REGMIX = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "regmix"


def choice_scores(L: np.ndarray, expected: np.ndarray, y: np.ndarray) -> dict:
    """L (S, m) per-draw losses; expected (m,) their exact posterior mean (the Bayes choice is
    its argmin: a sample mean of the fields would add Monte Carlo noise)."""
    best = np.argmin(L, axis=1)
    p_best = np.bincount(best, minlength=len(y)) / len(best)
    choice = int(np.argmin(expected))
    true_best = int(np.argmin(y))
    return {"true_rank_of_choice": int((y < y[choice]).sum()) + 1,
            "p_choice_is_best": float(p_best[choice]), "p_true_best_is_best": float(p_best[true_best]),
            "regret_nats": float(y[choice] - y[true_best]),
            "n_mixtures_with_p_best_over_1pct": int((p_best > 0.01).sum())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="laplace")
    ap.add_argument("--target", default="pile_cc")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=str(REGMIX))
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    df = load_regmix(a.data)
    train = runs_from_frame(df[df.scale != "1B"].drop(columns="scale"), targets=[a.target])
    test = df[df.scale == "1B"].reset_index(drop=True)
    N, D, H = design_from_frame(test, train.domains)
    y = test[f"loss_{a.target}"].to_numpy()
    t0 = time.perf_counter()
    post = fit(train, law="additive", targets=[a.target], method=a.method, seed=a.seed)
    t_fit = time.perf_counter() - t0
    post = calibrate(post, train, seed=a.seed)
    t_cal = time.perf_counter() - t0 - t_fit
    disc = post[a.target].discrepancy
    out = {"method": a.method, "seconds": {"fit": round(t_fit, 1), "calibrate": round(t_cal, 1)},
           "discrepancy": {**{k: disc.get(k) for k in ("kind", "s1", "s1_log_sd", "mixture_field")},
                           "rho": disc["evidence"].get("shared_share_rho")},
           "length_scale_posterior": (disc["evidence"].get("mixture_structure") or {}).get("posterior")}
    N1, D1 = float(N[0]), float(D[0])
    for label, with_field in (("without_field", False), ("with_field", True)):
        t1 = time.perf_counter()
        od = optimum_draws(post, N1, D1, mixture_field=with_field)
        L = np.asarray(od["loss_matrix"](H))
        rec = recommend(post, N1, D1, mixture_field=with_field)
        widths = {d: rec["hi"][d] - rec["lo"][d] for d in post.domains}
        out[label] = {"pairs": order_scores(L, y), "choice_among_64": choice_scores(L, od["expected_loss"](H), y),
                      "simplex": {"expected_excess_loss": rec["expected_excess_loss"],
                                  "max_h_star_width": max(widths.values()),
                                  "mean_h_star_width": float(np.mean(list(widths.values()))),
                                  "n_fields": od["n_fields"]},
                      "seconds": round(time.perf_counter() - t1, 1)}
    text = json.dumps(out, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
