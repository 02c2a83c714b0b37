"""What carrying the model discrepancy costs a campaign refit (issue 14, "one posterior everywhere").

A small campaign of the synthetic trainer answering from the joint law (outside the additive
family the campaign fits; k = 3, one target, checkpoints at D/2), Laplace refits with 200 draws,
in process, one refit per finished run. Then, on its final runs, each part of a refit is timed
``--reps`` times after a warm-up call (compilation excluded): the law's warm-started refit, the
discrepancy's calibration (one more fit without the largest scale), the recommendation with and
without the discrepancy's mixture field, and one decision-acquisition planning step (q = 2,
default options) with and without it.

    .venv/bin/python benchmarks/campaign_discrepancy_cost.py [--every 3] [--runs 16] [--reps 3]
        [--out DIR]

Prints one line per snapshot (runs, fit seconds, refits since the discrepancy was learned,
expected excess loss) and the median part timings as JSON.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from planner.core.jaxsetup import configure_jax

configure_jax()  # float64 and the compilation cache, before JAX starts
from planner.calibrate.heldout import calibrate
from planner.campaign.campaign import export_runs, load_campaign, run_campaign
from planner.campaign.planner import warm_start
from planner.decide.optimum import recommend
from planner.decide.registry import propose
from planner.decide.space import Space
from planner.decide.strategies import DesignRequest
from planner.infer.dispatch import fit
from planner.model.runs import runs_from_frame

DOMS = ["a", "b", "c"]


def config(every: int, runs: int) -> dict:
    return {"domains": DOMS, "targets": {"a": 1.0}, "target_budget": {"N": 1e9, "D": 2e10},
            "space": {"N": [1e6, 5e7], "D": [1e8, 1e9]}, "budget": {"max_runs": runs},
            "batch_size": 2, "acquisition": "random",
            "trainer": {"path": "trainers.synthetic:SyntheticTrainer",
                        "args": {"law": "joint", "domains": DOMS, "checkpoints": [0.5]}},
            "executor": {"kind": "inprocess"},
            "fit": {"method": "laplace", "num_samples": 200, "num_chains": 1, "min_runs": 8,
                    "background": False, "discrepancy_every": every}}


def timed(fn, reps: int) -> tuple[float, object]:
    fn()  # warm-up (compilation)
    times, out = [], None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=int, default=3, help="fit.discrepancy_every of the campaign")
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=None, help="campaign directory (default: a temporary one)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="discrepancy_cost_")) / "camp"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    res = run_campaign(config(args.every, args.runs), out)
    print(f"campaign: {res.stop_reason}, {time.perf_counter() - t0:.1f} s")
    camp = load_campaign(out)
    with camp.ledger() as lg:
        for s in lg.snapshots():
            rec = s["recommendation"]
            age = (rec.get("discrepancy") or {}).get("refits_since_learned")
            print(f"snapshot {s['id']}: {s['n_runs']} runs, fit {s['fit_seconds']:.1f} s, "
                  f"refits since learned {age}, expected excess loss "
                  f"{rec['expected_excess_loss']:.4g}")

    cfg = camp.config
    prev = camp.posterior()
    obs = export_runs(out)
    table = runs_from_frame(obs, domains=DOMS, targets=list(cfg.targets))
    kw = {"num_warmup": cfg.fit.num_warmup, "num_samples": cfg.fit.num_samples,
          "num_chains": cfg.fit.num_chains}
    tg = cfg.decision_target()
    parts = {}
    parts["law refit (warm start)"], post = timed(
        lambda: fit(table, law=cfg.law, method=cfg.fit.method, seed=1, **kw,
                    **warm_start(prev, cfg)), args.reps)
    parts["calibrate (learn the discrepancy)"], cal = timed(
        lambda: calibrate(post, table, method=cfg.fit.method, seed=1, **kw), args.reps)
    parts["recommend, law only"], rec0 = timed(
        lambda: recommend(post, seed=0, **tg.optimum_kwargs()), args.reps)
    parts["recommend, with discrepancy"], rec1 = timed(
        lambda: recommend(cal, seed=0, **tg.optimum_kwargs()), args.reps)
    bare = copy.copy(cal)
    bare.per_target = {t: copy.copy(tp) for t, tp in cal.per_target.items()}
    for tp in bare.per_target.values():
        tp.discrepancy = None
    def ask(p):
        req = DesignRequest(
            posterior=p, observed=obs, pending=[], space=Space.from_config(cfg), seed=0, q=2,
            step=0, max_flops=None, target_N=tg.N, target_D=tg.D,
            target_weights=dict(tg.weights), law=cfg.law, target_hi=tg.hi, options={})
        return propose("decision", req)

    for name, p in (("decision ask q=2, law only", bare), ("decision ask q=2, with discrepancy", cal)):
        parts[name], _ = timed(lambda p=p: ask(p), args.reps)
    print(json.dumps({"median_seconds": {k: round(v, 2) for k, v in parts.items()},
                      "expected_excess_loss": {"law only": rec0["expected_excess_loss"],
                                               "with discrepancy": rec1["expected_excess_loss"]},
                      "mixture_field_targets": rec1["mixture_discrepancy_targets"],
                      "n_obs": len(obs)}, indent=1))


if __name__ == "__main__":
    main()
