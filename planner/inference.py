"""Fitting a law to a runs table, one target at a time.

``map``  the paper's fit: Huber loss (delta 1e-3) on log-loss residuals, random starts drawn from
         the prior, then basin-hopping L-BFGS from the best starts. Also initialises NUTS.
``laplace`` a Gaussian at the posterior mode (same model, priors and run effect as NUTS) in the
         unconstrained space, covariance = inverse Hessian: draws in seconds, for the loop's
         intermediate refits and for acquisition studies; exact only as the posterior is Gaussian.
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


def _minimize_potential(vg, x0, maxiter: int):
    """L-BFGS on a JAX value-and-grad of the potential, keeping the best finite point seen
    (L-BFGS-B can otherwise end on a step where the density is not finite)."""
    best = {"v": np.inf, "x": np.asarray(x0, float)}

    def fun(f):
        v, g = vg(jnp.asarray(f))
        v = float(v)
        if not np.isfinite(v) or not np.all(np.isfinite(np.asarray(g))):
            return 1e30, np.zeros_like(f)
        if v < best["v"]:
            best["v"], best["x"] = v, np.array(f, float)
        return v, np.asarray(g)

    res = optimize.minimize(fun, np.asarray(x0, float), jac=True, method="L-BFGS-B",
                            options={"maxiter": maxiter, "ftol": 1e-14, "gtol": 1e-8})
    return best["x"], best["v"], bool(res.success)


def _dynamic_args(args: tuple) -> tuple:
    """The array part of ``model_args`` (law, k and n_groups are static)."""
    law, k, logn, logd, H, mask, group, n_groups, logd_ref, log_href = args
    return (logn, logd, H, mask, group, jnp.asarray(logd_ref), log_href)


def _potential_fns(args: tuple, z_template: dict) -> dict:
    """Jitted potential (negative log density) on a flat unconstrained vector: its value and
    gradient, Hessian and batched value, with the data as arguments (compiled once per law,
    k, bucket size and site shapes, not once per fit)."""
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import potential_energy

    law, k, n_groups, has_href = args[0], args[1], args[7], args[9] is not None
    shapes = tuple((n, tuple(np.shape(v))) for n, v in sorted(z_template.items()))
    key = ("potential", law.name, k, n_groups, has_href, shapes)
    if key not in _COMPILED:
        _, unravel = ravel_pytree(z_template)

        def pot(flat, dyn, y):
            logn, logd, H, mask, group, logd_ref, log_href = dyn
            margs = (law, k, logn, logd, H, mask, group, n_groups, logd_ref, log_href)
            return potential_energy(mixture_model, margs, {"y": y}, unravel(flat))

        _COMPILED[key] = {"value_and_grad": jax.jit(jax.value_and_grad(pot)),
                          "hessian": jax.jit(jax.hessian(pot)),
                          "batch": jax.jit(jax.vmap(pot, in_axes=(0, None, None)))}
    return _COMPILED[key]


@dataclass
class _Mode:
    """The posterior mode in NumPyro's unconstrained space, with what is needed to evaluate the
    potential around it."""

    args: tuple
    kwargs: dict
    unravel: object
    x: np.ndarray       # flat unconstrained mode
    value: float        # potential (negative log density) there; inf if none was finite
    converged: bool
    fns: dict           # ``_potential_fns``: value_and_grad, hessian, batch (flat, dyn, y)
    dyn: tuple
    y: object
    _H: np.ndarray | None = None  # Hessian at x, computed once (the saddle check, the callers)

    def value_and_grad(self, x):
        return self.fns["value_and_grad"](x, self.dyn, self.y)

    def hessian(self) -> np.ndarray:
        """The Hessian of the potential at the mode ``x``."""
        if self._H is None:
            self._H = np.asarray(self.fns["hessian"](jnp.asarray(self.x), self.dyn, self.y))
        return self._H

    def move_to(self, x, value, converged) -> None:
        self.x, self.value, self.converged, self._H = x, value, converged, None

    def potential_batch(self, X) -> np.ndarray:
        return np.asarray(self.fns["batch"](jnp.asarray(X), self.dyn, self.y))


def _posterior_mode(law: Law, data: ModelData, init: dict, key, maxiter: int) -> _Mode:
    """L-BFGS on the model's potential from ``init`` (the Huber optimum) and from the prior
    median; the lower mode wins.

    The Huber fit has no priors: with few runs it can run off to a degenerate basin (seen on the
    quickstart: log K_i = 21.5, logit phi = -17), where the search from it stops at a local mode
    far above the posterior's (potential 204 vs -25) with an indefinite Hessian, and the Laplace
    draws went wild. The second search costs one more L-BFGS run on already compiled code."""
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.initialization import init_to_median
    from numpyro.infer.util import initialize_model, init_to_value

    args, kwargs = model_args(law, data)
    k_huber, k_median = jax.random.split(key)
    starts = []
    try:
        starts.append(initialize_model(
            k_huber, mixture_model, model_args=args, model_kwargs=kwargs,
            init_strategy=init_to_value(values=init), dynamic_args=False)[0].z)
    except (RuntimeError, ValueError):
        # the Huber fit can land where the model's density is not finite (e.g. an overflowing
        # mixture term): only the prior median then
        log.info("MAP values are not a valid start for the sampler; using the prior median")
    starts.append(initialize_model(
        k_median, mixture_model, model_args=args, model_kwargs=kwargs,
        init_strategy=init_to_median(num_samples=101), dynamic_args=False)[0].z)
    # both starts have the same sites and shapes: one flattening, one set of compiled functions
    _, unravel = ravel_pytree(starts[0])
    best = _Mode(args, kwargs, unravel, None, np.inf, False, _potential_fns(args, starts[0]),
                 _dynamic_args(args), kwargs["y"])
    for z in starts:
        x, v, converged = _minimize_potential(best.value_and_grad, ravel_pytree(z)[0], maxiter)
        if best.x is None or v < best.value:
            best.move_to(x, v, converged)
    # L-BFGS can stop on a saddle (gradient ~ 0, an indefinite Hessian): step off it both ways
    # along the most negative curvature and keep what goes lower (a few times at most)
    for _ in range(3):
        if not np.isfinite(best.value):
            break
        Hm = best.hessian()
        if not np.all(np.isfinite(Hm)):
            break
        w, V = np.linalg.eigh(0.5 * (Hm + Hm.T))
        if w[0] >= 0:
            break
        found = False
        for step in (V[:, 0], -V[:, 0]):
            x, v, converged = _minimize_potential(best.value_and_grad, best.x + step, maxiter)
            if v < best.value - 1e-6:
                best.move_to(x, v, converged)
                found = True
        if not found:
            break
    return best


def _mode_and_mass(law: Law, data: ModelData, init: dict, key):
    """Refine to the posterior mode (unconstrained space) and return (init values, inverse mass
    matrix for the law-parameter block), or (init, None) when the Hessian is not usable."""
    from jax.flatten_util import ravel_pytree

    mode = _posterior_mode(law, data, init, key, 2000)
    args, kwargs, unravel = mode.args, mode.kwargs, mode.unravel
    x = mode.x
    z_mode = unravel(jnp.asarray(x))
    sites = law_sites(law)
    # the law block of the full Hessian, in the flat order NumPyro gives the block's sites
    # (ravel_pytree: sorted names); the full flat vector is also in sorted-name order
    offsets, i = {}, 0
    for name in sorted(z_mode):
        n = int(np.size(z_mode[name]))
        offsets[name] = np.arange(i, i + n)
        i += n
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


def fit_laplace(law: Law, data: ModelData, seed: int, init_map: MapResult,
                num_samples: int) -> tuple[dict, dict]:
    """Laplace approximation at the posterior mode: (draws of every sample/deterministic site,
    diagnostics). Raises FitError when no finite mode or a non-finite Hessian is found."""
    from numpyro.infer.util import constrain_fn

    key = jax.random.PRNGKey(seed)
    k_init, k_draw = jax.random.split(key)
    mode = _posterior_mode(law, data, _init_values(law, init_map, data), k_init, 3000)
    args, kwargs, unravel = mode.args, mode.kwargs, mode.unravel
    x_mode, v_mode, converged = mode.x, mode.value, mode.converged
    if not np.isfinite(v_mode):
        raise FitError(f"{law.name}: no finite posterior mode found")
    Hm = mode.hessian()
    w, V = np.linalg.eigh(0.5 * (Hm + Hm.T))
    if not np.all(np.isfinite(w)):
        raise FitError(f"{law.name}: the Hessian at the posterior mode is not finite; "
                       "use method='nuts'")
    min_eig = float(w.min())
    if min_eig <= 0:
        # L-BFGS stopped on a saddle or a flat ridge: use the curvature's magnitude (floored) as
        # the proposal's precision; the density check below discards implausible proposals
        log.info("%s: Hessian at the mode is indefinite (min eigenvalue %.3g); using |H|",
                 law.name, min_eig)
        w = np.maximum(np.abs(w), 1e-6 * np.abs(w).max())
    L = V / np.sqrt(w)                                  # covariance = L L^T = H^-1
    k_eps, k_res = jax.random.split(k_draw)
    n_prop = 4 * num_samples
    eps = np.asarray(jax.random.normal(k_eps, (n_prop, len(w))))
    from scipy.stats import chi2
    bound = 0.5 * chi2.ppf(0.999, len(w))
    # The Gaussian's scale is shrunk (1, 1/2, 1/4, 1/10) only when not one of its proposals has
    # a plausible true density: the Hessian then badly underestimates the curvature somewhere
    # (seen on the joint law with few runs). The shrink used is in the draw scheme.
    for shrink in (1.0, 0.5, 0.25, 0.1):
        prop = x_mode[None, :] + shrink * (eps @ L.T)
        # Sampling-importance-resampling: weight each Gaussian proposal by the true posterior
        # density over the Gaussian's, so directions the Hessian sees as flat (weakly
        # identified parameters) cannot produce absurd draws; the weights' ESS is reported.
        U = mode.potential_batch(prop)
        logq = -0.5 * np.sum(eps ** 2, axis=1)
        logw = np.where(np.isfinite(U), -U - logq, -np.inf)
        if not np.isfinite(logw).any():
            continue
        logw -= logw.max()
        wts = np.exp(logw)
        wts /= wts.sum()
        ess = float(1.0 / np.sum(wts ** 2))
        scale_note = "" if shrink == 1.0 else f", Gaussian scaled by {shrink}"
        if ess >= 0.1 * num_samples:
            idx = np.asarray(jax.random.choice(k_res, n_prop, (num_samples,), p=jnp.asarray(wts)))
            scheme = "importance-resampled" + scale_note
            break
        # weights too degenerate to resample from (the true posterior is narrower or curved
        # where the Gaussian is wide): keep the Gaussian's spread but drop proposals whose true
        # density falls below what a Gaussian of this dimension reaches 99.9 % of the time
        keep = np.flatnonzero(np.isfinite(U) & (U - v_mode <= bound))
        if len(keep):
            idx = keep[:num_samples] if len(keep) >= num_samples else \
                keep[np.asarray(jax.random.choice(k_res, len(keep), (num_samples,)))]
            scheme = f"truncated Gaussian ({len(keep)} of {n_prop} proposals kept{scale_note})"
            break
    else:
        raise FitError(f"{law.name}: no Laplace draw has a plausible posterior density")
    flat = prop[idx]

    def constrained(f):
        return constrain_fn(mixture_model, args, kwargs, unravel(f), return_deterministic=True)

    draws = {k: np.asarray(v) for k, v in jax.vmap(constrained)(jnp.asarray(flat)).items()}
    # a tail draw can overflow a derived parameter (C = exp(log K - g log h_ref) with a large g)
    # where the density itself is finite: drop such draws while they are rare (< 10 %)
    ok = np.ones(len(flat), bool)
    for v in draws.values():
        ok &= np.isfinite(v.reshape(len(flat), -1)).all(axis=1)
    n_dropped = int((~ok).sum())
    if n_dropped > 0.1 * len(flat):
        bad = sorted(k for k, v in draws.items() if not np.isfinite(v).all())
        raise FitError(f"{law.name}: {n_dropped} of {len(flat)} Laplace draws have non-finite "
                       f"{', '.join(bad)}; use method='nuts'")
    if n_dropped:
        draws = {k: v[ok] for k, v in draws.items()}
        scheme += f"; {n_dropped} draws with an overflowing parameter dropped"
    if ess < 0.1 * num_samples:
        log.info("%s: Laplace importance weights have ESS %.0f of %d proposals: the posterior "
                 "is far from Gaussian (draws: %s); prefer method='nuts'", law.name, ess,
                 n_prop, scheme)
    diag = {"method": "laplace", "mode_converged": converged, "importance_ess": ess,
            "draw_scheme": scheme,
            "min_hessian_eigenvalue": min_eig, "num_samples": num_samples}
    return draws, diag


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
            s, diag = fit_laplace(lw, data, seed + 7919 * i, m, num_samples * num_chains)
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
