"""Validation runs: which mixtures ``planner validate`` trains, and the ``validation`` block that
compares their measured losses with the posterior's prediction at their (N, D).

Mixture names: ``recommended`` (the recommendation's weights, ``recommendation.json``),
``uniform`` (1/k), ``best-seen`` (the mixture of the completed run with the lowest objective
among the largest quarter of the campaign's runs by compute 6ND), and custom ones given as
``NAME=dom:w,...`` (weights summing to one).

A validation run is recorded with source ``validation`` (records.VALIDATION_SOURCE) and
``info = {"validation": {"mixture": name}, "use_in_fit": bool}``; runs of one mixture at one
(N, D) (several seeds) are averaged in the block. The block::

    {"snapshot": id, "mixtures": [{"name", "N", "D", "h", "run_ids", "in_fit",
      "objective_by_run": [one measured objective per run, in run_ids' order],
      "objective": {"measured", "mean", "lo", "hi", "inside"},
      "losses": {target: {"measured", "mean", "lo", "hi", "inside"}}}]}

``mean`` is the posterior mean of the law, ``lo``/``hi`` the 90 % predictive interval
(parameters, model discrepancy and noise, as ``planner predict`` and the recommendation's
``loss``); the objective is sum_t w_t L_t with the campaign's target weights. Without a
posterior the cells hold ``measured`` only (and ``prediction_error`` says why when the
prediction failed).
"""
from __future__ import annotations

import hashlib
import json

import numpy as np

from planner.calibrate.trust import RECOMMENDED
from planner.campaign.records import VALIDATION_SOURCE
from planner.core.errors import InputError
from planner.core.types import RunStatus

UNIFORM, BEST_SEEN = "uniform", "best-seen"  # RECOMMENDED: trust judges its ranking


DEFAULT_MIXTURES = (RECOMMENDED, UNIFORM, BEST_SEEN)


# the share of the campaign's runs, largest compute first, among which best-seen is chosen
BEST_SEEN_TOP_FRACTION = 0.25


INTERVAL = 0.9


WEIGHT_SUM_TOL = 1e-6


def parse_mixture(text: str, domains: list[str]) -> tuple[str, dict[str, float]]:
    """``NAME=dom:w,dom:w`` -> (name, {domain: w}); unnamed domains get 0. InputError when a
    domain is unknown, a weight is not a number >= 0, or the weights do not sum to one."""
    name, sep, body = str(text).partition("=")
    name = name.strip()
    if not sep or not name or not body.strip():
        raise InputError(f"--mixture {text!r}: expected NAME=domain:weight,...")
    if name in DEFAULT_MIXTURES:
        raise InputError(f"--mixture {text!r}: {name!r} is a built-in mixture name")
    h = {d: 0.0 for d in domains}
    for part in body.split(","):
        dom, colon, w = part.partition(":")
        dom = dom.strip()
        if not colon or dom not in h:
            raise InputError(f"--mixture {text!r}: {part.strip()!r} is not domain:weight with a "
                             f"domain of the campaign ({', '.join(domains)})")
        try:
            v = float(w)
        except ValueError:
            raise InputError(f"--mixture {text!r}: weight {w.strip()!r} is not a number") from None
        if not np.isfinite(v) or v < 0:
            raise InputError(f"--mixture {text!r}: weights must be finite and >= 0")
        h[dom] = v
    total = sum(h.values())
    if abs(total - 1.0) > WEIGHT_SUM_TOL:
        raise InputError(f"--mixture {text!r}: weights sum to {total:.6g}, not 1")
    return name, h


def objective(losses: dict[str, float], weights: dict[str, float]) -> float:
    """sum_t w_t L_t (the campaign's target weights)."""
    return float(sum(float(w) * float(losses[t]) for t, w in weights.items()))


def best_seen(results: list[dict], domains: list[str], weights: dict[str, float]) -> dict | None:
    """The mixture of the completed, fitted run with the lowest objective among the largest
    ``BEST_SEEN_TOP_FRACTION`` of the campaign's runs by compute 6ND (``results``: the ledger's
    ``results()``; validation runs are not candidates). None without such a run."""
    rows = [r for r in results if r["source"] != VALIDATION_SOURCE
            and all(t in r["losses"] for t in weights)]
    if not rows:
        return None
    compute = np.array([6.0 * float(r["N"]) * float(r["D"]) for r in rows])
    cut = np.quantile(compute, 1.0 - BEST_SEEN_TOP_FRACTION)
    top = [r for r, c in zip(rows, compute) if c >= cut]
    best = min(top, key=lambda r: objective(r["losses"], weights))
    return normalised(best["h"], domains)


def normalised(h: dict, domains: list[str]) -> dict[str, float]:
    w = np.array([max(float(h.get(d, 0.0)), 0.0) for d in domains])
    return dict(zip(domains, (w / w.sum()).tolist()))


def named_mixtures(names: list[str], custom: list[tuple[str, dict]], domains: list[str],
                   weights: dict[str, float], recommendation: dict | None,
                   results: list[dict]) -> dict[str, dict[str, float]]:
    """{name: h} for the built-in ``names`` and the ``custom`` ones (InputError for an unknown
    name, or ``recommended`` without a recommendation, ``best-seen`` without a completed run)."""
    out: dict[str, dict[str, float]] = {}
    for n in names:
        if n == RECOMMENDED:
            h = (recommendation or {}).get("recommended") or (recommendation or {}).get("mean")
            if not h:
                raise InputError("no recommendation yet (recommendation.json): finish the "
                                 "campaign with `planner run` first, or leave out 'recommended'")
            out[n] = normalised(h, domains)
        elif n == UNIFORM:
            out[n] = {d: 1.0 / len(domains) for d in domains}
        elif n == BEST_SEEN:
            h = best_seen(results, domains, weights)
            if h is None:
                raise InputError("best-seen: the campaign has no completed run with every target")
            out[n] = h
        else:
            raise InputError(f"--mixtures: unknown mixture {n!r} (built in: "
                             f"{', '.join(DEFAULT_MIXTURES)}; custom ones with --mixture)")
    for n, h in custom:
        if n in out:
            raise InputError(f"--mixture: {n!r} is given twice")
        out[n] = h
    return out


def validation_run_id(name: str, N: float, D: float, h: dict, seed: int) -> str:
    """A run id that names the mixture and is the same on every rerun of the same command."""
    key = json.dumps({"N": float(N), "D": float(D), "h": {d: round(float(w), 9) for d, w in
                                                          sorted(h.items())}}, sort_keys=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40]
    return f"val-{safe}-s{int(seed)}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def validation_info(name: str, use_in_fit: bool) -> dict:
    return {"validation": {"mixture": name}, "use_in_fit": bool(use_in_fit)}


def _groups(ledger) -> list[dict]:
    """Completed validation runs grouped by (mixture, N, D), in recording order."""
    info = {r.run_id: r.info for r in ledger.runs(RunStatus.COMPLETED)
            if r.source == VALIDATION_SOURCE}
    groups: dict[tuple, dict] = {}
    for r in ledger.results():
        if r["run_id"] not in info:
            continue
        name = (info[r["run_id"]].get("validation") or {}).get("mixture") or r["run_id"]
        g = groups.setdefault((name, float(r["N"]), float(r["D"])), {
            "name": name, "N": float(r["N"]), "D": float(r["D"]), "h": r["h"], "run_ids": [],
            "losses": [], "in_fit": bool(r["in_fit"])})
        g["run_ids"].append(r["run_id"])
        g["losses"].append(r["losses"])
    return list(groups.values())


def _cell(measured, draws, mean) -> dict:
    q = (1 - INTERVAL) / 2
    lo, hi = (float(x) for x in np.quantile(draws, [q, 1 - q]))
    return {"measured": float(measured), "mean": float(mean), "lo": lo, "hi": hi,
            "inside": bool(lo <= float(measured) <= hi)}


def predicted(posterior, N: float, D: float, h: dict, weights: dict[str, float],
              measured: dict[str, float], seed: int = 0) -> dict:
    """{"objective": cell, "losses": {t: cell}} at one design (cells: see the module doc)."""
    H = np.array([[float(h.get(d, 0.0)) for d in posterior.domains]])
    Na, Da = np.array([float(N)]), np.array([float(D)])
    losses, parts, means = {}, [], []
    for i, (t, w) in enumerate(weights.items()):
        if t not in posterior.targets:
            continue
        draws = posterior.predictive_draws(t, Na, Da, H, seed=seed + i)[:, 0]
        mean = float(posterior.loss_draws(t, Na, Da, H).mean())
        if t in measured:
            losses[t] = _cell(measured[t], draws, mean)
        parts.append(float(w) * draws)
        means.append(float(w) * mean)
    out = {"losses": losses}
    if parts and len(parts) == len(weights) and all(t in measured for t in weights):
        n = min(len(p) for p in parts)
        out["objective"] = _cell(objective(measured, weights), sum(p[:n] for p in parts),
                                 sum(means))
    return out


def validation_block(ledger, weights: dict[str, float], posterior, snapshot: int | None,
                     seed: int = 0) -> dict | None:
    """The ``validation`` block (module doc) of a campaign's completed validation runs, with
    the predictions of ``posterior`` (None: measured values only). None without such runs."""
    groups = _groups(ledger)
    if not groups:
        return None
    mixtures = []
    for g in groups:
        ts = [t for t in weights if all(t in l for l in g["losses"])]
        measured = {t: float(np.mean([l[t] for l in g["losses"]])) for t in ts}
        row = {"name": g["name"], "N": g["N"], "D": g["D"], "h": g["h"], "run_ids": g["run_ids"],
               "in_fit": g["in_fit"]}
        if len(ts) == len(weights):
            row["objective_by_run"] = [objective(l, weights) for l in g["losses"]]
        if posterior is not None and hasattr(posterior, "predictive_draws"):
            try:
                row.update(predicted(posterior, g["N"], g["D"], g["h"], weights, measured, seed))
            except Exception as e:  # noqa: BLE001 - a refit or status must not die on it
                row["prediction_error"] = f"{type(e).__name__}: {str(e)[:300]}"
        if "losses" not in row:  # no prediction: the measured values only
            row["losses"] = {t: {"measured": v} for t, v in measured.items()}
            if len(ts) == len(weights):
                row["objective"] = {"measured": objective(measured, weights)}
        mixtures.append(row)
    return {"snapshot": snapshot, "mixtures": mixtures}
