"""Training batches drawn from several domains in proportions h, and fixed evaluation windows.

``MixtureSampler`` picks each sequence's domain, then a uniformly random window of
``seq_len + 1`` bytes inside that domain's training split. Domains are picked in one of two ways:

  stratified (default)  smooth weighted round-robin: sequence j goes to the domain with the
                        largest deficit h_i * (j + 1) - count_i. Every prefix of the run then
                        holds each domain within about one sequence of h_i times its length
                        (at most 1.2 over 1,500 random mixtures of 2-10 domains), so the
                        realised mixture is h itself, not a binomial draw around it (at small D
                        a domain of weight 0.05 would otherwise vary by ~10 % between seeds).
  iid                   each sequence's domain drawn independently from categorical(h) by
                        inverse CDF; two runs with one seed and nearby mixtures then see nearly
                        the same sequence of domains (common random numbers).

All randomness (window positions; iid domains) comes from one ``numpy.random.Generator`` seeded
by the run's seed, so a run's data is a pure function of (seed, h, batch sizes); in particular the
first k batches of a longer run equal those of a shorter one, which is what makes constant-LR
checkpoints of one run equal to shorter runs.

``eval_windows`` cuts a validation split into evenly spaced windows, independent of any seed, so
every run is scored on the same held-out text.
"""
from __future__ import annotations

import numpy as np


class MixtureSampler:
    """Seeded sampler of (inputs, targets, domain index) batches from several byte arrays."""

    def __init__(self, train: dict[str, np.ndarray], h: dict[str, float], seq_len: int, seed: int,
                 mixing: str = "stratified"):
        if mixing not in ("stratified", "iid"):
            raise ValueError(f"mixing must be 'stratified' or 'iid', got {mixing!r}")
        self.mixing = mixing
        weights = {d: float(w) for d, w in h.items() if float(w) > 0.0}
        if not weights:
            raise ValueError("mixture h has no positive weight")
        if any(w < 0 for w in h.values()):
            raise ValueError(f"mixture h has negative weights: {h}")
        missing = [d for d in weights if d not in train]
        if missing:
            raise ValueError(f"no training data for domains {missing}")
        short = [d for d in weights if len(train[d]) < seq_len + 2]
        if short:
            raise ValueError(f"domains {short} have fewer than seq_len + 2 = {seq_len + 2} bytes")
        self.domains = sorted(weights)  # a fixed order, so the draw does not depend on dict order
        p = np.array([weights[d] for d in self.domains])
        self.p = p / p.sum()
        self._cdf = np.cumsum(self.p)
        self._cdf[-1] = 1.0
        self._arrays = [train[d] for d in self.domains]
        self.seq_len = seq_len
        self.rng = np.random.default_rng(seed)
        self.counts = np.zeros(len(self.domains), dtype=np.int64)  # sequences drawn per domain

    def sample_domains(self, n: int) -> np.ndarray:
        """Domain indices (into ``self.domains``) of the next n sequences (see module doc)."""
        if self.mixing == "iid":
            dom = np.searchsorted(self._cdf, self.rng.random(n), side="right")
            self.counts += np.bincount(dom, minlength=len(self.domains))
            return dom
        dom = np.empty(n, dtype=np.int64)
        for j in range(n):
            total = self.counts.sum() + 1
            i = int(np.argmax(self.p * total - self.counts))
            self.counts[i] += 1
            dom[j] = i
        return dom

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """n sequences: inputs and next-byte targets (int64, shape [n, seq_len]) and domains [n]."""
        dom = self.sample_domains(n)
        u = self.rng.random(n)
        span = np.arange(self.seq_len + 1)
        out = np.empty((n, self.seq_len + 1), dtype=np.int64)
        for j, arr in enumerate(self._arrays):
            rows = np.flatnonzero(dom == j)
            if rows.size:
                starts = (u[rows] * (len(arr) - self.seq_len - 1)).astype(np.int64)
                out[rows] = arr[starts[:, None] + span]
        return out[:, :-1], out[:, 1:], dom


def eval_windows(val: np.ndarray, seq_len: int, n_tokens: int) -> np.ndarray:
    """Evenly spaced windows of seq_len + 1 bytes covering about n_tokens predicted tokens.

    Windows do not overlap unless the split is shorter than n_tokens; the count is at least 1.
    Returns int64 [n_windows, seq_len + 1].
    """
    if len(val) < seq_len + 1:
        raise ValueError(f"validation split of {len(val)} bytes is shorter than seq_len + 1")
    n = max(1, n_tokens // seq_len)
    last = len(val) - seq_len - 1
    starts = np.linspace(0, last, n).round().astype(np.int64) if n > 1 else np.zeros(1, np.int64)
    return val[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64)
