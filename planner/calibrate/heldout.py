"""Calibration: learn the model discrepancy by holding out the largest scale, check intervals on
held-out runs, and a batched sampler for simulation-based calibration.

    post = fit_with_discrepancy(table, method="nuts")   # fit (law auto) + discrepancy
    post = calibrate(post, table)                       # or attach it later
    post = attach_discrepancy(new_post, post)           # reuse a learned one
    report = holdout_check(table)                       # `planner check`

The largest scale is the largest N (all its rows, every checkpoint of those runs; with the next
N levels when fewer than ``MIN_HELDOUT_RUNS`` runs have it); when N has one level, the largest
D. ``calibrate`` fits the rest ("inner" fit, same method and settings), predicts the held-out
rows, and turns their log-errors into the discrepancy slope
(``discrepancy.fit_slope``). ``holdout_check`` does this one level up: it fits everything but the
largest scale, predicts it with and without the discrepancy (calibrated inside the fitted part),
and reports relative error, interval coverage and width, and rank correlation.
"""
from __future__ import annotations

import copy
import logging
import time

import numpy as np

from planner.core.errors import FitError
from planner.infer.auto import AUTO, fit_auto, law_of
from planner.infer.dispatch import fit
from planner.model import discrepancy as disc_mod
from planner.model.laws import n_params, scale_inputs
from planner.model.runs import RunsTable

log = logging.getLogger("planner.calibration")


# ------------------------------------------------------------------------------ splitting
# runs the calibration holds out at least (whole runs, largest N levels first): with one held-out
# run every length scale of the mixture field fits alike and the shared and mixture-specific
# shares cannot be told apart, so the field stays at its prior, wide; three runs with their own
# mixtures start to tell them apart
MIN_HELDOUT_RUNS = 3


# N levels the fitted part keeps at least (its N-terms need two)
MIN_INNER_LEVELS = 2


def largest_scale_split(table: RunsTable, inner_rows_needed: int = 0
                        ) -> tuple[np.ndarray | None, dict]:
    """Rows of the largest observed scale: (held-out mask, info), or (None, info) when the
    table has a single (N, D) scale and nothing can be held out.

    The largest N (all its rows, every checkpoint of those runs); when fewer than
    ``MIN_HELDOUT_RUNS`` runs have it, the next N levels join it until that many are held out,
    as long as ``MIN_INNER_LEVELS`` N levels and more than ``inner_rows_needed`` rows remain
    below (info then also gives "N_min", the smallest held-out N). When N has one level, the
    largest D."""
    N, D = table.N, table.D
    levels = np.unique(N)[::-1]
    if len(levels) > 1:
        keys = table.run_keys()
        mask = table.top_levels(N, MIN_HELDOUT_RUNS, inner_rows_needed, MIN_INNER_LEVELS)
        if not mask.any():  # the largest N alone is held out even when that leaves little
            mask = np.isclose(N, levels[0], rtol=1e-9, atol=0)
        info = {"rule": "largest N", "N": float(levels[0]), "n_heldout_rows": int(mask.sum()),
                "n_heldout_runs": len(set(keys[mask]))}
        if N[mask].min() < levels[0]:
            info["N_min"] = float(N[mask].min())
        return mask, info
    if len(np.unique(D)) > 1:
        top = D.max()
        mask = np.isclose(D, top, rtol=1e-9, atol=0)
        return mask, {"rule": "largest D (N has one level)", "D": float(top),
                      "n_heldout_rows": int(mask.sum())}
    return None, {"rule": "none: one (N, D) scale only"}


def split_key(info: dict | None) -> tuple:
    """What identifies a held-out split (its rule and the held-out N or D), without the row
    count: more runs at the same largest scale do not make it a different split."""
    info = info or {}
    return (info.get("rule"), info.get("N"), info.get("D"))


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
    """A copy of ``posterior`` (fitted on ``table``) with a discrepancy on every target; the
    argument is left unchanged.

    The inner fit uses ``method`` (default: the posterior's) and ``fit_kwargs``, updated by
    ``inner_fit_kwargs`` (e.g. fewer draws). Falls back to ``discrepancy.prior_default`` (and
    says so in ``diagnostics["discrepancy"]``) when the table has one scale or the rest has
    too few rows to fit."""

    method = method or posterior.meta.get("method", "nuts")
    posterior = copy.copy(posterior)
    posterior.per_target = dict(posterior.per_target)
    t0 = time.perf_counter()
    law = law_of(posterior)  # a combination (law auto) refits the combination
    n_par = n_params(law, len(table.domains))
    mask, info = largest_scale_split(table, inner_rows_needed=n_par)
    discs: dict[str, dict] = {}
    if mask is None:
        for t in posterior.targets:
            discs[t] = disc_mod.prior_default(
                "only one (N, D) scale observed: nothing to hold out; using the prior on s1")
    else:
        inner_table, heldout = table.select(~mask), table.select(mask)
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
                inner = (fit_auto if law == AUTO else fit)(
                    inner_table, law=law, targets=fit_t, method=method, seed=seed + 104729, **kw)
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
        tp = posterior.per_target[t] = copy.copy(posterior[t])
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


def fit_with_discrepancy(table: RunsTable, law: str = AUTO, targets=None,
                         method: str = "nuts", seed: int = 0, inner_fit_kwargs=None,
                         **fit_kwargs):
    """``inference.fit`` followed by ``calibrate``: a posterior whose predictions carry the
    model discrepancy learned by holding out the largest scale."""
    post = (fit_auto if law == AUTO else fit)(table, law=law, targets=targets, method=method,
                                              seed=seed, **fit_kwargs)
    return calibrate(post, table, method=method, seed=seed, inner_fit_kwargs=inner_fit_kwargs,
                     **fit_kwargs)


def attach_discrepancy(posterior, source, note: str | None = None):
    """A copy of ``posterior`` carrying ``source``'s discrepancy (slope, its uncertainty and the
    mixture field) on every target both share; the argument is left unchanged.

    The discrepancy is a function of the distance to the observed runs, and that distance is
    measured from ``posterior``'s own observed designs, so a discrepancy learned on an earlier
    fit of a growing campaign stays meaningful on a later one: where new runs were added, the
    distance (and the extra error) shrinks. Targets ``source`` has no discrepancy for are left
    without one. ``posterior.meta["discrepancy"]`` is ``source``'s, plus ``note``."""
    posterior = copy.copy(posterior)
    posterior.per_target = dict(posterior.per_target)
    for t in posterior.targets:
        src = source.per_target.get(t) if source is not None else None
        if src is None or not src.discrepancy:
            continue
        tp = posterior.per_target[t] = copy.copy(posterior[t])
        tp.discrepancy = copy.deepcopy(src.discrepancy)
        tp.diagnostics = dict(tp.diagnostics)
        dd = dict((src.diagnostics or {}).get("discrepancy") or {})
        if note:
            dd["note"] = note
        tp.diagnostics["discrepancy"] = dd
    posterior.meta = dict(posterior.meta)
    md = dict((getattr(source, "meta", None) or {}).get("discrepancy") or {})
    if note:
        md["note"] = note
    posterior.meta["discrepancy"] = md
    return posterior
