"""A trainer that answers from a known scaling law plus noise: for tests, demos and benchmarks.

``SyntheticTrainer(law="additive", domains=None, params=None, truth_seed=0, noise=0.005,
checkpoint_noise=0.001, checkpoints=(), time_per_flop=0.0)``.

Losses. For each target t the true loss is ``law(N, D, h)`` with that target's parameters (see
``trainers.laws_np`` for the formulas and the n = N/1e8, d = D/1e9 convention). A reported loss is
``true * exp(e_run + e_ckpt)``: e_run ~ Normal(0, noise) is the run's own deviation (seed, data
order), shared by all checkpoints of the run; e_ckpt ~ Normal(0, checkpoint_noise) is the small
independent wobble of each evaluation. Both are independent across targets.

Seeding. e_run is drawn from (spec.seed, N, h) and e_ckpt from (spec.seed, N, h, tokens), never
from D: like a constant-LR run, the checkpoint at t tokens of a longer run equals a shorter run of
t tokens with the same seed. A different seed or configuration gives independent noise.

Checkpoints. ``checkpoints`` lists fractions of D in (0, 1); each adds ``(round(f * D), losses)``
to ``RunResult.checkpoints``. The final loss at D is ``RunResult.losses``.

Ground truth. ``params`` is {target: {name: value or per-domain list/dict}}, lists in
``domains`` order. Without it, ``default_truth(law, domains, truth_seed)`` makes one target per
domain, named after it (documented in ``trainers.laws_np.default_truth``). Without ``domains``,
they are the sorted keys of the first spec's h.

Run time. With ``time_per_flop > 0`` each run sleeps ``time_per_flop * 6 * N * D`` seconds, so
executors and budgets can be exercised with realistic durations.
"""
from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np

from trainers.base import RunResult, RunSpec
from trainers.laws_np import PARAM_NAMES, check_params, default_truth, law_loss, optimal_mixture


class SyntheticTrainer:
    """Known law plus lognormal noise; also exposes the truth (``true_loss``, ``true_optimum``)."""

    def __init__(self, law: str = "additive", domains: list[str] | None = None,
                 params: dict[str, dict[str, Any]] | None = None, truth_seed: int = 0,
                 noise: float = 0.005, checkpoint_noise: float = 0.001,
                 checkpoints: list[float] | tuple[float, ...] = (), time_per_flop: float = 0.0):
        if noise < 0 or checkpoint_noise < 0 or time_per_flop < 0:
            raise ValueError("noise, checkpoint_noise and time_per_flop must be >= 0")
        self.checkpoints = tuple(sorted(float(f) for f in checkpoints))
        if any(not 0.0 < f < 1.0 for f in self.checkpoints):
            raise ValueError(f"checkpoint fractions must be in (0, 1), got {list(checkpoints)}")
        if law not in PARAM_NAMES:
            raise ValueError(f"unknown law {law!r}; choose one of {sorted(PARAM_NAMES)}")
        self.law = law
        self.noise = float(noise)
        self.checkpoint_noise = float(checkpoint_noise)
        self.time_per_flop = float(time_per_flop)
        self.truth_seed = int(truth_seed)
        self._raw_params = params
        self.domains: list[str] | None = list(domains) if domains is not None else None
        if params is not None and self.domains is None:
            self.domains = self._domains_from_params(params)
        self._truth: dict[str, dict[str, Any]] | None = None
        if self.domains is not None:
            self._set_domains(self.domains)

    @staticmethod
    def _domains_from_params(params: dict[str, dict[str, Any]]) -> list[str] | None:
        for p in params.values():
            for v in p.values():
                if isinstance(v, dict):
                    return sorted(v)
        return None  # only scalar params (chinchilla) or lists: domains come from the first spec

    def _set_domains(self, domains: list[str]) -> None:
        if len(set(domains)) != len(domains) or not domains:
            raise ValueError(f"domains must be a non-empty list of distinct names, got {domains}")
        self.domains = list(domains)
        if self._raw_params is None:
            self._truth = default_truth(self.law, self.domains, self.truth_seed)
        else:
            if not self._raw_params:
                raise ValueError("params must name at least one target")
            self._truth = {t: check_params(self.law, p, self.domains) for t, p in self._raw_params.items()}

    @property
    def targets(self) -> list[str]:
        return list(self._require_truth())

    @property
    def true_params(self) -> dict[str, dict[str, Any]]:
        """{target: {name: float or array in ``domains`` order}} (a copy)."""
        return {t: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in p.items()}
                for t, p in self._require_truth().items()}

    def _require_truth(self) -> dict[str, dict[str, Any]]:
        if self._truth is None:
            raise RuntimeError("domains are not known yet: pass domains= or call the trainer once")
        return self._truth

    def _h_array(self, H) -> np.ndarray:
        if isinstance(H, dict):
            unknown = [d for d in H if d not in self.domains]
            if unknown:
                raise ValueError(f"unknown domains {unknown}; this trainer has {self.domains}")
            cols = [np.asarray(H.get(d, 0.0), dtype=float) for d in self.domains]
            return np.stack(np.broadcast_arrays(*cols), axis=-1)
        return np.asarray(H, dtype=float)

    def true_loss(self, N, D, H, target: str | None = None):
        """Noise-free loss. N, D: arrays (broadcast); H: [..., k] in ``domains`` order or a dict
        {domain: weight or array}. Returns {target: array}, or one array if ``target`` is given."""
        truth = self._require_truth()
        Harr = self._h_array(H)
        if target is not None:
            return law_loss(self.law, truth[target], N, D, Harr)
        return {t: law_loss(self.law, p, N, D, Harr) for t, p in truth.items()}

    def true_optimum(self, N: float, D: float,
                     target_weights: dict[str, float] | None = None) -> tuple[dict[str, float], float]:
        """The true optimal mixture at (N, D) for sum_t w_t L_t (default: each target weight 1/T).
        Returns ({domain: weight}, objective value)."""
        truth = self._require_truth()
        w = target_weights or {t: 1.0 / len(truth) for t in truth}

        def objective(H: np.ndarray) -> np.ndarray:
            return sum(wt * law_loss(self.law, truth[t], N, D, H) for t, wt in w.items())

        h, val = optimal_mixture(objective, len(self.domains))
        return dict(zip(self.domains, map(float, h))), val

    def _rng(self, spec: RunSpec, *extra: int) -> np.random.Generator:
        key = f"{int(spec.N)}|" + ",".join(f"{d}={float(spec.h.get(d, 0.0)):.12g}" for d in self.domains)
        words = np.frombuffer(hashlib.sha256(key.encode()).digest()[:16], dtype=np.uint32)
        return np.random.default_rng(np.random.SeedSequence([int(spec.seed), *map(int, words), *extra]))

    def __call__(self, spec: RunSpec) -> RunResult:
        if self._truth is None:
            self._set_domains(sorted(spec.h))
        H = self._h_array(dict(spec.h))
        if np.any(H < 0) or abs(H.sum() - 1.0) > 1e-6:
            raise ValueError(f"run {spec.run_id}: h must be non-negative and sum to 1, got {dict(spec.h)}")
        targets = self.targets
        e_run = self._rng(spec).normal(0.0, self.noise, len(targets)) if self.noise else np.zeros(len(targets))

        def observe(tokens: int) -> dict[str, float]:
            e = e_run
            if self.checkpoint_noise:
                e = e + self._rng(spec, 1, int(tokens)).normal(0.0, self.checkpoint_noise, len(targets))
            true = self.true_loss(spec.N, tokens, H)
            return {t: float(true[t] * np.exp(e[i])) for i, t in enumerate(targets)}

        if self.time_per_flop:
            time.sleep(self.time_per_flop * 6.0 * float(spec.N) * float(spec.D))
        checkpoints = [(t, observe(t)) for t in (max(1, round(f * spec.D)) for f in self.checkpoints)]
        true_final = {t: float(v) for t, v in self.true_loss(spec.N, spec.D, H).items()}
        return RunResult(run_id=spec.run_id, losses=observe(int(spec.D)), checkpoints=checkpoints,
                         metadata={"trainer": "synthetic", "law": self.law, "true_losses": true_final})
