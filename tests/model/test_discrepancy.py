"""The discrepancy term: distance, per-draw scale, the slope fit against known answers, and its
effect on predictive intervals. All analytic or simulated errors; no sampler runs here."""
import math

import numpy as np
import pytest

from planner.model import discrepancy as dm
from planner.model.posterior import Posterior, TargetPosterior
from tests.support.sim import TRUE_ADDITIVE


def _tp(S=1, disc=None, obs=((0.0, 0.0), (1.0, 0.0)), sigma=0.005):
    draws = {k: np.repeat(np.asarray(v, float)[None], S, axis=0) for k, v in TRUE_ADDITIVE.items()}
    draws["sigma"] = np.full(S, sigma)
    obs = np.asarray(obs, float)
    return TargetPosterior("web", draws, {}, None, obs_logn=obs[:, 0], obs_logd=obs[:, 1],
                           discrepancy=disc)


def test_distance_is_to_the_nearest_observed_design():
    tp = _tp()
    d = dm.distance(tp, [0.0, 1.0, 4.0, 1.0], [0.0, 0.0, 4.0, 2.0])
    np.testing.assert_allclose(d, [0.0, 0.0, 5.0, 2.0])
    assert dm.distance(_tp(obs=np.zeros((0, 2))), [1.0], [1.0]).tolist() == [0.0]


def test_log_sd_shapes_and_zero_at_observed_designs():
    assert dm.log_sd(_tp(), [3.0], [0.0]) == 0.0  # no discrepancy attached
    tp = _tp(S=5, disc={"kind": "x", "s0": 0.0, "s1": 0.02, "s1_log_sd": 0.0})
    sd = dm.log_sd(tp, [0.0, 3.0], [0.0, 0.0])
    assert sd.shape == (5, 2)
    np.testing.assert_allclose(sd[:, 0], 0.0)
    np.testing.assert_allclose(sd[:, 1], 0.04)  # 2 e-folds from (1, 0)


def test_uncertain_slope_gives_lognormal_per_draw_scales():
    tp = _tp(S=2000, disc={"kind": "x", "s0": 0.0, "s1": 0.02, "s1_log_sd": 0.5})
    s = dm.log_sd(tp, [2.0], [0.0])[:, 0]  # distance 1
    # stratified normal scores: median and log-sd are exact up to the discretisation
    assert math.isclose(np.median(s), 0.02, rel_tol=1e-3)
    assert math.isclose(np.std(np.log(s)), 0.5, rel_tol=0.01)
    np.testing.assert_array_equal(s, dm.log_sd(tp, [2.0], [0.0])[:, 0])  # deterministic


def test_slope_recovered_from_independent_errors():
    # 400 mixture-specific errors with sd 0.03 per e-fold: the log-slope estimate has a
    # standard error of about 1/sqrt(2 n) = 0.035, so +-12 % is more than 3 standard errors
    rng = np.random.default_rng(0)
    n, s1 = 400, 0.03
    d = rng.uniform(1.0, 3.0, n)
    pv, nv = np.full(n, 1e-5), 2e-5
    e = rng.standard_normal(n) * np.sqrt(pv + nv + (s1 * d) ** 2)
    out = dm.fit_slope(e, pv, nv, d)
    assert out["kind"] == dm.KIND_HELDOUT
    assert abs(math.log(out["s1"] / s1)) < 0.12, out
    # the spread of log s1 stays near 0.2, not 0.035: one held-out scale cannot rule out that the
    # next scale's errors share a larger common shift (rho), which only the mean error informs
    assert out["s1_log_sd"] < 0.3
    assert out["evidence"]["shared_share_rho"] < 0.3  # no shared shift in these errors


def test_shared_shift_counts_as_one_observation():
    # 200 held-out designs that all miss by the same 5 % (one scale-wide bias): the slope is
    # about 0.05 / 2 e-folds but rests on one number, so it must stay uncertain (log-sd near
    # the prior's 1), whereas 200 independent errors of that size pin it much better
    rng = np.random.default_rng(1)
    n = 200
    d = np.full(n, 2.0)
    e = 0.05 + 0.002 * rng.standard_normal(n)
    out = dm.fit_slope(e, np.full(n, 1e-6), 4e-6, d)
    ev = out["evidence"]
    assert ev["shared_share_rho"] > 0.8
    assert out["s1_log_sd"] > 0.4
    assert 0.01 < out["s1"] < 0.06
    indep = dm.fit_slope(0.05 * rng.choice([-1, 1], n), np.full(n, 1e-6), 4e-6, d)
    assert indep["s1_log_sd"] < 0.3 and abs(math.log(indep["s1"] / 0.025)) < 0.1
    assert indep["s1_log_sd"] < out["s1_log_sd"] / 2


def test_errors_within_noise_shrink_the_slope_below_the_prior():
    rng = np.random.default_rng(2)
    n = 100
    d = np.full(n, 2.0)
    e = rng.standard_normal(n) * math.sqrt(2e-5)
    out = dm.fit_slope(e, np.zeros(n), 2e-5, d)
    assert out["s1"] < dm.PRIOR_S1 / 2
    # the upper tail stays near the prior median: a zero mean error is one observation of the
    # shared shift, which cannot rule out a large shift at the next scale (rho near 1)
    assert out["evidence"]["s1_q95"] < 1.5 * dm.PRIOR_S1


def test_prior_default_when_nothing_is_away_from_the_data():
    out = dm.fit_slope(np.array([0.01, -0.02]), np.zeros(2), 1e-5, np.zeros(2))
    assert out["kind"] == dm.KIND_PRIOR
    assert out["s1"] == dm.PRIOR_S1 and out["s1_log_sd"] == dm.PRIOR_LOG_SD
    assert "reason" in out["evidence"]


def _one_draw_post(disc, sigma):
    tp = _tp(S=1, disc=disc, obs=[(np.log(0.1), 0.0)], sigma=sigma)
    return Posterior("additive", ["code", "web", "books"], ["web"], {"web": tp})


# a design 2 e-folds in log N above the only observed one (N = 1e7, D = 1e9)
_N, _D, _H = np.array([1e7 * math.e ** 2]), np.array([1e9]), np.array([[0.3, 0.4, 0.3]])


def test_predictive_interval_adds_discrepancy_in_quadrature():
    """One draw (a MAP fit) with s1 = 0.05: log predictive sd = sqrt((2 s1)^2 + 2 sigma^2)
    (Student-t(4) noise of scale sigma has variance 2 sigma^2); 40,000 samples of a nearly
    normal sum put the sample sd within +-2 %."""
    sigma = 0.01
    post = _one_draw_post({"kind": "x", "s0": 0.0, "s1": 0.05, "s1_log_sd": 0.0}, sigma)
    lg = np.log(post.predictive_draws("web", _N, _D, _H, seed=0, min_samples=40000)[:, 0])
    expect = math.sqrt((2 * 0.05) ** 2 + 2 * sigma ** 2)
    assert abs(np.std(lg) / expect - 1) < 0.02


def test_predictive_interval_without_discrepancy_is_noise_only():
    """No discrepancy: the log predictive is Student-t(4) of scale sigma around the law, whose
    interquartile range is 1.4814 sigma (t(4) quartile 0.7407); +-4 % at 40,000 samples."""
    sigma = 0.01
    post = _one_draw_post(None, sigma)
    lg = np.log(post.predictive_draws("web", _N, _D, _H, seed=0, min_samples=40000)[:, 0])
    iqr = np.subtract(*np.quantile(lg, [0.75, 0.25]))
    assert abs(iqr / (1.4814 * sigma) - 1) < 0.04


# ------------------------------------------------------------------ mixture structure over h
def _kernel_errors(ell, rho, n=256, k=5, s1=0.03, seed=0):
    rng = np.random.default_rng(seed)
    H = rng.dirichlet(np.full(k, 0.5), n)
    d = np.full(n, 2.0)
    C = s1 ** 2 * np.outer(d, d) * (rho + (1 - rho) * dm.mixture_kernel(H, ell))
    e = np.linalg.cholesky(C + 1e-5 * np.eye(n)) @ rng.standard_normal(n)
    return e, H, d


@pytest.mark.parametrize("ell", [0.0, 0.2, 0.8])
def test_mixture_length_scale_recovered(ell):
    # 256 held-out errors drawn with a known kernel over h (noise variance 1e-5 = 5e-6 + 5e-6):
    # the grid posterior puts nearly all its mass on the true length scale (the neighbours
    # on the factor-2 grid get below 1e-3 in these draws); s1 within the +-40 % that one
    # held-out scale allows (its log-sd is about 0.3)
    e, H, d = _kernel_errors(ell, 0.3)
    out = dm.fit_slope(e, np.full(len(e), 5e-6), 5e-6, d, H=H)
    st = out["evidence"]["mixture_structure"]
    assert st["length_scale"] == ell, st
    assert abs(math.log(out["s1"] / 0.03)) < 0.4
    if ell == 0:
        assert out["mixture_field"] is None
    else:  # the kernel model's own slope and share (true 0.03 and 0.7) drive the field; at a
        # long length scale the field is partly confounded with the shared shift over these
        # 256 mixtures (0.38 at ell = 0.8), so the share is only bounded away from zero
        fld = out["mixture_field"]
        assert fld["length_scale"] == ell and abs(math.log(fld["s1"] / 0.03)) < 0.4
        assert 0.3 < fld["share"] <= 1.0
    assert out["evidence"]["mixture_structure"]["n_rows"] == len(e)


def test_kernel_likelihood_matches_a_direct_gaussian():
    # the eigendecomposition route against scipy's dense multivariate normal at a few grid points
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(3)
    n = 12
    H = rng.dirichlet(np.ones(3), n)
    e, v, d = rng.normal(0, 0.05, n), rng.uniform(1e-4, 4e-4, n), rng.uniform(0.5, 3.0, n)
    K = dm.mixture_kernel(H, 0.3)
    ll = dm._loglik_grid_kernel(e, v, d, K)
    for i, j in [(0, 0), (120, 10), (200, 44), (60, 30)]:
        s2, rho = math.exp(2 * dm._GRID_LOG_S1[i]), dm._GRID_RHO[j]
        S = np.diag(v) + s2 * np.outer(d, d) * (rho + (1 - rho) * K)
        assert math.isclose(ll[i, j], multivariate_normal(np.zeros(n), S).logpdf(e), rel_tol=1e-9)
    # with K = I the kernel route is the white (Sherman-Morrison) route. Each log-likelihood is a
    # sum of terms of size up to ~60 nats (log det and the quadratic form) that can cancel to
    # near 0, so round-off is relative to that scale: 1e-9 of it (atol 1e-7), beside rtol 1e-9.
    white = dm._loglik_grid(e, v, d)
    np.testing.assert_allclose(dm._loglik_grid_kernel(e, v, d, np.eye(n)), white, rtol=1e-9,
                               atol=1e-9 * 100)


_FIELD = {"length_scale": 0.3, "s1": 0.02, "s1_log_sd": 0.0, "share": 0.5}
_FIELD_DISC = {"kind": "x", "s0": 0.0, "s1": 0.02, "s1_log_sd": 0.0, "mixture_field": _FIELD}


def _field_np(fld, H):
    """(S, m) field values at mixtures H (m, k), in NumPy; the JAX field_value checked once."""
    M = fld["omega"].shape[1]
    out = fld["amp"][:, None] * np.sqrt(2.0 / M) * np.cos(
        np.einsum("smk,jk->sjm", fld["omega"], H) + fld["phase"][:, None, :]).sum(-1)
    v = float(dm.field_value(fld["amp"][0], fld["omega"][0], fld["phase"][0], H[0]))
    assert math.isclose(v, out[0, 0], rel_tol=1e-9, abs_tol=1e-12)
    return out


def test_mixture_field_has_the_kernel_covariance():
    # f_s(h) over 4000 draws at three mixtures: variance a^2 = (s1 dist)^2 share and covariance
    # a^2 K(h, h'); the sample moments of 4000 draws (and 128 random features each) are within
    # about 3 % (2.2 % sampling sd of a variance), so +-8 %
    tp = _tp(S=4000, disc=_FIELD_DISC)
    fld = dm.mixture_field(tp, 3.0, 0.0, 3, 4000)   # 2 e-folds from (1, 0)
    H = np.array([[0.2, 0.5, 0.3], [0.3, 0.4, 0.3], [0.8, 0.1, 0.1]])
    vals = _field_np(fld, H)
    a2 = (0.02 * 2) ** 2 * 0.5
    C = np.cov(vals.T)
    K = dm.mixture_kernel(H, 0.3)
    np.testing.assert_allclose(np.diag(C), a2, rtol=0.08)
    assert abs(C[0, 1] / a2 - K[0, 1]) < 0.08 and abs(C[0, 2] / a2 - K[0, 2]) < 0.08
    # none without structure over h, or at an observed scale
    assert dm.mixture_field(_tp(S=5, disc={**_FIELD_DISC, "mixture_field": None}), 3.0, 0.0, 3, 5) is None
    assert dm.mixture_field(tp, 1.0, 0.0, 3, 5) is None


@pytest.mark.slow
def test_optimum_with_mixture_field_matches_brute_force():
    # one draw whose law is perturbed by its own field: mirror descent must find the minimum of
    # L(h) exp(f(h)) that a 0.0025-step simplex grid finds (the grid's own error is below the
    # 0.01 tolerance on h; the objective agrees to 1e-5 relative)
    from planner.decide.optimum import optimum_draws
    from planner.model.laws import get_law, scale_inputs

    disc = {**_FIELD_DISC, "mixture_field": {**_FIELD, "s1": 0.05, "share": 1.0}}
    post = Posterior("additive", ["code", "web", "books"], ["web"],
                     {"web": _tp(S=3, disc=disc, obs=[(np.log(0.1), 0.0)])})
    N, D = 1e9, 1e9
    od = optimum_draws(post, N, D)
    assert od["n_fields"] == 1
    logn, logd = scale_inputs(N, D)
    fld = dm.mixture_field(post["web"], float(logn), float(logd), 3, 3)
    law = get_law("additive")
    g = np.arange(0, 1.0000001, 0.0025)
    grid = np.array([(x, y, 1 - x - y) for x in g for y in g if x + y <= 1 + 1e-12])
    grid = np.clip(grid, 0, 1)
    p = {k: np.asarray(v)[0] for k, v in post["web"].law_params("additive").items()}
    base = np.asarray(law.predict_draws({k: v[None] for k, v in p.items()},
                                        np.full(len(grid), logn), np.full(len(grid), logd), grid))[0]
    for s in range(3):
        f = _field_np(fld, grid)[s]
        obj = base * np.exp(f)
        j = int(np.argmin(obj))
        assert np.abs(od["h_star"][s] - grid[j]).max() < 0.01, (s, od["h_star"][s], grid[j])
        assert od["loss_at_star"][s] <= obj[j] * (1 + 1e-5)
    # the three draws share the law but not the field: their optima differ
    assert np.ptp(od["h_star"], axis=0).max() > 0.01
    # and the loss matrix is the same objective
    np.testing.assert_allclose(np.asarray(od["loss_matrix"](od["h_star"]))[np.arange(3), np.arange(3)],
                               od["loss_at_star"], rtol=1e-12)


@pytest.mark.slow
def test_h_star_posterior_widens_with_distance_from_the_data():
    # identical law draws: without a field h* has no spread; with one the spread grows with the
    # target's distance from the observed runs (the field's amplitude is s1 * distance)
    from planner.decide.optimum import recommend

    def spread(disc, N):
        post = Posterior("additive", ["code", "web", "books"], ["web"],
                         {"web": _tp(S=64, disc=disc, obs=[(np.log(0.1), 0.0)])})
        r = recommend(post, N, 1e9)
        return max(r["hi"][d] - r["lo"][d] for d in post.domains), r["expected_excess_loss"], r

    s0, e0, r0 = spread(None, 1e10)
    s_near, e_near, _ = spread(_FIELD_DISC, 1e8)
    s_far, e_far, r_far = spread(_FIELD_DISC, 1e10)
    assert s0 < 1e-6 and e0 < 1e-9
    assert 0 < s_near < s_far and 0 < e_near < e_far
    # the field has mean zero and is independent of the law, so the Bayes choice (the minimum of
    # the exact posterior expected loss) is the law's own optimum; mirror descent reproduces
    # it to well below 1e-6
    for d in r0["recommended"]:
        assert abs(r_far["recommended"][d] - r0["recommended"][d]) < 1e-6


def test_order_scores_hand_computed():
    # 4 draws over 3 mixtures whose true losses rise 1 < 2 < 3. P(0 < 1) = 3/4, P(0 < 2) = 1,
    # P(1 < 2) = 3/4, all true: Brier (1/16 + 0 + 1/16) / 3; log score -(2 log 3/4 + log 0.999) / 3
    # (the certain pair clipped to 0.999); only the certain pair is called at 95 %, rightly
    from planner.calibrate.checks import order_scores

    L = np.array([[1, 2, 3], [1, 2, 3], [2, 1, 3], [1, 3, 2]], float)
    out = order_scores(L, np.array([1.0, 2.0, 3.0]))
    assert out["n_pairs"] == 3 and out["accuracy"] == 1.0
    assert math.isclose(out["brier"], 0.125 / 3, rel_tol=1e-12)
    assert math.isclose(out["log_score"], -(2 * math.log(0.75) + math.log(0.999)) / 3, rel_tol=1e-12)
    assert math.isclose(out["share_called_95"], 1 / 3) and out["wrong_among_called_95"] == 0.0
    # reversed truth: every call is wrong
    assert order_scores(L, np.array([3.0, 2.0, 1.0]))["wrong_among_called_95"] == 1.0


def test_one_heldout_mixture_keeps_the_field():
    # three checkpoints of ONE held-out run (one mixture), errors growing with the distance as
    # the discrepancy model says (0.4 per e-fold): nothing in them can tell white noise over h
    # from a smooth field (every ell > 0 gives them the same all-ones kernel, and the white
    # model at rho -> 1 is the same rank-one covariance), so the length-scale posterior stays
    # at or above its uniform prior (7 of 8 grid points smooth: 0.875; the white model's extra
    # freedom, rho < 1, only costs it evidence on errors this proportional to d: 0.996 here)
    # and the field is attached rather than dropped with whichever mode wins by a hair
    d = np.array([0.7, 0.8, 0.9])
    e = 0.4 * d + np.array([0.001, -0.001, 0.0])
    H = np.tile([0.2, 0.3, 0.5], (3, 1))
    out = dm.fit_slope(e, np.full(3, 1e-4), 1e-4, d, H=H)
    fld = out["mixture_field"]
    assert fld is not None and fld["p_structure"] > 0.8
    assert len(fld["by_length_scale"]) == len(dm.GRID_ELL) - 1
    assert abs(sum(c["p"] for c in fld["by_length_scale"]) - fld["p_structure"]) < 1e-12


def test_field_averages_over_length_scales():
    # two smooth components with p 0.3 and 0.5 and white noise with 0.2: 20 % of the draws get no
    # field; E[f^2] = sum_c p_c (s1_c dist)^2 share_c (slopes certain, s1_log_sd 0). The
    # allocation is stratified (exact counts); the variance over 4000 draws x 128 features is
    # within about 4 % (sampling sd of a mean of squares of a scale mixture), so +-10 %
    comps = [{"length_scale": 0.2, "p": 0.3, "s1": 0.02, "s1_log_sd": 0.0, "share": 0.5},
             {"length_scale": 0.8, "p": 0.5, "s1": 0.04, "s1_log_sd": 0.0, "share": 0.8}]
    fld = {**comps[1], "p_structure": 0.8, "by_length_scale": comps}
    tp = _tp(S=4000, disc={**_FIELD_DISC, "mixture_field": fld})
    f = dm.mixture_field(tp, 3.0, 0.0, 3, 4000)   # 2 e-folds from (1, 0)
    assert np.sum(f["amp"] == 0) == 800
    np.testing.assert_allclose(np.sort(np.unique(f["amp"])),
                               [0.0, 0.02 * 2 * math.sqrt(0.5), 0.04 * 2 * math.sqrt(0.8)])
    vals = _field_np(f, np.array([[0.2, 0.5, 0.3]]))
    want = 0.3 * (0.02 * 2) ** 2 * 0.5 + 0.5 * (0.04 * 2) ** 2 * 0.8
    assert abs(np.mean(vals ** 2) / want - 1) < 0.10


def test_field_summary_says_when_the_length_scale_is_not_identified():
    flat = [{"length_scale": e, "p": 0.125} for e in (0.05, 0.1, 3.2)]
    fld = {"length_scale": 0.05, "share": 0.51, "p_structure": 0.875, "by_length_scale": flat}
    assert dm.field_summary(fld) == ("probability 0.88, length scale not identified, averaged "
                                     "over 0.05-3.2, share 0.51")
    peaked = [{"length_scale": 0.05, "p": 0.01}, {"length_scale": 0.4, "p": 0.9}]
    fld = {"length_scale": 0.4, "share": 0.7, "p_structure": 0.91, "by_length_scale": peaked}
    assert dm.field_summary(fld) == "probability 0.91, length scale 0.4, share 0.70"
    assert dm.field_summary({"length_scale": 0.3, "share": 0.5}) == "length scale 0.3, share 0.50"
