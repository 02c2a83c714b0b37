"""The sampler's coordinates (``planner.infer.coords``): the map and its inverse, the Jacobian's
log determinant against finite differences, and NUTS in these coordinates reproducing a known
distribution of the model's sites (a wrong Jacobian would bias it)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from planner.infer import coords as cc

# refs: (log n_lo, log n_hi, log d_lo, log d_hi, log d_ref) then one pivot per domain
REFS = jnp.asarray([1.1, 2.5, 0.4, 3.2, 1.9, 2.0, -1.5, 0.7])
# flat layout: the h-free block at 0..4 (BLOCK order), log K at 5..7, log g at 8..10, sigma 11
LAYOUT = {"idx": (0, 1, 2, 3, 4), "k_idx": (5, 6, 7), "g_idx": (8, 9, 10)}
CASES = [cc.Coords(size_slope=True, data_slope=True, **LAYOUT),
         cc.Coords(size_slope=True, data_slope=False, **LAYOUT),
         cc.Coords(size_slope=False, data_slope=True, **LAYOUT)]
# a typical point: log S, logit phi, log A, log a, log b, log K (3), log g (3), log sigma
Z0 = np.array([0.6, 1.5, -0.2, -1.2, -1.3, -1.0, -2.0, 0.3, -0.7, -0.3, -1.5, -5.0])


def _points(n, seed=0):
    return Z0 + 0.3 * np.random.default_rng(seed).standard_normal((n, len(Z0)))


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.describe())
def test_round_trip(c):
    z = jnp.asarray(_points(20))
    w = cc.from_model(c, z, REFS)
    np.testing.assert_allclose(cc.to_model(c, w, REFS), z, atol=1e-12)
    assert not np.allclose(w, z)  # the map is not the identity


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.describe())
def test_log_det_matches_finite_differences(c):
    for z in _points(3, seed=1):
        w = np.asarray(cc.from_model(c, jnp.asarray(z), REFS))
        h = 1e-6
        J = np.stack([(np.asarray(cc.to_model(c, jnp.asarray(w + h * e), REFS))
                       - np.asarray(cc.to_model(c, jnp.asarray(w - h * e), REFS))) / (2 * h)
                      for e in np.eye(len(w))], axis=1)
        fd = np.linalg.slogdet(J)[1]
        # central differences in float64: Jacobian entries to ~1e-9, log det to ~1e-7
        assert float(cc.log_det_jacobian(c, jnp.asarray(w), REFS)) == pytest.approx(fd, abs=1e-6)


def test_where_no_axis_varies_only_the_shear_applies():
    c = cc.Coords(idx=(0, 1, 2, 3, 4), size_slope=False, data_slope=False,
                  k_idx=(5, 6, 7), g_idx=(8, 9, 10))
    z = jnp.asarray(Z0)
    w = cc.from_model(c, z, REFS)
    np.testing.assert_array_equal(w[:5], z[:5])
    np.testing.assert_allclose(w[5:8], z[5:8] + REFS[5:] * jnp.exp(z[8:11]))
    assert float(cc.log_det_jacobian(c, w, REFS)) == 0.0


@pytest.mark.slow
def test_nuts_in_sampler_coordinates_reproduces_a_known_distribution():
    """The model's sites Gaussian with known moments (the priors of the h-free block and of
    the mixture terms); NUTS moves in the sampler's coordinates with the potential
    U(z(w)) - log|det dz/dw| and its draws, mapped back, must have those moments. 4 chains x
    1,000 draws: the means' standard errors are ~0.02-0.05 sd at the ESS NUTS reaches here,
    so 0.15 sd (means) and 10 % (sds) are 3+ standard errors."""
    from numpyro.infer import MCMC, NUTS

    c = CASES[0]
    loc = jnp.asarray(Z0)
    # the priors' scales for the block (log S, logit phi, log A, log a, log b), then K, g, sigma;
    # narrower for the h-free block than its priors so the E > 0 wall stays far
    scale = jnp.asarray([0.1, 0.3, 0.3, 0.3, 0.2, 0.8, 0.8, 0.8, 0.4, 0.4, 0.4, 1.0])

    def potential(w):
        z = cc.to_model(c, w, REFS)
        return 0.5 * jnp.sum(((z - loc) / scale) ** 2) - cc.log_det_jacobian(c, w, REFS)

    w0 = cc.from_model(c, loc, REFS)
    mcmc = MCMC(NUTS(potential_fn=potential, dense_mass=True), num_warmup=500,
                num_samples=1000, num_chains=4, chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), init_params=jnp.tile(w0, (4, 1)))
    z = np.asarray(cc.to_model(c, mcmc.get_samples(), REFS))
    assert np.all(np.isfinite(z))
    np.testing.assert_allclose((z.mean(0) - loc) / scale, 0.0, atol=0.15)
    np.testing.assert_allclose(z.std(0) / scale, 1.0, rtol=0.1)
