"""Acquisition: which runs most reduce the decision uncertainty about h*(N*, D*), per FLOP.

The quantity we buy down is the posterior **expected excess loss** of the Bayes choice. Over
posterior draws s (weights w, uniform now), each with the law's parameters theta_s and, where
the posterior carries a mixture discrepancy, its own random field f_s(h) at the target
(``discrepancy.mixture_field``, amplitude a_s proportional to the distance from the target to
the nearest observed run), and a field amplitude ratio r in (0, 1] (1: the runs observed now),

    L_s,r(h)    = sum_t c_t L_ts(h) exp(r f_ts(h))          (the draw's objective)
    Lbar_s,r(h) = sum_t c_t L_ts(h) exp(r^2 a_ts^2 / 2)     (its expectation over the field)

    EEL_r(w) = min_j sum_s w_s Lbar_s,r(h_j) - sum_s w_s min_j Lbar_s,r(h_j)  +  F_r
               (the law's share: reweighted by a run's outcome)               (the field's)

The law's share chooses on the field's expectation because no decision can see a draw's field
(choosing on sampled fields would let the minimum over decisions chase their Monte Carlo
noise). The decisions {h_j} are the draws' law-only optima, the law-only Bayes choice and the
Bayes choice h_B,r at each precomputed ratio (a Bayes choice under reweighted draws solves a
reweighted law-only problem). F_r is the rest of the total at uniform weights,

    F_r = E_s[L_s,r(h_B,r) - min_h L_s,r(h)] - (the law's share at uniform weights),

the first term on each draw's sampled field, as ``recommend`` computes the expected excess loss.
It is a constant per ratio: the fields are independent of the law's parameters, so a run's
outcome, which reweights the parameters, cannot tell which field is the true one (averaging the
fields' share over the draws removes their Monte Carlo noise from the differences between
candidates). With uniform w and r = 1 this is ``recommend``'s expected excess loss, the quantity
the campaign's stopping rule compares with its tolerance. Without a field (no discrepancy, or a
white one) there is one level, F = 0, and this is the law's parameter uncertainty alone: the
shared part of the discrepancy multiplies every mixture's loss by the same factor and the white
mixture-specific part is independent between mixtures, so neither favours one mixture over
another, and a run that narrows them does not change the decision. Amplitudes are capped at
``AMP_MAX`` (see there).

Everything at the target (N*, D*) is precomputed once per planning step, for a few ratios r
(``RATIO_LEVELS`` = 8 levels r = 1/8, ..., 1, or those a candidate set needs): Lmat (R, S, J)
(Lbar at the decisions), L* (R, S) and F (R,); the fields are linear in their amplitude, so
level r scales each stored field by r (common random numbers across levels).

A candidate run x = (N, D, h) is scored by simulating its outcome y from the posterior
predictive (M fantasies with common random numbers: fantasy m comes from draw s_m with noise
eps_m, the same for every candidate), reweighting the draws by the likelihood p(y | theta_s)
(importance reweighting, no refit), and by the field ratio it leaves at the target,

    r(x) = max_t min(dist_t, |x - x*|) / dist_t,     dist_t = distance from x* to the nearest run
                                                     observed for target t (e-folds of N and D),

rounded up to a precomputed level (conservative: never more credit than the run earns):

    score(x) = E_m[EEL_r0(w_pending,m)] - E_m[EEL_min(r0, r(x))(w_pending,m * p(y_xm | theta))]

clamped at 0, where r0 is the ratio the pending runs already leave. A run nearer the target
than every observed run therefore buys down the field's share of the EEL as well as the
parameter uncertainty; a run in the cheap corner buys only the latter. Pending runs (in flight
or already chosen in this batch) enter through w_pending (their fantasies are drawn jointly with
the candidate's from the same s_m) and through r0 (``Pending``), so a batch never pays twice for
the same information. Cost-awareness is a wrapper (``per_cost``), and choosing a batch
(``select_batch``: greedy, conditioning on each pick) is separate from scoring.

What is not modelled: the fantasy outcome of a run far from the observed ones carries no
discrepancy of its own (the refit treats a new run as data at distance 0), and the field at the
target is not learned from runs, only shrunk (the discrepancy model gives each design's error
size, not the correlation between designs).

Shapes: candidates C, fantasies M, draws S, decisions J, ratio levels R, targets T, domains k.
``score_candidates`` takes (C,) N, D and (C, k) H and returns (C,) scores in one vectorised
call (grouped by ratio level, chunked over C to bound memory at C x M x S floats per chunk).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from planner.core.types import flops
from planner.decide.optimum import (
    FIELD_POLISH,
    _objective_setup,
    draw_objective,
    field_pool,
    mirror_descent,
    optimum_draws,
)
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
from planner.model.discrepancy import distance_to
from planner.model.laws import get_law, scale_inputs

MAX_DRAWS = 256


FANTASIES = 24


N_CANDIDATES = 2000


CHUNK = 500


# field amplitude ratios precomputed per planning step: r = 1/8, 2/8, ..., 1. A candidate's
# ratio is rounded up to the next level, so it is credited with at most what it earns; 8 levels
# cost 8 per-draw optimisations with the field (about 1 s each for 256 draws on 2 cores)
RATIO_LEVELS = 8


# a draw's field amplitude (sd on log-loss) is capped here. The choice weighs draws by the field's
# mean factor exp(a^2 / 2), which overflows float64 beyond a ~ 37 and, well before that, is set by
# field values no sample shows (the field's share, measured on sampled fields, then comes out
# negative). A calibration resting on one held-out run gave s1 = 0.31 with log-sd 0.97 at 10
# e-folds in the study, tail draws far beyond the cap. An amplitude of 3 means errors of e^3 on
# the loss; a slope of 0.02 per e-fold with the prior log-sd 1 at 10 e-folds stays below it
# even in its 1-in-256 tail
AMP_MAX = 3.0


# --------------------------------------------------------------------------------------------
# the field ratio a run leaves at the target
# --------------------------------------------------------------------------------------------
def target_distances(posterior, targets, N: float, D: float) -> np.ndarray:
    """(T,) distance in e-folds of (log N, log D) from the target to the nearest run observed
    for each target (0 where the posterior records no observed designs)."""
    logn, logd = (float(v) for v in scale_inputs(N, D))
    return np.array([float(distance_to(posterior[t].obs_logn, posterior[t].obs_logd,
                                       [logn], [logd])[0]) for t in targets])


def field_ratio(dist_now, N_t: float, D_t: float, N, D) -> np.ndarray:
    """(C,) ratio r in (0, 1] of the target's field amplitude after runs at (N, D) land to its
    amplitude now: max over targets of min(dist_t, |x - x*|) / dist_t (1 where dist_t is 0)."""
    logn_t, logd_t = (float(v) for v in scale_inputs(N_t, D_t))
    logn, logd = (np.atleast_1d(np.asarray(v, float)) for v in scale_inputs(N, D))
    d = np.hypot(logn - logn_t, logd - logd_t)
    dist_now = np.atleast_1d(np.asarray(dist_now, float))
    if not np.any(dist_now > 0):
        return np.ones_like(d)
    r = [np.minimum(dt, d) / dt for dt in dist_now if dt > 0]
    return np.max(np.stack(r), axis=0)


def ratio_levels(r, levels: int = RATIO_LEVELS) -> np.ndarray:
    """Round ratios up to the grid 1/levels, ..., 1 (the conservative direction)."""
    r = np.clip(np.asarray(r, float), 0.0, 1.0)
    return np.maximum(np.ceil(r * levels - 1e-9), 1.0) / levels


# --------------------------------------------------------------------------------------------
# the decision at the target, per ratio level
# --------------------------------------------------------------------------------------------
@dataclass
class DecisionState:
    """Everything about the decision that does not depend on the candidate."""

    law: str
    targets: list[str]
    params: list[dict]            # per target: law params with leading draw axis (S, ...)
    sigma: np.ndarray             # (T, S) observation noise on log-loss
    Lmat: jnp.ndarray             # (R, S, J) Lbar_s,r(h_j): draw s's objective, field at its mean
    Lstar: jnp.ndarray            # (R, S) each draw's law-only optimum of that objective
    field_eel: jnp.ndarray        # (R,) the field's share of the EEL at each ratio
    H_dec: np.ndarray             # (J, k)
    ratios: np.ndarray            # (R,) ascending field amplitude ratios, the last 1.0
    dist_now: np.ndarray          # (T,) distance from the target to the nearest observed run
    target: tuple[float, float]   # (N*, D*)
    eel_now: float                # EEL at r = 1 with uniform weights (recommend's)
    has_field: bool = False       # False: one level, field_eel 0 (the law's uncertainty only)

    @property
    def n_draws(self) -> int:
        return int(self.Lstar.shape[-1])

    def ratio(self, N, D) -> np.ndarray:
        """(C,) field ratio runs at (N, D) would leave (1 without a field)."""
        if not self.has_field:
            return np.ones(np.size(N))
        return field_ratio(self.dist_now, *self.target, N, D)

    def level(self, r) -> np.ndarray:
        """Index of the smallest precomputed ratio >= r (conservative rounding)."""
        r = np.atleast_1d(np.asarray(r, float))
        i = np.searchsorted(self.ratios, r - 1e-9, side="left")
        return np.minimum(i, len(self.ratios) - 1)

    def matrices(self, i: int):
        """(Lmat (S, J), Lstar (S,), field_eel ()) of level i."""
        return self.Lmat[i], self.Lstar[i], self.field_eel[i]


def _level_optima_impl(law_name, has_field, logn, logd, w, params, fields, ratios, pool, h0,
                       lo, hi):
    """Per ratio r: each draw's optimum of sum_t w_t L_t(h) exp(r f_t(h)) (a fixed scan pool
    polished by mirror descent, as ``optimum.optimum_draws`` does with a field), the Bayes
    choice h_B,r minimising the exact field expectation, and each draw's objective there with
    its sampled field. Returns ((R, S), (R, k), (R, S))."""
    f = draw_objective(law_name, logn, logd, w, list(has_field))
    f_mean = draw_objective(law_name, logn, logd, w, list(has_field), field_mean=True)
    at_all = jax.vmap(f, in_axes=(0, 0, None))
    mean_all = jax.vmap(f_mean, in_axes=(0, 0, None))

    def at_level(r):
        fl = [{**fd, "amp": fd["amp"] * r} if on else fd for fd, on in zip(fields, has_field)]

        def one(pf):
            obj = lambda h: f(pf[0], pf[1], h)
            vals = jax.vmap(obj)(pool)
            top = jnp.argsort(jnp.where(jnp.isfinite(vals), vals, jnp.inf))[:FIELD_POLISH]
            hs = jax.vmap(mirror_descent(obj, lo=lo, hi=hi))(pool[top])
            v = jax.vmap(obj)(hs)
            return jnp.min(jnp.where(jnp.isfinite(v), v, jnp.inf))

        lstar = jax.lax.map(one, (params, fl))
        h_b = mirror_descent(lambda h: jnp.mean(mean_all(params, fl, h)), lo=lo, hi=hi)(h0)
        return lstar, h_b, at_all(params, fl, h_b)

    return jax.lax.map(at_level, ratios)


_level_optima = jax.jit(_level_optima_impl, static_argnums=(0, 1))


def _field_mean_matrix(law_name, params, fields, has_field, w, logn, logd, H, ratios):
    """(R, S, J): sum_t w_t L_ts(h_j) exp(r^2 a_ts^2 / 2) at mixtures H (J, k) per ratio."""
    law = get_law(law_name)
    H = jnp.asarray(np.asarray(H, float))
    r = jnp.asarray(ratios)[:, None, None]
    out = 0.0
    for wt, p, fl, on in zip(w, params, fields, has_field):
        L = jax.vmap(lambda pp: jax.vmap(lambda h: law.point(pp, logn, logd, h))(H))(p)
        c = jnp.exp(0.5 * (r * fl["amp"][None, :, None]) ** 2) if on else 1.0
        out = out + wt * L[None] * c
    return out


def decision_state(posterior, N: float, D: float, target_weights=None,
                   max_draws: int = MAX_DRAWS, lo=None, hi=None, ratios=None) -> DecisionState:
    """The decision at the target (N, D): per ratio level the matrices of the module docstring.
    ``ratios``: the field amplitude ratios to precompute (rounded up to the ``RATIO_LEVELS``
    grid; 1.0 is always added; default: the whole grid); ignored without a mixture field (one
    level, r = 1)."""
    od = optimum_draws(posterior, N, D, target_weights, lo=lo, hi=hi, max_draws=max_draws,
                       mixture_field=False)
    targets = od["targets"]
    S = od["h_star"].shape[0]
    params = [{k: v[:S] for k, v in posterior[t].law_params(posterior.law).items()} for t in targets]
    sigma = np.stack([np.asarray(posterior[t].draws["sigma"][:S]) for t in targets])
    dist_now = target_distances(posterior, targets, N, D)
    _, w, logn, logd, params_f, fields, has_field, _ = _objective_setup(
        posterior, N, D, target_weights, max_draws, True)
    uniform = jnp.full((S,), 1.0 / S)
    if not any(has_field):
        # the law's parameter uncertainty only: one level
        H_dec = np.concatenate([od["h_star"], od["h_bayes"][None]], axis=0)
        Lmat = jnp.asarray(od["loss_matrix"](H_dec))[None]
        Lstar = jnp.asarray(od["loss_at_star"])[None]
        eel = float(_eel(uniform, Lmat[0], Lstar[0]))
        return DecisionState(posterior.law, targets, params, sigma, Lmat, Lstar, jnp.zeros(1),
                             H_dec, np.ones(1), dist_now, (float(N), float(D)), eel, False)
    fields = [{**fd, "amp": jnp.minimum(fd["amp"], AMP_MAX)} if on else fd
              for fd, on in zip(fields, has_field)]
    levels = ratio_levels(np.arange(1, RATIO_LEVELS + 1) / RATIO_LEVELS if ratios is None
                          else ratios)
    levels = np.unique(np.concatenate([levels, [1.0]]))
    k = len(posterior.domains)
    lo_ = None if lo is None else jnp.asarray(lo, dtype=jnp.float64)
    hi_ = None if hi is None else jnp.asarray(hi, dtype=jnp.float64)
    # padded to a multiple of 4 levels (repeating r = 1) so few shapes are ever compiled
    padded = np.concatenate([levels, np.ones((-len(levels)) % 4)])
    lstar_f, h_b, at_b = (v[:len(levels)] for v in _level_optima(
        posterior.law, tuple(has_field), logn, logd, w, params_f, fields, jnp.asarray(padded),
        field_pool(k, lo_, hi_), jnp.full((k,), 1.0 / k), lo_, hi_))
    H_dec = np.concatenate([od["h_star"], od["h_bayes"][None], np.asarray(h_b)], axis=0)
    Lmat = _field_mean_matrix(posterior.law, params_f, fields, has_field, w, logn, logd, H_dec,
                              levels)                                              # (R, S, J)
    Lstar = jnp.min(Lmat, axis=-1)       # the law-only optima are among the decisions
    # the field's share: the total EEL at uniform weights (each draw's sampled field at the
    # Bayes choice against its own optimum with that field, as ``recommend`` computes it) less
    # the law's share. A constant per level: the fields are independent of the law's parameters,
    # so a candidate's outcome, which reweights parameters, cannot tell which field is true
    total = jnp.mean(jnp.maximum(at_b - lstar_f, 0.0), axis=-1)                    # (R,)
    law_part = jax.vmap(lambda M, Ls: _eel(uniform, M, Ls))(Lmat, Lstar)
    field_eel = total - law_part
    eel = float(total[-1])
    return DecisionState(posterior.law, targets, params, sigma, Lmat, Lstar, field_eel, H_dec,
                         levels, dist_now, (float(N), float(D)), eel, True)


def _eel(w, Lmat, Lstar, field_eel=0.0):
    """Expected excess loss for weights w (..., S) -> (...): the law's share (the decision
    minimising w @ Lmat against each draw's own optimum) plus the field's (a constant)."""
    return jnp.min(w @ Lmat, axis=-1) - w @ Lstar + field_eel


@dataclass
class Fantasies:
    """Common random numbers: fantasy m comes from draw s[m] with standard noise eps[:, m]."""

    s: np.ndarray      # (M,)
    eps: np.ndarray    # (T, M)


def make_fantasies(state: DecisionState, M: int, seed: int) -> Fantasies:
    rng = np.random.default_rng(seed)
    return Fantasies(rng.integers(0, state.n_draws, M),
                     rng.standard_normal((len(state.targets), M)))


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


@dataclass
class Pending:
    """Runs pending (in flight or chosen earlier in the batch), as the scorer sees them."""

    ll: jnp.ndarray        # (M, S) summed log-likelihood of their fantasy outcomes
    ratio: float = 1.0     # the target field's amplitude ratio once they land


def pending_of(state: DecisionState, fant: Fantasies, cand: Candidates | None) -> Pending:
    """The ``Pending`` of runs ``cand`` (None: nothing pending)."""
    base = Pending(jnp.zeros((len(fant.s), state.n_draws)), 1.0)
    for j in range(len(cand) if cand is not None else 0):
        base = add_pending(state, fant, base, cand.subset([j]))  # one at a time: one shape
    return base


def add_pending(state: DecisionState, fant: Fantasies, pending: Pending, one: Candidates):
    ll = pending.ll + outcome_loglik(state, fant, one.N, one.D, one.H)[0]
    return Pending(ll, float(min(pending.ratio, float(state.ratio(one.N, one.D)[0]))))


@jax.jit
def _scores_from_loglik(ll, base_ll, before, after):
    """ll (C, M, S) candidate log-lik; base_ll (M, S) pending log-lik; before/after: the
    (Lmat, Lstar, field_eel) of the pending runs' ratio and of the candidates' -> (C,)."""
    w0 = jax.nn.softmax(base_ll, axis=-1)
    b = jnp.mean(_eel(w0, *before))
    w = jax.nn.softmax(ll + base_ll[None], axis=-1)
    a = jnp.mean(_eel(w, *after), axis=-1)
    return jnp.maximum(b - a, 0.0)


def _as_pending(state: DecisionState, fant: Fantasies, pending) -> Pending:
    if pending is None:
        return Pending(jnp.zeros((len(fant.s), state.n_draws)), 1.0)
    if isinstance(pending, Pending):
        return pending
    return Pending(jnp.asarray(pending), 1.0)  # a bare (M, S) log-likelihood: no ratio change


def _padded(N, D, H, idx):
    """Rows idx of the candidates padded to a multiple of CHUNK (fixed shapes: one compilation
    per (S, M), whatever C is)."""
    pad = (-len(idx)) % CHUNK
    idx = np.concatenate([idx, np.full(pad, idx[0])]) if pad else idx
    return N[idx], D[idx], H[idx]


def score_candidates(state: DecisionState, fant: Fantasies, N, D, H,
                     pending=None) -> np.ndarray:
    """Expected reduction of EEL for each of C candidates, (C,), given pending runs
    (``Pending``, a bare (M, S) log-likelihood, or None)."""
    pend = _as_pending(state, fant, pending)
    N, D, H = np.asarray(N, float), np.asarray(D, float), np.asarray(H, float)
    C = len(N)
    out = np.zeros(C)
    if C == 0:
        return out
    lev = state.level(np.minimum(state.ratio(N, D), pend.ratio))
    before = state.matrices(int(state.level(pend.ratio)[0]))
    for i in np.unique(lev):
        idx = np.flatnonzero(lev == i)
        Np, Dp, Hp = _padded(N, D, H, idx)
        res = []
        for c in range(0, len(Np), CHUNK):
            sl = slice(c, c + CHUNK)
            ll = outcome_loglik(state, fant, Np[sl], Dp[sl], Hp[sl])
            res.append(np.asarray(_scores_from_loglik(ll, pend.ll, before,
                                                      state.matrices(int(i)))))
        out[idx] = np.concatenate(res)[:len(idx)]
    return out


def per_cost(score_fn: Callable, cost_fn: Callable | None = None) -> Callable:
    """Wrap a scorer so it returns utility per unit cost (default 6 N D FLOPs)."""
    cost_fn = cost_fn or (lambda N, D, H: flops(np.asarray(N, float), np.asarray(D, float)))

    def wrapped(state, fant, N, D, H, pending=None):
        return score_fn(state, fant, N, D, H, pending) / cost_fn(N, D, H)

    return wrapped


def select_batch(state: DecisionState, cand: Candidates, q: int, fant: Fantasies,
                 pending: Candidates | None = None, scorer: Callable | None = None,
                 max_flops: float | None = None) -> list[tuple[int, float]]:
    """Greedy batch: pick the best candidate, add its fantasies (and the field ratio it leaves)
    to the pending set, repeat. Returns [(candidate index, score)]; stops early if nothing
    affordable scores above 0."""
    scorer = scorer or per_cost(score_candidates)
    base = pending_of(state, fant, pending)
    chosen: list[tuple[int, float]] = []
    spent = 0.0
    for _ in range(q):
        sc = np.asarray(scorer(state, fant, cand.N, cand.D, cand.H, base), dtype=float)
        sc[np.isnan(sc)] = -np.inf  # a broken score never wins (nor stops the batch)
        sc[[i for i, _ in chosen]] = -np.inf
        if max_flops is not None:
            sc[cand.flops() > max_flops - spent] = -np.inf
        i = int(np.argmax(sc))
        if not sc[i] > 0:
            break
        chosen.append((i, float(sc[i])))
        spent += float(cand.flops()[i])
        base = add_pending(state, fant, base, cand.subset([i]))
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
    pend = _pending_candidates(list(req.pending), space.domains)
    # only the ratio levels this candidate set (and the pending runs) can reach
    dist_now = target_distances(post, list(tw or post.targets), req.target_N, req.target_D)
    sizes_N = cand.N if pend is None else np.concatenate([cand.N, pend.N])
    sizes_D = cand.D if pend is None else np.concatenate([cand.D, pend.D])
    needed = np.unique(ratio_levels(field_ratio(dist_now, req.target_N, req.target_D,
                                                sizes_N, sizes_D)))
    state = decision_state(post, req.target_N, req.target_D, tw,
                           max_draws=int(opts.get("draws", MAX_DRAWS)),
                           hi=None if req.target_hi is None else np.asarray(req.target_hi, float),
                           ratios=needed)
    fant = make_fantasies(state, int(opts.get("fantasies", FANTASIES)), req.seed + req.step)
    picks = select_batch(state, cand, req.q, fant, pend, max_flops=req.max_flops)
    ratio = state.ratio(cand.N, cand.D)
    out = [Proposal(N=round_size(cand.N[i]), D=round_size(cand.D[i]),
                    h=h_dict(cand.H[i], space.domains), strategy="decision",
                    info={"score_per_flop": s, "eel_now": state.eel_now,
                          "field_ratio": float(ratio[i])}) for i, s in picks]
    if len(out) < req.q:  # nothing informative left that fits: fill with space-filling runs
        filler = random_strategy(DesignRequest(**{**req.__dict__, "q": req.q - len(out)}))
        out += filler
    return out
