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

Calibration (``fit_slope``; driven by ``planner.calibrate``): hold out the largest observed
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

Mixture structure. The mixture-specific share need not be white noise over h: mixtures close
to each other tend to be mispredicted alike. When the held-out rows' mixtures are given,
``fit_slope`` replaces (1 - rho) diag(d^2) by (1 - rho) (d d^T * K_ell), K_ell(h, h') =
exp(-|h - h'|^2 / (2 ell^2)), and puts a uniform prior on ell over ``GRID_ELL`` (ell = 0 is
the white-noise model above; the largest ell is nearly constant over the simplex). The grid
posterior is then over (log s1, rho, ell); with a kernel the Gaussian is evaluated through one
eigendecomposition per (rho, ell) of the whitened matrix (at most ``MAX_HELDOUT`` rows, a fixed
subsample beyond that). The field averages over ell (below); s1 and rho for intervals stay
those of the white model (``fit_slope`` says why).

Downstream: ``log_sd`` gives s(x) per draw and design; ``Posterior.predictive_draws`` adds
Normal(0, s) to log-loss (marginally exact for every ell). The shared part (rho) is common to
all h at a given (N, D): a per-draw factor exp(delta) leaves each draw's argmin unchanged.
The mixture-specific part is what can move h*: when the posterior gives smooth structure over h
(ell > 0) a probability of at least ``MIN_P_STRUCTURE``, ``mixture_field`` gives each posterior
draw s its own random function of h,

    f_s(h) = a_s sqrt(2 / M) sum_m cos(omega_sm . h + beta_sm),    a_s = s1'_s dist sqrt(share),

random Fourier features of the kernel (omega ~ Normal(0, I / ell_s^2), beta ~ Uniform(0, 2 pi),
M = ``FIELD_FEATURES``, fixed seed), so f_s has variance a_s^2 and covariance a_s^2 K_ell.
The length scale is averaged over, not chosen: draw s gets ell_s with its posterior probability
(white noise, ell = 0, means a_s = 0 for that draw), and s1'_s (per draw, as for intervals) and
share = E[1 - rho] are the kernel model's own estimates at ell_s. When the held-out rows cannot
tell the models apart (one held-out mixture: every ell > 0 fits them alike) the field keeps its
prior weight instead of vanishing with the white model's slightly higher mode.
``optimum.optimum_draws`` minimises L_s(h) exp(f_s(h)) per draw: the h* posterior, the Bayes
choice and the expected excess loss all include the discrepancy, and it grows with the distance
from the observed runs. Without held-out errors (the prior default) no field is attached.
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


# length scales of the mixture kernel (Euclidean distance between weight vectors; two vertices
# of the simplex are sqrt(2) apart); 0 = white noise over h
GRID_ELL = np.array([0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2])


MAX_HELDOUT = 400          # rows used for the kernel likelihood (fixed subsample beyond)


FIELD_FEATURES = 128       # random Fourier features per draw for the mixture field


FIELD_SEED = 20251126


# a mixture field is attached when the length-scale posterior gives smooth structure over h at
# least this probability (below it the field would touch fewer than 1 draw in 20)
MIN_P_STRUCTURE = 0.05


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


def mixture_kernel(H, ell: float) -> np.ndarray:
    """Squared-exponential kernel between weight vectors (rows of H); the identity for ell = 0."""
    H = np.asarray(H, float)
    if ell <= 0:
        return np.eye(len(H))
    d2 = ((H[:, None, :] - H[None, :, :]) ** 2).sum(-1)
    return np.exp(-0.5 * d2 / ell ** 2)


def _loglik_grid_kernel(e, base_var, d, K):
    """As ``_loglik_grid`` with the mixture-specific share correlated by K:
    Sigma = diag(v) + s1^2 D [rho 1 1^T + (1 - rho) K] D, evaluated exactly by whitening with
    diag(v)^(-1/2) and one eigendecomposition per rho (the s1 grid then costs O(n) each)."""
    sv = np.sqrt(base_var)
    et, dt = e / sv, d / sv
    B = np.outer(dt, dt)
    s2 = np.exp(2 * _GRID_LOG_S1)[:, None]
    const = np.log(base_var).sum() + len(e) * math.log(2 * math.pi)
    out = np.empty((len(_GRID_LOG_S1), len(_GRID_RHO)))
    for j, rho in enumerate(_GRID_RHO):
        lam, U = np.linalg.eigh(B * (rho + (1 - rho) * K))
        lam = np.maximum(lam, 0.0)
        c2 = (U.T @ et) ** 2
        den = 1.0 + s2 * lam[None, :]
        out[:, j] = -0.5 * (const + np.log(den).sum(1) + (c2[None, :] / den).sum(1))
    return out


def _grid_posterior(ll, prior_s1, prior_log_sd):
    """Normalised posterior weights on (..., log s1, rho) from log-likelihoods on that grid."""
    lp = ll - 0.5 * ((_GRID_LOG_S1[:, None] - math.log(prior_s1)) / prior_log_sd) ** 2
    w = np.exp(lp - lp.max()) * _RHO_W
    return w / w.sum()


def _s1_summary(w_s1):
    cdf = np.cumsum(w_s1)
    mean = float((w_s1 * _GRID_LOG_S1).sum())
    return {"median": float(np.interp(0.5, cdf, _GRID_LOG_S1)),
            "log_sd": float(np.sqrt((w_s1 * (_GRID_LOG_S1 - mean) ** 2).sum())),
            "q05": float(np.interp(0.05, cdf, _GRID_LOG_S1)),
            "q95": float(np.interp(0.95, cdf, _GRID_LOG_S1))}


def mixture_structure(e, v, d, H, prior_s1: float = PRIOR_S1,
                      prior_log_sd: float = PRIOR_LOG_SD, seed: int = 0) -> dict:
    """Posterior over the length scale ell of the mixture-specific share (uniform prior on
    ``GRID_ELL``; ell = 0 is white noise), marginal over (log s1, rho). At most ``MAX_HELDOUT``
    rows (a fixed subsample beyond). Returns {"length_scale" (posterior mode), "posterior":
    {ell: p}, "s1", "s1_log_sd", "share"}: the kernel model's slope (median, log-sd) and
    mixture-specific share E[1 - rho] given the mode of ell."""
    idx = np.arange(len(e))
    if len(idx) > MAX_HELDOUT:
        idx = np.sort(np.random.default_rng(seed).choice(idx, MAX_HELDOUT, replace=False))
    e, v, d, H = e[idx], v[idx], d[idx], np.asarray(H, float)[idx]
    lls = [_loglik_grid(e, v, d)] + [_loglik_grid_kernel(e, v, d, mixture_kernel(H, ell))
                                     for ell in GRID_ELL[1:]]
    w = _grid_posterior(np.stack(lls), prior_s1, prior_log_sd)    # (L, G1, G2)
    w_ell = w.sum((1, 2))

    def given(i):   # the kernel model's slope and mixture-specific share at GRID_ELL[i]
        tot = w[i].sum()
        wi = w[i] / tot if tot > 0 else np.full(w[i].shape, 1.0 / w[i].size)  # p = 0 anyway
        s1s = _s1_summary(wi.sum(1))
        return {"length_scale": float(GRID_ELL[i]), "p": float(w_ell[i]),
                "s1": float(math.exp(s1s["median"])), "s1_log_sd": s1s["log_sd"],
                "share": float((wi.sum(0) * (1 - _GRID_RHO)).sum())}

    i = int(np.argmax(w_ell))
    out = {k: v for k, v in given(i).items() if k != "p"}
    out.update({"posterior": {f"{ell:g}": float(p) for ell, p in zip(GRID_ELL, w_ell)},
                "by_length_scale": [given(j) for j in range(1, len(GRID_ELL))],
                "p_structure": float(w_ell[1:].sum()), "n_rows": int(len(e))})
    return out


def fit_slope(errors, param_var, noise_var, dist, prior_s1: float = PRIOR_S1,
              prior_log_sd: float = PRIOR_LOG_SD, H=None, seed: int = 0) -> dict:
    """Posterior of the discrepancy slope s1 from held-out log-errors (see module docstring).

    errors, param_var, noise_var, dist: arrays of shape (n,) (noise_var may be a scalar).
    Returns {"kind", "s0", "s1" (posterior median), "s1_log_sd", "mixture_field",
    "evidence": {...}} (the posterior mean of rho is evidence["shared_share_rho"]).

    Two questions, two models. Prediction intervals need the pointwise size of the errors:
    s1, s1_log_sd and rho come from the model with white mixture-specific errors (its intervals
    held 93 % / 44 % in the out-of-family check; the kernel model's larger s1, used there,
    over-covered at 99.7 %). The decision needs how the errors *differ between mixtures*: a
    smooth field over h looks mostly shared to the white model (on RegMix it puts 99.7 % of
    the variance in rho), so with H (n, k), the held-out rows' mixtures, ``mixture_field`` is
    the kernel model at its most probable length scale (``mixture_structure``): {"length_scale",
    "s1", "s1_log_sd", "share"}, or None when white noise is the most probable (no structure
    over h to move h*) or H is not given."""
    e = np.asarray(errors, float)
    d = np.asarray(dist, float)
    v = np.asarray(param_var, float) + np.broadcast_to(np.asarray(noise_var, float), e.shape)
    ok = np.isfinite(e) & np.isfinite(v) & (d > 0)
    if ok.sum() == 0:
        return prior_default("no held-out observation away from the fitted designs")
    e, d, v = e[ok], d[ok], np.maximum(v[ok], 1e-12)
    ll = _loglik_grid(e, v, d)
    w = _grid_posterior(ll, prior_s1, prior_log_sd)
    s1s = _s1_summary(w.sum(1))
    rho_mean = float((w.sum(0) * _GRID_RHO).sum())
    i, j = np.unravel_index(np.argmax(ll), ll.shape)
    z = e / np.sqrt(v)
    q = 1.6448536269514722
    struct = None
    if H is not None:
        struct = mixture_structure(e, v, d, np.asarray(H, float)[ok], prior_s1, prior_log_sd, seed)
    field = None
    if struct and struct["p_structure"] >= MIN_P_STRUCTURE:
        # model averaging over ell: each posterior draw gets a length scale from the ell
        # posterior (white noise, ell = 0, with its probability: no field for that draw);
        # "length_scale", "s1", ... describe the most probable smooth ell, for display
        best = max(struct["by_length_scale"], key=lambda c: c["p"])
        field = {k: best[k] for k in ("length_scale", "s1", "s1_log_sd", "share")}
        field["p_structure"] = struct["p_structure"]
        field["by_length_scale"] = struct["by_length_scale"]
    return {
        "kind": KIND_HELDOUT, "s0": 0.0, "s1": math.exp(s1s["median"]), "s1_log_sd": s1s["log_sd"],
        "mixture_field": field,
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
            "mixture_structure": struct,
            "s1_q05": float(math.exp(s1s["q05"])), "s1_q95": float(math.exp(s1s["q95"])),
            "prior_s1": prior_s1, "prior_log_sd": prior_log_sd,
        },
    }


# ------------------------------------------------------------------------------ mixture field
def mixture_field(tp, logn: float, logd: float, k: int, n_draws: int,
                  seed: int = FIELD_SEED) -> dict | None:
    """The mixture-specific discrepancy at one target (N, D) as per-draw random functions of h
    (module docstring), or None when there is none (no discrepancy, white noise over h, or the
    target at an observed scale). Returns {"amp": (S,), "omega": (S, M, k), "phase": (S, M)}."""
    fld = (tp.discrepancy or {}).get("mixture_field")
    if not fld:
        return None
    comps = [c for c in fld.get("by_length_scale") or [dict(fld, p=1.0)]
             if float(c.get("length_scale") or 0.0) > 0 and float(c.get("share") or 0.0) > 0]
    if not comps:
        return None
    dist_t = float(distance(tp, [logn], [logd])[0])
    if dist_t <= 0:
        return None
    rng = np.random.default_rng(seed)
    ell, amp = _draw_components(comps, n_draws, rng)
    amp = amp * dist_t
    omega = rng.standard_normal((n_draws, FIELD_FEATURES, k)) / ell[:, None, None]
    phase = rng.uniform(0.0, 2 * math.pi, (n_draws, FIELD_FEATURES))
    return {"amp": amp, "omega": omega, "phase": phase}


def field_summary(fld: dict) -> str:
    """A mixture field in words: how probable smooth structure over h is, and its length scale
    (the most probable one, or the range averaged over when the posterior cannot tell them
    apart), and the share of the discrepancy specific to mixtures."""
    comps = fld.get("by_length_scale") or []
    ps = [float(c["p"]) for c in comps]
    if comps and max(ps) <= 1.5 * min(ps):
        lo, hi = (float(c["length_scale"]) for c in (comps[0], comps[-1]))
        ell = f"length scale not identified, averaged over {lo:g}-{hi:g}"
    else:
        ell = f"length scale {float(fld.get('length_scale') or 0.0):g}"
    p = fld.get("p_structure")
    return (("" if p is None else f"probability {float(p):.2f}, ") + ell
            + f", share {float(fld.get('share') or 0.0):.2f}")


def _draw_components(comps: list[dict], n_draws: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Per draw a length scale and an amplitude per unit distance, s1'_s sqrt(share), from the
    components' posterior probabilities p (stratified: round(p n_draws) draws each, in a
    seeded random order); the probability missing from the components (white noise, ell = 0)
    gets amplitude 0 (its ell is set to 1 only to keep omega finite)."""
    p = np.array([float(c["p"]) for c in comps])
    edges = np.round(np.cumsum(np.concatenate([[0.0], p])) * n_draws).astype(int)
    edges = np.minimum(edges, n_draws)
    ell, amp = np.ones(n_draws), np.zeros(n_draws)
    for c, a, b in zip(comps, edges[:-1], edges[1:]):
        ell[a:b] = float(c["length_scale"])
        amp[a:b] = slope_draws(c, n_draws)[a:b] * math.sqrt(float(c["share"]))
    order = rng.permutation(n_draws)
    return ell[order], amp[order]


def field_value(amp, omega, phase, h):
    """f(h) for one draw (JAX): amp sqrt(2/M) sum_m cos(omega_m . h + phase_m)."""
    import jax.numpy as jnp

    m = omega.shape[-2]
    return amp * jnp.sqrt(2.0 / m) * jnp.sum(jnp.cos(omega @ h + phase))
