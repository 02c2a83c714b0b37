"""Worker utilisation of the planner loop: W simulated workers kept busy by one planner.

A synthetic trainer (the additive law plus noise) sleeps a random time per run, so W Ray
tasks run at once on this machine while the planner records each result durably, refits in the
background (MAP) and proposes the next run. Utilisation is time busy / time available:

    busy       sum over runs of (end - start) as measured inside the worker
    available  W x the window; the steady-state window runs from the moment the W-th run started
               (all workers started) to the last dispatch (after it the budget is spent and the
               tail drains by design); the overall window from the first dispatch to the last end.

Usage (from the repository root; Ray is started here with W logical CPUs):
    .venv/bin/python benchmarks/bench_workers.py --workers 64 --runs 640 --mean-s 4
    .venv/bin/python benchmarks/bench_workers.py --executor inprocess   # threads, no Ray
Goal: steady-state utilisation >= 95 %.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


class SleepySynthetic:
    """The additive law plus noise; each run sleeps uniform(0.5, 1.5) x mean_s (seeded)."""

    def __init__(self, domains, mean_s: float = 4.0, noise: float = 0.005):
        self.domains = list(domains)
        self.mean_s = mean_s
        self.noise = noise

    def __call__(self, spec):
        from trainers.base import RunResult

        rng = np.random.default_rng(spec.seed)
        time.sleep(self.mean_s * (0.5 + rng.random()))
        h = np.array([spec.h[d] for d in self.domains])
        C = np.linspace(1.5, 4.0, len(h))
        g = np.linspace(0.35, 0.6, len(h))
        pos = h > 0
        L = (1.7 + 1.0 / np.sum(C[pos] * h[pos] ** g[pos]) + 0.45 * (spec.N / 1e8) ** -0.32
             + 0.55 * (spec.D / 1e9) ** -0.28)
        return RunResult(spec.run_id, {self.domains[0]: float(L * np.exp(self.noise * rng.standard_normal()))})


def utilisation(attempts: list[dict], workers: int) -> dict:
    done = [a for a in attempts if a["status"] == "completed" and a["started_at"]]
    starts = np.sort([a["started_at"] for a in done])
    t_a = starts[min(workers, len(starts)) - 1]
    t_b = max(a["dispatched_at"] for a in attempts)
    busy = sum(max(0.0, min(a["ended_at"], t_b) - max(a["started_at"], t_a)) for a in done)
    t0 = min(a["dispatched_at"] for a in attempts)
    t1 = max(a["ended_at"] for a in done)
    busy_all = sum(a["ended_at"] - a["started_at"] for a in done)
    lat = [a["started_at"] - a["dispatched_at"] for a in done]
    return {"steady_utilisation": busy / (workers * (t_b - t_a)) if t_b > t_a else float("nan"),
            "steady_window_s": t_b - t_a,
            "overall_utilisation": busy_all / (workers * (t1 - t0)),
            "overall_window_s": t1 - t0, "runs": len(done),
            "dispatch_to_start_s": {"mean": float(np.mean(lat)), "p95": float(np.quantile(lat, 0.95))}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--runs", type=int, default=640)
    ap.add_argument("--mean-s", type=float, default=4.0, help="mean run time (s)")
    ap.add_argument("--executor", choices=["ray", "inprocess"], default="ray")
    ap.add_argument("--fit", choices=["map", "nuts"], default="map")
    ap.add_argument("--out", default=None, help="campaign dir (default: a temporary one)")
    ap.add_argument("--json", default=None, help="write the measurements here")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from planner.campaign.campaign import run_campaign
    from planner.campaign.ledger import Ledger

    doms = ["a", "b", "c"]
    W = args.workers
    cfg = {"domains": doms, "targets": {"a": 1.0}, "target_budget": {"N": 1e9, "D": 2e10},
           "space": {"N": [1e6, 5e7], "D": [1e8, 1e9]}, "budget": {"max_runs": args.runs},
           "batch_size": W, "acquisition": "random",
           "trainer": {"path": "benchmarks.bench_workers:SleepySynthetic",
                       "args": {"domains": doms, "mean_s": args.mean_s}},
           "executor": {"kind": args.executor, "threads": W, "max_retries": 1},
           "fit": {"method": args.fit, "background": True}}
    warm = 0.0
    if args.executor == "ray":
        import ray

        t = time.time()
        ray.init(num_cpus=W, include_dashboard=False, log_to_driver=False)

        @ray.remote(num_cpus=0)
        class Barrier:
            def __init__(self):
                self.n = 0

            def arrive(self):
                self.n += 1

            def count(self):
                return self.n

        @ray.remote(num_cpus=1)
        def _warm(barrier, n):
            ray.get(barrier.arrive.remote())
            while ray.get(barrier.count.remote()) < n:
                time.sleep(0.1)
            return os.getpid()

        # start all W worker processes before the campaign (Ray starts them on demand, two at a
        # time on this machine): the campaign then measures the planner, not process start-up
        b = Barrier.remote()
        pids = ray.get([_warm.remote(b, W) for _ in range(W)])
        ray.kill(b)
        warm = time.time() - t
        print(f"ray up with {len(set(pids))} worker processes in {warm:.1f} s", flush=True)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_workers_")) / "camp"
    t = time.time()
    res = run_campaign(cfg, out)
    wall = time.time() - t
    with Ledger.open(out, readonly=True) as lg:
        att = lg.attempts()
        snaps = lg.snapshots()
    u = utilisation(att, W)
    u.update(workers=W, mean_run_s=args.mean_s, executor=args.executor, wall_s=wall,
             warmup_s=warm, fits=len(snaps), stop=res.stop_reason,
             fit_seconds_mean=float(np.mean([s["fit_seconds"] for s in snaps])) if snaps else None,
             cpus=os.cpu_count(), command="python " + " ".join(sys.argv))
    print(json.dumps(u, indent=2))
    print(f"steady-state utilisation {u['steady_utilisation']:.1%} over {u['steady_window_s']:.0f} s "
          f"({W} workers, {u['runs']} runs, {len(snaps)} refits); overall "
          f"{u['overall_utilisation']:.1%} including ramp-up and drain")
    if args.json:
        Path(args.json).write_text(json.dumps(u, indent=2))
    return 0 if u["steady_utilisation"] >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
