"""The campaign report: one self-contained HTML page (figures embedded as PNG data URIs).

    from planner.report import build_report
    res = build_report("campaigns/demo")            # -> ReportResult(path, sections, errors)
    res.path                                        # campaigns/demo/report.html

``planner report CAMPAIGN_DIR`` calls ``build_report``. The page answers "what mixture should we
train, and how sure are we?" in sections, each with a stable ``id`` (anchors and checks rely on
them, see ``SECTIONS``):

    trust              can the law be trusted at the target (planner.calibrate.trust); when
                       it is low, a banner says so before anything else on the page
    summary            the recommended mixture, its predicted loss (90 % interval), the
                       expected excess loss, the campaign's state
    h-star             posterior of the optimal mixture h* per domain (50/90 % intervals), and a
                       ternary plot of the h* draws when there are three domains
    predicted-loss     predictive loss at the recommended mixture for the target run
    caps               data limits (domain_tokens x max_epochs): the caps and which bind
    pred-vs-obs        every observation against its prediction with a 90 % interval, coloured by N
    holdout            held-out check: fit all but the largest scale, predict it
                       (planner.calibrate.checks.holdout_check; relative error, interval coverage)
    loss-vs-compute    loss against compute 6 N D, one colour per mixture
    eel                expected excess loss after each refit over the campaign
    purchases          which (N, D, h) the planner bought, and when
    validation         validation runs (planner validate, tell --validation) beside their
                       predicted mean and 90 % interval
    diagnostics        sampler diagnostics per target (r_hat, ESS, divergences) with
                       plain-language warnings, and the model discrepancy used
    runs               the runs table (imported runs marked)

A section that cannot be produced says why on the page (and in ``ReportResult.errors``); the
rest of the report is still written. The held-out check refits the campaign's law twice per
call, so its result is cached in ``CAMPAIGN_DIR/report_holdout.json`` keyed by the posterior
snapshot and the fit settings.
"""
from __future__ import annotations

import datetime as _dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from planner.core.errors import InputError
from planner.core.io import write_text_atomic
from planner.infer.options import FIT_METHODS
from planner.report.context import REPORT_NAME, SECTIONS, Context
from planner.report.trust_sections import sec_trust, sec_validation, trust_banner
from planner.report.html import CSS, esc
from planner.report.sections import (
    sec_caps,
    sec_diagnostics,
    sec_eel,
    sec_holdout,
    sec_hstar,
    sec_loss_vs_compute,
    sec_pred_vs_obs,
    sec_predicted_loss,
    sec_purchases,
    sec_runs,
    sec_summary,
)

log = logging.getLogger("planner.report")


@dataclass
class ReportResult:
    path: Path
    sections: list[str]
    errors: dict[str, str] = field(default_factory=dict)  # section id -> why it is missing
    seconds: float = 0.0
    # damaged posterior snapshots skipped (the report shows the newest one that loads), or an
    # unreadable recommendation.json: campaign_status's ``damage``
    damage: list[str] = field(default_factory=list)


_BUILDERS: dict[str, Callable[[Context], str]] = {
    "summary": sec_summary, "h-star": sec_hstar, "predicted-loss": sec_predicted_loss,
    "caps": sec_caps, "pred-vs-obs": sec_pred_vs_obs, "holdout": sec_holdout,
    "loss-vs-compute": sec_loss_vs_compute, "eel": sec_eel, "purchases": sec_purchases,
    "diagnostics": sec_diagnostics, "runs": sec_runs, "trust": sec_trust,
    "validation": sec_validation,
}


def render(ctx: Context, bodies: dict[str, str], errors: dict[str, str],
           banner: str = "") -> str:
    cfg = ctx.cfg
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    nav = "".join(f'<a href="#{sid}">{esc(title)}</a>' for sid, title in SECTIONS)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>mixture-planner report: {esc(ctx.dir.name)}</title>",
             f"<style>{CSS}</style></head><body>", banner,
             f"<header><h1>Data-mixture campaign report</h1><p>{esc(ctx.dir)} &middot; domains "
             f"{esc(', '.join(ctx.domains))} &middot; {esc(cfg.law)} law &middot; generated "
             f"{esc(now)}</p></header>", f"<nav>{nav}</nav><main>"]
    for sid, title in SECTIONS:
        body = bodies.get(sid, "")
        if sid in errors:
            body = (f'<p class="section-error">This section could not be produced: '
                    f'{esc(errors[sid])}</p>')
        parts.append(f'<section id="{sid}"><h2>{esc(title)}</h2>{body}</section>')
    parts.append("</main></body></html>")
    return "\n".join(parts)


def build_report(campaign_dir, out=None, *, holdout: bool = True,
                 holdout_method: str | None = None, holdout_kwargs: dict | None = None,
                 seed: int = 0, notify: Callable[[str], None] | None = None) -> ReportResult:
    """Write the campaign report (HTML, figures embedded) to ``out`` (default
    ``CAMPAIGN_DIR/report.html``) and return a ``ReportResult``.

    holdout: run the held-out check (refits the law without the largest scale; cached).
    holdout_method: ``nuts`` or ``map`` for that check (default: the campaign's fit.method, with
    its warm-up/draws/chains); holdout_kwargs: extra keyword arguments for ``inference.fit``
    there (e.g. ``{"map_starts": 4}``). notify: called with a line before slow work (the
    CLI prints it). Works on a finished or a running campaign (read-only)."""
    t0 = time.perf_counter()
    d = Path(campaign_dir)

    if holdout_method is not None and holdout_method not in FIT_METHODS:
        raise InputError(f"--holdout-method must be one of {', '.join(FIT_METHODS)}, "
                         f"got {holdout_method!r}")
    ctx = Context(d, seed, holdout, holdout_method, holdout_kwargs, notify)
    target = Path(out) if out is not None else d / REPORT_NAME
    if not target.parent.exists():
        raise InputError(f"output directory {target.parent} does not exist")
    bodies, errors = {}, {}
    for sid, _ in SECTIONS:
        try:
            bodies[sid] = _BUILDERS[sid](ctx)
        except Exception as e:  # noqa: BLE001 - one broken section must not lose the report
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
            errors[sid] = msg
            log.warning("report section %s failed: %s", sid, msg, exc_info=True)
    try:
        banner = trust_banner(ctx)
    except Exception as e:  # noqa: BLE001 - the trust section reports the same failure
        log.warning("trust banner failed: %s", e)
        banner = ""
    page = render(ctx, bodies, errors, banner)
    write_text_atomic(target, page)
    return ReportResult(target, [s for s, _ in SECTIONS], errors, time.perf_counter() - t0,
                        list(ctx.status.get("damage") or []))
