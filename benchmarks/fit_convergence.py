"""Convergence and speed of the default fit on real-sized tables (issue 14, item 1).

Two cases, each fitted with ``fit``'s DEFAULT method and settings (``planner.infer.options``) and
``--law`` (default ``auto``, ``planner fit``'s: every family law auto fits, combined by
stacking; additive or joint alone with ``--law``):

  paper   a simulated table shaped like Shukor et al.'s LLM experiments
          (``tests.support.sim.paper_table``, seeded): 7 domains, 40 Dirichlet(1) mixtures x 5
          model sizes from 3e8 to 1.2e9, each trained to 20 tokens per parameter with 4-6
          checkpoints (about 1,000 rows, 200 runs), 0.5 % observation noise plus a run-level
          effect of sd 0.5 % shared by a run's checkpoints; one target per domain.
  regmix  RegMix's 1,024 small runs (1M and 60M, 17 Pile domains, 1B tokens), target pile_cc,
          as ``benchmarks/regmix_core.py`` loads them (rows with scale != "1B").

Per target it prints wall seconds (the whole ``fit`` call: Huber fit, mode search, warm-up,
sampling, diagnostics; with law auto every family's fit on all rows and without the held-out
runs, but not the discrepancy's calibration; the first target of a case also pays for
compiling), max r_hat and min bulk ESS (law auto: the worst over the families it weighs) over every law parameter (each component, natural scale, plus sigma and tau;
rank-normalised, ArviZ), the divergence rate, and checks them against the goals:
max r_hat <= 1.01, min bulk ESS >= 400, divergences <= 1 %, <= 180 s per target.
Exit status 0 when every target meets every goal.

    PYTHONPATH=. .venv/bin/python benchmarks/fit_convergence.py [--cases paper,regmix]
        [--targets arxiv,book] [--seed 0] [--law auto|additive|joint] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from planner.core.jaxsetup import configure_jax

configure_jax()  # float64 and the compilation cache, before JAX starts
from planner.infer.auto import fit_law
from planner.infer.options import NUTS_SETTINGS, FitOptions
from planner.model.regmix import load_regmix
from planner.model.runs import runs_from_frame
from tests.support.sim import paper_table

REGMIX = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "regmix"
GOALS = {"r_hat_max": NUTS_SETTINGS.r_hat_goal, "ess_bulk_min": NUTS_SETTINGS.ess_goal,
         "divergence_rate": 0.01, "seconds": 180.0}


def cases(names, seed: int, data: str, targets):
    if "paper" in names:
        df, _ = paper_table(seed=seed)
        table = runs_from_frame(df)
        for t in targets or table.targets:
            yield "paper", table, t
    if "regmix" in names:
        df = load_regmix(data)
        yield "regmix", runs_from_frame(df[df.scale != "1B"].drop(columns="scale"),
                                        targets=["pile_cc"]), "pile_cc"


def check(row: dict) -> list[str]:
    fails = []
    if not row["r_hat_max"] <= GOALS["r_hat_max"]:
        fails.append(f"r_hat {row['r_hat_max']:.4f} > {GOALS['r_hat_max']}")
    if not row["ess_bulk_min"] >= GOALS["ess_bulk_min"]:
        fails.append(f"ESS {row['ess_bulk_min']:.0f} < {GOALS['ess_bulk_min']:.0f}")
    if not row["divergence_rate"] <= GOALS["divergence_rate"]:
        fails.append(f"divergences {100 * row['divergence_rate']:.2f} % > 1 %")
    if not row["seconds"] <= GOALS["seconds"]:
        fails.append(f"{row['seconds']:.0f} s > {GOALS['seconds']:.0f} s")
    return fails


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="paper,regmix")
    ap.add_argument("--targets", default=None, help="paper targets (default: all 7)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the simulated table")
    ap.add_argument("--law", default="auto", help="law to fit (default: planner fit's, auto)")
    ap.add_argument("--data", default=str(REGMIX))
    ap.add_argument("--json", default=None)
    ap.add_argument("-v", "--verbose", action="store_true", help="log one line per fit phase")
    a = ap.parse_args()
    if a.verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"law {a.law}; defaults: {FitOptions()}; {NUTS_SETTINGS}", flush=True)
    head = (f"{'case':7s} {'target':14s} {'rows':>5s} {'runs':>5s} {'seconds':>8s} "
            f"{'r_hat_max':>9s} {'ess_min':>8s} {'div %':>6s} {'steps':>6s}  result")
    print(head, flush=True)
    rows, ok = [], True
    targets = a.targets.split(",") if a.targets else None
    for case, table, t in cases(a.cases.split(","), a.seed, a.data, targets):
        t0 = time.perf_counter()
        post = fit_law(table, law=a.law, targets=[t], progress=sys.stderr.isatty())
        secs = time.perf_counter() - t0
        d = post[t].diagnostics
        row = {"case": case, "target": t, "n_obs": d["n_obs"], "n_runs": d["n_runs"],
               "seconds": round(secs, 1), "r_hat_max": d["r_hat_max"],
               "r_hat_worst": d.get("r_hat_worst"), "ess_bulk_min": d["ess_bulk_min"],
               "ess_worst": d.get("ess_worst"), "divergence_rate": d["divergence_rate"],
               "mean_leapfrog_steps": d.get("mean_leapfrog_steps", float("nan")),
               "law_weights": d.get("law_weights"),
               "phase_seconds": d.get("phase_seconds"), "sampler_coords": d.get("sampler_coords")}
        fails = check(row)
        ok &= not fails
        row["fails"] = fails
        rows.append(row)
        print(f"{case:7s} {t:14s} {row['n_obs']:5d} {row['n_runs']:5d} {secs:8.1f} "
              f"{row['r_hat_max']:9.4f} {row['ess_bulk_min']:8.0f} "
              f"{100 * row['divergence_rate']:6.2f} {row['mean_leapfrog_steps']:6.1f}  "
              f"{'ok' if not fails else 'FAIL: ' + '; '.join(fails)}", flush=True)
    print(f"goals (max r_hat <= {GOALS['r_hat_max']}, min bulk ESS >= {GOALS['ess_bulk_min']:.0f}, "
          f"divergences <= 1 %, <= {GOALS['seconds']:.0f} s per target): "
          f"{'all met' if ok else 'NOT all met'}")
    if a.json:
        Path(a.json).write_text(json.dumps({"goals": GOALS, "rows": rows}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
