"""The candidate space: ``Space`` (N, D ranges or values, mixtures with a minimum weight),
``Candidates`` as arrays, space-filling samples, and ``Proposal`` (one run to buy)."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from planner.core.errors import InputError
from planner.core.types import flops


# --------------------------------------------------------------------------------------------
# the space
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Space:
    """Runs the planner may buy. N/D: ``(lo, hi)`` log-uniform, or ``values`` (sorted)."""

    domains: tuple[str, ...]
    N_lo: float
    N_hi: float
    D_lo: float
    D_hi: float
    N_values: tuple[float, ...] | None = None
    D_values: tuple[float, ...] | None = None
    min_weight: float = 0.0

    @classmethod
    def from_config(cls, cfg) -> "Space":
        s = cfg.space
        return cls(domains=tuple(cfg.domains), N_lo=s.N.lo, N_hi=s.N.hi, D_lo=s.D.lo, D_hi=s.D.hi,
                   N_values=s.N.values, D_values=s.D.values, min_weight=s.min_weight)

    @property
    def k(self) -> int:
        return len(self.domains)

    def cheapest_flops(self) -> float:
        return flops(float(round_size(self.N_lo)), float(round_size(self.D_lo)))

    def cost(self, N, D):
        """Compute of a run: 6 N D FLOPs (broadcasts)."""
        return flops(np.asarray(N, dtype=float), np.asarray(D, dtype=float))

    # unit-cube coordinates -> sizes ---------------------------------------------------------
    def _axis_from_unit(self, u, lo, hi, values):
        u = np.clip(np.asarray(u, dtype=float), 0.0, 1.0 - 1e-12)
        if values is not None:
            vals = np.asarray(values, dtype=float)
            return vals[np.minimum((u * len(vals)).astype(int), len(vals) - 1)]
        return np.exp(np.log(lo) + u * (np.log(hi) - np.log(lo)))

    def N_from_unit(self, u):
        return self._axis_from_unit(u, self.N_lo, self.N_hi, self.N_values)

    def D_from_unit(self, u):
        return self._axis_from_unit(u, self.D_lo, self.D_hi, self.D_values)

    def h_from_unit(self, u):
        """(n, k) uniforms -> (n, k) mixtures: Dirichlet(1) (normalised exponentials) mapped into
        the simplex above ``min_weight``."""
        u = np.clip(np.asarray(u, dtype=float), 1e-12, 1.0 - 1e-12)
        e = -np.log1p(-u)
        h = e / e.sum(axis=1, keepdims=True)
        return self.shrink(h)

    def shrink(self, h):
        """Map simplex points into the sub-simplex with every weight >= min_weight."""
        h = np.asarray(h, dtype=float)
        return self.min_weight + (1.0 - self.k * self.min_weight) * h

    def contains(self, N: float, D: float, h: Mapping[str, float], tol: float = 1e-6) -> bool:
        hv = np.array([h.get(d, 0.0) for d in self.domains])
        ok_h = abs(hv.sum() - 1) <= tol and (hv >= self.min_weight - tol).all()
        return ok_h and self._axis_ok(N, self.N_lo, self.N_hi, self.N_values) and \
            self._axis_ok(D, self.D_lo, self.D_hi, self.D_values)

    @staticmethod
    def _axis_ok(x, lo, hi, values):
        if values is not None:
            return any(abs(x - v) <= 0.5 + 1e-9 * v for v in values)
        return round_size(lo) - 0.5 <= x <= round_size(hi) + 0.5

    def fit_to_budget(self, N: float, D: float, max_flops: float | None):
        """Shrink (N, D) toward the cheapest corner until 6 N D <= max_flops; None if impossible.

        D is reduced first (cheaper runs of the same model), then N, staying inside the space.
        """
        if max_flops is None or flops(N, D) <= max_flops:
            return N, D
        if self.cheapest_flops() > max_flops:
            return None
        for _ in range(2):
            D = self._largest_at_most(max_flops / flops(N, 1.0), self.D_lo, self.D_hi, self.D_values) or D
            if flops(N, D) <= max_flops:
                return N, D
            N = self._largest_at_most(max_flops / flops(1.0, D), self.N_lo, self.N_hi, self.N_values) or N
            if flops(N, D) <= max_flops:
                return N, D
        N, D = round_size(self.N_lo), round_size(self.D_lo)
        return (N, D) if flops(N, D) <= max_flops else None

    @staticmethod
    def _largest_at_most(x, lo, hi, values):
        if values is not None:
            ok = [v for v in values if v <= x]
            return max(ok) if ok else None
        if x < lo:
            return None
        return float(math.floor(min(x, hi)))


def round_size(x: float) -> int:
    return max(1, int(round(float(x))))


@dataclass(frozen=True)
class Candidates:
    """A batch of candidate runs as arrays: N (n,), D (n,), H (n, k) in ``domains`` order."""

    N: np.ndarray
    D: np.ndarray
    H: np.ndarray
    domains: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.N)

    def flops(self) -> np.ndarray:
        return flops(self.N, self.D)

    def subset(self, idx) -> "Candidates":
        return Candidates(self.N[idx], self.D[idx], self.H[idx], self.domains)

    def proposal(self, i: int, strategy: str, **info) -> "Proposal":
        return Proposal(N=round_size(self.N[i]), D=round_size(self.D[i]),
                        h=h_dict(self.H[i], self.domains), strategy=strategy, info=info)

    def frame(self):
        """As a DataFrame with N, D, h_<domain> columns (the runs-table design columns)."""
        import pandas as pd

        df = pd.DataFrame({"N": self.N, "D": self.D})
        for j, d in enumerate(self.domains):
            df[f"h_{d}"] = self.H[:, j]
        return df


def _sobol(n: int, dim: int, seed: int, skip: int = 0) -> np.ndarray:
    """n scrambled-Sobol points in [0, 1)^dim, continuing the sequence after ``skip`` points."""
    from scipy.stats import qmc

    eng = qmc.Sobol(d=dim, scramble=True, seed=np.random.default_rng(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # balance warnings for n not a power of 2
        if skip:
            eng.fast_forward(skip)
        return eng.random(n)


def sample_candidates(space: Space, n: int, seed: int = 0, skip: int = 0,
                      faces: float = 0.0, scale_fraction: float = 1.0) -> Candidates:
    """``n`` space-filling candidates: scrambled Sobol over (log N, log D) and Dirichlet(1) h.

    ``skip`` continues one low-discrepancy sequence across calls (pass the number of runs
    already drawn). ``faces``: the fraction of points moved onto a random face of the simplex
    (some weights set to 0), allowed only when ``min_weight == 0``. ``scale_fraction`` in
    (0, 1]: N and D come only from the cheapest fraction of each (log) axis.
    """
    if n <= 0:
        return Candidates(np.zeros(0), np.zeros(0), np.zeros((0, space.k)), space.domains)
    if not 0 < scale_fraction <= 1:
        raise InputError(f"scale fraction must be in (0, 1], got {scale_fraction}")
    u = _sobol(n, 2 + space.k, seed, skip)
    u[:, :2] *= scale_fraction
    N = np.array([round_size(x) for x in space.N_from_unit(u[:, 0])], dtype=float)
    D = np.array([round_size(x) for x in space.D_from_unit(u[:, 1])], dtype=float)
    H = space.h_from_unit(u[:, 2:])
    if faces > 0 and space.min_weight == 0 and space.k > 2:
        rng = np.random.default_rng([seed, skip, 7])
        move = rng.random(n) < faces
        for i in np.flatnonzero(move):
            keep = rng.choice(space.k, size=rng.integers(1, space.k), replace=False)
            h = np.zeros(space.k)
            h[keep] = H[i, keep]
            H[i] = h / h.sum()
    return Candidates(N, D, H, space.domains)


def vertices(space: Space) -> np.ndarray:
    """The k corners of the (shrunk) simplex: pure domains when min_weight == 0."""
    return space.shrink(np.eye(space.k))


def validate_request(space, q: int, n_candidates: int, max_flops: float | None) -> None:
    """Bad-input checks shared by the CLI and the loop (one clear line each)."""
    if q > n_candidates:
        raise InputError(f"batch size {q} is larger than the candidate set ({n_candidates})")
    if max_flops is not None and space.cheapest_flops() > max_flops:
        raise InputError(f"budget {max_flops:.3g} FLOPs is smaller than the cheapest run "
                         f"({space.cheapest_flops():.3g} FLOPs)")


def h_dict(row, domains) -> dict[str, float]:
    row = np.clip(np.asarray(row, dtype=float), 0.0, None)
    row = row / row.sum()
    return {d: float(x) for d, x in zip(domains, row)}


@dataclass(frozen=True)
class Proposal:
    """A run a strategy wants bought. ``info`` (JSON-able) is stored in the ledger."""

    N: int
    D: int
    h: dict[str, float]
    strategy: str = ""
    info: dict = field(default_factory=dict)

    @property
    def flops(self) -> float:
        return flops(float(self.N), float(self.D))
