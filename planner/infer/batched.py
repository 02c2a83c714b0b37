"""A batched sampler for simulation-based calibration: many datasets of one padded size in one
vmapped NUTS call (compiled once), and a ``Posterior`` from raw draws."""
from __future__ import annotations

import numpy as np

from planner.model.numpyro_model import mixture_model, model_args
from planner.model.posterior import Posterior, TargetPosterior


# ------------------------------------------------------------------------------ batched sampler
def batched_nuts(law, datas, seed: int = 0, num_warmup: int = 300, num_samples: int = 200,
                 max_tree_depth: int = 8, target_accept: float = 0.9) -> dict:
    """NUTS on ``model.mixture_model`` for many datasets at once (vmapped, one compile): the
    engine of simulation-based calibration, where hundreds of fits must stay cheap.

    ``datas``: ``model.ModelData`` of one padded size and one ``n_groups``. Each dataset gets its
    own chain, warm-up (step size, dense mass matrix) and start at the prior median. Unlike
    ``inference.fit`` there is no MAP start, so use it on well-posed small problems.
    Returns {"z": unconstrained sample sites (R, S, ...), "params": natural law parameters and
    sigma/tau (R, S, ...), "num_steps": (R, S), "diverging": (R, S)}."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer.hmc import hmc
    from numpyro.infer.initialization import init_to_median
    from numpyro.infer.util import constrain_fn, initialize_model


    per = [model_args(law, d) for d in datas]
    args0 = per[0][0]
    dyn = [i for i, a in enumerate(args0) if isinstance(a, (jax.Array, np.ndarray, float))]
    if len({len(d.y) for d in datas}) != 1 or len({d.n_groups for d in datas}) != 1:
        raise ValueError("batched_nuts needs datasets of one padded size and one n_groups")
    batched = [jnp.stack([jnp.asarray(p[0][i]) for p in per]) for i in dyn]
    ys = jnp.stack([p[1]["y"] for p in per])

    def args_of(vals):
        a = list(args0)
        for i, v in zip(dyn, vals):
            a[i] = v
        return tuple(a)

    info, pe_gen, _, _ = initialize_model(
        jax.random.PRNGKey(0), mixture_model, init_strategy=init_to_median(num_samples=15),
        dynamic_args=True, model_args=args0, model_kwargs={"y": ys[0]})
    z0 = info.z

    def one(key, vals, y):
        init_kernel, sample_kernel = hmc(potential_fn_gen=pe_gen, algo="NUTS")
        margs, mkw = args_of(vals), {"y": y}
        st = init_kernel(z0, num_warmup, model_args=margs, model_kwargs=mkw, rng_key=key,
                         dense_mass=True, target_accept_prob=target_accept,
                         max_tree_depth=max_tree_depth)

        def step(s, _):
            s = sample_kernel(s, model_args=margs, model_kwargs=mkw)
            return s, (s.z, s.num_steps, s.diverging)

        # one scan over warm-up and sampling: the step compiles once
        _, (zs, steps, div) = jax.lax.scan(step, st, None, length=num_warmup + num_samples)
        zs = jax.tree_util.tree_map(lambda x: x[num_warmup:], zs)
        return zs, steps[num_warmup:], div[num_warmup:]

    keys = jax.random.split(jax.random.PRNGKey(seed), len(datas))
    zs, steps, div = jax.jit(jax.vmap(one))(keys, batched, ys)

    names = [p.name for p in law.params] + ["sigma"] + (["tau"] if datas[0].n_groups else [])

    @jax.jit
    def natural(vals, y, z):
        margs = args_of(vals)
        c = constrain_fn(mixture_model, margs, {"y": y}, z, return_deterministic=True)
        return {n: c[n] for n in names}

    params = jax.vmap(lambda v, y, z: jax.vmap(lambda zz: natural(v, y, zz))(z))(batched, ys, zs)
    return {"z": {k: np.asarray(v) for k, v in zs.items()},
            "params": {k: np.asarray(v) for k, v in params.items()},
            "num_steps": np.asarray(steps), "diverging": np.asarray(div)}


def posterior_from_draws(law: str, domains: list[str], target: str, params: dict, obs,
                         method: str = "nuts-batched"):
    """A one-target ``Posterior`` from natural-scale draws (S, ...) and the fitted
    ``runs.Observations`` (for the discrepancy distance)."""

    tp = TargetPosterior(target, {k: np.asarray(v) for k, v in params.items()},
                         {"method": method}, None, obs_logn=obs.logn, obs_logd=obs.logd)
    return Posterior(law=law, domains=list(domains), targets=[target], per_target={target: tp},
                     meta={"method": method})
