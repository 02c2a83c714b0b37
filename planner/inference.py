"""Fitting a law to a runs table, one target at a time.

``map``  the paper's fit: Huber loss (delta 1e-3) on log-loss residuals, random starts drawn from
         the prior, then basin-hopping L-BFGS from the best starts. Also initialises NUTS.
``laplace`` Gaussians at the posterior's conditional modes along log sigma, the noise scale
         integrated out on a grid (INLA-style; same model, priors and run effect as NUTS),
         importance-resampled and then moved by Metropolis steps (``planner.laplace``): draws in
         seconds, for the loop's intermediate refits and for acquisition studies.
``nuts`` (default) NumPyro NUTS on ``model.mixture_model``: chains start at the posterior mode
         (found by L-BFGS from the Huber fit) with the inverse Hessian there as a dense mass
         matrix for the law parameters, which the short warm-up then adapts. r_hat, ESS and
         divergences are reported, and a warning is logged when they are bad.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from planner.errors import FitError, InputError
from planner.laws import Law, get_law
from planner.laplace import fit_laplace
from planner.mode import posterior_mode, site_offsets
from planner.model import (ModelData, law_sites, mixture_model, model_args, pad_observations,
                           reparam_values)
from planner.posterior import Posterior, TargetPosterior
from planner.runs import RunsTable

log = logging.getLogger("planner.inference")
HUBER_DELTA = 1e-3
METHODS = ("nuts", "map", "laplace")


@dataclass
class MapResult:
    params: dict  # natural-scale values, numpy
    sigma: float
    objective: float


# ---------------------------------------------------------------------------------- packing
def _layout(law: Law, k: int) -> list[tuple[str, int]]:
    return [(p.name, k if p.per_domain else 0) for p in law.params]


def _unpack(theta, layout) -> dict:
    out, i = {}, 0
    for name, size in layout:
        if size:
            out[name] = jnp.exp(theta[i:i + size])
            i += size
        else:
            out[name] = jnp.exp(theta[i])
            i += 1
    return out


def _prior_draw(law: Law, k: int, rng: np.random.Generator) -> np.ndarray:
    parts = []
    for p in law.params:
        z = rng.normal(math.log(p.loc), p.scale, size=k if p.per_domain else 1)
        parts.append(z)
    return np.concatenate(parts)


def _huber(r, delta):
    a = jnp.abs(r)
    return jnp.where(a <= delta, 0.5 * r ** 2, delta * (a - 0.5 * delta))


_COMPILED: dict = {}  # jitted functions per (kind, law, shapes): data enter as arguments


def _huber_value_and_grad(law: Law, layout, delta: float):
    """Jitted value and gradient of the scaled Huber objective, the data as arguments, so a
    refit on new data of the same bucket size reuses the compiled code."""
    key = ("huber", law.name, tuple(layout), delta)
    if key not in _COMPILED:
        def f(t, logn, logd, H, y, mask, n_obs):
            pred = law.predict(_unpack(t, layout), logn, logd, H)
            r = jnp.where(mask, jnp.log(pred) - y, 0.0)
            # scaled by 1/delta^2 so values and gradients are O(1): L-BFGS-B's default
            # tolerances would otherwise stop at once on objectives of order 1e-6
            return jnp.sum(_huber(r, delta)) / (n_obs * delta ** 2)
        _COMPILED[key] = jax.jit(jax.value_and_grad(f))
    return _COMPILED[key]


def _huber_objective(law: Law, layout, data: ModelData, delta: float = HUBER_DELTA):
    vg = _huber_value_and_grad(law, layout, delta)
    arrays = tuple(jnp.asarray(a) for a in (data.logn, data.logd, data.H, data.y, data.mask))
    n_obs = float(data.n_obs)

    def fun(theta):
        v, g = vg(jnp.asarray(theta), *arrays, n_obs)
        v = float(v)
        if not np.isfinite(v):
            return 1e10, np.zeros_like(theta)
        return v, np.asarray(g, dtype=float)

    return fun


def _residual_sigma(law, layout, data, theta) -> float:
    pred = np.asarray(law.predict(_unpack(jnp.asarray(theta), layout), data.logn, data.logd, data.H))
    r = (np.log(pred) - data.y)[data.mask]
    mad = 1.4826 * np.median(np.abs(r - np.median(r)))
    return float(max(mad, 1e-4))


def _pack(law: Law, params: dict, k: int) -> np.ndarray | None:
    """Law parameters (natural scale) -> the log-parameter vector of ``_layout``; None when a
    value is missing or not positive."""
    parts = []
    for p in law.params:
        v = np.asarray(params.get(p.name, np.nan), float).reshape(-1)
        if v.size != (k if p.per_domain else 1) or not np.all(v > 0):
            return None
        parts.append(np.log(v))
    return np.concatenate(parts)


def fit_map(law: Law, data: ModelData, seed: int = 0, starts: int = 32,
            hops: int = 3, refine: int = 2, init: dict | None = None) -> MapResult:
    """The paper's Huber fit: L-BFGS from ``starts`` prior draws (plus ``init``, natural-scale
    law parameters such as a related fit's optimum), then basin-hopping from the best
    ``refine`` of them. The laws are multimodal in (E, C, g) (a constant shift of the loss
    trades against the mixture strength), so many cheap starts matter more than long hops."""
    k = data.H.shape[1]
    layout = _layout(law, k)
    fun = _huber_objective(law, layout, data)
    # Huber with delta 1e-3 is almost L1 at real noise levels (~5e-3): non-smooth, and L-BFGS
    # stalls in it far from the optimum. Starts therefore descend a smooth surrogate first
    # (Huber with delta 0.1, i.e. least squares at these residuals), then the paper's objective.
    smooth = _huber_objective(law, layout, data, delta=0.1)
    rng = np.random.default_rng(seed)
    opts = {"maxiter": 500, "ftol": 1e-14, "gtol": 1e-9}
    results = []
    x_init = _pack(law, init, k) if init else None
    x0s = ([] if x_init is None else [x_init]) + [_prior_draw(law, k, rng) for _ in range(starts)]
    for x0 in x0s:
        res = optimize.minimize(smooth, x0, jac=True, method="L-BFGS-B",
                                options={"maxiter": 300, "ftol": 1e-12, "gtol": 1e-8})
        results.append((fun(res.x)[0], res.x))
    results.sort(key=lambda r: r[0])
    best = None
    for _, x in results[:refine]:
        bh = optimize.basinhopping(
            fun, x, niter=hops, stepsize=0.3, seed=int(rng.integers(2**31)),
            minimizer_kwargs={"jac": True, "method": "L-BFGS-B", "options": opts})
        if best is None or bh.fun < best.fun:
            best = bh
    if not np.isfinite(best.fun) or best.fun >= 1e10:
        raise FitError(f"{law.name}: Huber fit did not reach a finite objective")
    params = {kk: np.asarray(v) for kk, v in _unpack(jnp.asarray(best.x), layout).items()}
    return MapResult(params, _residual_sigma(law, layout, data, best.x), float(best.fun))


# ---------------------------------------------------------------------------------- NUTS
def _init_values(law: Law, m: MapResult, data: ModelData) -> dict:
    vals = reparam_values(law, m.params, data.logd_ref, data.log_href)
    vals["sigma"] = jnp.asarray(m.sigma)
    if data.n_groups:
        vals["tau"] = jnp.asarray(0.5 * m.sigma)
        vals["u"] = jnp.zeros(data.n_groups)
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
    init, mass, sites = _mode_and_mass(law, data, _init_values(law, init_map, data), k_init)
    kernel = NUTS(mixture_model, init_strategy=init_to_value(values=init),
                  inverse_mass_matrix=mass, dense_mass=[sites],
                  target_accept_prob=0.9, max_tree_depth=8)
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method="vectorized", progress_bar=progress)
    args, kwargs = model_args(law, data)
    mcmc.run(k_run, *args, extra_fields=("diverging", "num_steps"), **kwargs)
    return mcmc


def _diagnostics(mcmc, law: Law, num_samples: int, num_chains: int) -> dict:
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


# ---------------------------------------------------------------------------------- entry
def fit(table: RunsTable, law: str = "additive", targets: list[str] | None = None,
        method: str = "nuts", seed: int = 0, num_warmup: int = 500, num_samples: int = 500,
        num_chains: int = 2, map_starts: int = 32, progress: bool = False,
        run_effect: bool | None = None, discrepancy: bool = False,
        map_init: dict | None = None) -> Posterior:
    """Fit ``law`` to each target of ``table``; return a ``Posterior`` (one per target).

    discrepancy: also learn the model-discrepancy term by holding out the largest scale
    (``planner.calibration.calibrate``; one extra fit), so predictions away from the data carry
    it. Off by default inside campaign refits, on by default in ``planner fit``.
    map_init: {target: natural-scale law parameters}, an extra start for the Huber fit (e.g.
    the previous fit of a campaign, or the full fit when calibrating on a subset)."""
    lw = get_law(law)
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    targets = list(targets) if targets else list(table.targets)
    for t in targets:
        if t not in table.targets:
            raise InputError(f"unknown target {t!r}; the table has {', '.join(table.targets)}")
    k = len(table.domains)
    per_target = {}
    for i, t in enumerate(targets):
        obs = table.observations(t)
        n_par = lw.n_params(k)
        if len(obs) <= n_par:
            raise InputError(f"target {t!r} has {len(obs)} observations but the {law} law has "
                             f"{n_par} parameters; need more rows than parameters")
        data = pad_observations(obs, run_effect=run_effect)
        t0 = time.perf_counter()
        m = fit_map(lw, data, seed=seed + 7919 * i, starts=map_starts,
                    init=(map_init or {}).get(t))
        if method == "laplace":
            s, diag = fit_laplace(lw, data, seed + 7919 * i, _init_values(lw, m, data),
                                  num_samples * num_chains)
            draws = {p.name: s[p.name] for p in lw.params}
            draws["sigma"] = s["sigma"]
            if "tau" in s:
                draws["tau"] = s["tau"]
            idata = None
        elif method == "map":
            draws = {kk: np.asarray(v)[None] for kk, v in m.params.items()}
            draws["sigma"] = np.asarray([m.sigma])
            diag = {"method": "map", "huber_objective": m.objective}
            idata = None
        else:
            mcmc = fit_nuts(lw, data, seed + 7919 * i, m, num_warmup, num_samples, num_chains,
                            progress)
            s = mcmc.get_samples()
            draws = {p.name: np.asarray(s[p.name]) for p in lw.params}
            draws["sigma"] = np.asarray(s["sigma"])
            if "tau" in s:
                draws["tau"] = np.asarray(s["tau"])
            diag = _diagnostics(mcmc, lw, num_samples, num_chains)
            diag["method"] = "nuts"
            idata = _to_arviz(mcmc, lw, table.domains)
            for w in diagnostic_warnings(diag):
                log.warning("target %s: %s", t, w)
        bad = [kk for kk, v in draws.items() if not np.all(np.isfinite(v))]
        if bad:
            raise FitError(f"target {t!r}: non-finite posterior draws for {', '.join(bad)}")
        diag["seconds"] = time.perf_counter() - t0
        diag["n_obs"] = len(obs)
        diag["n_runs"] = obs.n_groups
        per_target[t] = TargetPosterior(t, draws, diag, idata, obs_logn=obs.logn, obs_logd=obs.logd)
    post = Posterior(law=law, domains=list(table.domains), targets=targets, per_target=per_target,
                     meta={"method": method, "seed": seed})
    if discrepancy:
        from planner.calibration import calibrate
        calibrate(post, table, method=method, seed=seed, num_warmup=num_warmup,
                  num_samples=num_samples, num_chains=num_chains, map_starts=map_starts,
                  run_effect=run_effect)
    return post


def _to_arviz(mcmc, law: Law, domains: list[str]):
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
