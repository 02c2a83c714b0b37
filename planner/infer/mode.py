"""The posterior mode in NumPyro's unconstrained space: L-BFGS on the model's potential from
two starts, a saddle escape, and jitted potential functions (value and gradient, Hessian, batched
value) compiled once per law, k, bucket size and site shapes. Used by the Laplace fit, and by
NUTS for its starting point and mass matrix."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from planner.model.laws import Law
from planner.model.numpyro_model import ModelData, mixture_model, model_args

log = logging.getLogger("planner.inference")


_COMPILED: dict = {}  # jitted potential functions per (law, k, shapes): data enter as arguments


MOVE_CHUNK = 50      # Metropolis steps per compiled call (``moves``); adaptation happens between


NEWTON_ITERS = 40    # damped Newton steps per conditional mode (warm-started: a few are used)


POLISH_ITERS = 200   # damped Newton steps at most to polish L-BFGS's end point (each ~5 ms)


def minimize_potential(vg, x0, maxiter: int):
    """L-BFGS on a JAX value-and-grad of the potential, keeping the best finite point seen
    (L-BFGS-B can otherwise end on a step where the density is not finite)."""
    best = {"v": np.inf, "x": np.asarray(x0, float)}

    def fun(f):
        v, g = vg(jnp.asarray(f))
        v = float(v)
        if not np.isfinite(v) or not np.all(np.isfinite(np.asarray(g))):
            return 1e30, np.zeros_like(f)
        if v < best["v"]:
            best["v"], best["x"] = v, np.array(f, float)
        return v, np.asarray(g)

    res = optimize.minimize(fun, np.asarray(x0, float), jac=True, method="L-BFGS-B",
                            options={"maxiter": maxiter, "ftol": 1e-14, "gtol": 1e-8})
    return best["x"], best["v"], bool(res.success)


def newton(vg, hess, r0, iters: int = NEWTON_ITERS):
    """Damped Newton from ``r0`` with the Hessian's eigenvalues made positive (a saddle is
    stepped off, not towards): (r, value, Hessian at r), or (r0, inf, None) when the start is
    not finite. Warm-started from a neighbouring cell (Laplace) or from L-BFGS's end point (the
    mode search) it converges in a few steps, where L-BFGS needed hundreds or thousands on these
    ill-conditioned posteriors (curvatures from 0.4 to 1e7)."""
    r = np.asarray(r0, float)
    v, g = vg(r)
    if not (np.isfinite(v) and np.all(np.isfinite(g))):
        return r, np.inf, None
    H = hess(r)
    for _ in range(iters):
        w, V = np.linalg.eigh(0.5 * (H + H.T))
        if not np.all(np.isfinite(w)):
            break
        w = np.maximum(np.abs(w), 1e-10 * max(np.abs(w).max(), 1e-300))
        step = -V @ ((V.T @ g) / w)
        t, moved = 1.0, False
        while t > 1e-6:
            v_new, g_new = vg(r + t * step)
            if np.isfinite(v_new) and v_new <= v + 1e-4 * t * float(g @ step):
                moved = True
                break
            t /= 2
        if not moved:
            break
        r, dv, v, g = r + t * step, v - v_new, v_new, g_new
        H = hess(r)
        if dv < 1e-10 * (1 + abs(v)) and np.max(np.abs(g)) < 1e-6:
            break
    return r, v, H


def dynamic_args(args: tuple) -> tuple:
    """The array part of ``model_args`` (law, k and n_groups are static)."""
    _, _, logn, logd, H, mask, group, _, logd_ref, log_href = args
    return (logn, logd, H, mask, group, jnp.asarray(logd_ref), log_href)


def potential_fns(args: tuple, z_template: dict) -> dict:
    """Jitted potential (negative log density) on a flat unconstrained vector: its value and
    gradient, Hessian and batched value, with the data as arguments (compiled once per law,
    k, bucket size and site shapes, not once per fit)."""
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import potential_energy

    law, k, n_groups, has_href = args[0], args[1], args[7], args[9] is not None
    shapes = tuple((n, tuple(np.shape(v))) for n, v in sorted(z_template.items()))
    key = ("potential", law.name, k, n_groups, has_href, shapes)
    if key not in _COMPILED:
        _, unravel = ravel_pytree(z_template)

        def pot(flat, dyn, y):
            logn, logd, H, mask, group, logd_ref, log_href = dyn
            margs = (law, k, logn, logd, H, mask, group, n_groups, logd_ref, log_href)
            return potential_energy(mixture_model, margs, {"y": y}, unravel(flat))

        batch = jax.vmap(pot, in_axes=(0, None, None))

        _COMPILED[key] = {"pot": pot, "value_and_grad": jax.jit(jax.value_and_grad(pot)),
                          "hessian": jax.jit(jax.hessian(pot)),
                          "batch": jax.jit(batch), "moves": make_moves(batch)}
    return _COMPILED[key]


def make_moves(batch):
    """Jitted Metropolis moves for a batched potential ``batch(X, dyn, y) -> (n,)``."""

    def moves(X, U, L, log_scale, key, adapt, dyn, y):
        """MOVE_CHUNK random-walk Metropolis steps of every row of X (potentials U),
        proposal exp(log_scale) L z; with ``adapt`` the scale moves towards 25 %
        acceptance. Returns (X, U, log_scale, mean acceptance)."""
        def step(carry, k):
            X, U, log_scale = carry
            k1, k2 = jax.random.split(k)
            prop = X + jnp.exp(log_scale) * (jax.random.normal(k1, X.shape) @ L.T)
            Up = batch(prop, dyn, y)
            Up = jnp.where(jnp.isfinite(Up), Up, jnp.inf)
            acc = jnp.log(jax.random.uniform(k2, (X.shape[0],))) < U - Up
            X = jnp.where(acc[:, None], prop, X)
            U = jnp.where(acc, Up, U)
            rate = jnp.mean(acc)
            return (X, U, log_scale + jnp.where(adapt, rate - 0.25, 0.0)), rate

        (X, U, log_scale), rates = jax.lax.scan(step, (X, U, log_scale),
                                                jax.random.split(key, MOVE_CHUNK))
        return X, U, log_scale, jnp.mean(rates)

    return jax.jit(moves)


@dataclass
class Mode:
    """The posterior mode in NumPyro's unconstrained space, with what is needed to evaluate the
    potential around it."""

    args: tuple
    kwargs: dict
    unravel: object
    x: np.ndarray       # flat unconstrained mode
    value: float        # potential (negative log density) there; inf if none was finite
    converged: bool
    fns: dict           # ``potential_fns``: value_and_grad, hessian, batch (flat, dyn, y)
    dyn: tuple
    y: object
    _H: np.ndarray | None = None  # Hessian at x, computed once (the saddle check, the callers)

    def value_and_grad(self, x):
        return self.fns["value_and_grad"](x, self.dyn, self.y)

    def hessian(self) -> np.ndarray:
        """The Hessian of the potential at the mode ``x``."""
        if self._H is None:
            self._H = self.hessian_at(self.x)
        return self._H

    def hessian_at(self, x) -> np.ndarray:
        return np.asarray(self.fns["hessian"](jnp.asarray(x), self.dyn, self.y))

    def move_to(self, x, value, converged) -> None:
        self.x, self.value, self.converged, self._H = x, value, converged, None

    def potential_batch(self, X) -> np.ndarray:
        return np.asarray(self.fns["batch"](jnp.asarray(X), self.dyn, self.y))

    def moves(self, X, U, L, log_scale: float, key, adapt: bool):
        """MOVE_CHUNK Metropolis steps of every row of X: (X, U, log_scale, acceptance)."""
        X, U, ls, rate = self.fns["moves"](jnp.asarray(X), jnp.asarray(U), jnp.asarray(L),
                                           jnp.asarray(log_scale), key, jnp.asarray(adapt),
                                           self.dyn, self.y)
        return np.asarray(X), np.asarray(U), float(ls), float(rate)


def posterior_mode(law: Law, data: ModelData, init: dict, key, maxiter: int) -> Mode:
    """L-BFGS on the model's potential from ``init`` (the Huber optimum) and from the prior
    median; the lower mode wins.

    The Huber fit has no priors: with few runs it can run off to a degenerate basin (seen on the
    quickstart: log K_i = 21.5, logit phi = -17), where the search from it stops at a local mode
    far above the posterior's (potential 204 vs -25) with an indefinite Hessian, and the Laplace
    draws went wild. The second search costs one more L-BFGS run on already compiled code."""
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.initialization import init_to_median
    from numpyro.infer.util import init_to_value, initialize_model

    args, kwargs = model_args(law, data)
    k_huber, k_median = jax.random.split(key)
    starts = []
    try:
        starts.append(initialize_model(
            k_huber, mixture_model, model_args=args, model_kwargs=kwargs,
            init_strategy=init_to_value(values=init), dynamic_args=False)[0].z)
    except (RuntimeError, ValueError):
        # the Huber fit can land where the model's density is not finite (e.g. an overflowing
        # mixture term): only the prior median then
        log.info("MAP values are not a valid start for the sampler; using the prior median")
    starts.append(initialize_model(
        k_median, mixture_model, model_args=args, model_kwargs=kwargs,
        init_strategy=init_to_median(num_samples=101), dynamic_args=False)[0].z)
    # both starts have the same sites and shapes: one flattening, one set of compiled functions
    _, unravel = ravel_pytree(starts[0])
    best = Mode(args, kwargs, unravel, None, np.inf, False, potential_fns(args, starts[0]),
                 dynamic_args(args), kwargs["y"])
    for z in starts:
        x, v, converged = minimize_potential(best.value_and_grad, ravel_pytree(z)[0], maxiter)
        if best.x is None or v < best.value:
            best.move_to(x, v, converged)
    _polish(best)
    # L-BFGS can stop on a saddle (gradient ~ 0, an indefinite Hessian): step off it both ways
    # along the most negative curvature and keep what goes lower (a few times at most)
    for _ in range(3):
        if not np.isfinite(best.value):
            break
        Hm = best.hessian()
        if not np.all(np.isfinite(Hm)):
            break
        w, V = np.linalg.eigh(0.5 * (Hm + Hm.T))
        if w[0] >= 0:
            break
        found = False
        for step in (V[:, 0], -V[:, 0]):
            x, v, converged = minimize_potential(best.value_and_grad, best.x + step, maxiter)
            if v < best.value - 1e-6:
                best.move_to(x, v, converged)
                _polish(best)
                found = True
        if not found:
            break
    return best


def _polish(mode: Mode) -> None:
    """Damped Newton from L-BFGS's end point: on RegMix's 40-dimensional potential L-BFGS stops
    at its 2,000 iterations 0.03 nats above the mode, up to 0.35 away in a weakly identified
    coordinate, with gradient entries of 1; Newton reaches a gradient of 1e-7 in 0.1 s."""
    if not np.isfinite(mode.value):
        return

    def vg(r):
        v, g = mode.value_and_grad(jnp.asarray(r))
        return float(v), np.asarray(g)

    x, v, H = newton(vg, mode.hessian_at, mode.x, iters=POLISH_ITERS)
    if H is not None and v <= mode.value:
        g = vg(x)[1]
        mode.move_to(x, v, mode.converged or bool(np.max(np.abs(g)) < 1e-4))
        mode._H = H


def site_offsets(z: dict) -> dict[str, np.ndarray]:
    """Indices of each site in the flat unconstrained vector (``ravel_pytree`` of a dict orders
    the sites by name)."""
    offsets, i = {}, 0
    for name in sorted(z):
        n = int(np.size(z[name]))
        offsets[name] = np.arange(i, i + n)
        i += n
    return offsets
