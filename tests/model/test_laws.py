"""Laws: hand-computed values, nesting, faces, vectorisation, finite-difference gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from planner.core.errors import InputError
from planner.model.laws import LAWS, get_law, nested_joint_params, scale_inputs
from tests.support.sim import TRUE_ADDITIVE, TRUE_JOINT, as_jax


def test_parameter_counts_match_the_paper():
    for k in (3, 7):
        assert LAWS["additive"].n_params(k) == 5 + 2 * k
        assert LAWS["joint"].n_params(k) == 5 + 4 * k
        assert LAWS["chinchilla"].n_params(k) == 5


def test_additive_hand_computed_value():
    p = as_jax(TRUE_ADDITIVE)
    h = jnp.array([0.2, 0.5, 0.3])
    N, D = 4e8, 2e10  # n = 4, d = 20
    logn, logd = scale_inputs(N, D)
    mix = 1.0 / (2.0 * 0.2 ** 0.35 + 4.0 * 0.5 ** 0.6 + 1.5 * 0.3 ** 0.5)
    expected = 1.7 + mix + 0.45 / 4 ** 0.32 + 0.55 / 20 ** 0.28
    # float64 arithmetic throughout: agreement to 1e-12 relative
    assert float(get_law("additive").point(p, logn, logd, h)) == pytest.approx(expected, rel=1e-12)


def test_zero_weight_contributes_nothing_and_is_finite():
    p = as_jax(TRUE_ADDITIVE)
    h = jnp.array([0.0, 1.0, 0.0])
    val = get_law("additive").point(p, 0.0, 0.0, h)
    assert float(val) == pytest.approx(1.7 + 1 / 4.0 + 0.45 + 0.55, rel=1e-12)
    g = jax.grad(lambda hh: get_law("additive").point(p, 0.0, 0.0, hh))(jnp.array([0.1, 0.6, 0.3]))
    assert np.all(np.isfinite(np.asarray(g)))


def test_joint_reproduces_additive_under_nesting():
    p = as_jax(TRUE_ADDITIVE)
    pj = nested_joint_params(p)
    rng = np.random.default_rng(0)
    H = jnp.asarray(rng.dirichlet(np.ones(3), 50))
    logn = jnp.asarray(rng.normal(0, 2, 50))
    logd = jnp.asarray(rng.normal(0, 2, 50))
    a = get_law("additive").predict(p, logn, logd, H)
    j = get_law("joint").predict(pj, logn, logd, H)
    # A_h = (sum_i A h_i)^1 = A exactly on the simplex; differences are rounding only
    np.testing.assert_allclose(np.asarray(j), np.asarray(a), rtol=1e-12)


def test_predict_draws_shape_and_consistency():
    p = as_jax(TRUE_JOINT)
    S = 4
    pd_ = {k: jnp.stack([v * (1 + 0.01 * s) for s in range(S)]) for k, v in p.items()}
    H = jnp.full((5, 3), 1 / 3)
    out = get_law("joint").predict_draws(pd_, jnp.zeros(5), jnp.zeros(5), H)
    assert out.shape == (S, 5)
    p2 = {k: v[2] for k, v in pd_.items()}
    np.testing.assert_allclose(np.asarray(out[2]),
                               np.asarray(get_law("joint").predict(p2, jnp.zeros(5), jnp.zeros(5), H)),
                               rtol=1e-13)


@pytest.mark.parametrize("name,truth", [("additive", TRUE_ADDITIVE), ("joint", TRUE_JOINT)])
def test_gradients_match_finite_differences(name, truth):
    law = get_law(name)
    p = as_jax(truth)
    h = jnp.array([0.25, 0.45, 0.30])
    logn, logd = -1.3, 0.7
    for key in p:
        f = lambda v: law.point({**p, key: v}, logn, logd, h)
        g = np.asarray(jax.grad(f)(p[key]))
        base = np.asarray(p[key])
        eps = 1e-6
        flat = np.atleast_1d(base).astype(float)
        fd = np.zeros_like(flat)
        for i in range(flat.size):
            up, dn = flat.copy(), flat.copy()
            up[i] += eps
            dn[i] -= eps
            fu = float(f(jnp.asarray(up.reshape(base.shape))))
            fdn = float(f(jnp.asarray(dn.reshape(base.shape))))
            fd[i] = (fu - fdn) / (2 * eps)
        # central differences in float64 with eps=1e-6: truncation ~eps^2, rounding ~1e-16/eps,
        # so 1e-6 relative (plus 1e-9 absolute) is comfortably above both
        np.testing.assert_allclose(np.atleast_1d(g), fd, rtol=1e-6, atol=1e-9)


def test_unknown_law_is_input_error():
    with pytest.raises(InputError, match="unknown law"):
        get_law("quadratic")
