"""The report's trust and validation sections (``planner.calibrate.trust``,
``planner.campaign.validation``): whether the law extrapolates to the target, and the
validation runs beside their predictions."""
from __future__ import annotations

from planner.report.context import Context
from planner.report.html import fmt_num, html_table, para, warn_list


def trust_banner(ctx: Context) -> str:
    """The first thing on the page when trust is low ('' otherwise)."""
    tr = ctx.trust()
    if not tr or tr["level"] != "low":
        return ""
    return ('<div class="trust-low" id="trust-banner"><b>Trust: low.</b> The scaling law does '
            'not extrapolate to the target here; treat the recommendation as a guess.'
            + warn_list(tr["reasons"]) + "</div>")


def sec_trust(ctx: Context) -> str:
    tr = ctx.trust()
    if tr is None:
        return para("No recommendation yet.", "note")
    if tr["level"] == "low":
        return (para("Trust: LOW. The law is seen not to extrapolate, for these reasons:", "")
                + warn_list(tr["reasons"]))
    how = ("the held-out check and " if ctx.holdout_result() is not None else "")
    return para(f"Trust: ok. Nothing seen so far ({how}the law's fit at the held-out largest "
                f"scale, and any validation runs) says the law fails to extrapolate. Check it "
                f"with `planner validate`.", "")


def _cell(q: dict | None) -> list:
    if not q:
        return ["-", "-", "-"]
    if "lo" not in q:
        return [fmt_num(q.get("measured")), "-", "-"]
    return [fmt_num(q["measured"]), f"{fmt_num(q['mean'])} [{fmt_num(q['lo'])}, {fmt_num(q['hi'])}]",
            "yes" if q["inside"] else "NO"]


def sec_validation(ctx: Context) -> str:
    block = ctx.status.get("validation")
    if not block:
        return para("No validation runs. `planner validate CAMPAIGN_DIR` trains the recommended, "
                    "uniform and best-seen mixtures at the target and shows them here; "
                    "`planner tell --validation` records your own.", "note")
    targets = list(ctx.cfg.targets)
    rows = []
    for m in block["mixtures"]:
        h = ", ".join(f"{d} {float(w):.2f}" for d, w in m["h"].items())
        rows.append([m["name"], f"{m['N']:.3g}", f"{m['D']:.3g}", len(m["run_ids"]), h,
                     *_cell(m.get("objective")),
                     *[x for t in targets for x in _cell((m.get("losses") or {}).get(t))[:1]],
                     "yes" if m.get("in_fit") else "no"])
    head = ["mixture", "N", "D", "runs", "h", "objective measured", "predicted (90 %)", "inside",
            *[f"loss_{t}" for t in targets], "in fit"]
    return (para(f"Validation runs (not charged to the budget) beside the prediction of "
                 f"snapshot {block.get('snapshot')}; objective = "
                 + " + ".join(f"{w:g} x loss_{t}" for t, w in ctx.cfg.targets.items()) + ".", "")
            + html_table(head, rows))
