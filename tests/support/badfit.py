"""Stand-ins for a fit whose sampler went wrong, built on ``fakefit.fake_fit`` (a real Posterior
around the synthetic truth, with ArviZ diagnostics computed from its draws).

``disagreeing_fit`` shifts the second chain of E by ``shift`` within-chain standard deviations
and recomputes the diagnostics with ArviZ, so its r_hat is a real r_hat of chains that really
disagree. ArviZ's rank-normalised split R-hat of the default shift of 1.5 is 1.27-1.32 (seeds
0-3 on an 8-run table); the ESS collapses with it."""
from __future__ import annotations

import numpy as np

from tests.support.fakefit import CHAINS, PER_CHAIN, fake_fit


def disagreeing_fit(table, law: str = "additive", targets=None, method: str = "nuts",
                    seed: int = 0, shift: float = 1.5, **kw):
    import arviz as az

    kw.pop("divergences", None)
    post = fake_fit(table, law=law, targets=targets, method=method, seed=seed, divergences=0)
    for t in post.targets:
        tp = post[t]
        E = np.asarray(tp.draws["E"], float).reshape(CHAINS, PER_CHAIN).copy()
        E[1] += shift * E[0].std()
        tp.draws["E"] = E.reshape(-1)
        chains = {k: np.asarray(v).reshape((CHAINS, PER_CHAIN) + np.shape(v)[1:])
                  for k, v in tp.draws.items()}
        tp.idata = az.from_dict(posterior=chains,
                                sample_stats={"diverging": np.zeros((CHAINS, PER_CHAIN), bool)},
                                coords={"domain": list(post.domains)},
                                dims={"C": ["domain"], "g": ["domain"]})
        tp.diagnostics = {**tp.diagnostics,
                          "r_hat_max": float(az.rhat(tp.idata).to_array().max()),
                          "ess_bulk_min": float(az.ess(tp.idata).to_array().min()),
                          "divergences": 0, "divergence_rate": 0.0}
    return post
