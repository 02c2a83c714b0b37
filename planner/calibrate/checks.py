"""Held-out checks: interval coverage and width, relative error, rank order of mixtures, and
``holdout_check`` (``planner check``)."""
from __future__ import annotations

import logging
import time

import numpy as np

from planner.calibrate.heldout import calibrate, largest_scale_split
from planner.core.errors import InputError
from planner.decide.optimum import objective_draws
from planner.infer.auto import AUTO, fit_auto
from planner.infer.dispatch import fit
from planner.model.laws import n_params
from planner.model.runs import RunsTable

log = logging.getLogger("planner.calibration")


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
    out.update(sharpness(np.log(y) - np.log(p), out["coverage_90"], out["width_90_rel"]))
    return out


def sharpness(log_errors, coverage_90: float, width_90_rel: float) -> dict:
    """How much wider the 90 % intervals are than they need be: the narrowest interval centred
    on the prediction that covers as many rows, with the coverage taken into the band a
    calibrated 90 % interval should reach on finitely many rows, [85, 95] %. Half-width w
    covering a share c of the rows is the c-quantile of |log error|; its relative width is
    e^w - e^-w, comparable with ``width_90_rel``. ``width_ratio_90`` <= 2 is the goal."""
    a = np.abs(np.asarray(log_errors, float))
    if len(a) < 2:
        return {}
    c = float(np.clip(coverage_90, 0.85, 0.95))
    w = float(np.quantile(a, c))
    narrow = float(np.exp(w) - np.exp(-w))
    return {"narrowest_centred_width_90": narrow,
            "width_ratio_90": float(width_90_rel / narrow) if narrow > 0 else float("inf")}


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


def holdout_check(table: RunsTable, law: str = AUTO, targets=None, method: str = "nuts",
                  seed: int = 0, inner_fit_kwargs: dict | None = None, **fit_kwargs) -> dict:
    """Fit all but the largest scale, predict it; per target the metrics of ``interval_metrics``
    without and with the discrepancy (calibrated by a further hold-out inside the fitted part).

    Returns {"law", "method", "split", "n_train_rows", "seconds", "targets": {t: {"n_heldout",
    "without_discrepancy": {...}, "with_discrepancy": {...}, "discrepancy": {...},
    "pairwise_order": ``heldout_order`` (which held-out mixture is better, with and without
    the mixture discrepancy) or None}}}."""

    targets = list(targets) if targets else list(table.targets)
    mask, info = largest_scale_split(table, inner_rows_needed=n_params(law, len(table.domains)))
    if mask is None:
        raise InputError("calibration check needs at least two scales (N or D levels); "
                         "the table has one")
    train, test = table.select(~mask), table.select(mask)
    t0 = time.perf_counter()
    post = (fit_auto if law == AUTO else fit)(train, law=law, targets=targets, method=method,
                                              seed=seed, **fit_kwargs)
    t_fit = time.perf_counter() - t0
    out = {"law": law, "method": method, "split": info, "n_train_rows": int(len(train.frame)),
           "targets": {}}
    if post.meta.get("law_weights") is not None:  # law auto: the families' weights
        out["law_weights"] = post.meta["law_weights"]
    base = {t: interval_metrics(post, t, test, seed=seed) for t in targets}
    post = calibrate(post, train, method=method, seed=seed, inner_fit_kwargs=inner_fit_kwargs,
                     **fit_kwargs)
    for t in targets:
        withd = interval_metrics(post, t, test, seed=seed)
        d = post[t].discrepancy
        out["targets"][t] = {"n_heldout": base[t]["n_heldout"], "without_discrepancy": base[t],
                             "with_discrepancy": withd, "discrepancy": d,
                             "pairwise_order": heldout_order(post, t, test)}
    out["seconds"] = {"fit": round(t_fit, 1), "total": round(time.perf_counter() - t0, 1)}
    return out
