"""Acquisition: which runs most reduce the decision uncertainty about h*(N*, D*), per FLOP.

The quantity we buy down is the posterior **expected excess loss** of the Bayes choice,

    EEL(w) = min_j sum_s w_s L_s(h_j) - sum_s w_s L_s(h*_s),

over posterior draws s (weights w, uniform now) and a decision set {h_j} made of the draws' own
optima h*_s plus the current Bayes choice (the minimum over this set is the Bayes choice among
mixtures some draw finds optimal; it is exact when w sits on one draw). Everything at the target
(N*, D*) is precomputed once per planning step: Lmat (S, J) and L*(S,).

A candidate run x = (N, D, h) is scored by simulating its outcome y from the posterior
predictive (M fantasies with common random numbers: fantasy m comes from draw s_m with noise
eps_m, the same for every candidate), reweighting the draws by the likelihood p(y | theta_s)
(importance reweighting, no refit), and averaging the resulting EEL:

    score(x) = E_m[EEL(w_pending,m)] - E_m[EEL(w_pending,m * p(y_xm | theta))]      (>= 0)

Pending runs (in flight or already chosen in this batch) enter through w_pending: their
fantasies are drawn jointly with the candidate's from the same s_m, so a batch never pays twice
for the same information. Cost-awareness is a wrapper (``per_cost``), and choosing a batch
(``select_batch``: greedy, conditioning on each pick) is separate from scoring.

A posterior with a mixture discrepancy (``discrepancy.mixture_field``; campaign refits do not
learn one) enters through ``optimum_draws``: Lmat and L* include each draw's field, so its part
of the EEL is one no small run's outcome can reweight away (only a run nearer the target, which
shrinks the field, could; scoring does not model that yet).

Shapes: candidates C, fantasies M, draws S, decisions J, targets T, domains k.
``score_candidates`` takes (C,) N, D and (C, k) H and returns (C,) scores in one vectorised
call (chunked over C to bound memory at C x M x S floats per chunk).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from planner.core.types import flops
from planner.decide.optimum import optimum_draws
from planner.decide.pool import pool_candidates
from planner.decide.space import (
    Candidates,
    Proposal,
    h_dict,
    round_size,
    sample_candidates,
    vertices,
)
from planner.decide.strategies import DesignRequest, random_strategy
from planner.model.laws import get_law, scale_inputs

MAX_DRAWS = 256


FANTASIES = 24


N_CANDIDATES = 2000


CHUNK = 500


@dataclass
class DecisionState:
    """Everything about the decision that does not depend on the candidate."""

    law: str
    targets: list[str]
    params: list[dict]            # per target: law params with leading draw axis (S, ...)
    sigma: np.ndarray             # (T, S) observation noise on log-loss
    Lmat: jnp.ndarray             # (S, J) weighted target loss of decision j under draw s
    Lstar: jnp.ndarray            # (S,) each draw's own optimal loss
    H_dec: np.ndarray             # (J, k)
    eel_now: float


def decision_state(posterior, N: float, D: float, target_weights=None,
                   max_draws: int = MAX_DRAWS, lo=None, hi=None) -> DecisionState:
    od = optimum_draws(posterior, N, D, target_weights, lo=lo, hi=hi, max_draws=max_draws)
    targets = od["targets"]
    S = od["h_star"].shape[0]
    params = [{k: v[:S] for k, v in posterior[t].law_params(posterior.law).items()} for t in targets]
    H_dec = np.concatenate([od["h_star"], od["h_bayes"][None]], axis=0)
    # the same per-draw objective the optima minimised (law, times any mixture discrepancy)
    Lmat = od["loss_matrix"](H_dec)
    Lstar = jnp.asarray(od["loss_at_star"])
    sigma = np.stack([np.asarray(posterior[t].draws["sigma"][:S]) for t in targets])
    eel = float(_eel(jnp.full((S,), 1.0 / S), Lmat, Lstar))
    return DecisionState(posterior.law, targets, params, sigma, Lmat, Lstar, H_dec, eel)


def _eel(w, Lmat, Lstar):
    """Expected excess loss for weights w (..., S) -> (...)."""
    return jnp.min(w @ Lmat, axis=-1) - w @ Lstar


@dataclass
class Fantasies:
    """Common random numbers: fantasy m comes from draw s[m] with standard noise eps[:, m]."""

    s: np.ndarray      # (M,)
    eps: np.ndarray    # (T, M)


def make_fantasies(state: DecisionState, M: int, seed: int) -> Fantasies:
    rng = np.random.default_rng(seed)
    S = state.Lstar.shape[0]
    return Fantasies(rng.integers(0, S, M), rng.standard_normal((len(state.targets), M)))


def _loglik_impl(law_name, params_list, sig, s, eps, logn, logd, H):
    law = get_law(law_name)
    mu = jnp.stack([jnp.log(law.predict_draws(p, logn, logd, H)) for p in params_list])  # (T,S,C)
    y = mu[:, s, :] + (sig[:, s] * eps)[:, :, None]                                     # (T,M,C)
    z = (y[:, :, :, None] - jnp.transpose(mu, (0, 2, 1))[:, None, :, :]) / sig[:, None, None, :]
    ll = -0.5 * z ** 2 - jnp.log(sig)[:, None, None, :]                                 # (T,M,C,S)
    return jnp.transpose(ll.sum(axis=0), (1, 0, 2))                                     # (C,M,S)


_loglik_jit = jax.jit(_loglik_impl, static_argnums=0)


def outcome_loglik(state: DecisionState, fant: Fantasies, N, D, H) -> jnp.ndarray:
    """(C, M, S) log-likelihood of each candidate's fantasy outcome under each draw.
    Gaussian on log-loss with each draw's noise scale (the Student-t tails matter for robust
    fitting, not for scoring plausible fantasies)."""
    logn, logd = scale_inputs(np.asarray(N, float), np.asarray(D, float))
    return _loglik_jit(state.law, state.params, jnp.asarray(state.sigma), jnp.asarray(fant.s),
                       jnp.asarray(fant.eps), logn, logd, jnp.asarray(np.asarray(H, float)))


@jax.jit
def _scores_from_loglik(ll, base_ll, Lmat, Lstar):
    """ll (C, M, S) candidate log-lik; base_ll (M, S) pending log-lik -> (C,) EEL reduction."""
    w0 = jax.nn.softmax(base_ll, axis=-1)
    before = jnp.mean(_eel(w0, Lmat, Lstar))
    w = jax.nn.softmax(ll + base_ll[None], axis=-1)
    after = jnp.mean(_eel(w, Lmat, Lstar), axis=-1)
    return jnp.maximum(before - after, 0.0)


def score_candidates(state: DecisionState, fant: Fantasies, N, D, H,
                     pending_ll: jnp.ndarray | None = None) -> np.ndarray:
    """Expected reduction of EEL for each of C candidates, (C,), given pending log-lik (M, S)."""
    S = state.Lstar.shape[0]
    base = jnp.zeros((len(fant.s), S)) if pending_ll is None else pending_ll
    N, D, H = np.asarray(N, float), np.asarray(D, float), np.asarray(H, float)
    C = len(N)
    pad = (-C) % CHUNK  # fixed chunk shapes: one compilation per (S, M), whatever C is
    if pad:
        N, D = np.concatenate([N, np.full(pad, N[0])]), np.concatenate([D, np.full(pad, D[0])])
        H = np.concatenate([H, np.repeat(H[:1], pad, axis=0)])
    out = []
    for i in range(0, len(N), CHUNK):
        sl = slice(i, i + CHUNK)
        ll = outcome_loglik(state, fant, N[sl], D[sl], H[sl])
        out.append(np.asarray(_scores_from_loglik(ll, base, state.Lmat, state.Lstar)))
    return np.concatenate(out)[:C] if out else np.zeros(0)


def per_cost(score_fn: Callable, cost_fn: Callable | None = None) -> Callable:
    """Wrap a scorer so it returns utility per unit cost (default 6 N D FLOPs)."""
    cost_fn = cost_fn or (lambda N, D, H: flops(np.asarray(N, float), np.asarray(D, float)))

    def wrapped(state, fant, N, D, H, pending_ll=None):
        return score_fn(state, fant, N, D, H, pending_ll) / cost_fn(N, D, H)

    return wrapped


def select_batch(state: DecisionState, cand: Candidates, q: int, fant: Fantasies,
                 pending: Candidates | None = None, scorer: Callable | None = None,
                 max_flops: float | None = None) -> list[tuple[int, float]]:
    """Greedy batch: pick the best candidate, add its fantasies to the pending set, repeat.
    Returns [(candidate index, score)]; stops early if nothing affordable scores above 0."""
    scorer = scorer or per_cost(score_candidates)
    S = state.Lstar.shape[0]
    base = jnp.zeros((len(fant.s), S))
    for j in range(len(pending) if pending is not None else 0):
        one = pending.subset([j])  # one at a time: a fixed shape, compiled once
        base = base + outcome_loglik(state, fant, one.N, one.D, one.H)[0]
    chosen: list[tuple[int, float]] = []
    spent = 0.0
    for _ in range(q):
        sc = np.asarray(scorer(state, fant, cand.N, cand.D, cand.H, base), dtype=float)
        sc[[i for i, _ in chosen]] = -np.inf
        if max_flops is not None:
            sc[cand.flops() > max_flops - spent] = -np.inf
        i = int(np.argmax(sc))
        if not np.isfinite(sc[i]) or sc[i] <= 0:
            break
        chosen.append((i, float(sc[i])))
        spent += float(cand.flops()[i])
        one = cand.subset([i])
        base = base + outcome_loglik(state, fant, one.N, one.D, one.H)[0]
    return chosen


def _pending_candidates(pending, domains) -> Candidates | None:
    if not pending:
        return None
    N = np.array([float(p.N) for p in pending])
    D = np.array([float(p.D) for p in pending])
    H = np.array([[float(p.h.get(d, 0.0)) for d in domains] for p in pending])
    return Candidates(N, D, H, tuple(domains))


def decision_strategy(req: DesignRequest) -> list[Proposal]:
    """Decision-theoretic acquisition (module docstring). Falls back to the space-filling
    ``random`` design while there is no posterior or it has a single draw (MAP).
    Options: candidates (2000), fantasies (24), draws (256)."""
    post = req.posterior
    if post is None or min(post[t].n_draws for t in post.targets) < 2 or req.target_N is None:
        return random_strategy(req)
    opts = dict(req.options or {})
    space = req.space
    if opts.get("pool"):
        cand = pool_candidates(opts["pool"], space.domains, req.observed, req.pending)
    else:
        cand = sample_candidates(space, int(opts.get("candidates", N_CANDIDATES)),
                                 seed=req.seed + 7919 * req.step, faces=0.2)
    if space.min_weight == 0 and not opts.get("pool"):
        V = vertices(space)
        sizes = cand.subset(np.arange(len(V)))
        cand = Candidates(np.concatenate([cand.N, sizes.N]), np.concatenate([cand.D, sizes.D]),
                          np.concatenate([cand.H, V]), cand.domains)
    tw = {t: w for t, w in (req.target_weights or {}).items() if t in post.targets} or None
    state = decision_state(post, req.target_N, req.target_D, tw,
                           max_draws=int(opts.get("draws", MAX_DRAWS)),
                           hi=None if req.target_hi is None else np.asarray(req.target_hi, float))
    fant = make_fantasies(state, int(opts.get("fantasies", FANTASIES)), req.seed + req.step)
    pend = _pending_candidates(list(req.pending), space.domains)
    picks = select_batch(state, cand, req.q, fant, pend, max_flops=req.max_flops)
    out = [Proposal(N=round_size(cand.N[i]), D=round_size(cand.D[i]),
                    h=h_dict(cand.H[i], space.domains), strategy="decision",
                    info={"score_per_flop": s, "eel_now": state.eel_now}) for i, s in picks]
    if len(out) < req.q:  # nothing informative left that fits: fill with space-filling runs
        filler = random_strategy(DesignRequest(**{**req.__dict__, "q": req.q - len(out)}))
        out += filler
    return out
