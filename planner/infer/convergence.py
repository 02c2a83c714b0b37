"""Convergence diagnostics shared by the samplers: rank-normalised split r_hat and bulk ESS
(Vehtari et al. 2021, via ArviZ) of every law parameter (natural scale, each component), sigma
and tau, from draws arranged as (chains, draws, ...)."""
from __future__ import annotations

import numpy as np


def diagnostic_sites(law, samples: dict) -> list[str]:
    """The sites the diagnostics cover: the law's parameters, sigma, and tau when sampled."""
    return [p.name for p in law.params] + ["sigma"] + (["tau"] if "tau" in samples else [])


def rank_diagnostics(samples: dict, names: list[str]) -> dict:
    """{"r_hat_max", "ess_bulk_min", "r_hat_worst", "ess_worst", "ess_by_param"} over ``names``;
    ``samples[n]`` has shape (chains, draws, ...). r_hat is NaN with one chain."""
    import arviz as az

    rhat, ess = {}, {}
    for n in names:
        x = np.asarray(samples[n], float)
        x = x.reshape(x.shape[0], x.shape[1], -1)
        for j in range(x.shape[2]):
            label = n if x.shape[2] == 1 else f"{n}[{j}]"
            xj = x[:, :, j]
            ess[label] = float(az.ess(xj, method="bulk"))
            rhat[label] = float(az.rhat(xj, method="rank")) if x.shape[0] > 1 else float("nan")
    chains = next(iter(samples.values())).shape[0]
    worst_r = max(rhat, key=lambda k: -np.inf if np.isnan(rhat[k]) else rhat[k])
    return {"r_hat_max": float(np.nanmax(list(rhat.values()))) if chains > 1 else float("nan"),
            "ess_bulk_min": float(min(ess.values())), "r_hat_worst": worst_r,
            "ess_worst": min(ess, key=ess.get),
            "ess_by_param": {k: round(v, 1) for k, v in ess.items()}}


def independent_draw_diagnostics(draws: dict, names: list[str], seed: int) -> dict:
    """``rank_diagnostics`` for draws that were made independently of each other (each Laplace
    draw is its own proposal moved by its own Metropolis steps): two random halves act as two
    chains, so r_hat compares halves of the sample and the bulk ESS counts distinct
    information (resampled duplicates that the moves did not separate lower it). No
    Hamiltonian transitions: 0 divergences."""
    n = len(np.asarray(draws[names[0]]))
    half = n // 2
    order = np.random.default_rng(seed).permutation(n)[:2 * half]
    split = {k: np.asarray(draws[k])[order].reshape((2, half) + np.shape(draws[k])[1:])
             for k in names}
    out = rank_diagnostics(split, names)
    out.update(divergences=0, divergence_rate=0.0)
    return out
