"""The discrepancy term: distance, per-draw scale, the slope fit against known answers, and its
effect on predictive intervals. All analytic or simulated errors; no sampler runs here."""
import math

import numpy as np
import pytest

from planner import discrepancy as dm
from planner.posterior import Posterior, TargetPosterior
from tests.sim import TRUE_ADDITIVE


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
