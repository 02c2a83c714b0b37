"""Do not bet on one law (issue 14, item 6): the same campaign with law additive, joint, auto.

The truth is a joint law with strong mixture-dependent scaling (4 domains, one target ``t``):
domain d0 is worth much at scale (C_0 = 4) but inflates the model-size and data terms
(CA_0 = 3, CB_0 = 2, gA = 1.3, gB = 1.1), so the mixture that is best for the cheap runs a
campaign buys is not the one that is best for the target run. The optimum of the law at
N = 4e7, D = 8e8 is 3.5 % worse than the true optimum at the target (uniform: 5.8 % worse).
``trainers.synthetic:SyntheticTrainer`` answers the runs (0.5 % run noise, checkpoints at D/4
and D/2). Every campaign: target N* = 1e10, D* = 2e11; space N 2e7-1e9, D 4e8-2e10; budget
3e19 FLOPs (and at most ``--max-runs`` runs); batches of 4; ``decision`` acquisition;
inprocess executor; refits with ``fit.method: laplace`` (300 x 2 draws). So that the runs
bought do not depend on the machine's speed, refits are synchronous (``fit.background: false``)
and the in-process executor trains a whole batch before it reports (``BatchInProcess``): one
refit per batch of 4, as on a cluster whose runs of a batch end together. (The plain
synchronous in-process executor reports one run at a time, i.e. a refit per run.)

For each law and seed it prints the true excess loss of the recommendation over the true
optimum at the target and the expected excess loss the campaign reports, both relative to the
optimal loss, plus the runs, FLOPs, refits, mean refit time and (auto) the final weights.

    .venv/bin/python benchmarks/law_auto.py --laws additive joint auto --seeds 0 1 \
        --out benchmarks/results/law_auto
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from planner.core.jaxsetup import configure_jax

configure_jax()
from planner.campaign.campaign import load_campaign, run_campaign
from planner.campaign.executors.inprocess import InProcessExecutor
from trainers.synthetic import SyntheticTrainer

DOMAINS = ["d0", "d1", "d2", "d3"]
TRUTH = {"E": 1.6, "C": [4.0, 1.0, 1.0, 1.0], "g": [0.5, 0.5, 0.5, 0.5],
         "CA": [3.0, 0.3, 0.4, 0.5], "gA": 1.3, "a": 0.3,
         "CB": [2.0, 0.5, 0.6, 0.7], "gB": 1.1, "b": 0.3}
# --truth additive (the well-specified control): the same mixture term, h-free size terms
ADDITIVE_TRUTH = {"E": 1.6, "C": [4.0, 1.0, 1.0, 1.0], "g": [0.5, 0.5, 0.5, 0.5],
                  "A": 0.8, "a": 0.3, "B": 0.7, "b": 0.3}
TARGET_N, TARGET_D = 1e10, 2e11


def trainer_args(truth: str = "joint") -> dict:
    return {"law": truth, "domains": DOMAINS,
            "params": {"t": TRUTH if truth == "joint" else ADDITIVE_TRUTH}, "noise": 0.005,
            "checkpoints": [0.25, 0.5]}


class BatchInProcess(InProcessExecutor):
    """The synchronous in-process executor, but ``wait`` trains every queued run and returns
    their outcomes together."""

    def wait(self, timeout: float | None = None):
        out = []
        while self._queue:
            out += super().wait(timeout)
        return out


def config(law: str, seed: int, max_runs: int, truth: str = "joint") -> dict:
    return {"domains": DOMAINS, "targets": {"t": 1.0},
            "target_budget": {"N": TARGET_N, "D": TARGET_D}, "law": law,
            "space": {"N": [2e7, 1e9], "D": [4e8, 2e10], "min_weight": 0.0},
            "budget": {"flops": 3e19, "max_runs": max_runs}, "batch_size": 4,
            "acquisition": "decision",
            "trainer": {"path": "trainers.synthetic:SyntheticTrainer",
                        "args": trainer_args(truth)},
            "executor": {"kind": "inprocess"},
            "fit": {"method": "laplace", "num_samples": 300, "num_chains": 2, "background": False},
            "seed": seed}


def score(trainer: SyntheticTrainer, rec: dict) -> dict:
    h_opt, L_opt = trainer.true_optimum(TARGET_N, TARGET_D)
    h = np.array([[rec["recommended"][d] for d in DOMAINS]])
    L = float(trainer.true_loss(TARGET_N, TARGET_D, h, target="t")[0])
    return {"true_excess_rel": (L - L_opt) / L_opt,
            "reported_eel_rel": rec["expected_excess_loss"] / L_opt,
            "recommended": {d: round(float(v), 4) for d, v in rec["recommended"].items()},
            "true_optimum": {d: round(v, 4) for d, v in h_opt.items()}, "L_opt": L_opt}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--laws", nargs="+", default=["additive", "joint", "auto"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--max-runs", type=int, default=60)
    ap.add_argument("--fresh", action="store_true",
                    help="start over (default: resume unfinished campaigns, skip finished ones)")
    ap.add_argument("--truth", default="joint", choices=["joint", "additive"],
                    help="additive: a control where the smaller law is right")
    ap.add_argument("--out", default="benchmarks/results/law_auto")
    a = ap.parse_args()
    root = Path(a.out)
    root.mkdir(parents=True, exist_ok=True)
    trainer = SyntheticTrainer(**trainer_args(a.truth))
    rows = []
    for seed in a.seeds:
        for law in a.laws:
            d = root / f"{a.truth}_{law}_s{seed}"
            if a.fresh and d.exists():
                shutil.rmtree(d)
            elif (d / "recommendation.json").exists() and (d / "done").exists():
                continue  # finished earlier (a rerun resumes the others)
            t0 = time.perf_counter()
            res = run_campaign(config(law, seed, a.max_runs, a.truth), d, executor=BatchInProcess(
                "trainers.synthetic:SyntheticTrainer", trainer_args(a.truth)))
            wall = time.perf_counter() - t0
            camp = load_campaign(d)
            rec = camp.recommendation()
            st = camp.status()
            with camp.ledger() as lg:
                snaps = lg.snapshots()
            fit_s = [s["fit_seconds"] for s in snaps if s.get("fit_seconds")]
            row = {"law": law, "truth": a.truth, "seed": seed, "stop": res.stop_reason,
                   "runs": st["counts"]["completed"],
                   "flops": st["spent"]["flops_completed"], "refits": len(snaps),
                   "mean_refit_s": round(float(np.mean(fit_s)), 1) if fit_s else None,
                   "wall_s": round(wall, 1), **score(trainer, rec),
                   "law_weights": rec.get("law_weights"),
                   "weights_by_refit": [(s["n_runs"], (s["recommendation"] or {})
                                         .get("law_weights", {}).get("t"))
                                        for s in snaps] if law == "auto" else None}
            (d / "done").write_text("1")
            rows.append(row)
            print(json.dumps(row), flush=True)
            (root / "results.jsonl").open("a").write(json.dumps(row) + "\n")
    print("\nlaw       seed  runs  FLOPs     true excess  reported EEL  refits  mean refit s")
    for r in rows:
        print(f"{r['law']:9s} {r['seed']:4d}  {r['runs']:4d}  {r['flops']:.2e}  "
              f"{100 * r['true_excess_rel']:9.3f} %  {100 * r['reported_eel_rel']:9.3f} %  "
              f"{r['refits']:6d}  {r['mean_refit_s']}")


if __name__ == "__main__":
    main()
