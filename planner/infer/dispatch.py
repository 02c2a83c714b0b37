"""Fitting a law to a runs table, one target at a time.

``map``  the paper's fit: Huber loss (delta 1e-3) on log-loss residuals, random starts drawn from
         the prior, then basin-hopping L-BFGS from the best starts. Also initialises NUTS.
``laplace`` Gaussians at the posterior's conditional modes along log sigma, the noise scale
         integrated out on a grid (INLA-style; same model, priors and run effect as NUTS),
         importance-resampled and then moved by Metropolis steps (``planner.infer.laplace``): draws in
         seconds, for the loop's intermediate refits and for acquisition studies.
``nuts`` (default) NumPyro NUTS on ``model.mixture_model`` (run effects integrated out):
         chains start around the posterior mode (found by L-BFGS from the Huber fit) and move in
         coordinates where the identified level and slopes are coordinates
         (``planner.infer.coords``), with the inverse Hessian there as a dense mass matrix, which
         the warm-up's second stage replaces by the covariance of its first stage's draws.
         r_hat, ESS and divergences are reported, and a warning is logged when they are bad.

Each phase of a fit logs one line (``planner.inference``, INFO); with ``progress`` a status line
(target, phase, chains, ETA) is drawn on stderr while it runs (``planner.infer.progress``).
"""
from __future__ import annotations

import logging
import time

import numpy as np

from planner.core.errors import FitError, InputError
from planner.infer.laplace import fit_laplace
from planner.infer.map import fit_map
from planner.infer.nuts import (
    diagnostic_warnings,
    fit_nuts,
    init_values,
    nuts_diagnostics,
    to_arviz,
)
from planner.infer.options import FIT_METHODS, FitOptions
from planner.infer.progress import reporter_for
from planner.model.laws import get_law
from planner.model.numpyro_model import pad_observations
from planner.model.posterior import Posterior, TargetPosterior
from planner.model.runs import RunsTable

log = logging.getLogger("planner.inference")




# ---------------------------------------------------------------------------------- entry
def fit(table: RunsTable, law: str = "additive", targets: list[str] | None = None,
        method: str = FitOptions.method, seed: int = 0,
        num_warmup: int = FitOptions.num_warmup, num_samples: int = FitOptions.num_samples,
        num_chains: int = FitOptions.num_chains, map_starts: int = FitOptions.map_starts,
        progress=False,
        run_effect: bool | None = None,
        map_init: dict | None = None) -> Posterior:
    """Fit ``law`` to each target of ``table``; return a ``Posterior`` (one per target).

    progress: True draws a status line (target, phase, chains, ETA) on stderr while fitting;
    a ``planner.infer.progress.Reporter`` draws where it says. Every phase logs one INFO line
    either way.

    discrepancy: also learn the model-discrepancy term by holding out the largest scale
    (``planner.calibration.calibrate``; one extra fit), so predictions away from the data carry
    it. Off by default inside campaign refits, on by default in ``planner fit``.
    map_init: {target: natural-scale law parameters}, an extra start for the Huber fit (e.g.
    the previous fit of a campaign, or the full fit when calibrating on a subset)."""
    lw = get_law(law)
    if method not in FIT_METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(FIT_METHODS)}")
    targets = list(targets) if targets else list(table.targets)
    for t in targets:
        if t not in table.targets:
            raise InputError(f"unknown target {t!r}; the table has {', '.join(table.targets)}")
    k = len(table.domains)
    reporter = reporter_for(progress)
    per_target = {}
    for i, t in enumerate(targets):
        obs = table.observations(t)
        n_par = lw.n_params(k)
        if len(obs) <= n_par:
            raise InputError(f"target {t!r} has {len(obs)} observations but the {law} law has "
                             f"{n_par} parameters; need more rows than parameters")
        data = pad_observations(obs, run_effect=run_effect)
        t0 = time.perf_counter()
        with reporter.phase(t, "Huber fit", chains=f"{map_starts} starts") as ph:
            m = fit_map(lw, data, seed=seed + 7919 * i, starts=map_starts,
                        init=(map_init or {}).get(t))
            ph.summary = f"{len(obs)} observations, objective {m.objective:.6g}"
        if method == "laplace":
            s, diag = fit_laplace(lw, data, seed + 7919 * i, init_values(lw, m, data),
                                  num_samples * num_chains, reporter=reporter, target=t)
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
            run = fit_nuts(lw, data, seed + 7919 * i, m, num_warmup, num_samples, num_chains,
                           reporter=reporter, target=t)
            draws = {kk: v.reshape((-1,) + v.shape[2:]) for kk, v in run.samples.items()}
            diag = nuts_diagnostics(run, lw)
            diag["method"] = "nuts"
            idata = to_arviz(run, lw, table.domains)
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
    return post
