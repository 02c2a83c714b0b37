"""The candidate space and the strategies that propose runs.

``Space`` is the set of runs the planner may buy: N and D on a log-uniform range or a list of
values, and mixtures h on the simplex with every ``h_i >= min_weight``. ``sample_candidates``
draws a space-filling set of candidates as arrays (for scoring); ``initial_design`` adds the
simplex vertices/faces when ``min_weight`` allows them.

Strategies live in a registry by name (the config key ``acquisition``). A strategy is a plain
function ``strategy(request: DesignRequest) -> list[Proposal]`` returning at most
``request.q`` proposals, each affordable within ``request.max_flops`` when that is set. The
request carries the current posterior (``None`` before the first fit), the observed runs (a
runs-table DataFrame), the pending runs (proposed or in flight: a batch must not buy the same
information twice), the space, a seed and ``q``. ``planner.acquisition`` registers ``decision``
and ``grid`` on import; ``get_strategy`` imports it on demand.

    @register_strategy("my_strategy")
    def my_strategy(req: DesignRequest) -> list[Proposal]: ...
"""
from __future__ import annotations

import importlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from planner.errors import InputError


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
        return 6.0 * _round_size(self.N_lo) * _round_size(self.D_lo)

    def cost(self, N, D):
        """Compute of a run: 6 N D FLOPs (broadcasts)."""
        return 6.0 * np.asarray(N, dtype=float) * np.asarray(D, dtype=float)

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
        return _round_size(lo) - 0.5 <= x <= _round_size(hi) + 0.5

    def fit_to_budget(self, N: float, D: float, max_flops: float | None):
        """Shrink (N, D) toward the cheapest corner until 6 N D <= max_flops; None if impossible.

        D is reduced first (cheaper runs of the same model), then N, staying inside the space.
        """
        if max_flops is None or 6.0 * N * D <= max_flops:
            return N, D
        if self.cheapest_flops() > max_flops:
            return None
        for _ in range(2):
            D = self._largest_at_most(max_flops / (6.0 * N), self.D_lo, self.D_hi, self.D_values) or D
            if 6.0 * N * D <= max_flops:
                return N, D
            N = self._largest_at_most(max_flops / (6.0 * D), self.N_lo, self.N_hi, self.N_values) or N
            if 6.0 * N * D <= max_flops:
                return N, D
        N, D = _round_size(self.N_lo), _round_size(self.D_lo)
        return (N, D) if 6.0 * N * D <= max_flops else None

    @staticmethod
    def _largest_at_most(x, lo, hi, values):
        if values is not None:
            ok = [v for v in values if v <= x]
            return max(ok) if ok else None
        if x < lo:
            return None
        return float(math.floor(min(x, hi)))


def _round_size(x: float) -> int:
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
        return 6.0 * self.N * self.D

    def subset(self, idx) -> "Candidates":
        return Candidates(self.N[idx], self.D[idx], self.H[idx], self.domains)

    def proposal(self, i: int, strategy: str, **info) -> "Proposal":
        return Proposal(N=_round_size(self.N[i]), D=_round_size(self.D[i]),
                        h=_h_dict(self.H[i], self.domains), strategy=strategy, info=info)

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
    N = np.array([_round_size(x) for x in space.N_from_unit(u[:, 0])], dtype=float)
    D = np.array([_round_size(x) for x in space.D_from_unit(u[:, 1])], dtype=float)
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


# --------------------------------------------------------------------------------------------
# proposals, requests and the registry
# --------------------------------------------------------------------------------------------
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
        return 6.0 * float(self.N) * float(self.D)


@dataclass
class DesignRequest:
    """Everything a strategy may use to propose ``q`` runs.

    posterior: the latest ``planner.posterior.Posterior`` or None (no fit yet).
    observed: runs-table DataFrame of completed observations (finals and checkpoints; columns
        run_id, N, D, h_<domain>, loss_<target>, final), possibly empty.
    pending: runs proposed or in flight, not yet observed (``Proposal`` or ``RunSpec``-like
        objects with N, D, h): condition on them.
    space: the candidate space.  seed: base seed (combine with ``step`` for fresh draws).
    q: number of runs wanted.  step: how many runs the campaign has proposed so far.
    max_flops: compute left in the budget (None: unlimited); each proposal must fit.
    target_N, target_D, target_weights, law: the decision the campaign is about.
    target_hi: per-domain upper bounds on the target run's weights (data caps), or None.
    options: strategy options from the config (``acquisition: {name: ..., <options>}``).
    """

    posterior: Any
    observed: Any
    pending: Sequence[Any]
    space: Space
    seed: int
    q: int
    step: int = 0
    max_flops: float | None = None
    target_N: float | None = None
    target_D: float | None = None
    target_weights: Mapping[str, float] = field(default_factory=dict)
    law: str = "additive"
    options: Mapping[str, Any] = field(default_factory=dict)
    target_hi: Sequence[float] | None = None


Strategy = Callable[[DesignRequest], "list[Proposal]"]
_STRATEGIES: dict[str, Strategy] = {}
# modules that register strategies when imported (looked up on demand)
_PROVIDERS = ("planner.acquisition",)


def register_strategy(name: str, fn: Strategy | None = None):
    """Register ``fn`` under ``name`` (usable as a decorator). Re-registering replaces it."""
    def deco(f: Strategy) -> Strategy:
        _STRATEGIES[name] = f
        return f

    return deco(fn) if fn is not None else deco


def available_strategies() -> list[str]:
    _load_providers()
    return sorted(_STRATEGIES)


def _load_providers() -> None:
    for mod in _PROVIDERS:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def get_strategy(name: str) -> Strategy:
    """The strategy registered as ``name``; InputError listing the known ones otherwise."""
    if name not in _STRATEGIES:
        _load_providers()
    if name not in _STRATEGIES:
        raise InputError(f"acquisition {name!r} is not available (known: "
                         f"{', '.join(sorted(_STRATEGIES)) or 'none'})")
    return _STRATEGIES[name]


def propose(name: str, request: DesignRequest) -> list[Proposal]:
    """Run strategy ``name`` and check what it returns (at most q, inside the space and budget)."""
    props = list(get_strategy(name)(request))[: request.q]
    out = []
    for p in props:
        if not isinstance(p, Proposal):
            raise TypeError(f"strategy {name!r} returned {type(p).__name__}, not a Proposal")
        if request.max_flops is not None and p.flops > request.max_flops * (1 + 1e-9):
            continue
        out.append(p if p.strategy else Proposal(p.N, p.D, p.h, name, p.info))
    return out


def _h_dict(row, domains) -> dict[str, float]:
    row = np.clip(np.asarray(row, dtype=float), 0.0, None)
    row = row / row.sum()
    return {d: float(x) for d, x in zip(domains, row)}


# --------------------------------------------------------------------------------------------
# the `random` strategy (also the initial design of every campaign)
# --------------------------------------------------------------------------------------------
@register_strategy("random")
def random_strategy(req: DesignRequest) -> list[Proposal]:
    """Space-filling random design: one scrambled-Sobol sequence over (log N, log D, h)
    continued across calls (``req.step`` points skipped). When ``min_weight`` is 0 the first k
    runs of a campaign sit on the simplex vertices (pure domains) and a share ``faces`` (option,
    default 0.2) of the others on its faces. Each proposal is shrunk (D first) to fit
    ``req.max_flops``; those that cannot fit are dropped. Options: faces, vertices (bool),
    scale_fraction (1.0: the whole size range; the planner's initial design for ``decision``
    uses the cheapest tenth of each log axis, see ``initial_options``)."""
    space = req.space
    q = req.q
    if q <= 0:
        return []
    opts = dict(req.options or {})
    cand = sample_candidates(space, q, seed=req.seed, skip=req.step,
                             faces=float(opts.get("faces", 0.2)),
                             scale_fraction=float(opts.get("scale_fraction", 1.0)))
    H = cand.H.copy()
    # vertices (pure domains) early in the campaign: run i < k uses vertex i; they pin down
    # each domain's own loss curve, which the law's 1 / sum C_i h_i^g_i term needs
    n_vert = space.k if (space.min_weight == 0 and opts.get("vertices", True)) else 0
    for j in range(q):
        i = req.step + j
        if i < n_vert:
            H[j] = vertices(space)[i]
    out = []
    for j in range(q):
        fit = space.fit_to_budget(float(cand.N[j]), float(cand.D[j]), req.max_flops)
        if fit is None:
            continue
        N, D = fit
        out.append(Proposal(N=_round_size(N), D=_round_size(D), h=_h_dict(H[j], space.domains),
                            strategy="random", info={"design": "sobol", "index": req.step + j}))
    return out


# the cheapest tenth of each log size axis: in the simulation study (README, "Does the
# acquisition save compute?") 0.1 needed 1.4-2x less compute than 0.25 on every truth it
# reached, and reached k = 3 joint in both seeds where 0.25 did in one
INIT_SCALE_FRACTION = 0.1


def initial_options(strategy: str, options: Mapping[str, Any] | None) -> dict:
    """Options of the ``random`` initial design (the runs bought before the first fit).

    ``decision`` starts cheap: its initial runs come from the cheapest tenth of each log size
    axis (option ``init_scale_fraction``), because the value of information decides later
    whether larger runs are worth their cost; the baselines keep the whole range."""
    opts = dict(options or {})
    default = INIT_SCALE_FRACTION if strategy == "decision" else 1.0
    frac = float(opts.get("init_scale_fraction", default))
    if not 0 < frac <= 1:
        raise InputError(f"acquisition.init_scale_fraction must be in (0, 1], got {frac}")
    return {"scale_fraction": frac}
