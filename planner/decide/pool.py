"""A fixed candidate pool: the distinct designs of a runs table (``acquisition.pool``), minus
what has been bought already."""
from __future__ import annotations

import numpy as np

from planner.core.errors import InputError
from planner.core.io import read_table
from planner.decide.space import Candidates
from planner.model.runs import design_from_frame


def load_pool(path, domains) -> Candidates:
    """The distinct (N, D, h) designs of a runs table (e.g. recorded runs a replay trainer can
    answer): the only candidates when ``acquisition.pool`` is set."""


    p = str(path)
    df = read_table(p, "acquisition pool")
    N, D, H = design_from_frame(df, list(domains), source=f"acquisition pool {p}")
    key = np.round(np.column_stack([np.log(N), np.log(D), H]), 9)
    _, idx = np.unique(key, axis=0, return_index=True)
    idx = np.sort(idx)
    return Candidates(N[idx], D[idx], H[idx], tuple(domains))


def pool_candidates(path, domains, observed, pending) -> Candidates:
    """Pool designs not yet observed or pending (matched on N, D and h to 1e-6)."""
    pool = load_pool(path, domains)
    taken = []
    if observed is not None and len(observed):
        taken += [(float(r["N"]), float(r["D"]), [float(r[f"h_{d}"]) for d in domains])
                  for _, r in observed.iterrows()]
    taken += [(float(p.N), float(p.D), [float(p.h.get(d, 0.0)) for d in domains])
              for p in (pending or [])]
    keep = np.ones(len(pool), bool)
    for N, D, h in taken:
        same = (np.abs(pool.N - N) <= 1e-6 * N) & (np.abs(pool.D - D) <= 1e-6 * D) & \
            (np.abs(pool.H - np.asarray(h)).max(axis=1) <= 1e-6)
        keep &= ~same
    if not keep.any():
        raise InputError(f"acquisition pool {path}: every design has been bought already")
    return pool.subset(np.flatnonzero(keep))
