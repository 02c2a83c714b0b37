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
  or target loss falls outside its predicted 90 % interval.

Each reason is one plain sentence; ``ok`` has none.
"""
from __future__ import annotations

import numpy as np

from planner.calibrate.diagnose import LAW_COVERAGE_MIN, MIN_HELDOUT_FOR_COVERAGE

# a 90 % interval holding less than half of the held-out losses is far below nominal
TRUST_COVERAGE_MIN = 0.5


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


def trust(posterior=None, holdout: dict | None = None, validation: dict | None = None) -> dict:
    """The trust level and its reasons (see the module docstring)."""
    reasons = law_reasons(posterior) + holdout_reasons(holdout) + validation_reasons(validation)
    return {"level": LOW if reasons else OK, "reasons": reasons}


def with_reasons(current: dict | None, reasons: list[str]) -> dict:
    """``current`` (a trust dict, or None) with ``reasons`` added once each; low when any."""
    merged = list(dict.fromkeys(list((current or {}).get("reasons") or []) + list(reasons)))
    return {"level": LOW if merged else OK, "reasons": merged}
