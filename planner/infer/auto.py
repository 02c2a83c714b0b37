"""``law: auto``: fit every registered mixture family and combine them by held-out prediction.

Users cannot know which law holds, and the wrong one can move the chosen mixture by several per
cent of the loss while its own posterior claims a tiny expected excess loss. ``fit_auto`` fits
each family of ``laws.auto_families()`` (additive, joint, and any law registered later with an
embedding), weighs them by **stacking of predictive distributions** (Yao, Vehtari, Simpson and
Gelman 2018, "Using stacking to average Bayesian predictive distributions") on the largest
observed scale held out, and returns one ordinary ``Posterior``:

Weights. Hold out the runs at the largest scale (``stacking_split``: the largest N levels, or
the largest D levels when N has one level, down to at least ``MIN_HELDOUT_RUNS`` runs or
``HELDOUT_FRACTION`` of them, while the rest can still fit every family). Fit each family on the
rest; for every held-out run r and family k compute the log predictive density of the run's
observed log-losses, the model's own predictive (law + Student-t(4) noise with each draw's sigma
and a new run's level tau u),

    p_k(y_r) = 1/S sum_s prod_{j in r} t4(log y_j; log L_s(x_j) + tau_s u_s, sigma_s),

and choose the weights on the simplex that maximise sum_r log sum_k w_k p_k(y_r) (concave;
solved by the EM fixed point, which increases it monotonically). A run, not a row, is the unit:
checkpoints of one run share its noise. The held-out rows are the ones the decision extrapolates
towards (the target is larger than every run), so the weights reward the family that
extrapolates, not the one that interpolates best. Model averaging by marginal likelihood was
not used: the families are nested, the evidence of the larger one depends on its priors (CA, CB
and gA, gB widths) more than on the data, and when both are wrong (every real law is) BMA
concentrates on one of them regardless; stacking is built for that case.

Fallbacks, each stated in ``meta["stacking"][target]["note"]``: a family with no more
observations than parameters is not fitted (weight 0), nor one whose mixture effect changes
along a size axis (``Law.mixture_axes``) on which every row has the same value (RegMix's runs
all have D = 1e9: the joint law's data-size mixture terms would rest on their priors alone, and
NUTS there ran 860 leapfrog steps a draw to max r_hat 1.9); with one fitted family it gets weight 1;
when nothing can be held out (one (N, D) scale, or too few rows below the largest scale to fit
every fitted family without it, or the target not measured there) the fitted families get equal
weights.

Combination. Each family's draws are mapped exactly into ``laws.SUPER_FAMILY`` (joint)
parameters (``laws.embed``: additive -> gA = gB = 1, CA_i = A, CB_i = B) and the combined draws
are a weighted mixture: round(w_k S) draws of family k (largest remainders; chosen evenly across
its draws, repeated when a family has fewer), shuffled so that any prefix (the acquisition uses
the first 256) is itself a mixture. ``recommend``, ``optimum_draws``, the acquisition and
``predict`` then work unchanged and carry the uncertainty over the family. ``meta`` holds
``law: "auto"``, ``law_weights`` ({target: {family: w}}), the evidence (``stacking``) and each
family's parameter medians (``law_medians``, to warm-start a campaign's next refit); all survive
``save``/``load``.

Cost: one fit per family on all rows plus one per family on the rows below the held-out scale,
i.e. four fits instead of one with two families (measured in docs/benchmarks.md); when the
fits on all rows are NUTS, the ones below the held-out scale are Laplace, and they keep at most
200 draws (``INNER_METHOD``, ``INNER_DRAWS``). The
discrepancy (``calibrate``) of a combined posterior refits ``fit_auto`` on the rows below its own
held-out scale (``planner.calibrate.heldout``), so it measures the error of the combination, as
it measures a single law's.
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np
from scipy.special import gammaln, logsumexp

from planner.core.errors import FitError, InputError
from planner.infer import (
    dispatch,  # by module: test doubles that replace dispatch.fit apply here
)
from planner.infer.options import FitOptions
from planner.model.laws import (
    AUTO,
    LAW_CHOICES,
    LAWS,
    SUPER_FAMILY,
    auto_families,
    embed,
)
from planner.model.numpyro_model import STUDENT_NU
from planner.model.posterior import Posterior, TargetPosterior
from planner.model.runs import RunsTable

log = logging.getLogger("planner.inference")

# at least this many held-out runs (when the rest can still fit every family), or this share of
# the runs: one run at the largest N (a decision campaign's usual state: sizes are continuous)
# would make the weights a verdict on one noisy run
MIN_HELDOUT_RUNS = 3


HELDOUT_FRACTION = 0.15


# a combined posterior has at least this many draws, so that a family's weight of 1 % is
# represented when the families were fitted with few draws (map: one each)
MIN_COMBINED_DRAWS = 100


# stacking optimiser: EM fixed-point iterations and tolerance on the weights
EM_ITERS, EM_TOL = 20000, 1e-12


# draws used per family for the held-out densities (Monte Carlo error ~ 1 / sqrt(S) relative)
DENSITY_DRAWS = 1000


# seed of the standard normal scores of a held-out run's level (the same for every family, so
# the comparison does not carry independent Monte Carlo noise)
RUN_LEVEL_SEED = 20250601


def is_auto(posterior) -> bool:
    """True for a combined posterior made by ``fit_auto``."""
    return (getattr(posterior, "meta", None) or {}).get("law") == AUTO


def law_of(posterior) -> str:
    """The law a posterior was fitted with as a user names it: ``auto`` for a combination."""
    return AUTO if is_auto(posterior) else posterior.law


# ------------------------------------------------------------------------------ the split
def stacking_split(table: RunsTable, inner_rows_needed: int) -> tuple[np.ndarray | None, dict]:
    """Rows held out to weigh the families: (mask, info), or (None, info) when nothing can be.

    The largest N levels (whole runs, every checkpoint), or the largest D levels when N has one
    level, are added from the top until at least max(MIN_HELDOUT_RUNS, HELDOUT_FRACTION x runs)
    runs are held out, while more than ``inner_rows_needed`` rows remain below them (so every
    family can be fitted without them). The smallest level is never held out."""
    N, D = table.N, table.D
    if len(np.unique(N)) > 1:
        axis, vals = "N", N
    elif len(np.unique(D)) > 1:
        axis, vals = "D", D
    else:
        return None, {"rule": "none: one (N, D) scale only"}
    keys = table.run_keys()
    n_runs = len(set(keys))
    want = max(MIN_HELDOUT_RUNS, math.ceil(HELDOUT_FRACTION * n_runs))
    levels = np.unique(vals)[::-1]
    mask = table.top_levels(vals, want, inner_rows_needed)
    if not mask.any():
        return None, {"rule": f"none: {int((~np.isclose(vals, levels[0])).sum())} rows below "
                              f"the largest {axis}, need more than {inner_rows_needed} to fit "
                              "every family without it"}
    lo = float(vals[mask].min())
    return mask, {"rule": f"largest {axis} levels (>= {lo:.4g})", axis: lo,
                  "n_heldout_rows": int(mask.sum()), "n_heldout_runs": len(set(keys[mask]))}


# ------------------------------------------------------------------------------ densities
def _student_logpdf(z):
    nu = STUDENT_NU
    return (gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * np.log(nu * np.pi)
            - (nu + 1) / 2 * np.log1p(z * z / nu))


def heldout_log_density(posterior: Posterior, target: str, heldout: RunsTable,
                        max_draws: int = DENSITY_DRAWS) -> tuple[np.ndarray, list]:
    """log p(y_r) of every held-out run r under ``posterior``'s predictive on log-loss (law,
    Student-t(4) noise with each draw's sigma, and a new run's level tau_s u_s with u_s a fixed
    normal score per draw and run). Returns (log densities (R,), run keys)."""
    y = heldout.loss(target)
    keep = np.isfinite(y)
    if not keep.any():
        return np.zeros(0), []
    keys = heldout.run_keys()[keep]
    N, D, H, logy = heldout.N[keep], heldout.D[keep], heldout.H[keep], np.log(y[keep])
    tp = posterior[target]
    mu = np.log(posterior.loss_draws(target, N, D, H))[:max_draws]        # (S, m)
    S = mu.shape[0]
    sigma = np.asarray(tp.draws["sigma"], float)[:S]
    tau = np.asarray(tp.draws["tau"], float)[:S] if "tau" in tp.draws else np.zeros(S)
    runs = sorted(set(keys))
    u = np.random.default_rng(RUN_LEVEL_SEED).standard_normal((DENSITY_DRAWS, len(runs)))[:S]
    pos = {r: i for i, r in enumerate(runs)}
    idx = np.array([pos[k] for k in keys], dtype=int)
    z = (logy[None, :] - mu - tau[:, None] * u[:, idx]) / sigma[:, None]
    lp_rows = _student_logpdf(z) - np.log(sigma)[:, None]                  # (S, m)
    lp = np.zeros((S, len(runs)))
    np.add.at(lp, (slice(None), idx), lp_rows)
    return logsumexp(lp, axis=0) - np.log(S), runs


def stacking_weights(lpd: np.ndarray) -> np.ndarray:
    """Weights w on the simplex maximising sum_r log sum_k w_k exp(lpd[r, k]) for a matrix of
    log predictive densities (R runs, K families). The objective is concave; the EM fixed point
    w_k <- mean_r w_k p_rk / sum_k' w_k' p_rk' increases it at every step and converges to the
    maximum from the uniform start."""
    lpd = np.asarray(lpd, float)
    R, K = lpd.shape
    if R == 0:
        return np.full(K, 1.0 / K)
    lp = lpd - lpd.max(axis=1, keepdims=True)
    p = np.exp(lp)
    w = np.full(K, 1.0 / K)
    for _ in range(EM_ITERS):
        mix = p @ w
        new = w * (p / mix[:, None]).mean(axis=0)
        new /= new.sum()
        if np.max(np.abs(new - w)) < EM_TOL:
            w = new
            break
        w = new
    return w


# ------------------------------------------------------------------------------ combination
def _largest_remainder(w: np.ndarray, total: int) -> np.ndarray:
    raw = np.asarray(w, float) * total
    n = np.floor(raw).astype(int)
    rest = total - n.sum()
    if rest > 0:
        n[np.argsort(-(raw - n), kind="stable")[:rest]] += 1
    return n


def combine(posteriors: dict[str, Posterior], weights: dict[str, dict[str, float]],
            seed: int = 0, meta: dict | None = None) -> Posterior:
    """One ``SUPER_FAMILY`` posterior whose draws for each target are the weighted mixture of the
    families' draws (``weights``: {target: {family: w}}, each summing to 1), embedded exactly.
    Every family posterior must be on the same domains; a family may lack a target (weight 0)."""
    first = next(iter(posteriors.values()))
    domains = list(first.domains)
    targets = [t for t in weights]
    rng = np.random.default_rng(seed + 7)
    per = {}
    for t in targets:
        fams = [f for f in weights[t] if weights[t][f] > 0]
        sizes = [posteriors[f][t].n_draws for f in fams]
        total = max(max(sizes), MIN_COMBINED_DRAWS)
        counts = _largest_remainder(np.array([weights[t][f] for f in fams]), total)
        has_tau = any("tau" in posteriors[f][t].draws for f in fams)
        parts: list[dict] = []
        for f, n in zip(fams, counts):
            if n == 0:
                continue
            tp = posteriors[f][t]
            S = tp.n_draws
            idx = np.floor(np.arange(n) * (S / n)).astype(int) if n <= S else np.arange(n) % S
            law = LAWS[f]
            sel = {p.name: np.asarray(tp.draws[p.name], float)[idx] for p in law.params}
            emb = {kk: np.asarray(v, float) for kk, v in embed(f, sel).items()}
            emb["sigma"] = np.asarray(tp.draws["sigma"], float)[idx]
            if has_tau:
                emb["tau"] = (np.asarray(tp.draws["tau"], float)[idx] if "tau" in tp.draws
                              else np.zeros(n))
            parts.append(emb)
        draws = {kk: np.concatenate([p[kk] for p in parts]) for kk in parts[0]}
        perm = rng.permutation(len(draws["sigma"]))
        draws = {kk: v[perm] for kk, v in draws.items()}
        src = posteriors[fams[0]][t]
        per[t] = TargetPosterior(t, draws, _merge_diagnostics(posteriors, t, weights[t]), None,
                                 obs_logn=src.obs_logn, obs_logd=src.obs_logd)
    out_meta = dict(first.meta)
    out_meta.update(meta or {})
    out_meta["law"] = AUTO
    out_meta["law_weights"] = {t: {f: float(w) for f, w in weights[t].items()} for t in targets}
    return Posterior(law=SUPER_FAMILY, domains=domains, targets=targets, per_target=per,
                     meta=out_meta)


# worst value over the contributing families, so convergence stays checkable on the combination
_WORST = {"r_hat_max": max, "ess_bulk_min": min, "divergence_rate": max, "divergences": max}


def _merge_diagnostics(posteriors, target, weights) -> dict:
    fam = {f: dict(posteriors[f][target].diagnostics) for f in weights
           if f in posteriors and target in posteriors[f].targets}
    used = [f for f in fam if weights.get(f, 0) > 0]
    first = fam[used[0]]
    out = {"method": first.get("method"), "law": AUTO,
           "law_weights": {f: float(w) for f, w in weights.items()},
           "n_obs": first.get("n_obs"), "n_runs": first.get("n_runs"),
           "seconds": float(sum(d.get("seconds", 0.0) for d in fam.values())),
           "families": fam}
    for key, pick in _WORST.items():
        vals = [fam[f][key] for f in used if key in fam[f]]
        if vals:
            out[key] = pick(vals)
    return out


# ------------------------------------------------------------------------------ entry point
def _medians(post: Posterior) -> dict:
    return {t: {p.name: np.median(np.asarray(post[t].draws[p.name], float), axis=0).tolist()
                for p in LAWS[post.law].params} for t in post.targets}


def warm_start_auto(previous, domains, map_starts: int) -> dict:
    """``fit_auto`` arguments that start each family's refit from its own fit in ``previous`` (a
    combined posterior of the same domains): its parameter medians as an extra Huber start and
    ``map_starts`` random starts (a family without a previous fit keeps the default number),
    and the same for the fits below the held-out scale (``inner_warm``). Empty when
    ``previous`` is not a combination."""
    if previous is None or not is_auto(previous) or \
            list(getattr(previous, "domains", [])) != list(domains):
        return {}
    init = _as_init(previous.meta.get("law_medians"))
    if not init:
        return {}
    out = {"map_init_by_law": init, "warm_map_starts": map_starts}
    inner = previous.meta.get("inner_warm") or {}
    if inner.get("medians"):
        out["inner_warm"] = {"runs": list(inner.get("runs", [])),
                             "init": _as_init(inner["medians"])}
    return out


def _as_init(med) -> dict:
    return {f: {t: {k: np.asarray(v, float) for k, v in p.items()} for t, p in m.items()}
            for f, m in (med or {}).items() if f in LAWS}


# The fits below the held-out scale only score the held-out runs for the weights (a point
# estimate): with NUTS fits on all rows they use the Laplace posterior of the same model, and at
# most INNER_DRAWS draws. On the paper-shaped table the joint law's NUTS fit takes about a
# minute and a 1,000-draw Laplace fit 35-45 s (its Metropolis moves cost per draw).
INNER_METHOD = {"nuts": "laplace"}
INNER_DRAWS = 200


def _inner_kwargs(method: str, kw: dict) -> dict:
    """``kw`` for a fit below the held-out scale: ``INNER_METHOD``, at most ``INNER_DRAWS``."""
    out = dict(kw, method=INNER_METHOD.get(method, method))
    chains = int(out.get("num_chains", FitOptions.num_chains))
    if out["method"] != "map" and \
            int(out.get("num_samples", FitOptions.num_samples)) * chains > INNER_DRAWS:
        out["num_samples"] = max(1, INNER_DRAWS // chains)
    return out


def _fit_family(table, law, targets, method, seed, **kw):
    try:
        return dispatch.fit(table, law=law, targets=targets, method=method, seed=seed, **kw), None
    except FitError as e:
        log.warning("law auto: the %s fit failed (%s); leaving it out", law, e)
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]


def _with_starts(kw: dict, init, warm_map_starts: int | None) -> dict:
    if init is None or warm_map_starts is None:
        return kw
    return {**kw, "map_starts": warm_map_starts}


def fit_auto(table: RunsTable, law: str = AUTO, targets: list[str] | None = None,
             method: str = FitOptions.method, seed: int = 0, families=None,
             map_init_by_law: dict | None = None, inner_fit_kwargs: dict | None = None,
             inner_warm: dict | None = None, warm_map_starts: int | None = None,
             **fit_kwargs) -> Posterior:
    """Fit every family of ``families`` (default ``laws.auto_families()``) and combine them by
    stacking on the held-out largest scale (module docstring). ``fit_kwargs`` go to every
    ``fit`` (num_warmup, num_samples, num_chains, map_starts, ...); the fits below the held-out
    scale use them updated by ``inner_fit_kwargs`` and start from no fit that saw the held-out
    rows (such a start would leak them into the weights). ``map_init_by_law``: {family:
    {target: params}} extra Huber starts (``warm_start_auto``). ``inner_warm``: {"runs": run
    keys, "init": {family: {target: params}}}, the previous fits below the held-out scale
    (``warm_start_auto``); they start this call's fits below it only when none of the runs held
    out now was among their runs, else those fits start cold. ``warm_map_starts``: random
    starts of a fit that has such an extra start (the others keep ``map_starts`` or the
    default)."""
    if law != AUTO:
        raise InputError(f"fit_auto combines the families (law 'auto'), got law {law!r}")
    families = tuple(families or auto_families())
    targets = list(targets) if targets else list(table.targets)
    for t in targets:
        if t not in table.targets:
            raise InputError(f"unknown target {t!r}; the table has {', '.join(table.targets)}")
    fit_kwargs.pop("map_init", None)
    k = len(table.domains)
    n_obs = {t: len(table.observations(t)) for t in targets}
    t0 = time.perf_counter()

    # 1. every family on every row (the draws that will be combined)
    fits: dict[str, Posterior] = {}
    notes: dict[str, str] = {}
    levels = {"N": len(np.unique(table.N)), "D": len(np.unique(table.D))}
    for j, f in enumerate(families):
        need = LAWS[f].n_params(k)
        ok = [t for t in targets if n_obs[t] > need]
        if not ok:
            notes[f] = f"not fitted: more than {need} observations needed"
            continue
        flat = [a for a in LAWS[f].mixture_axes if levels[a] < 2]
        if flat:
            notes[f] = (f"not fitted: its mixture effect changes with {' and '.join(flat)}, and "
                        f"every row has the same {' and '.join(flat)}, so the data cannot "
                        "identify that change")
            log.info("law auto: %s %s", f, notes[f])
            continue
        init = (map_init_by_law or {}).get(f)
        post, err = _fit_family(table, f, ok, method, seed + 1009 * j, map_init=init,
                                **_with_starts(fit_kwargs, init, warm_map_starts))
        if post is None:
            notes[f] = f"fit failed ({err})"
        else:
            fits[f] = post
    for t in targets:
        if not any(t in p.targets for p in fits.values()):
            smallest = min(families, key=lambda f: LAWS[f].n_params(k))
            if n_obs[t] <= LAWS[smallest].n_params(k):
                raise InputError(f"target {t!r} has {n_obs[t]} observations but the "
                                 f"{smallest} law (the smallest of law auto) has "
                                 f"{LAWS[smallest].n_params(k)} parameters; need more rows "
                                 "than parameters")
            raise FitError(f"target {t!r}: every family's fit failed ({'; '.join(notes.values())})")

    # 2. the split and the fits below it
    fitted = list(fits)
    need_inner = max(LAWS[f].n_params(k) for f in fitted)
    mask, info = stacking_split(table, need_inner) if len(fitted) > 1 else (None, {})
    inner: dict[str, Posterior] = {}
    if mask is not None:
        inner_table, heldout = table.select(~mask), table.select(mask)
        ikw = _inner_kwargs(method, {**fit_kwargs, **(inner_fit_kwargs or {})})
        keys = table.run_keys()
        held_runs = set(keys[mask])
        warm = inner_warm if inner_warm and inner_warm.get("init") and \
            not held_runs & set(inner_warm.get("runs", [])) else None
        info = dict(info, inner_warm_start=warm is not None,
                    inner_method=ikw["method"])
        for j, f in enumerate(fitted):
            need = LAWS[f].n_params(k)
            ok = [t for t in fits[f].targets
                  if np.isfinite(inner_table.loss(t)).sum() > need
                  and np.isfinite(heldout.loss(t)).any()]
            if ok:
                init = (warm or {}).get("init", {}).get(f)
                post, err = _fit_family(inner_table, f, ok, seed=seed + 104729 + 1009 * j,
                                        map_init=init,
                                        **_with_starts(ikw, init, warm_map_starts))
                if post is not None:
                    inner[f] = post
                else:
                    notes[f] = f"fit below the held-out scale failed ({err})"

    # 3. weights per target
    weights: dict[str, dict[str, float]] = {}
    evidence: dict[str, dict] = {}
    for t in targets:
        cand = [f for f in fitted if t in fits[f].targets]
        w = {f: 0.0 for f in families}
        ev: dict = {"families": list(cand), "split": info}
        if len(cand) == 1:
            w[cand[0]] = 1.0
            ev["kind"] = "single"
            ev["note"] = (f"only the {cand[0]} law could be fitted; "
                          + "; ".join(f"{f}: {n}" for f, n in notes.items()))
        elif mask is not None and all(f in inner and t in inner[f].targets for f in cand):
            cols, runs = [], None
            for f in cand:
                lp, runs = heldout_log_density(inner[f], t, heldout)
                cols.append(lp)
            lpd = np.stack(cols, axis=1)
            ws = stacking_weights(lpd)
            for f, v in zip(cand, ws):
                w[f] = float(v)
            ev.update(kind="stacking", n_heldout_runs=len(runs),
                      elpd={f: float(c.sum()) for f, c in zip(cand, cols)},
                      elpd_stacked=float(np.sum(logsumexp(lpd, axis=1, b=ws[None, :]))),
                      note=f"stacking on {len(runs)} held-out runs ({info.get('rule')})")
        else:
            for f in cand:
                w[f] = 1.0 / len(cand)
            ev["kind"] = "equal"
            why = info.get("rule", "") if mask is None else \
                "; ".join(f"{f}: {notes[f]}" for f in cand if f in notes) or \
                "the target was not measured at the held-out scale, or too few rows below it"
            ev["note"] = f"equal weights: nothing could be held out ({why})"
        weights[t], evidence[t] = w, ev
        log.info("law auto, target %s: weights %s (%s)", t,
                 ", ".join(f"{f} {v:.3f}" for f, v in w.items()), ev["note"])

    meta = {"method": method, "seed": seed, "families": list(families),
            "family_notes": notes, "stacking": evidence,
            "law_medians": {f: _medians(p) for f, p in fits.items()},
            "inner_warm": ({"runs": sorted(set(table.run_keys()[~mask])),
                            "medians": {f: _medians(p) for f, p in inner.items()}}
                           if inner else None),
            "auto_seconds": round(time.perf_counter() - t0, 2)}
    return combine(fits, weights, seed=seed, meta=meta)


def fit_law(table: RunsTable, law: str = AUTO, targets: list[str] | None = None,
            method: str = FitOptions.method, seed: int = 0, **kwargs) -> Posterior:
    """``fit`` for any law name, ``auto`` (the default) included: the public ``planner.infer``.
    Other keywords as ``dispatch.fit`` (num_warmup, num_samples, num_chains, map_starts, ...)."""
    kwargs.update(targets=targets, method=method, seed=seed)
    if law not in LAW_CHOICES:
        raise InputError(f"unknown law {law!r}; choose one of {', '.join(LAW_CHOICES)}")
    if law == AUTO:
        return fit_auto(table, law=law, **kwargs)
    kwargs.pop("inner_fit_kwargs", None)
    return dispatch.fit(table, law=law, **kwargs)


fit = fit_law  # ``planner.infer``


def law_summary(posterior) -> dict:
    """What a recommendation adds for a combined posterior: ``law`` and ``law_weights``
    ({target: {family: weight}}); empty for a single law."""
    if not is_auto(posterior):
        return {}
    return {"law": AUTO, "law_weights": posterior.meta.get("law_weights")}
