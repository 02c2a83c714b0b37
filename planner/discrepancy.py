"""Model discrepancy: the law's own error away from the observed runs.

The laws are only approximately right; their extrapolation error (1-4 % at a larger scale in the
paper) is far above the run-to-run noise (0.3-0.5 %). Predictions therefore carry an extra
error on log-loss,

    log L_obs = log L_law(theta) + delta + noise,    delta ~ Normal(0, s(x)^2),
    s(x) = s0 + s1 * dist(x),

where dist(x) is the Euclidean distance, in e-folds of (log N, log D), from the design x to the
nearest observed run (0 at an observed (N, D): there the fitted noise already covers the lack of
fit, so s0 = 0). s1 is uncertain, and the uncertainty is kept: each posterior draw s gets its own
slope s1_s = s1 * exp(s1_log_sd * z_s) (z_s fixed normal scores), so predictive intervals are a
scale mixture and stay honest when s1 rests on one held-out scale.

Calibration (``fit_slope``; driven by ``planner.calibration``): hold out the largest observed
scale, fit the rest, and take the held-out log-errors e_j = log y_j - E_s[log L_s(x_j)] at
distances d_j. Their likelihood is Gaussian with covariance

    Sigma = diag(v_j + 2 sigma^2 + tau^2) + s1^2 [rho d d^T + (1 - rho) diag(d^2)]

v_j: the posterior variance of the law's log prediction (parameter spread); 2 sigma^2: the
variance of the Student-t(4) noise of scale sigma; tau^2: the run-level effect of a new run;
rho in [0, 1]: the share of the discrepancy common to all held-out designs (a scale shift) rather
than mixture-specific. Treating the held-out errors as independent would count one shared bias n
times and make s1 look certain; with rho the shared part is one observation, as it should be.
Prior: log s1 ~ Normal(log 0.02, 1) (``PRIOR_S1``, ``PRIOR_LOG_SD``: the paper's 1.3-1.4 % mean
relative error about 0.76 e-folds beyond its largest fitted model gives s1 ~ 0.017/0.8 ~ 0.02;
1 e-fold of prior spread covers 0.004-0.1 at 90 %), rho ~ Uniform(0, 1). The posterior over
(log s1, rho) is computed on a grid; its log s1 marginal is summarised by a median and a log-sd.
With no held-out scale (one (N, D) scale only) the prior itself is used (kind "prior-default").

Downstream: ``log_sd`` gives s(x) per draw and design; ``Posterior.predictive_draws`` adds
Normal(0, s) to log-loss. The discrepancy is modelled as independent of the mixture at a given
(N, D) for the decision: a per-draw factor exp(delta) common to all h leaves each draw's argmin,
hence the h* posterior, unchanged, and scales the excess loss by exp(delta) (mean factor
exp(s^2/2), at most 1.02 for s < 0.2). The mixture-specific share (1 - rho) is reported in the
evidence; making h* move with it would need a random function of h per draw.
"""
from __future__ import annotations

import math

import numpy as np

PRIOR_S1 = 0.02        # discrepancy sd per e-fold of distance (prior median)
PRIOR_LOG_SD = 1.0     # prior sd of log s1
NOISE_VAR_FACTOR = 2.0  # variance of Student-t(nu = 4) with scale sigma: nu / (nu - 2) sigma^2
KIND_HELDOUT = "heldout-scale"
KIND_PRIOR = "prior-default"
_GRID_LOG_S1 = np.linspace(math.log(1e-4), math.log(1.0), 241)
# rho: uniform steps plus steps approaching 1 geometrically (a scale-wide bias with a small
# mixture-specific scatter sits at 1 - rho ~ 1e-3, which a uniform grid would miss), each point
# weighted by the prior mass of its cell (trapezoid rule) so the prior stays Uniform(0, 1)
_GRID_RHO = np.unique(np.concatenate([np.linspace(0.0, 1.0, 21), 1.0 - np.logspace(-6, -1.4, 24)]))
_RHO_W = np.gradient(_GRID_RHO)


# ------------------------------------------------------------------------------ distance
def distance_to(points_logn, points_logd, logn, logd) -> np.ndarray:
    """Euclidean distance in (log N, log D) from each design to the nearest of ``points``."""
    logn = np.atleast_1d(np.asarray(logn, float))
    logd = np.atleast_1d(np.asarray(logd, float))
    if points_logn is None or len(points_logn) == 0:
        return np.zeros_like(logn)
    pts = np.unique(np.stack([np.asarray(points_logn, float),
                              np.asarray(points_logd, float)], 1), axis=0)
    dn = logn[:, None] - pts[None, :, 0]
    dd = logd[:, None] - pts[None, :, 1]
    return np.sqrt(dn ** 2 + dd ** 2).min(axis=1)


def distance(tp, logn, logd) -> np.ndarray:
    """Distance from each design to the nearest run observed by the posterior ``tp``."""
    return distance_to(tp.obs_logn, tp.obs_logd, logn, logd)


# ------------------------------------------------------------------------------ prediction
def normal_scores(n: int, seed: int = 20240907) -> np.ndarray:
    """n stratified standard-normal scores in a fixed pseudo-random order (one per draw)."""
    from scipy.stats import norm

    z = norm.ppf((np.arange(n) + 0.5) / n)
    return np.random.default_rng(seed).permutation(z)


def slope_draws(disc: dict, n_draws: int) -> np.ndarray:
    """Per-draw slopes s1_s = s1 exp(s1_log_sd z_s), shape (n_draws,)."""
    s1 = float(disc["s1"])
    lsd = float(disc.get("s1_log_sd", 0.0) or 0.0)
    if lsd <= 0 or n_draws <= 1:
        return np.full(n_draws, s1)
    return s1 * np.exp(lsd * normal_scores(n_draws))


def log_sd(tp, logn, logd):
    """Standard deviation of the discrepancy on log-loss: s0 + s1_s * distance, shape (S, m)
    (per draw when the slope is uncertain), or 0.0 when no discrepancy is attached."""
    disc = tp.discrepancy
    if not disc:
        return 0.0
    d = distance(tp, logn, logd)
    s1 = slope_draws(disc, tp.n_draws)
    return float(disc.get("s0", 0.0)) + s1[:, None] * d[None, :]


# ------------------------------------------------------------------------------ calibration
def _loglik_grid(e, base_var, d):
    """Gaussian log-likelihood of errors e on the (log s1, rho) grid, shape (G1, G2).

    Sigma = diag(base_var + (1 - rho) s1^2 d^2) + rho s1^2 d d^T, evaluated with the matrix
    determinant lemma and Sherman-Morrison (O(n) per grid point)."""
    s2 = np.exp(2 * _GRID_LOG_S1)[:, None, None]               # (G1, 1, 1)
    rho = _GRID_RHO[None, :, None]                               # (1, G2, 1)
    Dg = base_var[None, None, :] + (1 - rho) * s2 * d[None, None, :] ** 2   # (G1, G2, n)
    a = rho[..., 0] * s2[..., 0]                                 # (G1, G2)
    Dinv_d = d[None, None, :] / Dg
    Dinv_e = e[None, None, :] / Dg
    dDd = (d[None, None, :] * Dinv_d).sum(-1)
    eDe = (e[None, None, :] * Dinv_e).sum(-1)
    dDe = (d[None, None, :] * Dinv_e).sum(-1)
    logdet = np.log(Dg).sum(-1) + np.log1p(a * dDd)
    quad = eDe - a * dDe ** 2 / (1 + a * dDd)
    n = len(e)
    return -0.5 * (logdet + quad + n * math.log(2 * math.pi))


def prior_default(reason: str) -> dict:
    """The discrepancy when nothing can be held out: the prior on s1."""
    return {"kind": KIND_PRIOR, "s0": 0.0, "s1": PRIOR_S1, "s1_log_sd": PRIOR_LOG_SD,
            "evidence": {"reason": reason, "prior_s1": PRIOR_S1, "prior_log_sd": PRIOR_LOG_SD}}


def fit_slope(errors, param_var, noise_var, dist, prior_s1: float = PRIOR_S1,
              prior_log_sd: float = PRIOR_LOG_SD) -> dict:
    """Posterior of the discrepancy slope s1 from held-out log-errors (see module docstring).

    errors, param_var, noise_var, dist: arrays of shape (n,) (noise_var may be a scalar).
    Returns {"kind", "s0", "s1" (posterior median), "s1_log_sd", "evidence": {...}}."""
    e = np.asarray(errors, float)
    d = np.asarray(dist, float)
    v = np.asarray(param_var, float) + np.broadcast_to(np.asarray(noise_var, float), e.shape)
    ok = np.isfinite(e) & np.isfinite(v) & (d > 0)
    if ok.sum() == 0:
        return prior_default("no held-out observation away from the fitted designs")
    e, d, v = e[ok], d[ok], np.maximum(v[ok], 1e-12)
    ll = _loglik_grid(e, v, d)
    lp = ll - 0.5 * ((_GRID_LOG_S1[:, None] - math.log(prior_s1)) / prior_log_sd) ** 2
    w = np.exp(lp - lp.max()) * _RHO_W[None, :]
    w /= w.sum()
    w_s1 = w.sum(1)
    cdf = np.cumsum(w_s1)
    med = float(np.interp(0.5, cdf, _GRID_LOG_S1))
    mean = float((w_s1 * _GRID_LOG_S1).sum())
    lsd = float(np.sqrt((w_s1 * (_GRID_LOG_S1 - mean) ** 2).sum()))
    rho_mean = float((w.sum(0) * _GRID_RHO).sum())
    i, j = np.unravel_index(np.argmax(ll), ll.shape)
    z = e / np.sqrt(v)
    q = 1.6448536269514722
    return {
        "kind": KIND_HELDOUT, "s0": 0.0, "s1": math.exp(med), "s1_log_sd": lsd,
        "evidence": {
            "n_heldout": int(len(e)),
            "distance_mean": float(d.mean()), "distance_min": float(d.min()),
            "distance_max": float(d.max()),
            "mean_log_error": float(e.mean()), "rms_log_error": float(np.sqrt((e ** 2).mean())),
            "sd_log_error": float(e.std()),
            "rms_param_sd": float(np.sqrt(np.mean(np.asarray(param_var, float)[ok]))),
            "noise_sd": float(np.sqrt(np.mean(v - np.asarray(param_var, float)[ok]))),
            "coverage90_without": float(np.mean(np.abs(z) <= q)),
            "s1_ml": float(math.exp(_GRID_LOG_S1[i])), "rho_ml": float(_GRID_RHO[j]),
            "shared_share_rho": rho_mean,
            "s1_q05": float(math.exp(np.interp(0.05, cdf, _GRID_LOG_S1))),
            "s1_q95": float(math.exp(np.interp(0.95, cdf, _GRID_LOG_S1))),
            "prior_s1": prior_s1, "prior_log_sd": prior_log_sd,
        },
    }
