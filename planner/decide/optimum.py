"""The optimal mixture: exponentiated-gradient mirror descent on the simplex, vmapped over draws.

``mirror_descent(objective)`` returns a pure function h0 -> h* for one objective f(h) (any JAX
function of a (k,) weight vector). Steps are normalised by the gradient's range, the step size
decays geometrically (so weights that should vanish fall below 1e-30), and a final "face polish"
sets weights below ``FACE_TOL`` to exactly 0 whenever that does not raise the objective: optima on
faces of the simplex are reachable. Optional per-domain bounds lo <= h <= hi (``min_weight``,
data caps h_i <= max_epochs * tokens_i / D*) are enforced by the KL (Bregman) projection, which
for box constraints on the simplex is "clip, then rescale the free coordinates" to a fixed point.

``recommend(posterior, N, D, target_weights)`` is the decision: for each draw its own optimum
h*_s, the Bayes choice h_B = argmin_h E_s[L_s(h)], the posterior of h*, the predicted loss at h_B
with a 90 % interval, and the expected excess loss E_s[L_s(h_B) - L_s(h*_s)].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from planner.core.errors import FitError, InputError
from planner.model.discrepancy import field_value, mixture_field
from planner.model.laws import get_law, scale_inputs

STEPS = 400


LR0, LR1 = 1.0, 1e-3


FACE_TOL = 1e-4


def project(h, lo=None, hi=None, iters: int = 30):
    """KL projection of a positive vector onto {sum h = 1, lo <= h <= hi}."""
    h = h / jnp.sum(h)
    if lo is None and hi is None:
        return h
    lo = jnp.zeros_like(h) if lo is None else lo
    hi = jnp.ones_like(h) if hi is None else hi

    def body(_, x):
        x = jnp.clip(x, lo, hi)
        fixed = (x <= lo) | (x >= hi)
        free_mass = jnp.sum(jnp.where(fixed, 0.0, x))
        target = 1.0 - jnp.sum(jnp.where(fixed, x, 0.0))
        scale = jnp.where(free_mass > 0, target / jnp.maximum(free_mass, 1e-300), 1.0)
        return jnp.where(fixed, x, x * scale)

    return jax.lax.fori_loop(0, iters, body, h)


def mirror_descent(objective, steps: int = STEPS, lo=None, hi=None):
    """Return solve(h0) -> h minimising ``objective`` on the (bounded) simplex."""
    grad = jax.grad(objective)
    decay = (LR1 / LR0) ** (1.0 / max(steps - 1, 1))

    def step(carry, t):
        h = carry
        g = grad(h)
        g = jnp.where(jnp.isfinite(g), g, 0.0)
        span = jnp.max(g) - jnp.min(g)
        eta = LR0 * decay ** t / jnp.maximum(span, 1e-12)
        h_new = h * jnp.exp(-eta * (g - jnp.min(g)))
        h_new = jnp.maximum(h_new, 1e-300)
        return project(h_new, lo, hi), None

    def polish(h):
        floor = jnp.zeros_like(h) if lo is None else lo
        snapped = project(jnp.where(h < FACE_TOL, floor, h), lo, hi)
        better = objective(snapped) <= objective(h) + 1e-12 * jnp.abs(objective(h))
        return jnp.where(better, snapped, h)

    def solve(h0):
        h, _ = jax.lax.scan(step, project(h0, lo, hi), jnp.arange(steps))
        return polish(h)

    return solve


def _check_weights(posterior, target_weights):
    if not target_weights:
        target_weights = {t: 1.0 for t in posterior.targets[:1]} if len(posterior.targets) == 1 \
            else {t: 1.0 / len(posterior.targets) for t in posterior.targets}
    for t, w in target_weights.items():
        if t not in posterior.targets:
            raise InputError(f"unknown target {t!r} in target weights; the posterior has "
                             f"{', '.join(posterior.targets)}")
        if not np.isfinite(w) or w < 0:
            raise InputError(f"target weight for {t!r} must be >= 0, got {w}")
    if sum(target_weights.values()) <= 0:
        raise InputError("target weights must not all be zero")
    return target_weights


def _fields(posterior, names, logn, logd, S: int):
    """Per target the mixture-specific discrepancy at the target as per-draw random functions
    of h (``discrepancy.mixture_field``, as JAX arrays), or None."""

    k = len(posterior.domains)
    fields = [mixture_field(posterior[t], float(logn), float(logd), k, S) for t in names]
    fields = [None if f is None else {kk: jnp.asarray(v) for kk, v in f.items()} for f in fields]
    return fields


FIELD_POOL = 2048   # points scanned per draw when a mixture field makes the objective multimodal


FIELD_POLISH = 4    # best pool points polished by mirror descent


def field_pool(k: int, lo=None, hi=None) -> jnp.ndarray:
    """A fixed scan set on the (bounded) simplex: the centre, the vertices, and Dirichlet(1)
    and Dirichlet(0.3) points (the latter near the faces), projected onto the bounds."""
    rng = np.random.default_rng(7)
    n = (FIELD_POOL - 1 - k) // 2
    pts = np.concatenate([np.full((1, k), 1.0 / k), np.eye(k) + 1e-12,
                          rng.dirichlet(np.ones(k), n), rng.dirichlet(np.full(k, 0.3), n)])
    pts = np.maximum(pts, 1e-12)
    return jax.vmap(lambda h: project(h, lo, hi))(jnp.asarray(pts))


def draw_objective(law_name: str, logn, logd, weights, has_field: list[bool],
                   field_mean: bool = False):
    """f(params_list, fields_list, h): one draw's weighted target loss sum_t w_t L_t(h)
    exp(f_t(h)), where f_t is target t's mixture field (omitted where ``has_field`` is False).
    field_mean: use the field's expectation instead, E exp(f_t(h)) = exp(amp_t^2 / 2), which
    does not depend on h."""

    law = get_law(law_name)

    def f(params_list, fields_list, h):
        total = 0.0
        for w, p, fl, on in zip(weights, params_list, fields_list, has_field):
            val = law.point(p, logn, logd, h)
            if on and field_mean:
                val = val * jnp.exp(0.5 * fl["amp"] ** 2)
            elif on:
                val = val * jnp.exp(field_value(fl["amp"], fl["omega"], fl["phase"], h))
            total = total + w * val
        return total

    return f


def _objective_setup(posterior, N: float, D: float, target_weights, max_draws,
                     mixture_field: bool = True):
    """What every per-draw objective at one (N, D) needs: target names and weights, the law's
    parameter draws (S, ...), the mixture fields (``{}`` where a target has none, or for every
    target when ``mixture_field`` is False: the law's parameter uncertainty only) and f."""
    if not (np.isfinite(N) and np.isfinite(D) and N > 0 and D > 0):
        raise InputError(f"target budget must have positive N and D, got N={N}, D={D}")
    tw = _check_weights(posterior, target_weights)
    names = list(tw)
    w = jnp.asarray([tw[t] for t in names], dtype=jnp.float64)
    logn, logd = scale_inputs(N, D)
    params = [posterior[t].law_params(posterior.law) for t in names]
    S = min(posterior[t].n_draws for t in names)
    if max_draws:
        S = min(S, max_draws)
    params = [{k: v[:S] for k, v in p.items()} for p in params]
    fields = _fields(posterior, names, logn, logd, S) if mixture_field else [None] * len(names)
    has_field = [f is not None for f in fields]
    fields = [f if f is not None else {} for f in fields]
    f = draw_objective(posterior.law, logn, logd, w, has_field)
    return names, w, logn, logd, params, fields, has_field, f


def _at_mixtures(f, params, fields, H):
    """f for every draw (rows) at every mixture of H (J, k) (columns): (S, J)."""
    at_all = jax.vmap(f, in_axes=(0, 0, None))
    return jax.vmap(lambda h: at_all(params, fields, h), out_axes=1)(
        jnp.asarray(np.asarray(H, float)))


def objective_draws(posterior, N: float, D: float, H, target_weights=None,
                    max_draws: int | None = None, mixture_field: bool = True) -> np.ndarray:
    """Per-draw weighted target loss at mixtures H (J, k) and one (N, D), including each draw's
    mixture discrepancy where the posterior has one (unless ``mixture_field`` is False): (S, J).
    What the optima minimise."""
    _, _, _, _, params, fields, _, f = _objective_setup(posterior, N, D, target_weights,
                                                        max_draws, mixture_field)
    return np.asarray(_at_mixtures(f, params, fields, H))


def optimum_draws(posterior, N: float, D: float, target_weights=None, lo=None, hi=None,
                  max_draws: int | None = None, mixture_field: bool = True):
    """Per-draw optima and the Bayes choice.

    Returns dict with h_star (S, k), loss_at_star (S,), h_bayes (k,), loss_at_bayes (S,) (law
    values, weighted over targets, times each draw's mixture-specific discrepancy exp(f_s(h))
    where the posterior has one: ``discrepancy.mixture_field``), ``n_fields`` (targets with a
    field), ``loss_matrix``: H (J, k) -> (S, J), the same per-draw objective at any mixtures,
    and ``expected_loss``: H (J, k) -> (J,), its exact posterior expectation (what h_bayes
    minimises). mixture_field=False leaves the discrepancy out (the law's parameter
    uncertainty only)."""
    names, w, logn, logd, params, fields, has_field, f = _objective_setup(
        posterior, N, D, target_weights, max_draws, mixture_field)
    k = len(posterior.domains)
    lo_ = None if lo is None else jnp.asarray(lo, dtype=jnp.float64)
    hi_ = None if hi is None else jnp.asarray(hi, dtype=jnp.float64)
    h0 = jnp.full((k,), 1.0 / k)

    def best_of(obj, starts):
        hs = jax.vmap(mirror_descent(obj, lo=lo_, hi=hi_))(starts)
        vals = jax.vmap(obj)(hs)
        i = jnp.argmin(jnp.where(jnp.isfinite(vals), vals, jnp.inf))
        return hs[i], vals[i]

    if any(has_field):
        # a mixture field makes each draw's objective multimodal: scan a fixed pool, polish the
        # best few by mirror descent, keep the best (draws in sequence to bound memory)
        pool = field_pool(k, lo_, hi_)

        @jax.jit
        def all_draws(params, fields):
            def one(pf):
                obj = lambda h: f(pf[0], pf[1], h)  # noqa: E731
                vals = jax.vmap(obj)(pool)
                top = jnp.argsort(jnp.where(jnp.isfinite(vals), vals, jnp.inf))[:FIELD_POLISH]
                return best_of(obj, pool[top])
            return jax.lax.map(one, (params, fields))

        h_star, l_star = all_draws(params, fields)
    else:  # the law alone: one start suffices
        @jax.jit
        def per_draw(p_list, f_list):
            return best_of(lambda h: f(p_list, f_list, h), h0[None])

        h_star, l_star = jax.vmap(per_draw)(params, fields)
    at_all = jax.vmap(f, in_axes=(0, 0, None))

    # the Bayes choice minimises the posterior expected loss. The fields are independent of the
    # law's parameters and have zero mean, so E_s[L_s(h) exp(f_s(h))] = E_s[L_s(h) exp(a_s^2/2)]
    # exactly; averaging the sampled fields instead would add Monte Carlo noise of relative
    # size a / sqrt(S) that can exceed the law's differences between mixtures
    f_mean = draw_objective(posterior.law, logn, logd, w, has_field, field_mean=True)
    mean_all = jax.vmap(f_mean, in_axes=(0, 0, None))

    def expected(h):
        return jnp.mean(mean_all(params, fields, h))

    h_bayes = jax.jit(mirror_descent(expected, lo=lo_, hi=hi_))(h0)
    l_bayes = at_all(params, fields, h_bayes)

    def loss_matrix(H):
        return _at_mixtures(f, params, fields, H)

    def expected_loss(H):
        return np.asarray(jax.vmap(expected)(jnp.asarray(H, dtype=jnp.float64)))

    out = {"h_star": np.asarray(h_star), "loss_at_star": np.asarray(l_star),
           "h_bayes": np.asarray(h_bayes), "loss_at_bayes": np.asarray(l_bayes),
           "targets": names, "weights": np.asarray(w), "n_fields": int(sum(has_field)),
           "loss_matrix": loss_matrix, "expected_loss": expected_loss}
    if not (np.all(np.isfinite(out["h_star"])) and np.all(np.isfinite(out["loss_at_bayes"]))):
        raise FitError("the optimum is not finite for some posterior draws")
    return out


def recommend(posterior, N: float, D: float, target_weights: dict | None = None, seed: int = 0,
              lo=None, hi=None, interval: float = 0.9, mixture_field: bool = True) -> dict:
    """The recommendation in the ``planner optimum`` JSON format (DESIGN.md section 3).

    mean/lo/hi: posterior mean and 90 % credible bounds of each domain's optimal weight h*_i.
    recommended: the Bayes choice (minimises posterior expected loss); loss: its predicted target
    loss (mean; lo/hi a 90 % predictive interval including discrepancy and noise);
    expected_excess_loss: E_s[L_s(recommended) - L_s(h*_s)] (>= 0)."""
    od = optimum_draws(posterior, N, D, target_weights, lo=lo, hi=hi, mixture_field=mixture_field)
    q = (1 - interval) / 2
    doms = posterior.domains
    hs = od["h_star"]
    # predictive interval of the weighted target loss at the recommendation
    H = od["h_bayes"][None, :]
    parts = [wt * posterior.predictive_draws(t, np.array([N]), np.array([D]), H, seed=seed + i)[:, 0]
             for i, (t, wt) in enumerate(zip(od["targets"], od["weights"]))]
    n = min(len(p) for p in parts)
    pred = sum(p[:n] for p in parts)
    # an overflow (a tail draw of the noise or discrepancy scale) is a value above any finite
    # one: the interval's quantiles stay exact while such draws cannot reach the upper bound
    bad = ~np.isfinite(pred)
    if bad.sum() >= max(1, int(np.floor(q * len(pred))) - 1):
        raise FitError(f"the predicted loss at the recommendation is not finite for {bad.sum()} "
                       f"of {len(pred)} draws")
    pred = np.where(bad, np.inf, pred)
    excess = od["loss_at_bayes"] - od["loss_at_star"]
    extra = {}
    if hi is not None:  # data caps: which bind at the recommendation (and how often per draw)
        cap = np.asarray(hi, float)
        extra = {"caps": {d: float(c) for d, c in zip(doms, cap)},
                 "caps_binding": [d for d, c, v in zip(doms, cap, od["h_bayes"])
                                  if c < 1.0 and v >= c - 1e-6],
                 "caps_binding_fraction": {d: float(np.mean(hs[:, i] >= c - 1e-6))
                                           for i, (d, c) in enumerate(zip(doms, cap)) if c < 1.0}}
    return {
        "mean": {d: float(v) for d, v in zip(doms, hs.mean(axis=0))},
        "lo": {d: float(v) for d, v in zip(doms, np.quantile(hs, q, axis=0))},
        "hi": {d: float(v) for d, v in zip(doms, np.quantile(hs, 1 - q, axis=0))},
        "loss": {"mean": float(np.mean(od["loss_at_bayes"])),
                 "lo": float(np.quantile(pred, q)), "hi": float(np.quantile(pred, 1 - q))},
        "expected_excess_loss": float(np.mean(np.maximum(excess, 0.0))),
        "recommended": {d: float(v) for d, v in zip(doms, od["h_bayes"])},
        "target": {"N": float(N), "D": float(D)},
        "target_weights": {t: float(w) for t, w in zip(od["targets"], od["weights"])},
        "n_draws": int(hs.shape[0]),
        "n_draws_overflowing_loss": int(bad.sum()),
        "mixture_discrepancy_targets": int(od["n_fields"]),
        **extra,
    }
