"""The fit methods and the sampler defaults (the only place they are defined).

``map``     the paper's fit: Huber loss on log-loss residuals, random starts, L-BFGS (a point).
``laplace`` Gaussians at the conditional modes along log sigma, the noise scale integrated out,
            moved by Metropolis steps (``planner.infer.laplace``): draws in seconds.
``nuts``    NumPyro NUTS started at the posterior mode with a dense mass matrix
            (``planner.infer.nuts``): the full posterior, with r_hat, ESS and divergences.
"""
from __future__ import annotations

from dataclasses import dataclass

FIT_METHODS = ("nuts", "map", "laplace")


@dataclass(frozen=True)
class FitOptions:
    """Defaults of ``fit`` (and of the CLI flags and the config's ``fit`` section)."""

    method: str = "nuts"
    num_warmup: int = 500   # NUTS warm-up draws per chain
    num_samples: int = 500  # draws per chain (laplace: num_samples x num_chains in all)
    num_chains: int = 2
    map_starts: int = 32    # random starts of the Huber (MAP) fit
