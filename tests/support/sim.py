"""Simulation helpers for tests: data drawn from a known law with multiplicative noise."""
from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pandas as pd

from planner.model.laws import get_law, scale_inputs

DOMAINS3 = ["code", "web", "books"]

TRUE_ADDITIVE = {"E": 1.7, "C": [2.0, 4.0, 1.5], "g": [0.35, 0.6, 0.5],
                 "A": 0.45, "a": 0.32, "B": 0.55, "b": 0.28}
TRUE_JOINT = {"E": 1.7, "C": [2.0, 4.0, 1.5], "g": [0.35, 0.6, 0.5],
              "CA": [0.3, 0.6, 0.45], "gA": 1.2, "a": 0.32,
              "CB": [0.7, 0.4, 0.5], "gB": 0.9, "b": 0.28}


def as_jax(params: dict) -> dict:
    return {k: jnp.asarray(v, dtype=jnp.float64) for k, v in params.items()}


def simulate(law: str, params: dict, N, D, H, noise: float, seed: int,
             domains=DOMAINS3, target: str = "web") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    logn, logd = scale_inputs(np.asarray(N, float), np.asarray(D, float))
    L = np.asarray(get_law(law).predict(as_jax(params), logn, logd, jnp.asarray(H)))
    y = L * np.exp(noise * rng.standard_normal(len(L)))
    df = pd.DataFrame({"N": N, "D": D})
    for i, d in enumerate(domains):
        df[f"h_{d}"] = H[:, i]
    df[f"loss_{target}"] = y
    df["run_id"] = [f"r{i}" for i in range(len(df))]
    return df


def grid_design(n_mix: int, Ns, Ds, seed: int, k: int = 3):
    """Every (N, D) on the grid crossed with n_mix mixtures (Dirichlet(1) plus the vertices'
    neighbourhood), as arrays N, D, H."""
    rng = np.random.default_rng(seed)
    H = rng.dirichlet(np.ones(k), size=n_mix)
    rows = list(itertools.product(Ns, Ds, range(n_mix)))
    N = np.array([r[0] for r in rows], float)
    D = np.array([r[1] for r in rows], float)
    return N, D, H[[r[2] for r in rows]]
