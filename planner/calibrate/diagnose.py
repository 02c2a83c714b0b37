"""One list of warnings about a posterior, in plain words, shared by every place that shows a
recommendation: the report, ``recommendation.json`` (its ``warnings`` list), ``planner status``
(and ``--json``) and the table ``planner run`` prints at the end.

    fit_warnings(posterior)                 # what the posterior itself says
    fit_warnings(posterior, holdout=check)  # plus a held-out check (``checks.holdout_check``)

What is checked, per target:

- the sampler: max r_hat > 1.05, min bulk ESS < 100, more than 1 % divergent transitions
  (``planner.infer.nuts.diagnostic_warnings``, for every method whose diagnostics report them);
- a Laplace fit whose posterior-mode search did not converge; a MAP fit (one point: the h*
  posterior has no spread and the expected excess loss is 0 by construction);
- the model discrepancy: none attached (intervals and h* carry the law's parameter uncertainty
  only), the prior's instead of a learned one, or a re-learning that failed;
- the law's own fit at the held-out largest scale, from the discrepancy's calibration: when
  the law's 90 % intervals (parameters and noise, no discrepancy) held less than
  ``LAW_COVERAGE_MIN`` of the held-out losses, the law misses that scale and the decision rests
  on the learned discrepancy;
- with a held-out check (the report's, cached per snapshot): the 90 % intervals *with* the
  discrepancy holding less than ``HOLDOUT_COVERAGE_MIN`` of the held-out losses.

The report's held-out check refits the law twice, so it is cached in
``CAMPAIGN_DIR/report_holdout.json`` (``HOLDOUT_CACHE``) keyed by the snapshot;
``cached_holdout`` reads it back so that ``planner status`` and ``recommendation.json`` carry
its warnings too once a report has been built for that snapshot.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from planner.infer.nuts import diagnostic_warnings
from planner.model.discrepancy import KIND_PRIOR

# A calibrated 90 % interval should hold 80-97 % of held-out losses (docs/model.md); below 70 %
# the intervals at the target are clearly too narrow even allowing for the few held-out rows.
HOLDOUT_COVERAGE_MIN = 0.7


# The law's own intervals (no discrepancy) are expected to under-cover a larger scale somewhat;
# when they miss more than half of the held-out losses the law is wrong there by more than its
# parameter uncertainty and the noise, and the decision leans on the discrepancy.
LAW_COVERAGE_MIN = 0.5


# fewer held-out losses than this say too little about coverage (one miss is a 10 % event)
MIN_HELDOUT_FOR_COVERAGE = 2


HOLDOUT_CACHE = "report_holdout.json"


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def _numeric(d: dict, keys) -> dict:
    """``d`` with ``keys`` as numbers, dropping those missing, null or not finite (a NaN is
    saved as null), so that ``diagnostic_warnings`` can compare them."""
    out = dict(d)
    for k in keys:
        try:
            v = float(out[k])
        except (KeyError, TypeError, ValueError):
            v = float("nan")
        if np.isfinite(v):
            out[k] = int(v) if k == "divergences" else v
        else:
            out.pop(k, None)
    if "divergences" not in out:
        out.pop("divergence_rate", None)
    return out


def sampler_warnings(diagnostics: dict) -> list[str]:
    """r_hat, ESS and divergence warnings (``planner.infer.nuts.diagnostic_warnings``) for any
    method whose diagnostics report them."""
    return list(diagnostic_warnings(_numeric(diagnostics or {}, (
        "r_hat_max", "ess_bulk_min", "divergence_rate", "divergences"))))


def target_warnings(posterior, target: str) -> list[str]:
    """Warnings about one target's posterior (sampler, fit method, discrepancy), each
    prefixed with the target's name."""
    tp = posterior[target]
    d = dict(tp.diagnostics or {})
    method = d.get("method", (posterior.meta or {}).get("method"))
    out = sampler_warnings(d)
    if method == "laplace" and d.get("mode_converged") is False:
        out.append(f"the search for the posterior mode did NOT converge (min Hessian eigenvalue "
                   f"{d.get('min_hessian_eigenvalue', float('nan')):.3g}): the Laplace draws may "
                   f"sit in the wrong place; confirm with fit.method: nuts")
    elif method == "map":
        out.append("a MAP fit (one point, no sampler): no r_hat, ESS or divergences to check, the "
                   "h* posterior has no spread from the parameters and the expected excess loss "
                   "is 0 by construction; use fit.method: nuts (or laplace) for the decision")
    disc = tp.discrepancy
    if not disc:
        out.append("no model discrepancy: predictions, h* and the expected excess loss carry the "
                   "law's parameter uncertainty only and are overconfident away from the runs "
                   "(planner fit learns it by default; in a campaign set fit.discrepancy_every > 0)")
    elif disc.get("kind") == KIND_PRIOR:
        why = (disc.get("evidence") or {}).get("reason", "")
        out.append(f"the model discrepancy is the prior's (s1 = {float(disc['s1']):.3g}), not "
                   f"learned from the data" + (f": {why}" if why else ""))
    else:
        ev = disc.get("evidence") or {}
        cov, n = ev.get("coverage90_without"), int(ev.get("n_heldout") or 0)
        if cov is not None and np.isfinite(cov) and n >= MIN_HELDOUT_FOR_COVERAGE \
                and cov < LAW_COVERAGE_MIN:
            split = ev.get("split") or {}
            where = ", ".join(f"{k}={split[k]:.3g}" for k in ("N", "D") if k in split)
            out.append(f"the law alone misses the held-out largest scale{f' ({where})' if where else ''}: "
                       f"its 90 % intervals held {_pct(cov)} of {n} held-out losses; predictions, "
                       f"h* and the expected excess loss rest on the discrepancy learned from them "
                       f"(s1 = {float(disc['s1']):.3g} per e-fold of distance)")
    err = ((tp.diagnostics or {}).get("discrepancy") or {}).get("error")
    if err:
        out.append(f"re-learning the model discrepancy failed ({err}); the last one learned is used")
    return [f"{target}: {w}" for w in out]


def holdout_warnings(check: dict | None) -> list[str]:
    """Warnings from a held-out check (``checks.holdout_check``'s result): 90 % intervals with
    the discrepancy holding less than ``HOLDOUT_COVERAGE_MIN`` of the held-out losses."""
    out = []
    for t, r in ((check or {}).get("targets") or {}).items():
        m = (r or {}).get("with_discrepancy") or {}
        cov = m.get("coverage_90")
        if cov is not None and np.isfinite(cov) and cov < HOLDOUT_COVERAGE_MIN:
            out.append(f"{t}: only {_pct(cov)} of the held-out losses fall inside the 90 % "
                       f"intervals (held-out check, largest scale left out): the predictions at "
                       f"the target are overconfident")
    return out


def fit_warnings(posterior, holdout: dict | None = None) -> list[str]:
    """Every warning about ``posterior`` (each target's, see ``target_warnings``), plus those of
    a held-out check ``holdout`` when given. An empty list when nothing is wrong. A posterior
    that is not a ``Posterior`` (a test's stand-in) has none of its own."""
    out: list[str] = []
    if hasattr(posterior, "per_target"):
        for t in posterior.targets:
            out += target_warnings(posterior, t)
    return merge_warnings(out, holdout_warnings(holdout))


def merge_warnings(*lists) -> list[str]:
    """The lists concatenated, each warning once, in first-seen order."""
    seen: dict[str, None] = {}
    for lst in lists:
        for w in lst or []:
            seen.setdefault(str(w), None)
    return list(seen)


def cached_holdout(campaign_dir, snapshot: int | None) -> dict | None:
    """The report's cached held-out check for posterior snapshot ``snapshot``, or None."""
    if snapshot is None:
        return None
    p = Path(campaign_dir) / HOLDOUT_CACHE
    try:
        c = json.loads(p.read_text())
        key = json.loads(c["key"])
        return c["result"] if key.get("snapshot") == snapshot else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
