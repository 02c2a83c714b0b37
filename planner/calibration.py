"""Calibration: learn the model discrepancy by holding out the largest scale, check intervals on
held-out runs, and a batched sampler for simulation-based calibration.

    post = fit_with_discrepancy(table, law="additive", method="nuts")   # fit + discrepancy
    post = calibrate(post, table)                                      # or attach it later
    report = holdout_check(table, law="additive")                      # `planner check`

The largest scale is the largest N (all its rows, every checkpoint of those runs); when N has one
level, the largest D. ``calibrate`` fits the rest ("inner" fit, same method and settings),
predicts the held-out rows, and turns their log-errors into the discrepancy slope
(``discrepancy.fit_slope``). ``holdout_check`` does this one level up: it fits everything but the
largest scale, predicts it with and without the discrepancy (calibrated inside the fitted part),
and reports relative error, interval coverage and width, and rank correlation.
"""
from __future__ import annotations

import inspect
import logging
import time

import numpy as np

from planner import discrepancy as disc_mod
from planner.errors import FitError
from planner.laws import scale_inputs
from planner.runs import RunsTable

log = logging.getLogger("planner.calibration")


# ------------------------------------------------------------------------------ splitting
def largest_scale_split(table: RunsTable) -> tuple[np.ndarray | None, dict]:
    """Rows of the largest observed scale: (held-out mask, info), or (None, info) when the
    table has a single (N, D) scale and nothing can be held out."""
    N, D = table.N, table.D
    if len(np.unique(N)) > 1:
        top = N.max()
        mask = np.isclose(N, top, rtol=1e-9, atol=0)
        return mask, {"rule": "largest N", "N": float(top), "n_heldout_rows": int(mask.sum())}
    if len(np.unique(D)) > 1:
        top = D.max()
        mask = np.isclose(D, top, rtol=1e-9, atol=0)
        return mask, {"rule": "largest D (N has one level)", "D": float(top),
                      "n_heldout_rows": int(mask.sum())}
    return None, {"rule": "none: one (N, D) scale only"}


def _plain_fit(table, law, targets, method, seed, **fit_kwargs):
    """inference.fit without the discrepancy (once fit can attach it by default)."""
    from planner.inference import fit

    if "discrepancy" in inspect.signature(fit).parameters:
        fit_kwargs.setdefault("discrepancy", False)
    return fit(table, law=law, targets=targets, method=method, seed=seed, **fit_kwargs)


# ------------------------------------------------------------------------------ held-out errors
def heldout_errors(posterior, target: str, heldout: RunsTable) -> dict:
    """Log-errors of ``posterior`` on the held-out rows that measured ``target``.

    Returns arrays (n,): y (observed loss), pred (posterior-mean law), log_error
    (log y - E_s log L_s), param_var (Var_s log L_s), dist (to the posterior's observed designs),
    and noise_var (2 E[sigma^2] + E[tau^2]: Student-t(4) noise plus a new run's level)."""
    tp = posterior[target]
    y = heldout.loss(target)
    keep = np.isfinite(y)
    N, D, H, y = heldout.N[keep], heldout.D[keep], heldout.H[keep], y[keep]
    lmu = np.log(posterior.loss_draws(target, N, D, H))
    logn, logd = (np.asarray(v) for v in scale_inputs(N, D))
    sig2 = float(np.mean(np.asarray(tp.draws["sigma"], float) ** 2))
    tau2 = float(np.mean(np.asarray(tp.draws["tau"], float) ** 2)) if "tau" in tp.draws else 0.0
    return {"y": y, "pred": np.exp(lmu).mean(0), "log_error": np.log(y) - lmu.mean(0),
            "param_var": lmu.var(0), "dist": disc_mod.distance(tp, logn, logd),
            "noise_var": disc_mod.NOISE_VAR_FACTOR * sig2 + tau2, "N": N, "D": D, "H": H}


def discrepancy_from_heldout(inner_posterior, target: str, heldout: RunsTable,
                             split_info: dict | None = None) -> dict:
    """Fit the discrepancy slope from an inner posterior's errors on the held-out rows."""
    err = heldout_errors(inner_posterior, target, heldout)
    if len(err["y"]) == 0:
        return disc_mod.prior_default(f"target {target!r} was not measured at the held-out scale")
    out = disc_mod.fit_slope(err["log_error"], err["param_var"], err["noise_var"], err["dist"],
                             H=err["H"])
    out["evidence"]["split"] = dict(split_info or {})
    out["evidence"]["inner_method"] = inner_posterior.meta.get("method")
    return out


# ------------------------------------------------------------------------------ entry points
def calibrate(posterior, table: RunsTable, method: str | None = None, seed: int = 0,
              inner_fit_kwargs: dict | None = None, **fit_kwargs):
    """Attach a discrepancy to every target of ``posterior`` (fitted on ``table``), in place.

    The inner fit uses ``method`` (default: the posterior's) and ``fit_kwargs``, updated by
    ``inner_fit_kwargs`` (e.g. fewer draws). Falls back to ``discrepancy.prior_default`` (and
    says so in ``diagnostics["discrepancy"]``) when the table has one scale or the rest has
    too few rows to fit. Returns the posterior."""
    from planner.laws import get_law

    method = method or posterior.meta.get("method", "nuts")
    t0 = time.perf_counter()
    mask, info = largest_scale_split(table)
    discs: dict[str, dict] = {}
    if mask is None:
        for t in posterior.targets:
            discs[t] = disc_mod.prior_default(
                "only one (N, D) scale observed: nothing to hold out; using the prior on s1")
    else:
        inner_table, heldout = table.select(~mask), table.select(mask)
        n_par = get_law(posterior.law).n_params(len(table.domains))
        fit_t = [t for t in posterior.targets
                 if np.isfinite(inner_table.loss(t)).sum() > n_par
                 and np.isfinite(heldout.loss(t)).any()]
        for t in posterior.targets:
            if t not in fit_t:
                discs[t] = disc_mod.prior_default(
                    f"too few rows below the largest scale ({info['rule']}) to fit {t!r}, "
                    "or none measured at it; using the prior on s1")
        if fit_t:
            kw = dict(fit_kwargs)
            # no warm start from the full fit here: where the inner data leave a direction
            # flat (RegMix: one N level below the held-out one), a start at the full fit's
            # optimum stays where the held-out rows put it, leaking them into the calibration
            kw.update(inner_fit_kwargs or {})
            try:
                inner = _plain_fit(inner_table, posterior.law, fit_t, method, seed + 104729, **kw)
            except FitError as e:  # the full fit worked; keep it, with the prior discrepancy
                log.warning("discrepancy: the fit without %s failed (%s); using the prior",
                            info["rule"], e)
                inner = None
                for t in fit_t:
                    discs[t] = disc_mod.prior_default(
                        f"the fit without the largest scale failed ({e}); using the prior on s1")
            for t in fit_t if inner is not None else []:
                discs[t] = discrepancy_from_heldout(inner, t, heldout, info)
    secs = time.perf_counter() - t0
    for t, d in discs.items():
        tp = posterior[t]
        tp.discrepancy = d
        tp.diagnostics = dict(tp.diagnostics)
        tp.diagnostics["discrepancy"] = {
            "kind": d["kind"], "s1": d["s1"], "s1_log_sd": d["s1_log_sd"],
            "mixture_field": d.get("mixture_field"),
            "note": d["evidence"].get("reason", f"calibrated by holding out {info['rule']}"),
            "seconds": round(secs, 2)}
        if d["kind"] == disc_mod.KIND_PRIOR:
            log.info("target %s: %s", t, d["evidence"]["reason"])
    posterior.meta = dict(posterior.meta)
    posterior.meta["discrepancy"] = {"split": info, "seconds": round(secs, 2)}
    return posterior


def fit_with_discrepancy(table: RunsTable, law: str = "additive", targets=None,
                         method: str = "nuts", seed: int = 0, inner_fit_kwargs=None,
                         **fit_kwargs):
    """``inference.fit`` followed by ``calibrate``: a posterior whose predictions carry the
    model discrepancy learned by holding out the largest scale."""
    post = _plain_fit(table, law, targets, method, seed, **fit_kwargs)
    return calibrate(post, table, method=method, seed=seed, inner_fit_kwargs=inner_fit_kwargs,
                     **fit_kwargs)


def interval_metrics(posterior, target: str, heldout: RunsTable, seed: int = 0) -> dict:
    """Relative error, 50/90 % coverage and width, and Spearman correlation on held-out rows
    (point prediction: the posterior mean of the law, as in ``Posterior.predict``)."""
    from scipy.stats import spearmanr

    y = heldout.loss(target)
    keep = np.isfinite(y)
    N, D, H, y = heldout.N[keep], heldout.D[keep], heldout.H[keep], y[keep]
    p = posterior.loss_draws(target, N, D, H).mean(0)
    draws = posterior.predictive_draws(target, N, D, H, seed=seed)
    out = {"n_heldout": int(len(y)),
           "mean_relative_error": float(np.mean(np.abs(p - y) / y)),
           "mean_log_error": float(np.mean(np.log(y) - np.log(p)))}
    for level in (50, 90):
        q = (1 - level / 100) / 2
        lo, hi = np.quantile(draws, q, axis=0), np.quantile(draws, 1 - q, axis=0)
        out[f"coverage_{level}"] = float(np.mean((y >= lo) & (y <= hi)))
        out[f"width_{level}_rel"] = float(np.mean((hi - lo) / p))
    out["spearman"] = float(spearmanr(p, y)[0]) if len(y) > 2 else float("nan")
    out.update(feasibility(np.log(y) - np.log(p)))
    return out


def feasibility(log_errors) -> dict:
    """Can ANY interval centred on the prediction reach 50 % coverage in [40, 60] % and 90 %
    coverage in [80, 97] % on these errors?

    A symmetric interval of half-width w covers the rows with |e| <= w, so the 50 % band needs
    w50 in [q40, q60] of |e| and the 90 % band w90 in [q80, q97]. For any symmetric unimodal
    predictive the CDF of |X| is concave with G(0) = 0, so G(w50) >= (w50 / w90) G(w90), i.e.
    w90 / w50 >= 0.9 / 0.5 = 1.8 (equality for a uniform). Both bands are reachable only if
    q97(|e|) >= 1.8 q40(|e|). A shared bias (all errors of one size) makes this fail."""
    a = np.abs(np.asarray(log_errors, float))
    if len(a) < 2:
        return {}
    q40, q60, q80, q97 = (float(np.quantile(a, q)) for q in (0.40, 0.60, 0.80, 0.97))
    return {"abs_log_error_q40": q40, "abs_log_error_q60": q60, "abs_log_error_q80": q80,
            "abs_log_error_q97": q97, "centred_bands_reachable": bool(q97 >= 1.8 * q40)}


def order_scores(L, y) -> dict:
    """How well per-draw losses L (S, m) at m mixtures of one (N, D) state which mixture is
    better, against the true losses y (m,): for each of the m (m - 1) / 2 pairs the posterior
    probability that the first is lower, scored by Brier and log score (probabilities clipped
    to [1e-3, 1 - 1e-3], since finitely many draws give exact 0s and 1s), plus the share of
    pairs called at >= 95 % confidence and how many of those are wrong (a calibrated posterior
    gets at most about 5 % of them wrong)."""
    L, y = np.asarray(L, float), np.asarray(y, float)
    i, j = np.triu_indices(len(y), 1)
    p = np.mean(L[:, i] < L[:, j], axis=0)
    truth = (y[i] < y[j]).astype(float)
    pc = np.clip(p, 1e-3, 1 - 1e-3)
    sure = (p >= 0.95) | (p <= 0.05)
    wrong_sure = sure & ((p >= 0.5) != (truth == 1))
    return {"n_pairs": int(len(p)), "brier": float(np.mean((p - truth) ** 2)),
            "log_score": float(-np.mean(truth * np.log(pc) + (1 - truth) * np.log(1 - pc))),
            "share_called_95": float(sure.mean()),
            "wrong_among_called_95": float(wrong_sure.sum() / max(sure.sum(), 1)),
            "accuracy": float(np.mean((p >= 0.5) == (truth == 1)))}


def heldout_order(posterior, target: str, heldout: RunsTable, min_mixtures: int = 3) -> dict | None:
    """``order_scores`` on the held-out (N, D) with the most measured rows (at least
    ``min_mixtures``), with and without the mixture discrepancy; None if no such scale."""
    from planner.optimum import objective_draws

    y = heldout.loss(target)
    keep = np.isfinite(y)
    N, D, H, y = heldout.N[keep], heldout.D[keep], heldout.H[keep], y[keep]
    if len(y) == 0:
        return None
    keys, inv, counts = np.unique(np.stack([N, D], 1), axis=0, return_inverse=True,
                                  return_counts=True)
    g = int(np.argmax(counts))
    if counts[g] < min_mixtures:
        return None
    sel = inv.ravel() == g
    n_, d_ = (float(v) for v in keys[g])
    out = {"N": n_, "D": d_, "n_mixtures": int(sel.sum())}
    for key, on in (("with_field", True), ("without_field", False)):
        L = objective_draws(posterior, n_, d_, H[sel], {target: 1.0}, mixture_field=on)
        out[key] = order_scores(L, y[sel])
    return out


def holdout_check(table: RunsTable, law: str = "additive", targets=None, method: str = "nuts",
                  seed: int = 0, inner_fit_kwargs: dict | None = None, **fit_kwargs) -> dict:
    """Fit all but the largest scale, predict it; per target the metrics of ``interval_metrics``
    without and with the discrepancy (calibrated by a further hold-out inside the fitted part).

    Returns {"law", "method", "split", "n_train_rows", "seconds", "targets": {t: {"n_heldout",
    "without_discrepancy": {...}, "with_discrepancy": {...}, "discrepancy": {...},
    "pairwise_order": ``heldout_order`` (which held-out mixture is better, with and without
    the mixture discrepancy) or None}}}."""
    from planner.errors import InputError

    targets = list(targets) if targets else list(table.targets)
    mask, info = largest_scale_split(table)
    if mask is None:
        raise InputError("calibration check needs at least two scales (N or D levels); "
                         "the table has one")
    train, test = table.select(~mask), table.select(mask)
    t0 = time.perf_counter()
    post = _plain_fit(train, law, targets, method, seed, **fit_kwargs)
    t_fit = time.perf_counter() - t0
    out = {"law": law, "method": method, "split": info, "n_train_rows": int(len(train.frame)),
           "targets": {}}
    base = {t: interval_metrics(post, t, test, seed=seed) for t in targets}
    calibrate(post, train, method=method, seed=seed, inner_fit_kwargs=inner_fit_kwargs,
              **fit_kwargs)
    for t in targets:
        withd = interval_metrics(post, t, test, seed=seed)
        d = post[t].discrepancy
        out["targets"][t] = {"n_heldout": base[t]["n_heldout"], "without_discrepancy": base[t],
                             "with_discrepancy": withd, "discrepancy": d,
                             "pairwise_order": heldout_order(post, t, test)}
    out["seconds"] = {"fit": round(t_fit, 1), "total": round(time.perf_counter() - t0, 1)}
    return out


# ------------------------------------------------------------------------------ batched sampler
def batched_nuts(law, datas, seed: int = 0, num_warmup: int = 300, num_samples: int = 200,
                 max_tree_depth: int = 8, target_accept: float = 0.9) -> dict:
    """NUTS on ``model.mixture_model`` for many datasets at once (vmapped, one compile): the
    engine of simulation-based calibration, where hundreds of fits must stay cheap.

    ``datas``: ``model.ModelData`` of one padded size and one ``n_groups``. Each dataset gets its
    own chain, warm-up (step size, dense mass matrix) and start at the prior median. Unlike
    ``inference.fit`` there is no MAP start, so use it on well-posed small problems.
    Returns {"z": unconstrained sample sites (R, S, ...), "params": natural law parameters and
    sigma/tau (R, S, ...), "num_steps": (R, S), "diverging": (R, S)}."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer.hmc import hmc
    from numpyro.infer.initialization import init_to_median
    from numpyro.infer.util import constrain_fn, initialize_model

    from planner.model import mixture_model, model_args

    per = [model_args(law, d) for d in datas]
    args0 = per[0][0]
    dyn = [i for i, a in enumerate(args0) if isinstance(a, (jax.Array, np.ndarray, float))]
    if len({len(d.y) for d in datas}) != 1 or len({d.n_groups for d in datas}) != 1:
        raise ValueError("batched_nuts needs datasets of one padded size and one n_groups")
    batched = [jnp.stack([jnp.asarray(p[0][i]) for p in per]) for i in dyn]
    ys = jnp.stack([p[1]["y"] for p in per])

    def args_of(vals):
        a = list(args0)
        for i, v in zip(dyn, vals):
            a[i] = v
        return tuple(a)

    info, pe_gen, _, _ = initialize_model(
        jax.random.PRNGKey(0), mixture_model, init_strategy=init_to_median(num_samples=15),
        dynamic_args=True, model_args=args0, model_kwargs={"y": ys[0]})
    z0 = info.z

    def one(key, vals, y):
        init_kernel, sample_kernel = hmc(potential_fn_gen=pe_gen, algo="NUTS")
        margs, mkw = args_of(vals), {"y": y}
        st = init_kernel(z0, num_warmup, model_args=margs, model_kwargs=mkw, rng_key=key,
                         dense_mass=True, target_accept_prob=target_accept,
                         max_tree_depth=max_tree_depth)

        def step(s, _):
            s = sample_kernel(s, model_args=margs, model_kwargs=mkw)
            return s, (s.z, s.num_steps, s.diverging)

        # one scan over warm-up and sampling: the step compiles once
        _, (zs, steps, div) = jax.lax.scan(step, st, None, length=num_warmup + num_samples)
        zs = jax.tree_util.tree_map(lambda x: x[num_warmup:], zs)
        return zs, steps[num_warmup:], div[num_warmup:]

    keys = jax.random.split(jax.random.PRNGKey(seed), len(datas))
    zs, steps, div = jax.jit(jax.vmap(one))(keys, batched, ys)

    names = [p.name for p in law.params] + ["sigma"] + (["tau"] if datas[0].n_groups else [])

    @jax.jit
    def natural(vals, y, z):
        margs = args_of(vals)
        c = constrain_fn(mixture_model, margs, {"y": y}, z, return_deterministic=True)
        return {n: c[n] for n in names}

    params = jax.vmap(lambda v, y, z: jax.vmap(lambda zz: natural(v, y, zz))(z))(batched, ys, zs)
    return {"z": {k: np.asarray(v) for k, v in zs.items()},
            "params": {k: np.asarray(v) for k, v in params.items()},
            "num_steps": np.asarray(steps), "diverging": np.asarray(div)}


def posterior_from_draws(law: str, domains: list[str], target: str, params: dict, obs,
                         method: str = "nuts-batched"):
    """A one-target ``Posterior`` from natural-scale draws (S, ...) and the fitted
    ``runs.Observations`` (for the discrepancy distance)."""
    from planner.posterior import Posterior, TargetPosterior

    tp = TargetPosterior(target, {k: np.asarray(v) for k, v in params.items()},
                         {"method": method}, None, obs_logn=obs.logn, obs_logd=obs.logd)
    return Posterior(law=law, domains=list(domains), targets=[target], per_target={target: tp},
                     meta={"method": method})
