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
information twice), the space, a seed and ``q``. ``planner.decide.acquisition`` registers ``decision``
and ``grid`` on import; ``get_strategy`` imports it on demand.

    @register_strategy("my_strategy")
    def my_strategy(req: DesignRequest) -> list[Proposal]: ...
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from planner.core.errors import InputError
from planner.decide.space import (
    Proposal,
    Space,
    h_dict,
    round_size,
    sample_candidates,
    vertices,
)


# --------------------------------------------------------------------------------------------
# proposals, requests and the registry
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# the `random` strategy (also the initial design of every campaign)
# --------------------------------------------------------------------------------------------
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
        out.append(Proposal(N=round_size(N), D=round_size(D), h=h_dict(H[j], space.domains),
                            strategy="random", info={"design": "sobol", "index": req.step + j}))
    return out


# strategies that never use the posterior: a campaign with one of them keeps buying runs while
# its first fit runs; with any other (``decision``, a user's) it buys its initial design, then
# waits for that fit (planner.campaign.planner.Planner.initial_design_left)
POSTERIOR_FREE_STRATEGIES = ("random", "grid")


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
