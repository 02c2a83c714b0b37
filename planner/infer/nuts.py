"""NUTS on the NumPyro model: chains start at the posterior mode with the inverse Hessian as a
dense mass matrix; diagnostics (r_hat, ESS, divergences) and ArviZ data."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from planner.infer.map import MapResult
from planner.infer.mode import posterior_mode, site_offsets
from planner.model.laws import Law
from planner.model.numpyro_model import (
    ModelData,
    law_sites,
    mixture_model,
    model_args,
    reparam_values,
)


# ---------------------------------------------------------------------------------- NUTS
def init_values(law: Law, m: MapResult, data: ModelData) -> dict:
    vals = reparam_values(law, m.params, data.logd_ref, data.log_href)
    vals["sigma"] = jnp.asarray(m.sigma)
    if data.n_groups:
        vals["tau"] = jnp.asarray(0.5 * m.sigma)
    return vals


def _mode_and_mass(law: Law, data: ModelData, init: dict, key):
    """Refine to the posterior mode (unconstrained space) and return (init values, inverse mass
    matrix for the law-parameter block), or (init, None) when the Hessian is not usable."""
    mode = posterior_mode(law, data, init, key, 2000)
    args, kwargs, unravel = mode.args, mode.kwargs, mode.unravel
    z_mode = unravel(jnp.asarray(mode.x))
    sites = law_sites(law)
    # the law block of the full Hessian, in the flat order NumPyro gives the block's sites
    # (ravel_pytree: sorted names); the full flat vector is also in sorted-name order
    offsets = site_offsets(z_mode)
    idx = np.concatenate([offsets[name] for name in sorted(sites)])
    Hm = mode.hessian()[np.ix_(idx, idx)]
    mass = None
    try:
        w, V = np.linalg.eigh(0.5 * (Hm + Hm.T))
        if np.all(np.isfinite(w)) and w.max() > 0:
            w = np.clip(w, w.max() * 1e-8, None)
            mass = {sites: jnp.asarray((V / w) @ V.T)}
    except np.linalg.LinAlgError:
        mass = None
    # constrained values for init_to_value: transform sigma/tau back from unconstrained
    from numpyro.infer.util import constrain_fn
    cons = constrain_fn(mixture_model, args, kwargs, z_mode)
    init = {k: v for k, v in cons.items() if k in z_mode}
    return init, mass, sites


def fit_nuts(law: Law, data: ModelData, seed: int, init_map: MapResult, num_warmup: int,
             num_samples: int, num_chains: int, progress: bool = False):
    from numpyro.infer import MCMC, NUTS, init_to_value

    key = jax.random.PRNGKey(seed)
    k_init, k_run = jax.random.split(key)
    init, mass, sites = _mode_and_mass(law, data, init_values(law, init_map, data), k_init)
    kernel = NUTS(mixture_model, init_strategy=init_to_value(values=init),
                  inverse_mass_matrix=mass, dense_mass=[sites],
                  target_accept_prob=0.9, max_tree_depth=8)
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method="vectorized", progress_bar=progress)
    args, kwargs = model_args(law, data)
    mcmc.run(k_run, *args, extra_fields=("diverging", "num_steps"), **kwargs)
    return mcmc


def nuts_diagnostics(mcmc, law: Law, num_samples: int, num_chains: int) -> dict:
    import numpyro.diagnostics as nd

    samples = mcmc.get_samples(group_by_chain=True)
    sites = list(law_sites(law)) + ["sigma"]
    rhat, ess, per_site = [], [], {}
    for s in sites:
        x = np.asarray(samples[s])
        x = x.reshape(x.shape[0], x.shape[1], -1)
        if num_chains > 1:
            rhat.append(np.nanmax(nd.split_gelman_rubin(x)))
        ess.append(np.nanmin(nd.effective_sample_size(x)))
        per_site[s] = round(float(ess[-1]), 1)
    extra = mcmc.get_extra_fields()
    div = int(np.asarray(extra["diverging"]).sum())
    steps = np.asarray(extra["num_steps"])
    return {"r_hat_max": float(max(rhat)) if rhat else float("nan"),
            "ess_bulk_min": float(min(ess)), "divergences": div,
            "divergence_rate": div / (num_samples * num_chains),
            "mean_leapfrog_steps": float(steps.mean()), "num_chains": num_chains,
            "ess_by_site": per_site,
            "num_samples": num_samples}


def diagnostic_warnings(d: dict) -> list[str]:
    """Plain-language warnings for bad sampler diagnostics."""
    out = []
    if np.isfinite(d.get("r_hat_max", np.nan)) and d["r_hat_max"] > 1.05:
        out.append(f"chains disagree (max r_hat {d['r_hat_max']:.3f} > 1.05): run more warm-up/draws")
    if d.get("ess_bulk_min", np.inf) < 100:
        out.append(f"few effective draws (min ESS {d['ess_bulk_min']:.0f} < 100): intervals are noisy")
    if d.get("divergence_rate", 0.0) > 0.01:
        out.append(f"{d['divergences']} divergent transitions ({100 * d['divergence_rate']:.1f} %): "
                   "the posterior may be biased")
    return out


def to_arviz(mcmc, law: Law, domains: list[str]):
    import arviz as az

    s = mcmc.get_samples(group_by_chain=True)
    post = {p.name: np.asarray(s[p.name]) for p in law.params}
    post["sigma"] = np.asarray(s["sigma"])
    if "tau" in s:
        post["tau"] = np.asarray(s["tau"])
    dims = {p.name: ["domain"] for p in law.params if p.per_domain}
    extra = mcmc.get_extra_fields(group_by_chain=True)
    ss = {"diverging": np.asarray(extra["diverging"]), "n_steps": np.asarray(extra["num_steps"])}
    return az.from_dict(posterior=post, sample_stats=ss, coords={"domain": list(domains)}, dims=dims)
