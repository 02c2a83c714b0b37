"""The run-level likelihood (``RunStudentT``): its closed-form density against scipy's
multivariate Student-t on random blocks, its reduction to the univariate Student-t, and its
sampler against the same distribution."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from planner.model.numpyro_model import STUDENT_NU, RunStudentT


def _blocks(rng, sizes, pad):
    """Group ids for runs of the given sizes, then ``pad`` masked rows (group 0)."""
    group = np.concatenate([np.full(m, i) for i, m in enumerate(sizes)] + [np.zeros(pad, int)])
    mask = np.arange(len(group)) < sum(sizes)
    return group, mask


def _scipy_logpdf(y, loc, sigma, tau, sizes):
    out, i = 0.0, 0
    for m in sizes:
        cov = sigma ** 2 * np.eye(m) + tau ** 2 * np.ones((m, m))
        out += stats.multivariate_t(loc[i:i + m], cov, df=STUDENT_NU).logpdf(y[i:i + m])
        i += m
    return out


@pytest.mark.parametrize("seed", range(6))
def test_log_density_matches_scipy_multivariate_t(seed):
    rng = np.random.default_rng(seed)
    sizes = list(rng.integers(1, 9, size=rng.integers(1, 12)))
    group, mask = _blocks(rng, sizes, pad=int(rng.integers(0, 7)))
    n_groups = len(sizes) + int(rng.integers(0, 5))  # empty (padding) groups contribute nothing
    loc = rng.normal(1.0, 0.2, len(group))
    # from tau << sigma to tau >> sigma (the centred quadratic form must stay accurate there)
    sigma = float(np.exp(rng.uniform(-7, -3)))
    tau = float(np.exp(rng.uniform(-9, -2)))
    y = loc + np.where(mask, sigma * rng.standard_t(4, len(group)) + tau * rng.normal(), 9.9)
    lp = RunStudentT(jnp.asarray(loc), sigma, tau, jnp.asarray(group), n_groups,
                     jnp.asarray(mask)).log_prob(jnp.asarray(y))
    ref = _scipy_logpdf(y, loc, sigma, tau, sizes)
    # float64 against scipy's Cholesky-based density: agreement to 1e-9 relative (log
    # densities of a few hundred; scipy's own rounding is ~1e-12 of the determinant)
    assert float(lp) == pytest.approx(ref, rel=1e-9, abs=1e-8)


def test_single_observation_runs_are_univariate_student_t():
    rng = np.random.default_rng(0)
    n = 9
    loc, y = rng.normal(size=n), rng.normal(size=n)
    sigma, tau = 0.03, 0.04
    lp = RunStudentT(jnp.asarray(loc), sigma, tau, jnp.arange(n), n, jnp.ones(n, bool)
                     ).log_prob(jnp.asarray(y))
    ref = stats.t(STUDENT_NU, loc, np.hypot(sigma, tau)).logpdf(y).sum()
    assert float(lp) == pytest.approx(ref, rel=1e-12)


def test_gradient_is_finite_and_matches_finite_differences():
    rng = np.random.default_rng(3)
    sizes = [1, 4, 6, 2]
    group, mask = _blocks(rng, sizes, pad=3)
    y = jnp.asarray(rng.normal(0, 0.01, len(group)))

    def f(theta):
        loc = theta[0] + jnp.zeros(len(group))
        d = RunStudentT(loc, jnp.exp(theta[1]), jnp.exp(theta[2]), jnp.asarray(group),
                        len(sizes), jnp.asarray(mask))
        return d.log_prob(y)

    theta = jnp.array([0.002, np.log(0.01), np.log(0.005)])
    g = np.asarray(jax.grad(f)(theta))
    h = 1e-6
    fd = np.array([(f(theta + h * e) - f(theta - h * e)) / (2 * h) for e in np.eye(3)])
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-5)


def test_samples_follow_the_distribution():
    """The sampler draws the run level and the run's heavy-tail factor: a run's sum of
    residuals is Student-t(4) with scale sqrt(m sigma^2 + m^2 tau^2), and a residual minus its
    run's mean carries no tau. KS tests on 20,000 draws (p > 1e-3)."""
    sizes = [3, 1]
    group, mask = _blocks(None, sizes, pad=2)
    sigma, tau = 0.02, 0.05
    d = RunStudentT(jnp.zeros(len(group)), sigma, tau, jnp.asarray(group), 2, jnp.asarray(mask))
    x = np.asarray(d.sample(jax.random.PRNGKey(0), (20000,)))
    s = x[:, :3].sum(1)
    assert stats.kstest(s, stats.t(STUDENT_NU, 0, np.sqrt(3 * sigma ** 2 + 9 * tau ** 2)).cdf
                        ).pvalue > 1e-3
    assert stats.kstest(x[:, 3], stats.t(STUDENT_NU, 0, np.hypot(sigma, tau)).cdf).pvalue > 1e-3
    # within a run: r_1 - r_2 = sigma (eps_1 - eps_2) / sqrt(w): Student-t(4), scale sigma sqrt(2)
    assert stats.kstest(x[:, 0] - x[:, 1], stats.t(STUDENT_NU, 0, sigma * np.sqrt(2)).cdf
                        ).pvalue > 1e-3
