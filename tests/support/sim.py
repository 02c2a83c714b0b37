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


SLIMPAJAMA7 = ["arxiv", "book", "c4", "commoncrawl", "github", "stackexchange", "wikipedia"]


def paper_table(seed: int = 0, n_mix: int = 40, Ns=(3e8, 4.2e8, 6e8, 8.5e8, 1.2e9),
                tokens_per_param: float = 20.0, checkpoints=(4, 6), noise: float = 0.005,
                run_sd: float = 0.005, law: str = "additive",
                domains=tuple(SLIMPAJAMA7)) -> tuple[pd.DataFrame, dict]:
    """A runs table shaped like Shukor et al.'s LLM experiments: ``n_mix`` Dirichlet(1)
    mixtures of 7 domains, each trained at every size in ``Ns`` to ``tokens_per_param`` x N
    tokens, with 4-6 checkpoints per run (evenly spaced in log D from a quarter of the final
    tokens). One target per domain, truths from ``trainers.laws_np.default_truth(law, domains,
    seed)``. A loss is true * exp(run_sd * u_run + noise * eps): every checkpoint of a run shares
    its level u_run (seed, data order), eps is each observation's own. About 1,000 rows.
    Returns (runs-table frame with run_id, {target: true parameters})."""
    from trainers.laws_np import default_truth

    rng = np.random.default_rng(seed)
    domains = list(domains)
    k = len(domains)
    truth = default_truth(law, domains, seed)
    H = rng.dirichlet(np.ones(k), n_mix)
    rows = []
    for j in range(n_mix):
        for N in Ns:
            m = int(rng.integers(checkpoints[0], checkpoints[1] + 1))
            for D in np.geomspace(0.25, 1.0, m) * tokens_per_param * N:
                rows.append((f"mix{j}-N{N:.2g}", N, float(np.round(D, -6)), j))
    df = pd.DataFrame(rows, columns=["run_id", "N", "D", "mix"])
    Hd = H[df["mix"].to_numpy()]
    for i, d in enumerate(domains):
        df[f"h_{d}"] = Hd[:, i]
    logn, logd = scale_inputs(df["N"].to_numpy(float), df["D"].to_numpy(float))
    _, run = np.unique(df["run_id"].to_numpy(), return_inverse=True)
    for t, p in truth.items():
        L = np.asarray(get_law(law).predict(as_jax(p), logn, logd, jnp.asarray(Hd)))
        level = run_sd * rng.standard_normal(run.max() + 1)[run]
        df[f"loss_{t}"] = L * np.exp(level + noise * rng.standard_normal(len(L)))
    return df.drop(columns="mix"), truth
