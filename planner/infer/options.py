"""The fit methods and the sampler defaults (the only place they are defined).

``map``     the paper's fit: Huber loss on log-loss residuals, random starts, L-BFGS (a point).
``laplace`` Gaussians at the conditional modes along log sigma, the noise scale integrated out,
            moved by Metropolis steps (``planner.infer.laplace``): draws in seconds.
``nuts``    NumPyro NUTS started around the posterior mode, in coordinates where what the data
            identify is a coordinate, with a dense mass matrix from the Hessian there
            (``planner.infer.nuts``, ``planner.infer.coords``): the full posterior, with r_hat,
            ESS and divergences.
"""
from __future__ import annotations

from dataclasses import dataclass

FIT_METHODS = ("nuts", "map", "laplace")


@dataclass(frozen=True)
class FitOptions:
    """Defaults of ``fit`` (and of the CLI flags and the config's ``fit`` section)."""

    method: str = "nuts"
    num_warmup: int = 500   # NUTS warm-up iterations per chain (two stages, planner.infer.nuts)
    num_samples: int = 500  # draws kept per chain (laplace: num_samples x num_chains in all)
    num_chains: int = 2
    map_starts: int = 32    # random starts of the Huber (MAP) fit


R_HAT_WARN = 1.05  # a fit whose max r_hat is above this is warned about: chains disagree


@dataclass(frozen=True)
class NutsSettings:
    """How ``nuts`` runs its chains (``planner.infer.nuts``)."""

    target_accept_prob: float = 0.95  # step-size adaptation target (0.8 and 0.9 left 1-2 %
                                      # divergent on some targets of the paper-shaped table)
    max_tree_depth: int = 10         # at most 2^10 - 1 leapfrog steps per draw
    mass_shrinkage: float = 20.0     # warm-up draws' covariance shrunk towards the Hessian's
                                     # inverse with this weight (in draws)
    thin: int = 4                    # keep every 4th sampling iteration: successive draws
                                     # are correlated (ESS 0.1-0.5 per iteration on real
                                     # tables), so a quarter of them keep most of the
                                     # information, and the posterior stays 1,000 draws
    chunk: int = 50                  # iterations per compiled call (progress granularity)
    r_hat_goal: float = 1.01         # sampling continues while max r_hat is above this ...
    ess_goal: float = 400.0          # ... or min bulk ESS below this (Vehtari et al. 2021)
    min_kept_to_extend: int = 1000   # goals checked when this many draws are asked for (the
                                     # default 2 x 500): with fewer, r_hat and ESS are too
                                     # noisy to act on (2 x 100 independent draws: max r_hat
                                     # 1.04, min ESS 48 over the k = 3 additive law's sites)
    reachable_r_hat: float = R_HAT_WARN  # chains beyond the warning threshold have not
                                     # mixed: no more rounds, nor when the ESS could not reach
                                     # its goal within max_sampling_rounds
    max_sampling_rounds: int = 4     # at most 4x the requested sampling iterations; the
                                     # kept draws stay num_samples per chain (thinned more)
    chain_method: str = "parallel"   # chains split over the host's CPUs ("vectorized": one)


NUTS_SETTINGS = NutsSettings()
