"""Whether the law can be trusted at the target: one rule, shown by ``planner run``'s final
table, ``planner status`` (and ``--json``), ``recommendation.json`` and the report (first when
low).

    trust(posterior, holdout=None, validation=None) -> {"level": "low" | "ok", "reasons": [...]}

The level is ``low`` when the law is seen not to extrapolate:

- the law alone misses the held-out largest scale: its 90 % intervals held less than
  ``diagnose.LAW_COVERAGE_MIN`` of the held-out losses (the discrepancy's calibration, the same
  evidence as that warning of ``diagnose.fit_warnings``);
- a held-out check (the report's, ``checks.holdout_check``) whose 90 % intervals with the
  discrepancy held less than ``TRUST_COVERAGE_MIN`` of the held-out losses;
- a validation run (``planner validate``, ``planner tell --validation``) whose measured objective
  or target loss falls outside its predicted 90 % interval;
- validation runs where another mixture measured a lower objective than the recommendation at
  the same (N, D), by more than ``BEATEN_SE`` standard errors of the difference (the
  seed-to-seed spread pooled over every mixture validated there with two or more runs; without
  such a spread no ranking is judged). The decision, not only the law, then failed where it
  was checked.

Each reason is one plain sentence; ``ok`` has none.
"""
from __future__ import annotations

import numpy as np

from planner.calibrate.diagnose import LAW_COVERAGE_MIN, MIN_HELDOUT_FOR_COVERAGE

# a 90 % interval holding less than half of the held-out losses is far below nominal
TRUST_COVERAGE_MIN = 0.5


# a mixture beats the recommendation at validation when its measured objective is lower by more
# than this many standard errors of the difference (one-sided, about 2 % by chance)
BEATEN_SE = 2.0


RECOMMENDED = "recommended"  # the validation mixture that is the campaign's recommendation


LOW, OK = "low", "ok"


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def _finite(x) -> bool:
    try:
        return x is not None and bool(np.isfinite(float(x)))
    except (TypeError, ValueError):
        return False


def law_reasons(posterior) -> list[str]:
    out = []
    for t in getattr(posterior, "targets", []) if hasattr(posterior, "per_target") else []:
        ev = ((posterior[t].discrepancy or {}).get("evidence") or {})
        cov, n = ev.get("coverage90_without"), int(ev.get("n_heldout") or 0)
        if _finite(cov) and n >= MIN_HELDOUT_FOR_COVERAGE and float(cov) < LAW_COVERAGE_MIN:
            out.append(f"{t}: the law's 90 % intervals held only {_pct(float(cov))} of {n} "
                       f"losses at the held-out largest scale, so it does not extrapolate there.")
    return out


def holdout_reasons(check: dict | None) -> list[str]:
    out = []
    for t, r in ((check or {}).get("targets") or {}).items():
        cov = ((r or {}).get("with_discrepancy") or {}).get("coverage_90")
        if _finite(cov) and float(cov) < TRUST_COVERAGE_MIN:
            out.append(f"{t}: the held-out check found only {_pct(float(cov))} of the held-out "
                       f"losses inside the 90 % intervals (nominal 90 %).")
    return out


def validation_reasons(validation: dict | None) -> list[str]:
    out = []
    for m in (validation or {}).get("mixtures") or []:
        cells = [("objective", m.get("objective") or {})] + \
            [(f"loss {t}", q) for t, q in (m.get("losses") or {}).items()]
        missed = [(what, q) for what, q in cells if q.get("inside") is False]
        for what, q in missed[:1]:  # one sentence per mixture: the objective's miss first
            out.append(f"validation run {m.get('name')} at N={float(m['N']):.3g}, "
                       f"D={float(m['D']):.3g}: measured {what} {float(q['measured']):.4g} is "
                       f"outside the predicted 90 % interval [{float(q['lo']):.4g}, "
                       f"{float(q['hi']):.4g}].")
    return out


def _pooled_sd(rows: list[dict]) -> float | None:
    """Seed-to-seed sd of the objective pooled over ``rows`` with two or more runs."""
    ss, dof = 0.0, 0
    for m in rows:
        x = np.asarray(m.get("objective_by_run") or [], float)
        if len(x) >= 2 and np.all(np.isfinite(x)):
            ss += float(((x - x.mean()) ** 2).sum())
            dof += len(x) - 1
    return float(np.sqrt(ss / dof)) if dof else None


def ranking_reasons(validation: dict | None) -> list[str]:
    out = []
    rows = [m for m in (validation or {}).get("mixtures") or [] if m.get("objective_by_run")]
    for key in dict.fromkeys((float(m["N"]), float(m["D"])) for m in rows):
        here = [m for m in rows if (float(m["N"]), float(m["D"])) == key]
        rec = next((m for m in here if m.get("name") == RECOMMENDED), None)
        sd = _pooled_sd(here)
        if rec is None or sd is None:
            continue
        mean = {m["name"]: float(np.mean(m["objective_by_run"])) for m in here}
        n = {m["name"]: len(m["objective_by_run"]) for m in here}
        best = min((m for m in here if m is not rec), key=lambda m: mean[m["name"]], default=None)
        if best is None:
            continue
        diff = mean[RECOMMENDED] - mean[best["name"]]
        se = sd * np.sqrt(1 / n[RECOMMENDED] + 1 / n[best["name"]])
        if diff > BEATEN_SE * se:
            out.append(f"validation at N={key[0]:.3g}, D={key[1]:.3g}: {best['name']} measured "
                       f"an objective of {mean[best['name']]:.4g}, below the recommendation's "
                       f"{mean[RECOMMENDED]:.4g} by {diff:.3g} ({diff / se:.0f} standard errors "
                       f"of seed noise), so the recommendation was not the best mixture "
                       f"checked there.")
    return out


def trust(posterior=None, holdout: dict | None = None, validation: dict | None = None) -> dict:
    """The trust level and its reasons (see the module docstring)."""
    reasons = (law_reasons(posterior) + holdout_reasons(holdout) + validation_reasons(validation)
               + ranking_reasons(validation))
    return {"level": LOW if reasons else OK, "reasons": reasons}


def with_reasons(current: dict | None, reasons: list[str]) -> dict:
    """``current`` (a trust dict, or None) with ``reasons`` added once each; low when any."""
    merged = list(dict.fromkeys(list((current or {}).get("reasons") or []) + list(reasons)))
    return {"level": LOW if merged else OK, "reasons": merged}
