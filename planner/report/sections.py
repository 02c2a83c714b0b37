"""The report's sections: each takes the ``Context`` and returns an HTML fragment."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from planner.calibrate.diagnose import (
    HOLDOUT_CACHE,
    holdout_warnings,
    sampler_warnings,
    target_warnings,
)
from planner.model.discrepancy import field_summary
from planner.report import figures
from planner.report.context import Context, need_posterior
from planner.report.html import (
    RawHTML,
    esc,
    fig_html,
    fmt_num,
    fmt_pct,
    html_table,
    para,
    warn_list,
)
from planner.report.progress import discrepancy_line, format_law_weights

log = logging.getLogger("planner.report")


# ------------------------------------------------------------------------------ sections
def sec_summary(ctx: Context) -> str:
    st, cfg, rec = ctx.status, ctx.cfg, ctx.rec
    c = st["counts"]
    state = ("running (" + str(st["running"]) + ")" if st.get("running") else
             f"stopped: {st['stopped']['reason']} - {st['stopped']['message']}"
             if st.get("stopped") else "not running")
    n_imp = sum(1 for r in ctx.run_records if r.source == "imported")
    facts = [
        ["target run", f"N* = {cfg.target_budget.N:.3g} parameters, D* = {cfg.target_budget.D:.3g} tokens"],
        ["objective", " + ".join(f"{w:g} x loss_{t}" for t, w in cfg.targets.items())],
        ["law / acquisition", f"{cfg.law} / {cfg.acquisition.name} (fit: {cfg.fit.method})"],
        *([["law weights", (f"{format_law_weights(st['law_weights'])} (stacking on the held-out "
                            "largest scale; h*, the expected excess loss and the acquisition "
                            "average over the laws with these weights)")]]
          if st.get("law_weights") else []),
        ["campaign", state],
        ["runs", f"{c['completed']} completed ({n_imp} imported), {c['failed']} failed, "
                 f"{c['running'] + c['proposed']} pending; {st['observations']} observations"],
        ["compute bought", f"{st['spent']['flops_committed']:.3g} FLOPs of "
                           f"{'unlimited' if cfg.budget.flops is None else f'{cfg.budget.flops:.3g}'}"],
    ]
    out = [html_table(["", ""], facts, cls="facts")]
    if not rec:
        out.append(para("No recommendation yet: " + (need_posterior(ctx) or ""), "note"))
        return "".join(out)
    recd = ctx.recommended() or {}
    rows = []
    for d in ctx.domains:
        cap = (ctx.caps or {}).get(d, 1.0)
        rows.append([d, fmt_num(recd.get(d), ".3f"), fmt_num(rec["mean"].get(d), ".3f"),
                     f"[{fmt_num(rec['lo'].get(d), '.3f')}, {fmt_num(rec['hi'].get(d), '.3f')}]",
                     "-" if cap >= 1 else fmt_num(cap, ".3f")])
    L = rec.get("loss", {})
    out.append(f'<p class="headline">Train the target run on the recommended mixture below. '
               f'Its predicted loss is <b>{fmt_num(L.get("mean"))}</b> (90 % interval '
               f'{fmt_num(L.get("lo"))} to {fmt_num(L.get("hi"))}); the expected excess loss of this '
               f'choice over the unknown best mixture is <b>{fmt_num(rec.get("expected_excess_loss"), ".3g")}</b>.</p>')
    out.append(html_table(["domain", "recommended h", "h* posterior mean", "h* 90 % interval",
                       "data cap"], rows))
    out.append(para("Model discrepancy: " + discrepancy_line(rec.get("discrepancy")) + "."))
    warns = ctx.warnings()
    if warns:
        out.append(para(f"Warnings ({len(warns)}; also in recommendation.json, `planner status` "
                        f"and the table `planner run` ends with):", "warn"))
        out.append(warn_list(warns))
    else:
        out.append(para("No warnings: the sampler diagnostics and the held-out checks are "
                        "fine.", "good"))
    binding = rec.get("caps_binding") or []
    if binding:
        out.append(para(f"Data caps bind for: {', '.join(binding)} (the recommendation sits at "
                      f"the cap; more tokens of these domains would be used if available).",
                      "warn"))
    if cfg.stop.expected_excess_loss is not None:
        eel = rec.get("expected_excess_loss")
        ok = eel is not None and eel < cfg.stop.expected_excess_loss
        out.append(para(f"Stop tolerance (stop.expected_excess_loss) {cfg.stop.expected_excess_loss:g}: "
                      + ("reached." if ok else "not reached yet.")))
    return "".join(out)


def sec_hstar(ctx: Context) -> str:
    why = need_posterior(ctx)
    if why:
        return para(why, "note")
    od = ctx.optimum_draws()
    hs = od["h_star"]
    recd = ctx.recommended()
    out = [fig_html(figures.hstar_intervals(hs, ctx.domains, recd, ctx.caps),
                     "posterior intervals of the optimal weight per domain")]
    if len(ctx.domains) == 3:
        runs_h = ctx.obs[[f"h_{d}" for d in ctx.domains]].drop_duplicates().to_numpy(float) \
            if len(ctx.obs) else None
        out.append(fig_html(figures.ternary(hs, ctx.domains, recd, ctx.caps, runs_h),
                             "ternary plot of the optimal mixture draws"))
    q = np.quantile(hs, [0.05, 0.5, 0.95], axis=0)
    rows = [[d, fmt_num(hs[:, i].mean(), ".3f"), fmt_num(q[1, i], ".3f"),
             f"[{fmt_num(q[0, i], '.3f')}, {fmt_num(q[2, i], '.3f')}]",
             fmt_pct(np.mean(hs[:, i] < 1e-3))] for i, d in enumerate(ctx.domains)]
    out.append(html_table(["domain", "mean", "median", "90 % interval", "draws with h*_i ~ 0"], rows))
    n = hs.shape[0]
    if n == 1:
        out.append(para("The posterior has a single draw (a MAP fit): h* is a point; fit with "
                      "NUTS (fit.method: nuts) for its uncertainty.", "warn"))
    else:
        out.append(para(f"{n} posterior draws, each optimised at the target run (N*, D*)"
                      + (" within the data caps." if ctx.caps else ".")))
    return "".join(out)


def sec_predicted_loss(ctx: Context) -> str:
    why = need_posterior(ctx)
    if why:
        return para(why, "note")
    post, cfg = ctx.posterior, ctx.cfg
    recd = ctx.recommended()
    H = np.array([[recd.get(d, 0.0) for d in ctx.domains]])
    N, D = np.array([cfg.target_budget.N]), np.array([cfg.target_budget.D])
    draws, summ, rows = {}, {}, []
    for i, t in enumerate(post.targets):
        pdraw = post.predictive_draws(t, N, D, H, seed=ctx.seed + i)[:, 0]
        mean = float(post.loss_draws(t, N, D, H).mean())
        lo, hi = np.quantile(pdraw, [0.05, 0.95])
        draws[t] = pdraw
        summ[t] = {"mean": mean, "lo": float(lo), "hi": float(hi)}
        rows.append([t, fmt_num(ctx.target_weights().get(t, 0.0), "g"), fmt_num(mean), fmt_num(lo), fmt_num(hi),
                     fmt_pct((hi - lo) / mean)])
    L = (ctx.rec or {}).get("loss") or {}
    if L:
        rows.append(["objective (weighted sum)", "", fmt_num(L.get("mean")), fmt_num(L.get("lo")),
                     fmt_num(L.get("hi")), fmt_pct((L["hi"] - L["lo"]) / L["mean"]) if L.get("mean") else "-"])
    out = [html_table(["target", "weight", "predicted loss", "90 % lo", "90 % hi",
                   "interval width"], rows)]
    out.append(fig_html(figures.predicted_loss(draws, summ),
                         "predictive distribution of the loss at the recommended mixture"))
    out.append(para("Intervals include parameter uncertainty, the model discrepancy at the target's "
                  "distance from the observed runs, and run-to-run noise."))
    return "".join(out)


def sec_caps(ctx: Context) -> str:
    cfg = ctx.cfg
    if not cfg.domain_tokens:
        return para("No data limits configured (domain_tokens / max_epochs): every domain may take "
                  "any weight in the target run.", "note")
    recd = ctx.recommended() or {}
    frac = (ctx.rec or {}).get("caps_binding_fraction") or {}
    od = None
    try:
        od = ctx.optimum_draws()
    except Exception:  # noqa: BLE001 - the table below still says what it can
        od = None
    rows, binding = [], []
    for i, d in enumerate(ctx.domains):
        cap = ctx.caps[d]
        tok = cfg.domain_tokens.get(d)
        at_cap = cap < 1.0 and recd.get(d, 0.0) >= cap - 1e-6
        if at_cap:
            binding.append(d)
        f = frac.get(d)
        if f is None and od is not None and cap < 1.0:
            f = float(np.mean(od["h_star"][:, i] >= cap - 1e-6))
        rows.append([d, "unlimited" if tok is None else f"{tok:.3g}",
                     "-" if tok is None else f"{cfg.max_epochs:g}",
                     "none" if cap >= 1.0 else fmt_num(cap, ".3f"), fmt_num(recd.get(d), ".3f"),
                     "yes" if at_cap else "no", "-" if f is None else fmt_pct(f)])
    out = [para(f"A domain with T_i unique tokens may take at most h_i <= max_epochs x T_i / D* of "
              f"the target run's D* = {cfg.target_budget.D:.3g} tokens."),
           html_table(["domain", "unique tokens T_i", "max_epochs", "cap on h_i", "recommended h_i",
                   "cap binds", "draws at the cap"], rows,
                  row_classes=["binding" if d in binding else "" for d in ctx.domains])]
    out.append(para(("Binding caps: " + ", ".join(binding) + ". Without them the optimum would put "
                   "more weight there; more unique data (or more epochs) for these domains would "
                   "lower the loss.") if binding else "No cap binds at the recommendation.",
                  "warn" if binding else ""))
    return "".join(out)


def sec_pred_vs_obs(ctx: Context) -> str:
    why = need_posterior(ctx)
    if why:
        return para(why, "note")
    post, obs = ctx.posterior, ctx.fit_obs
    frames, rows = {}, []
    for i, t in enumerate(post.targets):
        col = f"loss_{t}"
        if col not in obs:
            continue
        sub = obs[np.isfinite(obs[col].to_numpy(float))]
        if not len(sub):
            continue
        pr = post.predict(sub[["N", "D"] + [f"h_{d}" for d in ctx.domains]].reset_index(drop=True),
                          targets=[t], seed=ctx.seed + i)
        f = pd.DataFrame({"obs": sub[col].to_numpy(float), "pred": pr[f"pred_{t}"].to_numpy(),
                          "lo": pr[f"pred_{t}_lo"].to_numpy(), "hi": pr[f"pred_{t}_hi"].to_numpy(),
                          "N": sub["N"].to_numpy(float), "final": sub["final"].to_numpy(bool)})
        frames[t] = f
        inside = (f["obs"] >= f["lo"]) & (f["obs"] <= f["hi"])
        rows.append([t, len(f), fmt_pct(np.mean(np.abs(f["pred"] - f["obs"]) / f["obs"])),
                     fmt_pct(inside.mean())])
    if not frames:
        return para("No observation of the posterior's targets yet.", "note")
    return (fig_html(figures.pred_vs_obs(frames), "predicted against observed loss") +
            html_table(["target", "observations", "mean relative error (in-sample)",
                    "inside the 90 % interval"], rows) +
            para("In-sample: these runs were used by the fit. The held-out check below is the "
               "honest test of extrapolation."))


def sec_holdout(ctx: Context) -> str:
    if not ctx.holdout:
        return para("Not computed (report built with --no-holdout).", "note")
    why = need_posterior(ctx)
    if why:
        return para("Not available. " + why, "note")
    res = ctx.holdout_result()
    if ctx.holdout_exception is not None:
        raise ctx.holdout_exception
    if res is None:
        return para(f"Not available: {ctx.holdout_error or 'no result'}", "note")
    split = res.get("split", {})
    where = ", ".join(f"{k}={fmt_num(v, '.3g')}" for k, v in split.items() if k in ("N", "D"))
    out = [para(f"Fitted on {res.get('n_train_rows')} rows below the largest scale "
              f"({split.get('rule', '?')}{': ' + where if where else ''}), {res.get('method')} "
              f"fit; the held-out rows are predicted as the target run will be.")]
    rows, warns = [], holdout_warnings(res)
    for t, r in res.get("targets", {}).items():
        for label, key in (("law only", "without_discrepancy"), ("with discrepancy", "with_discrepancy")):
            m = r.get(key) or {}
            rows.append([t, label, r.get("n_heldout"), fmt_pct(m.get("mean_relative_error")),
                         fmt_pct(m.get("coverage_50")), fmt_pct(m.get("coverage_90")),
                         fmt_pct(m.get("width_90_rel")), fmt_num(m.get("spearman"), ".2f")])
    out.append(html_table(["target", "prediction", "held-out rows", "mean relative error",
                       "50 % coverage", "90 % coverage", "90 % width (relative)", "Spearman"],
                      rows))
    order_rows = []
    for t, r in res.get("targets", {}).items():
        po = r.get("pairwise_order") or {}
        for label, key in (("law only", "without_field"), ("with mixture discrepancy", "with_field")):
            m = po.get(key)
            if m:
                order_rows.append([t, label, po.get("n_mixtures"), fmt_num(m.get("log_score"), ".3f"),
                                   fmt_pct(m.get("share_called_95")), fmt_pct(m.get("wrong_among_called_95"))])
    if order_rows:
        out.append(para("Which held-out mixture is better: for every pair at the held-out scale, the "
                      "posterior probability that the first has the lower loss, scored against "
                      "the truth (log score: lower is better, 0.693 is a coin flip; a calibrated "
                      "posterior gets at most about 5 % of its 95 % calls wrong)."))
        out.append(html_table(["target", "h* posterior", "mixtures", "log score",
                           "pairs called at 95 %", "of those, wrong"], order_rows))
    out.append(warn_list(warns))
    secs = res.get("seconds", {})
    if secs:
        out.append(para(f"Computed in {secs.get('total', '?')} s (cached in {HOLDOUT_CACHE})."))
    return "".join(out)


def sec_loss_vs_compute(ctx: Context) -> str:
    if not len(ctx.obs):
        return para("No observations yet.", "note")
    return (fig_html(figures.loss_vs_compute(ctx.obs, ctx.domains, list(ctx.cfg.targets)),
                      "loss against compute, one colour per mixture") +
            para("Each line is one run (its checkpoints and final result); compute is 6 N D at "
               "each point."))


def sec_eel(ctx: Context) -> str:
    if not ctx.snapshots:
        return para("No posterior snapshot yet.", "note")
    snaps = pd.DataFrame([{"id": s["id"], "created_at": s["created_at"], "n_runs": s["n_runs"],
                           "n_obs": s["n_obs"], "flops_spent": s["flops_spent"] or 0.0,
                           "expected_excess_loss": (np.nan if s["expected_excess_loss"] is None
                                                    else s["expected_excess_loss"]),
                           "fit_seconds": s["fit_seconds"]} for s in ctx.snapshots])
    out = [fig_html(figures.eel_over_campaign(snaps, ctx.cfg.stop.expected_excess_loss),
                     "expected excess loss after each refit")]
    rows = []
    for s in ctx.snapshots:
        rec = s.get("recommendation") or {}
        mix = ", ".join(f"{d} {rec['recommended'][d]:.2f}" for d in ctx.domains
                        if d in rec.get("recommended", {}))
        rows.append([s["id"], f"{(s['created_at'] - ctx.t0) / 60:.1f}", s["n_runs"], s["n_obs"],
                     fmt_num(s["flops_spent"], ".3g"), fmt_num(s["expected_excess_loss"], ".3g"),
                     mix or "-", fmt_num(s["fit_seconds"], ".1f")])
    out.append(html_table(["fit", "minute", "runs", "observations", "FLOPs completed",
                       "expected excess loss", "recommended mixture", "fit seconds"], rows))
    out.append(para("Expected excess loss: under the posterior, how much worse the recommended "
                  "mixture is expected to be than each draw's own optimum (in loss units). The "
                  "planner buys the runs that lower it most per FLOP."))
    return "".join(out)


def sec_purchases(ctx: Context) -> str:
    runs = ctx.runs_frame()
    if not len(runs):
        return para("No runs yet.", "note")
    cfg = ctx.cfg
    out = [fig_html(figures.purchases(runs, ctx.domains, (cfg.target_budget.N, cfg.target_budget.D)),
                     "runs bought: sizes, mixtures, compute over time")]
    by = runs.groupby(["source", "strategy"], dropna=False).agg(
        runs=("run_id", "size"), flops=("flops", "sum")).reset_index()
    rows = [[r["source"], r["strategy"] or "-", int(r["runs"]), fmt_num(r["flops"], ".3g")]
            for _, r in by.iterrows()]
    out.append(html_table(["source", "strategy", "runs", "FLOPs"], rows))
    out.append(para("Sources: planner (bought by the loop), suggest (proposed by `planner suggest`), "
                  "imported (prior_runs, counted from the start), tell (added with `planner tell`). "
                  "Imported and told runs do not spend the budget."))
    return "".join(out)


def sec_diagnostics(ctx: Context) -> str:
    why = need_posterior(ctx)
    if why:
        return para(why, "note")
    post = ctx.posterior
    rows, warns, notes, figs = [], [], [], []
    sampler_ok = True
    for t in post.targets:
        tp = post[t]
        d = dict(tp.diagnostics or {})
        method = d.get("method", post.meta.get("method", "?"))
        rows.append([t, method, d.get("n_obs", "-"), d.get("n_runs", "-"), tp.n_draws,
                     fmt_num(d.get("r_hat_max"), ".3f"), fmt_num(d.get("ess_bulk_min"), ".0f"),
                     d.get("divergences", "-"), fmt_pct(d.get("divergence_rate")),
                     fmt_num(d.get("seconds"), ".1f")])
        warns += target_warnings(post, t)  # the same warnings as recommendation.json and status
        sampler_ok &= method == "nuts" and not sampler_warnings(d)
        if method == "laplace":
            conv = d.get("mode_converged")
            notes.append(f"{t}: a Laplace fit (a Gaussian at the posterior mode, no sampler): "
                         f"no r_hat, ESS or divergences to check; the mode search "
                         f"{'converged' if conv else 'did NOT converge' if conv is not None else 'ran'}"
                         f" (min Hessian eigenvalue {fmt_num(d.get('min_hessian_eigenvalue'), '.3g')})."
                         f" A skewed or banana-shaped posterior is only approximated; confirm "
                         f"the final decision with fit.method: nuts.")
        disc = d.get("discrepancy") or tp.discrepancy
        if isinstance(disc, dict) and disc:
            note = disc.get("note") or (disc.get("evidence") or {}).get("reason", "")
            notes.append(f"{t}: model discrepancy {disc.get('kind', '?')}, slope s1 = "
                         f"{fmt_num(disc.get('s1'), '.3g')} per unit of log-distance"
                         + (f" ({note})" if note else ""))
            fld = (tp.discrepancy or {}).get("mixture_field") or disc.get("mixture_field")
            if isinstance(fld, dict) and fld:
                notes.append(f"{t}: the discrepancy varies smoothly with the mixture "
                             f"({field_summary(fld)}): each draw's h* includes it, so the h* "
                             f"intervals widen with the distance from the observed runs")
        idata = tp.idata
        if method == "nuts" and idata is not None and len(figs) < 3:

            names = [v for v in ("E", "A", "B", "sigma") if v in idata.posterior]
            if names:
                figs.append(f"<h3>Trace of {esc(t)} (E, A, B, sigma; one line per chain)</h3>"
                            + fig_html(figures.arviz_trace(idata, names), f"ArviZ trace plot, {t}"))
    out = [html_table(["target", "method", "observations", "runs", "draws", "max r_hat",
                   "min bulk ESS", "divergences", "divergence rate", "fit seconds"], rows)]
    if sampler_ok:
        out.append(para("All chains agree (r_hat <= 1.05), the effective sample sizes are adequate "
                      "and there are no worrying divergences.", "good"))
    out.append(warn_list(warns))
    if notes:
        out.append(para("Notes:") + warn_list(notes, cls="notes"))
    out.append(_law_auto_note(post))
    out += figs
    return "".join(out)


def _law_auto_note(post) -> str:
    """law auto: how each target's families were weighted, and on what evidence."""
    ev = post.meta.get("stacking") if post.meta.get("law") == "auto" else None
    if not ev:
        return ""
    items = []
    for t, e in ev.items():
        w = (post.meta.get("law_weights") or {}).get(t, {})
        elpd = e.get("elpd") or {}
        items.append(f"{t}: " + ", ".join(f"{f} {v:.3f}" for f, v in w.items())
                     + (" (held-out log score " + ", ".join(f"{f} {v:.1f}" for f, v in elpd.items())
                        + ")" if elpd else "") + f"; {e.get('note', '')}")
    return (para("law auto: the draws are a mixture of the laws' posteriors with these weights "
                 "(the table shows the worst diagnostics over the laws that contribute):")
            + warn_list(items))


def sec_runs(ctx: Context) -> str:
    runs = ctx.runs_frame()
    if not len(runs):
        return para("No runs yet.", "note")
    header = (["#", "run_id", "source", "status", "strategy", "N", "D"]
              + [f"h_{d}" for d in ctx.domains] + [f"loss_{t}" for t in ctx.cfg.targets]
              + ["checkpoints", "6ND", "bought at (min)", "note"])
    rows, classes = [], []
    for _, r in runs.iterrows():
        src = RawHTML(f'<span class="badge {esc(r["source"])}">{esc(r["source"])}</span>')
        rows.append([r["seq"], r["run_id"], src, r["status"], r["strategy"] or "-",
                     fmt_num(r["N"], ".3g"), fmt_num(r["D"], ".3g")]
                    + [fmt_num(r[f"h_{d}"], ".3f") for d in ctx.domains]
                    + [fmt_num(r[f"loss_{t}"], ".4f") for t in ctx.cfg.targets]
                    + [r["checkpoints"], fmt_num(r["flops"], ".3g"), f"{r['t_min']:.1f}", r["error"]])
        classes.append(" ".join(c for c in (str(r["source"]), str(r["status"])) if c))
    n_imp = int((runs["source"] == "imported").sum())
    return (para(f"{len(runs)} runs ({n_imp} imported from prior_runs, marked 'imported'); "
               f"{len(ctx.obs)} observations including checkpoints. Export them with "
               f"`planner runs {ctx.dir} --out runs.csv`.") +
            f'<div class="scroll">{html_table(header, rows, classes, cls="runs")}</div>')
