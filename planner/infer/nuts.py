"""NUTS on the NumPyro model: chains start around the posterior mode, move in the sampler
coordinates of ``planner.infer.coords`` with a dense mass matrix from the Hessian there, and report
their progress; diagnostics (rank-normalised r_hat, bulk ESS, divergences) and ArviZ data.

The run effect is integrated out in the model (``model.numpyro_model.RunStudentT``), so the
sampler sees 5 + 2k law coordinates plus sigma and tau however many runs there are. The
sampler is NumPyro's NUTS kernel (``numpyro.infer.hmc``) driven here rather than through
``numpyro.infer.MCMC``: chains are vectorised (one ``vmap``) and advanced in compiled chunks of
``NutsSettings.chunk`` iterations, so the progress line can say where they are; the compiled
functions are cached per law, data shapes and settings, with the data as arguments.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from planner.infer import coords as cc
from planner.infer.convergence import diagnostic_sites, rank_diagnostics
from planner.infer.map import MapResult
from planner.infer.mode import Mode, dynamic_args, posterior_mode, site_offsets
from planner.infer.options import NUTS_SETTINGS, R_HAT_WARN, NutsSettings
from planner.infer.progress import Reporter
from planner.model.laws import Law
from planner.model.numpyro_model import ModelData, mixture_model, reparam_values

_COMPILED: dict = {}
log = logging.getLogger("planner.inference")


MODE_MAXITER = 500  # L-BFGS iterations per start of the mode search (Newton polishes the end)


def init_values(law: Law, m: MapResult, data: ModelData) -> dict:
    """Constrained starting values (the Huber fit's) for the mode search."""
    vals = reparam_values(law, m.params, data.logd_ref, data.log_href)
    vals["sigma"] = jnp.asarray(m.sigma)
    if data.n_groups:
        vals["tau"] = jnp.asarray(0.5 * m.sigma)
    return vals


@dataclass
class NutsRun:
    """Draws (natural scale, grouped by chain: (chains, draws, ...)) and what the sampler did."""

    samples: dict
    diverging: np.ndarray            # (chains, iterations): every sampling iteration, kept or not
    num_steps: np.ndarray            # (chains, iterations) leapfrog steps per iteration
    step_size: np.ndarray            # (chains,) adapted step sizes
    thin: int
    coords: str
    seconds: dict = field(default_factory=dict)


def _compiled(mode: Mode, c: cc.Coords, num_warmup: int, s: NutsSettings):
    """Jitted (init, chunk, hessian, natural) for the sampler in coordinates ``c`` with
    step-size adaptation over ``num_warmup`` iterations after each init; the data (``dyn``,
    ``y``, ``refs``) are arguments, so refits of the same shapes reuse the code."""
    from numpyro.infer.hmc import hmc
    from numpyro.infer.util import constrain_fn

    args = mode.args
    law, k, n_groups = args[0], args[1], args[7]
    key = ("nuts", law.name, k, n_groups, args[9] is not None, len(mode.x), np.shape(args[2]),
           c, num_warmup, s)
    if key in _COMPILED:
        return _COMPILED[key]
    pot, unravel = mode.fns["pot"], mode.unravel

    def potential(w, dyn, y, refs):
        return pot(cc.to_model(c, w, refs), dyn, y) - cc.log_det_jacobian(c, w, refs)

    def potential_fn_gen(dyn, y, refs):
        return lambda w: potential(w, dyn, y, refs)

    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_fn_gen, algo="NUTS")

    def init_one(w0, rng, imm, step, dyn, y, refs):
        return init_kernel(w0, num_warmup, step_size=step, inverse_mass_matrix=imm,
                           dense_mass=True, adapt_mass_matrix=False,
                           target_accept_prob=s.target_accept_prob,
                           max_tree_depth=s.max_tree_depth, model_args=(dyn, y, refs),
                           rng_key=rng)

    def chunk_one(state, dyn, y, refs):
        def step(st, _):
            st = sample_kernel(st, model_args=(dyn, y, refs))
            return st, (st.z, st.diverging, st.num_steps)

        return jax.lax.scan(step, state, None, length=s.chunk)

    names = [p.name for p in law.params] + ["sigma"] + (["tau"] if n_groups else [])

    def natural(w, dyn, y, refs):
        logn, logd, H, mask, group, logd_ref, log_href = dyn
        margs = (law, k, logn, logd, H, mask, group, n_groups, logd_ref, log_href)
        vals = constrain_fn(mixture_model, margs, {"y": y}, unravel(cc.to_model(c, w, refs)),
                            return_deterministic=True)
        return {n: vals[n] for n in names}

    fns = {"init": jax.jit(jax.vmap(init_one, in_axes=(0, 0, None, 0, None, None, None))),
           "chunk": jax.jit(jax.vmap(chunk_one, in_axes=(0, None, None, None))),
           "pchunk": jax.pmap(jax.vmap(chunk_one, in_axes=(0, None, None, None)),
                              in_axes=(0, None, None, None)),
           "hessian": jax.jit(jax.hessian(potential)),
           "batch": jax.jit(jax.vmap(potential, in_axes=(0, None, None, None))),
           "to_w": jax.jit(lambda z, refs: cc.from_model(c, z, refs)),
           "natural": jax.jit(jax.vmap(natural, in_axes=(0, None, None, None)))}
    _COMPILED[key] = fns
    return fns


def _inverse_mass(Hw: np.ndarray) -> np.ndarray | None:
    """The inverse Hessian (eigenvalues floored at 1e-8 of the largest), or None when the
    Hessian is not usable."""
    if not np.all(np.isfinite(Hw)):
        return None
    w, V = np.linalg.eigh(0.5 * (Hw + Hw.T))
    if w.max() <= 0:
        return None
    w = np.clip(np.abs(w), w.max() * 1e-8, None)
    return (V / w) @ V.T


def _pooled_mass(draws: np.ndarray, prior_imm: np.ndarray, weight: float) -> np.ndarray:
    """Inverse mass matrix from warm-up draws (chains, n, d) pooled over chains, shrunk towards
    the Hessian's: (n S + weight H^-1) / (n + weight)."""
    X = draws.reshape(-1, draws.shape[-1])
    n = len(X)
    S = np.cov(X.T) if n > 1 else np.zeros_like(prior_imm)
    M = (n * S + weight * prior_imm) / (n + weight)
    return 0.5 * (M + M.T)


def fit_nuts(law: Law, data: ModelData, seed: int, init_map: MapResult, num_warmup: int,
             num_samples: int, num_chains: int, reporter: Reporter | None = None,
             target: str = "", settings: NutsSettings = NUTS_SETTINGS) -> NutsRun:
    """Mode search, then ``num_chains`` NUTS chains: ``num_warmup`` warm-up iterations in two
    equal stages, then ``num_samples`` kept draws per chain, every ``settings.thin``-th of
    ``num_samples * settings.thin`` sampling iterations. While the kept draws fall short of the
    convergence goals (``_short_of_goals``; checked when at least ``settings.min_kept_to_extend``
    draws are asked for), the chains run that many iterations again, up to
    ``settings.max_sampling_rounds`` rounds in all, and the kept draws are thinned by the number
    of rounds so there stay ``num_samples`` per chain.

    Each chain starts at the mode plus a draw from the Gaussian there (dispersed starts, so
    r_hat can see chains that have not mixed). Warm-up stage 1 adapts the step size with the
    Hessian's inverse as the mass matrix; stage 2 restarts the step-size adaptation with the
    covariance of the second half of stage 1's draws, pooled over chains and shrunk towards the
    Hessian's, as the mass matrix, which sampling keeps. (NumPyro's own schedule estimates a
    dense mass matrix first from a 25-draw window, which in 40 dimensions is singular: warm-up
    then spent most of its time at 300-500 leapfrog steps per draw.) Stages are rounded up to
    whole chunks of ``settings.chunk`` iterations."""
    reporter = reporter or Reporter()
    rng = jax.random.PRNGKey(seed)
    k_mode, k_start, k_init1, k_init2 = jax.random.split(rng, 4)
    seconds = {}
    with reporter.phase(target, "mode search") as ph:
        mode = posterior_mode(law, data, init_values(law, init_map, data), k_mode, MODE_MAXITER)
        ph.summary = f"potential {mode.value:.2f}, converged {mode.converged}"
    seconds["mode_search"] = ph.elapsed
    chunk = settings.chunk
    stage = chunk * max(1, -(-num_warmup // (2 * chunk)))      # iterations per warm-up stage
    c, refs = cc.make_coords(law, data, site_offsets(mode.unravel(jnp.asarray(mode.x))),
                             mode.hessian(), mode.x)
    fns = _compiled(mode, c, stage, settings)
    dyn, y, refs = dynamic_args(mode.args), mode.kwargs["y"], jnp.asarray(refs)
    w_mode = np.asarray(fns["to_w"](jnp.asarray(mode.x), refs))
    imm = _inverse_mass(np.asarray(fns["hessian"](jnp.asarray(w_mode), dyn, y, refs)))
    if imm is None:
        imm = np.eye(len(w_mode)) * 1e-4
    L = np.linalg.cholesky(imm + 1e-12 * np.eye(len(imm)) * np.trace(imm) / len(imm))
    eps = np.asarray(jax.random.normal(k_start, (num_chains, len(w_mode))))
    w0 = w_mode[None, :] + eps @ L.T
    bad = ~np.isfinite(np.asarray(fns["batch"](jnp.asarray(w0), dyn, y, refs)))
    w0[bad] = w_mode  # a start outside the support (E <= 0): the mode itself

    n_dev = jax.local_device_count()
    parallel = settings.chain_method == "parallel" and n_dev > 1 and num_chains % n_dev == 0

    def start(w, key, mass, step):
        st = fns["init"](jnp.asarray(w), jax.random.split(key, num_chains), jnp.asarray(mass),
                         jnp.asarray(step), dyn, y, refs)
        if parallel:  # chains split over devices (host CPUs), vectorised within each
            st = jax.tree_util.tree_map(
                lambda x: x.reshape((n_dev, num_chains // n_dev) + x.shape[1:]), st)
        return st

    def advance(st):
        if not parallel:
            return fns["chunk"](st, dyn, y, refs)
        st, out = fns["pchunk"](st, dyn, y, refs)
        return st, jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), out)

    def flat(x):
        return np.asarray(x).reshape((num_chains,) + np.shape(x)[(2 if parallel else 1):])

    chains = f"chains 1-{num_chains}" if num_chains > 1 else "1 chain"
    out = {"z": [], "div": [], "steps": []}

    def run(st, n, ph, offset, note):
        for _ in range(-(-n // chunk)):
            st, (z, dv, ns) = advance(st)
            out["z"].append(np.asarray(z)), out["div"].append(np.asarray(dv))
            out["steps"].append(np.asarray(ns))
            done = sum(x.shape[1] for x in out["z"]) - offset
            ph.update(min(done, ph.total), f"{note}{np.asarray(ns).mean():.0f} leapfrog steps "
                      "per draw")
        return st

    def stats(lo, hi):
        st = np.concatenate(out["steps"], axis=1)[:, lo:hi]
        dv = np.concatenate(out["div"], axis=1)[:, lo:hi]
        return st, dv

    with reporter.phase(target, "warm-up", 2 * stage, chains=chains) as ph:
        state = start(w0, k_init1, imm, np.ones(num_chains))
        state = run(state, stage, ph, 0, "stage 1 of 2 (Hessian mass), ")
        z1 = np.concatenate(out["z"], axis=1)[:, stage // 2:stage]
        imm2 = _pooled_mass(z1, imm, settings.mass_shrinkage)
        state = start(flat(state.z), k_init2, imm2, flat(state.adapt_state.step_size))
        state = run(state, stage, ph, 0, "stage 2 of 2 (pooled mass), ")
        st, dv = stats(0, 2 * stage)
        ph.summary = (f"{chains}, 2 x {stage} iterations, {st.mean():.0f} leapfrog steps per "
                      f"draw, {int(dv.sum())} divergent, step size "
                      f"{float(np.mean(flat(state.adapt_state.step_size))):.3g}")
    seconds["warm-up"] = ph.elapsed
    n_iter = num_samples * settings.thin
    with reporter.phase(target, "sampling", n_iter, chains=chains) as ph:
        state = run(state, n_iter, ph, 2 * stage, "")
        st, dv = stats(2 * stage, 2 * stage + n_iter)
        ph.summary = (f"{chains} x {n_iter} iterations, {num_samples} kept per chain (every "
                      f"{settings.thin}), {st.mean():.0f} leapfrog steps per "
                      f"draw, {int(dv.sum())} divergent")
    seconds["sampling"] = ph.elapsed

    def kept(rounds):
        thin = settings.thin * rounds
        keep = slice(2 * stage + thin - 1, 2 * stage + rounds * n_iter, thin)
        W = np.concatenate(out["z"], axis=1)[:, keep]
        nat = fns["natural"](jnp.asarray(W.reshape(-1, W.shape[-1])), dyn, y, refs)
        return {n: np.asarray(v).reshape((num_chains, num_samples) + np.shape(v)[1:])
                for n, v in nat.items()}

    rounds, samples = 1, kept(1)
    extend = num_chains * num_samples >= settings.min_kept_to_extend
    while extend and rounds < settings.max_sampling_rounds:
        short, reachable = _short_of_goals(samples, law, settings, rounds)
        if not short or not reachable:
            if short:
                log.info("%s: %s; more sampling would not reach the convergence goals "
                         "within %d rounds, so it stops here", target, short,
                         settings.max_sampling_rounds)
            break
        with reporter.phase(target, f"sampling round {rounds + 1} ({short})", n_iter,
                            chains=chains) as ph:
            state = run(state, n_iter, ph, 2 * stage + rounds * n_iter, "")
            rounds += 1
            samples = kept(rounds)
            ph.summary = f"{num_samples} kept per chain (every {settings.thin * rounds})"
        seconds[f"sampling_{rounds}"] = ph.elapsed
    every = slice(2 * stage, 2 * stage + rounds * n_iter)
    return NutsRun(samples, np.concatenate(out["div"], axis=1)[:, every],
                   np.concatenate(out["steps"], axis=1)[:, every],
                   flat(state.adapt_state.step_size), settings.thin * rounds, c.describe(),
                   seconds)


def _short_of_goals(samples: dict, law: Law, s: NutsSettings, rounds: int = 1) -> tuple[str, bool]:
    """(what keeps the draws short of the convergence goals, "" when they meet them; whether
    more rounds can reach them). Goals: max r_hat <= ``s.r_hat_goal``, min bulk ESS >=
    ``s.ess_goal``. Reachable: r_hat no worse than ``s.reachable_r_hat`` and the ESS, growing in
    proportion to the iterations, at the goal within ``s.max_sampling_rounds``; chains further
    off have not mixed, and more of the same sampling only costs time."""
    d = rank_diagnostics(samples, diagnostic_sites(law, samples))
    out = []
    r_hat = d["r_hat_max"] if np.isfinite(d["r_hat_max"]) else 1.0
    if r_hat > s.r_hat_goal:
        out.append(f"r_hat {r_hat:.3f} > {s.r_hat_goal:g}")
    if d["ess_bulk_min"] < s.ess_goal:
        out.append(f"ESS {d['ess_bulk_min']:.0f} < {s.ess_goal:g}")
    reachable = (r_hat <= s.reachable_r_hat
                 and d["ess_bulk_min"] * s.max_sampling_rounds / rounds >= s.ess_goal)
    return ", ".join(out), reachable


def nuts_diagnostics(run: NutsRun, law: Law) -> dict:
    """Rank-normalised split r_hat and bulk ESS (``convergence.rank_diagnostics``) of every law
    parameter (natural scale, each component), sigma and tau; divergences."""
    out = rank_diagnostics(run.samples, diagnostic_sites(law, run.samples))
    chains, draws = next(iter(run.samples.values())).shape[:2]
    div = int(run.diverging.sum())
    out.update({"divergences": div, "divergence_rate": div / run.diverging.size,
                "mean_leapfrog_steps": float(run.num_steps.mean()), "num_chains": chains,
                "num_samples": draws, "thin": run.thin,
                "step_size": [float(s) for s in run.step_size],
                "sampler_coords": run.coords,
                "phase_seconds": {k: round(v, 2) for k, v in run.seconds.items()}})
    return out


def diagnostic_warnings(d: dict) -> list[str]:
    """Plain-language warnings for bad sampler diagnostics."""
    out = []
    if np.isfinite(d.get("r_hat_max", np.nan)) and d["r_hat_max"] > R_HAT_WARN:
        out.append(f"chains disagree (max r_hat {d['r_hat_max']:.3f} > {R_HAT_WARN}): run more "
                   "warm-up/draws")
    if d.get("ess_bulk_min", np.inf) < 100:
        out.append(f"few effective draws (min ESS {d['ess_bulk_min']:.0f} < 100): intervals are noisy")
    if d.get("divergence_rate", 0.0) > 0.01:
        out.append(f"{d['divergences']} divergent transitions ({100 * d['divergence_rate']:.1f} %): "
                   "the posterior may be biased")
    return out


def to_arviz(run: NutsRun, law: Law, domains: list[str]):
    import arviz as az

    post = {n: np.asarray(v) for n, v in run.samples.items()}
    dims = {p.name: ["domain"] for p in law.params if p.per_domain}
    # per kept draw: the thin iterations that end at it (a divergence in any of them counts)
    chains, draws = next(iter(post.values())).shape[:2]
    blocks = (chains, draws, run.thin)
    ss = {"diverging": np.asarray(run.diverging).reshape(blocks).any(axis=2),
          "n_steps": np.asarray(run.num_steps).reshape(blocks).sum(axis=2)}
    return az.from_dict(posterior=post, sample_stats=ss, coords={"domain": list(domains)}, dims=dims)
