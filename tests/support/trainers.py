"""Trainers for the campaign tests (loaded by dotted path, also inside Ray workers).

``TinySynthetic`` answers a run from a known additive law (numpy only, so workers start fast),
with optional noise, checkpoints, a sleep, and injected failures that are decided per call and
remembered across processes in ``state_dir``:

    inject: {run_id: [mode, ...]}   the n-th call for run_id uses the n-th mode, then succeeds;
                                    modes: raise, nan, inf, hang (sleep hang_s), die (os._exit), ok
    fail_all: true                  every call raises
    fail_while: PATH                every call raises while the file PATH exists (a cause
                                    outside the config that can be fixed between resumes)
A negative ``noise`` is rejected by the constructor (a trainer that refuses its args).
Every successful call appends {"run_id", "losses", "pid"} to ``state_dir/done.jsonl``.
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from trainers.base import RunResult, RunSpec

TRUTH = {"E": 1.7, "C": [2.0, 4.0, 1.5, 3.0, 2.5], "g": [0.35, 0.6, 0.5, 0.45, 0.4],
         "A": 0.45, "a": 0.32, "B": 0.55, "b": 0.28}


def true_loss(N, D, h: np.ndarray, shift: float = 0.0) -> float:
    k = len(h)
    C = np.asarray(TRUTH["C"][:k]) * (1.0 + shift)
    g = np.asarray(TRUTH["g"][:k])
    pos = h > 0
    mix = 1.0 / np.sum(C[pos] * h[pos] ** g[pos])
    return float(TRUTH["E"] + mix + TRUTH["A"] * (N / 1e8) ** -TRUTH["a"]
                 + TRUTH["B"] * (D / 1e9) ** -TRUTH["b"])


class TinySynthetic:
    def __init__(self, domains, targets=None, noise: float = 0.003, checkpoints: int = 0,
                 sleep_s: float = 0.0, sleep_jitter_s: float = 0.0, inject=None,
                 fail_all: bool = False, hang_s: float = 60.0, state_dir: str | None = None,
                 report_N: bool = False, fail_while: str | None = None):
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.fail_while = fail_while
        self.domains = list(domains)
        self.targets = list(targets or [self.domains[0]])
        self.noise = noise
        self.checkpoints = int(checkpoints)
        self.sleep_s = sleep_s
        self.sleep_jitter_s = sleep_jitter_s
        self.inject = dict(inject or {})
        self.fail_all = fail_all
        self.hang_s = hang_s
        self.state_dir = Path(state_dir) if state_dir else None
        self.report_N = report_N
        self.built_pid = os.getpid()
        if self.state_dir:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            with open(self.state_dir / "builds.log", "a") as f:
                f.write(f"{os.getpid()}\n")

    def _call_index(self, run_id: str) -> int:
        """How many times run_id was called before (across processes)."""
        if not self.state_dir:
            return 0
        p = self.state_dir / "calls.jsonl"
        with open(p, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            n = sum(1 for line in f if json.loads(line)["run_id"] == run_id)
            f.write(json.dumps({"run_id": run_id, "pid": os.getpid(), "t": time.time()}) + "\n")
            f.flush()
        return n

    def losses_at(self, spec: RunSpec, D: float, rng) -> dict[str, float]:
        h = np.array([spec.h.get(d, 0.0) for d in self.domains])
        return {t: true_loss(spec.N, D, h, shift=0.1 * i) * float(np.exp(self.noise * rng.standard_normal()))
                for i, t in enumerate(self.targets)}

    def __call__(self, spec: RunSpec) -> RunResult:
        i = self._call_index(spec.run_id)
        modes = self.inject.get(spec.run_id, [])
        mode = modes[i] if i < len(modes) else "ok"
        if self.fail_all:
            mode = "raise"
        if self.fail_while and os.path.exists(self.fail_while):
            raise RuntimeError(f"cannot train: {self.fail_while} exists")
        if mode == "raise":
            raise RuntimeError(f"injected failure for {spec.run_id} (call {i + 1})")
        if mode == "hang":
            time.sleep(self.hang_s)
        if mode == "die":  # the worker process dies (as if OOM-killed or its node lost)
            os._exit(1)
        rng = np.random.default_rng(spec.seed)
        if self.sleep_s or self.sleep_jitter_s:
            time.sleep(self.sleep_s + self.sleep_jitter_s * rng.random())
        losses = self.losses_at(spec, spec.D, rng)
        if mode in ("nan", "inf"):
            losses[self.targets[0]] = float("nan") if mode == "nan" else float("inf")
        ckpts = []
        for j in range(1, self.checkpoints + 1):
            tokens = int(spec.D * j / (self.checkpoints + 1))
            if tokens > 0:
                ckpts.append((tokens, self.losses_at(spec, tokens, rng)))
        meta = {"pid": os.getpid(), "built_pid": self.built_pid,
                "planner_loaded": "planner" in sys.modules, "jax_loaded": "jax" in sys.modules}
        if self.report_N:
            meta["N"] = int(spec.N * 1.1)
        if self.state_dir and mode == "ok":
            with open(self.state_dir / "done.jsonl", "a") as f:
                f.write(json.dumps({"run_id": spec.run_id, "losses": losses, "pid": os.getpid()}) + "\n")
        return RunResult(run_id=spec.run_id, losses=losses, checkpoints=ckpts, metadata=meta)
