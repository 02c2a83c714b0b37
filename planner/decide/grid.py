"""The paper's grid design as a baseline strategy: a few model sizes times a simplex lattice."""
from __future__ import annotations

import numpy as np

from planner.decide.space import Candidates, Proposal, h_dict, round_size
from planner.decide.strategies import DesignRequest


def simplex_lattice(k: int, r: int) -> np.ndarray:
    """All mixtures with weights in {0, 1/r, ..., 1}: C(r + k - 1, k - 1) points."""
    def rec(left, parts):
        if parts == 1:
            yield (left,)
            return
        for i in range(left, -1, -1):
            for rest in rec(left - i, parts - 1):
                yield (i,) + rest
    return np.array(list(rec(r, k)), float) / r


def grid_design(space, n_sizes: int = 3, min_mixtures: int = 20) -> Candidates:
    """The paper's design: a few fixed model sizes x a simplex lattice of mixtures, ordered
    size-major from the cheapest so a budget-cut grid still covers every mixture at small scale."""
    k = space.k
    r = 1
    while len(simplex_lattice(k, r)) < min_mixtures:
        r += 1
    H = space.shrink(simplex_lattice(k, r))
    if space.N_values:
        Ns = np.asarray(space.N_values, float)[np.linspace(0, len(space.N_values) - 1, n_sizes).round().astype(int)]
    else:
        Ns = np.exp(np.linspace(np.log(space.N_lo), np.log(space.N_hi), n_sizes))
    # the paper scales tokens with the model (a fixed tokens-per-parameter ratio)
    if space.D_values:
        Ds = np.asarray(space.D_values, float)[np.linspace(0, len(space.D_values) - 1, n_sizes).round().astype(int)]
    else:
        Ds = np.exp(np.linspace(np.log(space.D_lo), np.log(space.D_hi), n_sizes))
    N = np.repeat(Ns, len(H))
    D = np.repeat(Ds, len(H))
    return Candidates(np.round(N), np.round(D), np.tile(H, (n_sizes, 1)), space.domains)


def grid_strategy(req: DesignRequest) -> list[Proposal]:
    """Baseline: the next ``q`` runs of the fixed grid (``grid_design``), in order.
    Options: sizes (3), mixtures (minimum lattice size, 20)."""
    opts = dict(req.options or {})
    g = grid_design(req.space, int(opts.get("sizes", 3)), int(opts.get("mixtures", 20)))
    out = []
    for j in range(req.q):
        i = (req.step + j) % len(g)
        fit = req.space.fit_to_budget(float(g.N[i]), float(g.D[i]), req.max_flops)
        if fit is None:
            continue
        out.append(Proposal(N=round_size(fit[0]), D=round_size(fit[1]),
                            h=h_dict(g.H[i], req.space.domains), strategy="grid",
                            info={"grid_index": int(i)}))
    return out
