#!/usr/bin/env python3
"""A tiny stand-in for a training script, to drive through ``trainers.command:CommandTrainer``.

Standard library only. It "trains" in ``--steps`` steps: the loss of each domain (one target per
domain) at the tokens seen so far comes from a known additive mixture law plus seeded noise.
After every step it saves a checkpoint to ``OUT_DIR/ckpt.json`` and, if a previous attempt of
the same run left one, it resumes from it (``metadata.resumed_from_step`` says where). At the
end it writes the result file (JSON, or CSV for a ``.csv`` name) atomically.

    python examples/tiny_train.py --run-id r1 --N 1e7 --D 1e9 --seed 0 \\
        --weights '{"a": 0.5, "b": 0.5}' --out-dir /tmp/r1 [--result /tmp/r1/result.json]

Misbehaviour for tests, each given as RUN[:ATTEMPT] (``all`` matches every run; the attempt
comes from ``--attempt`` or ``$PLANNER_ATTEMPT``), repeatable:
  --fail R        print an error to stderr and exit with --fail-code (default 3)
  --hang R        print a line, then sleep forever (for timeouts)
  --malformed R   write a truncated result file and exit 0
  --preempt R     exit with code 143 right after the checkpoint of step steps//2 (a preempted
                  job; the next attempt resumes from that checkpoint)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time

E, A, ALPHA, B, BETA = 1.7, 0.45, 0.32, 0.55, 0.28
C, G = [2.0, 4.0, 1.5, 3.0, 2.5], [0.35, 0.6, 0.5, 0.45, 0.4]


def true_loss(N: float, D: float, h: list[float], shift: float) -> float:
    mix = sum(C[i % len(C)] * (1 + shift) * w ** G[i % len(G)] for i, w in enumerate(h) if w > 0)
    return E + 1.0 / mix + A * (N / 1e8) ** -ALPHA + B * (D / 1e9) ** -BETA


def matches(specs: list[str], run_id: str, attempt: int) -> bool:
    for s in specs:
        rid, _, att = s.partition(":")
        if rid in (run_id, "all") and (not att or int(att) == attempt):
            return True
    return False


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-id", required=True)
    p.add_argument("--N", type=float, required=True)
    p.add_argument("--D", type=float, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", required=True, help="JSON {domain: weight}")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--result", help="result file (default OUT_DIR/result.json; .csv: CSV)")
    p.add_argument("--steps", type=int, default=int(os.environ.get("TINY_TRAIN_STEPS", "4")))
    p.add_argument("--step-seconds", type=float, default=0.0)
    p.add_argument("--noise", type=float, default=0.003)
    p.add_argument("--attempt", type=int, default=int(os.environ.get("PLANNER_ATTEMPT", "1")))
    for flag in ("fail", "hang", "malformed", "preempt"):
        p.add_argument(f"--{flag}", action="append", default=[], metavar="RUN[:ATTEMPT]")
    p.add_argument("--fail-code", type=int, default=3)
    a = p.parse_args(argv)

    weights = json.loads(a.weights)
    doms, h = list(weights), [float(w) for w in weights.values()]
    result = a.result or os.path.join(a.out_dir, "result.json")
    os.makedirs(a.out_dir, exist_ok=True)
    if matches(a.fail, a.run_id, a.attempt):
        print(f"tiny_train: simulated failure in run {a.run_id} (CUDA out of memory)",
              file=sys.stderr)
        return a.fail_code
    if matches(a.hang, a.run_id, a.attempt):
        print(f"tiny_train: run {a.run_id} hangs", flush=True)
        while True:
            time.sleep(60)

    ckpt_path = os.path.join(a.out_dir, "ckpt.json")
    state = {"step": 0, "history": []}
    if os.path.exists(ckpt_path):
        with open(ckpt_path) as f:
            state = json.load(f)
        print(f"resuming run {a.run_id} from step {state['step']}", flush=True)
    resumed_from = state["step"]
    rng = random.Random(a.seed)
    run_noise = [rng.gauss(0.0, 1.0) for _ in doms]
    for step in range(state["step"] + 1, a.steps + 1):
        time.sleep(a.step_seconds)
        tokens = round(a.D * step / a.steps)
        step_rng = random.Random(a.seed * 1000 + step)
        losses = {d: true_loss(a.N, tokens, h, 0.1 * i)
                  * math.exp(a.noise * (run_noise[i] + 0.3 * step_rng.gauss(0.0, 1.0)))
                  for i, d in enumerate(doms)}
        state = {"step": step, "history": [*state["history"], [tokens, losses]]}
        write_atomic(ckpt_path, json.dumps(state))
        print(f"step {step}/{a.steps} tokens {tokens} "
              + " ".join(f"{d}={v:.4f}" for d, v in losses.items()), flush=True)
        if step == a.steps // 2 and matches(a.preempt, a.run_id, a.attempt):
            print(f"tiny_train: run {a.run_id} preempted after step {step}", file=sys.stderr)
            return 143

    if matches(a.malformed, a.run_id, a.attempt):
        write_atomic(result, '{"losses": {"' + doms[0] + '": 2.5,')
        return 0
    hist = state["history"]
    if result.endswith(".csv"):
        rows = ["tokens," + ",".join(f"loss_{d}" for d in doms)]
        rows += [f"{t}," + ",".join(repr(ls[d]) for d in doms) for t, ls in hist]
        write_atomic(result, "\n".join(rows) + "\n")
    else:
        write_atomic(result, json.dumps({
            "run_id": a.run_id, "losses": hist[-1][1], "checkpoints": hist[:-1],
            "metadata": {"resumed_from_step": resumed_from, "steps": a.steps}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
