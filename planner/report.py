"""The campaign report: one self-contained HTML page (figures embedded as PNG data URIs).

    from planner.report import build_report
    res = build_report("campaigns/demo")            # -> ReportResult(path, sections, errors)
    res.path                                        # campaigns/demo/report.html

``planner report CAMPAIGN_DIR`` calls ``build_report``. The page answers "what mixture should we
train, and how sure are we?" in sections, each with a stable ``id`` (anchors and checks rely on
them, see ``SECTIONS``):

    summary            the recommended mixture, its predicted loss (90 % interval), the
                       expected excess loss, the campaign's state
    h-star             posterior of the optimal mixture h* per domain (50/90 % intervals), and a
                       ternary plot of the h* draws when there are three domains
    predicted-loss     predictive loss at the recommended mixture for the target run
    caps               data limits (domain_tokens x max_epochs): the caps and which bind
    pred-vs-obs        every observation against its prediction with a 90 % interval, coloured by N
    holdout            held-out check: fit all but the largest scale, predict it
                       (planner.calibration.holdout_check; relative error, interval coverage)
    loss-vs-compute    loss against compute 6 N D, one colour per mixture
    eel                expected excess loss after each refit over the campaign
    purchases          which (N, D, h) the planner bought, and when
    diagnostics        sampler diagnostics per target (r_hat, ESS, divergences) with
                       plain-language warnings, and the model discrepancy used
    runs               the runs table (imported runs marked)

A section that cannot be produced says why on the page (and in ``ReportResult.errors``); the
rest of the report is still written. The held-out check refits the campaign's law twice per
call, so its result is cached in ``CAMPAIGN_DIR/report_holdout.json`` keyed by the posterior
snapshot and the fit settings.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from planner.errors import InputError

log = logging.getLogger("planner.report")

REPORT_NAME = "report.html"
HOLDOUT_CACHE = "report_holdout.json"

SECTIONS: list[tuple[str, str]] = [
    ("summary", "Recommendation"),
    ("h-star", "Posterior over the optimal mixture h*"),
    ("predicted-loss", "Predicted loss at the recommended mixture"),
    ("caps", "Data limits"),
    ("pred-vs-obs", "Predicted vs observed"),
    ("holdout", "Held-out check (largest scale left out)"),
    ("loss-vs-compute", "Loss vs compute per mixture"),
    ("eel", "Expected excess loss over the campaign"),
    ("purchases", "What the planner bought, and when"),
    ("diagnostics", "Sampler diagnostics"),
    ("runs", "Runs table"),
]


@dataclass
class ReportResult:
    path: Path
    sections: list[str]
    errors: dict[str, str] = field(default_factory=dict)  # section id -> why it is missing
    seconds: float = 0.0


# ------------------------------------------------------------------------------ formatting
def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any, fmt: str = ".4g") -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-" if x is None else _e(x)
    if not math.isfinite(v):
        return "-"
    return format(v, fmt)


def _pct(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-"
    return "-" if not math.isfinite(v) else f"{100 * v:.1f} %"


def _table(header: list[str], rows: list[list[Any]], row_classes: list[str] | None = None,
           cls: str = "") -> str:
    """An HTML table; cells are escaped unless they are ``_Raw``."""
    out = [f'<table class="{_e(cls)}"><thead><tr>']
    out += [f"<th>{_e(h)}</th>" for h in header]
    out.append("</tr></thead><tbody>")
    for i, r in enumerate(rows):
        rc = row_classes[i] if row_classes else ""
        out.append(f'<tr class="{_e(rc)}">' if rc else "<tr>")
        out += [f"<td>{c if isinstance(c, _Raw) else _e(c)}</td>" for c in r]
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


class _Raw(str):
    """HTML that is already safe."""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _fig_html(fig, alt: str) -> str:
    from planner.figures import to_png

    return _img(to_png(fig), alt)


def _p(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{_e(text)}</p>' if cls else f"<p>{_e(text)}</p>"


def _warn_list(items: list[str]) -> str:
    if not items:
        return ""
    return '<ul class="warnings">' + "".join(f"<li>{_e(w)}</li>" for w in items) + "</ul>"


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


# ------------------------------------------------------------------------------ data
class _Context:
    """Everything read from the campaign directory once, shared by the sections."""

    def __init__(self, campaign_dir: Path, seed: int, holdout: bool, holdout_method: str | None,
                 holdout_kwargs: dict | None, notify: Callable[[str], None] | None = None):
        from planner.campaign import campaign_status, export_runs, load_campaign

        self.dir = campaign_dir
        self.seed = seed
        self.holdout = holdout
        self.holdout_method = holdout_method
        self.holdout_kwargs = dict(holdout_kwargs or {})
        self.notify = notify or (lambda msg: log.info("%s", msg))
        self.campaign = load_campaign(campaign_dir)
        self.cfg = self.campaign.config
        self.domains = list(self.cfg.domains)
        self.status = campaign_status(campaign_dir)
        with self.campaign.ledger() as lg:
            self.run_records = lg.runs()
            self.results = {r["run_id"]: r for r in lg.results()}
            self.snapshots = lg.snapshots()
            self.attempts = lg.attempts()
            events = lg.events()
        self.t0 = min([e["t"] for e in events] + [r.created_at for r in self.run_records]
                      or [time.time()])
        self.obs = export_runs(campaign_dir)
        self.rec = self.status.get("recommendation")
        self.posterior = None
        self.posterior_error = None
        if self.snapshots:
            try:
                self.posterior = self.campaign.posterior()
            except Exception as e:  # noqa: BLE001 - said on the page
                self.posterior_error = f"{type(e).__name__}: {e}"
        self.caps = self.cfg.weight_caps()
        self._od = None

    @property
    def snapshot_id(self) -> int | None:
        return self.snapshots[-1]["id"] if self.snapshots else None

    def target_weights(self) -> dict[str, float]:
        post = self.posterior
        tw = (self.rec or {}).get("target_weights") or dict(self.cfg.targets)
        return {t: float(w) for t, w in tw.items() if post is None or t in post.targets}

    def recommended(self) -> dict[str, float] | None:
        if self.rec and self.rec.get("recommended"):
            return {d: float(v) for d, v in self.rec["recommended"].items()}
        od = self.optimum_draws()
        if od is None:
            return None
        return {d: float(v) for d, v in zip(self.domains, od["h_bayes"])}

    def optimum_draws(self):
        """Per-draw optima at the target (with the data caps), computed once."""
        if self._od is None and self.posterior is not None:
            from planner.optimum import optimum_draws

            self._od = optimum_draws(self.posterior, self.cfg.target_budget.N,
                                     self.cfg.target_budget.D, self.target_weights(),
                                     hi=self.cfg.weight_upper())
        return self._od

    def runs_frame(self) -> pd.DataFrame:
        """One row per run, in purchase order: seq, run_id, source, status, strategy, N, D,
        h_<domain>, flops, t_min, loss_<target> (final), checkpoints, error."""
        rows = []
        for r in self.run_records:
            res = self.results.get(r.run_id)
            row = {"seq": r.seq, "run_id": r.run_id, "source": r.source, "status": r.status,
                   "strategy": r.strategy or "", "N": float(res["N"]) if res else float(r.N),
                   "D": float(r.D), "flops": float(r.flops),
                   "t_min": (r.created_at - self.t0) / 60.0, "attempts": r.attempts,
                   "checkpoints": len(res["checkpoints"]) if res else 0,
                   "error": (r.error or "").splitlines()[0][:160] if r.error else ""}
            for d in self.domains:
                row[f"h_{d}"] = float(r.h.get(d, 0.0))
            for t in self.cfg.targets:
                row[f"loss_{t}"] = float(res["losses"][t]) if res and t in res["losses"] else np.nan
            rows.append(row)
        cols = (["seq", "run_id", "source", "status", "strategy", "N", "D"]
                + [f"h_{d}" for d in self.domains] + [f"loss_{t}" for t in self.cfg.targets]
                + ["checkpoints", "flops", "t_min", "attempts", "error"])
        return pd.DataFrame(rows, columns=cols)


def _need_posterior(ctx: _Context) -> str | None:
    if ctx.posterior is not None:
        return None
    if ctx.posterior_error:
        return f"The latest posterior snapshot cannot be loaded ({ctx.posterior_error})."
    return (f"No posterior yet: the campaign has {ctx.status['counts']['completed']} completed "
            f"run(s); the first fit needs {ctx.cfg.min_runs_to_fit()}.")


# ------------------------------------------------------------------------------ sections
def _sec_summary(ctx: _Context) -> str:
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
        ["campaign", state],
        ["runs", f"{c['completed']} completed ({n_imp} imported), {c['failed']} failed, "
                 f"{c['running'] + c['proposed']} pending; {st['observations']} observations"],
        ["compute bought", f"{st['spent']['flops_committed']:.3g} FLOPs of "
                           f"{'unlimited' if cfg.budget.flops is None else f'{cfg.budget.flops:.3g}'}"],
    ]
    out = [_table(["", ""], facts, cls="facts")]
    if not rec:
        out.append(_p("No recommendation yet: " + (_need_posterior(ctx) or ""), "note"))
        return "".join(out)
    recd = ctx.recommended() or {}
    rows = []
    for d in ctx.domains:
        cap = (ctx.caps or {}).get(d, 1.0)
        rows.append([d, _num(recd.get(d), ".3f"), _num(rec["mean"].get(d), ".3f"),
                     f"[{_num(rec['lo'].get(d), '.3f')}, {_num(rec['hi'].get(d), '.3f')}]",
                     "-" if cap >= 1 else _num(cap, ".3f")])
    L = rec.get("loss", {})
    out.append(f'<p class="headline">Train the target run on the recommended mixture below. '
               f'Its predicted loss is <b>{_num(L.get("mean"))}</b> (90 % interval '
               f'{_num(L.get("lo"))} to {_num(L.get("hi"))}); the expected excess loss of this '
               f'choice over the unknown best mixture is <b>{_num(rec.get("expected_excess_loss"), ".3g")}</b>.</p>')
    out.append(_table(["domain", "recommended h", "h* posterior mean", "h* 90 % interval",
                       "data cap"], rows))
    binding = rec.get("caps_binding") or []
    if binding:
        out.append(_p(f"Data caps bind for: {', '.join(binding)} (the recommendation sits at "
                      f"the cap; more tokens of these domains would be used if available).",
                      "warn"))
    if cfg.stop.expected_excess_loss is not None:
        eel = rec.get("expected_excess_loss")
        ok = eel is not None and eel < cfg.stop.expected_excess_loss
        out.append(_p(f"Stop tolerance (stop.expected_excess_loss) {cfg.stop.expected_excess_loss:g}: "
                      + ("reached." if ok else "not reached yet.")))
    return "".join(out)


def _sec_hstar(ctx: _Context) -> str:
    from planner import figures

    why = _need_posterior(ctx)
    if why:
        return _p(why, "note")
    od = ctx.optimum_draws()
    hs = od["h_star"]
    recd = ctx.recommended()
    out = [_fig_html(figures.hstar_intervals(hs, ctx.domains, recd, ctx.caps),
                     "posterior intervals of the optimal weight per domain")]
    if len(ctx.domains) == 3:
        runs_h = ctx.obs[[f"h_{d}" for d in ctx.domains]].drop_duplicates().to_numpy(float) \
            if len(ctx.obs) else None
        out.append(_fig_html(figures.ternary(hs, ctx.domains, recd, ctx.caps, runs_h),
                             "ternary plot of the optimal mixture draws"))
    q = np.quantile(hs, [0.05, 0.5, 0.95], axis=0)
    rows = [[d, _num(hs[:, i].mean(), ".3f"), _num(q[1, i], ".3f"),
             f"[{_num(q[0, i], '.3f')}, {_num(q[2, i], '.3f')}]",
             _pct(np.mean(hs[:, i] < 1e-3))] for i, d in enumerate(ctx.domains)]
    out.append(_table(["domain", "mean", "median", "90 % interval", "draws with h*_i ~ 0"], rows))
    n = hs.shape[0]
    if n == 1:
        out.append(_p("The posterior has a single draw (a MAP fit): h* is a point; fit with "
                      "NUTS (fit.method: nuts) for its uncertainty.", "warn"))
    else:
        out.append(_p(f"{n} posterior draws, each optimised at the target run (N*, D*)"
                      + (" within the data caps." if ctx.caps else ".")))
    return "".join(out)


def _sec_predicted_loss(ctx: _Context) -> str:
    from planner import figures

    why = _need_posterior(ctx)
    if why:
        return _p(why, "note")
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
        rows.append([t, _num(ctx.target_weights().get(t, 0.0), "g"), _num(mean), _num(lo), _num(hi),
                     _pct((hi - lo) / mean)])
    L = (ctx.rec or {}).get("loss") or {}
    if L:
        rows.append(["objective (weighted sum)", "", _num(L.get("mean")), _num(L.get("lo")),
                     _num(L.get("hi")), _pct((L["hi"] - L["lo"]) / L["mean"]) if L.get("mean") else "-"])
    out = [_table(["target", "weight", "predicted loss", "90 % lo", "90 % hi",
                   "interval width"], rows)]
    out.append(_fig_html(figures.predicted_loss(draws, summ),
                         "predictive distribution of the loss at the recommended mixture"))
    out.append(_p("Intervals include parameter uncertainty, the model discrepancy at the target's "
                  "distance from the observed runs, and run-to-run noise."))
    return "".join(out)


def _sec_caps(ctx: _Context) -> str:
    cfg = ctx.cfg
    if not cfg.domain_tokens:
        return _p("No data limits configured (domain_tokens / max_epochs): every domain may take "
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
                     "none" if cap >= 1.0 else _num(cap, ".3f"), _num(recd.get(d), ".3f"),
                     "yes" if at_cap else "no", "-" if f is None else _pct(f)])
    out = [_p(f"A domain with T_i unique tokens may take at most h_i <= max_epochs x T_i / D* of "
              f"the target run's D* = {cfg.target_budget.D:.3g} tokens."),
           _table(["domain", "unique tokens T_i", "max_epochs", "cap on h_i", "recommended h_i",
                   "cap binds", "draws at the cap"], rows,
                  row_classes=["binding" if d in binding else "" for d in ctx.domains])]
    out.append(_p(("Binding caps: " + ", ".join(binding) + ". Without them the optimum would put "
                   "more weight there; more unique data (or more epochs) for these domains would "
                   "lower the loss.") if binding else "No cap binds at the recommendation.",
                  "warn" if binding else ""))
    return "".join(out)


def _sec_pred_vs_obs(ctx: _Context) -> str:
    from planner import figures

    why = _need_posterior(ctx)
    if why:
        return _p(why, "note")
    post, obs = ctx.posterior, ctx.obs
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
        rows.append([t, len(f), _pct(np.mean(np.abs(f["pred"] - f["obs"]) / f["obs"])),
                     _pct(inside.mean())])
    if not frames:
        return _p("No observation of the posterior's targets yet.", "note")
    return (_fig_html(figures.pred_vs_obs(frames), "predicted against observed loss") +
            _table(["target", "observations", "mean relative error (in-sample)",
                    "inside the 90 % interval"], rows) +
            _p("In-sample: these runs were used by the fit. The held-out check below is the "
               "honest test of extrapolation."))


def _holdout_settings(ctx: _Context) -> tuple[str, dict]:
    method = ctx.holdout_method or ctx.cfg.fit.method
    kw: dict = {}
    if method in ("nuts", "laplace"):
        kw = {"num_warmup": ctx.cfg.fit.num_warmup, "num_samples": ctx.cfg.fit.num_samples,
              "num_chains": ctx.cfg.fit.num_chains}
    kw.update(ctx.holdout_kwargs)
    kw.pop("method", None)
    return method, kw


def run_holdout(ctx: _Context) -> dict:
    """``calibration.holdout_check`` on the campaign's observations (cached per snapshot)."""
    from planner.calibration import holdout_check
    from planner.runs import runs_from_frame

    method, kw = _holdout_settings(ctx)
    targets = list(ctx.posterior.targets) if ctx.posterior is not None else list(ctx.cfg.targets)
    key = json.dumps({"snapshot": ctx.snapshot_id, "n_obs": len(ctx.obs), "law": ctx.cfg.law,
                      "method": method, "kwargs": kw, "targets": targets, "seed": ctx.seed},
                     sort_keys=True, default=_json_default)
    cache = ctx.dir / HOLDOUT_CACHE
    if cache.exists():
        try:
            c = json.loads(cache.read_text())
            if c.get("key") == key:
                return c["result"]
        except (OSError, json.JSONDecodeError, KeyError):
            pass
    table = runs_from_frame(ctx.obs, domains=ctx.domains, targets=targets)
    ctx.notify(f"held-out check: refitting the {ctx.cfg.law} law ({method}) without the largest "
               f"scale; the result is cached in {cache} (--no-holdout skips it)")
    res = holdout_check(table, law=ctx.cfg.law, targets=targets, method=method, seed=ctx.seed, **kw)
    res = json.loads(json.dumps(res, default=_json_default))
    try:
        tmp = cache.with_name(f".{cache.name}.tmp")
        tmp.write_text(json.dumps({"key": key, "result": res}))
        tmp.replace(cache)
    except OSError:
        pass  # a read-only campaign directory only costs a recomputation
    return res


def _sec_holdout(ctx: _Context) -> str:
    if not ctx.holdout:
        return _p("Not computed (report built with --no-holdout).", "note")
    try:
        import planner.calibration  # noqa: F401
    except ImportError as e:
        return _p(f"Not available: the calibration module cannot be imported ({e}).", "note")
    why = _need_posterior(ctx)
    if why:
        return _p("Not available. " + why, "note")
    try:
        res = run_holdout(ctx)
    except InputError as e:
        return _p(f"Not available: {e}", "note")
    split = res.get("split", {})
    where = ", ".join(f"{k}={_num(v, '.3g')}" for k, v in split.items() if k in ("N", "D"))
    out = [_p(f"Fitted on {res.get('n_train_rows')} rows below the largest scale "
              f"({split.get('rule', '?')}{': ' + where if where else ''}), {res.get('method')} "
              f"fit; the held-out rows are predicted as the target run will be.")]
    rows, warns = [], []
    for t, r in res.get("targets", {}).items():
        for label, key in (("law only", "without_discrepancy"), ("with discrepancy", "with_discrepancy")):
            m = r.get(key) or {}
            rows.append([t, label, r.get("n_heldout"), _pct(m.get("mean_relative_error")),
                         _pct(m.get("coverage_50")), _pct(m.get("coverage_90")),
                         _pct(m.get("width_90_rel")), _num(m.get("spearman"), ".2f")])
        m = r.get("with_discrepancy") or {}
        cov = m.get("coverage_90")
        if cov is not None and np.isfinite(cov) and cov < 0.7:
            warns.append(f"{t}: only {100 * cov:.0f} % of the held-out losses fall inside the 90 % "
                         f"intervals: the predictions at the target are overconfident.")
    out.append(_table(["target", "prediction", "held-out rows", "mean relative error",
                       "50 % coverage", "90 % coverage", "90 % width (relative)", "Spearman"],
                      rows))
    order_rows = []
    for t, r in res.get("targets", {}).items():
        po = r.get("pairwise_order") or {}
        for label, key in (("law only", "without_field"), ("with mixture discrepancy", "with_field")):
            m = po.get(key)
            if m:
                order_rows.append([t, label, po.get("n_mixtures"), _num(m.get("log_score"), ".3f"),
                                   _pct(m.get("share_called_95")), _pct(m.get("wrong_among_called_95"))])
    if order_rows:
        out.append(_p("Which held-out mixture is better: for every pair at the held-out scale, the "
                      "posterior probability that the first has the lower loss, scored against "
                      "the truth (log score: lower is better, 0.693 is a coin flip; a calibrated "
                      "posterior gets at most about 5 % of its 95 % calls wrong)."))
        out.append(_table(["target", "h* posterior", "mixtures", "log score",
                           "pairs called at 95 %", "of those, wrong"], order_rows))
    out.append(_warn_list(warns))
    secs = res.get("seconds", {})
    if secs:
        out.append(_p(f"Computed in {secs.get('total', '?')} s (cached in {HOLDOUT_CACHE})."))
    return "".join(out)


def _sec_loss_vs_compute(ctx: _Context) -> str:
    from planner import figures

    if not len(ctx.obs):
        return _p("No observations yet.", "note")
    return (_fig_html(figures.loss_vs_compute(ctx.obs, ctx.domains, list(ctx.cfg.targets)),
                      "loss against compute, one colour per mixture") +
            _p("Each line is one run (its checkpoints and final result); compute is 6 N D at "
               "each point."))


def _sec_eel(ctx: _Context) -> str:
    from planner import figures

    if not ctx.snapshots:
        return _p("No posterior snapshot yet.", "note")
    snaps = pd.DataFrame([{"id": s["id"], "created_at": s["created_at"], "n_runs": s["n_runs"],
                           "n_obs": s["n_obs"], "flops_spent": s["flops_spent"] or 0.0,
                           "expected_excess_loss": (np.nan if s["expected_excess_loss"] is None
                                                    else s["expected_excess_loss"]),
                           "fit_seconds": s["fit_seconds"]} for s in ctx.snapshots])
    out = [_fig_html(figures.eel_over_campaign(snaps, ctx.cfg.stop.expected_excess_loss),
                     "expected excess loss after each refit")]
    rows = []
    for s in ctx.snapshots:
        rec = s.get("recommendation") or {}
        mix = ", ".join(f"{d} {rec['recommended'][d]:.2f}" for d in ctx.domains
                        if d in rec.get("recommended", {}))
        rows.append([s["id"], f"{(s['created_at'] - ctx.t0) / 60:.1f}", s["n_runs"], s["n_obs"],
                     _num(s["flops_spent"], ".3g"), _num(s["expected_excess_loss"], ".3g"),
                     mix or "-", _num(s["fit_seconds"], ".1f")])
    out.append(_table(["fit", "minute", "runs", "observations", "FLOPs completed",
                       "expected excess loss", "recommended mixture", "fit seconds"], rows))
    out.append(_p("Expected excess loss: under the posterior, how much worse the recommended "
                  "mixture is expected to be than each draw's own optimum (in loss units). The "
                  "planner buys the runs that lower it most per FLOP."))
    return "".join(out)


def _sec_purchases(ctx: _Context) -> str:
    from planner import figures

    runs = ctx.runs_frame()
    if not len(runs):
        return _p("No runs yet.", "note")
    cfg = ctx.cfg
    out = [_fig_html(figures.purchases(runs, ctx.domains, (cfg.target_budget.N, cfg.target_budget.D)),
                     "runs bought: sizes, mixtures, compute over time")]
    by = runs.groupby(["source", "strategy"], dropna=False).agg(
        runs=("run_id", "size"), flops=("flops", "sum")).reset_index()
    rows = [[r["source"], r["strategy"] or "-", int(r["runs"]), _num(r["flops"], ".3g")]
            for _, r in by.iterrows()]
    out.append(_table(["source", "strategy", "runs", "FLOPs"], rows))
    out.append(_p("Sources: planner (bought by the loop), suggest (proposed by `planner suggest`), "
                  "imported (prior_runs, counted from the start), tell (added with `planner tell`). "
                  "Imported and told runs do not spend the budget."))
    return "".join(out)


def _sec_diagnostics(ctx: _Context) -> str:
    from planner.inference import diagnostic_warnings

    why = _need_posterior(ctx)
    if why:
        return _p(why, "note")
    post = ctx.posterior
    rows, warns, figs = [], [], []
    for t in post.targets:
        tp = post[t]
        d = dict(tp.diagnostics or {})
        method = d.get("method", post.meta.get("method", "?"))
        rows.append([t, method, d.get("n_obs", "-"), d.get("n_runs", "-"), tp.n_draws,
                     _num(d.get("r_hat_max"), ".3f"), _num(d.get("ess_bulk_min"), ".0f"),
                     d.get("divergences", "-"), _pct(d.get("divergence_rate")),
                     _num(d.get("seconds"), ".1f")])
        if method == "nuts":
            for w in diagnostic_warnings(d):
                warns.append(f"{t}: {w}")
        elif method == "map":
            warns.append(f"{t}: a MAP fit (one point, no sampler): there are no r_hat, ESS or "
                         f"divergences to check, and the h* posterior has no spread from the "
                         f"parameters. Use fit.method: nuts for the decision.")
        elif method == "laplace":
            conv = d.get("mode_converged")
            warns.append(f"{t}: a Laplace fit (a Gaussian at the posterior mode, no sampler): "
                         f"no r_hat, ESS or divergences to check; the mode search "
                         f"{'converged' if conv else 'did NOT converge' if conv is not None else 'ran'}"
                         f" (min Hessian eigenvalue {_num(d.get('min_hessian_eigenvalue'), '.3g')})."
                         f" A skewed or banana-shaped posterior is only approximated; confirm "
                         f"the final decision with fit.method: nuts.")
        disc = d.get("discrepancy") or tp.discrepancy
        if isinstance(disc, dict) and disc:
            note = disc.get("note") or (disc.get("evidence") or {}).get("reason", "")
            warns.append(f"{t}: model discrepancy {disc.get('kind', '?')}, slope s1 = "
                         f"{_num(disc.get('s1'), '.3g')} per unit of log-distance"
                         + (f" ({note})" if note else ""))
            fld = (tp.discrepancy or {}).get("mixture_field") or disc.get("mixture_field")
            if isinstance(fld, dict) and fld:
                warns.append(f"{t}: the discrepancy varies smoothly with the mixture (length "
                             f"scale {_num(fld.get('length_scale'), '.3g')}, share "
                             f"{_num(fld.get('share'), '.2f')}): each draw's h* includes it, so "
                             f"the h* intervals widen with the distance from the observed runs")
        idata = tp.idata
        if method == "nuts" and idata is not None and len(figs) < 3:
            from planner import figures

            names = [v for v in ("E", "A", "B", "sigma") if v in idata.posterior]
            if names:
                figs.append(f"<h3>Trace of {_e(t)} (E, A, B, sigma; one line per chain)</h3>"
                            + _fig_html(figures.arviz_trace(idata, names), f"ArviZ trace plot, {t}"))
    ok = not any(w for w in warns if "MAP" not in w and "Laplace" not in w
                 and "discrepancy" not in w)
    out = [_table(["target", "method", "observations", "runs", "draws", "max r_hat",
                   "min bulk ESS", "divergences", "divergence rate", "fit seconds"], rows)]
    if ok and all(post[t].diagnostics.get("method") == "nuts" for t in post.targets):
        out.append(_p("All chains agree (r_hat <= 1.05), the effective sample sizes are adequate "
                      "and there are no worrying divergences.", "good"))
    out.append(_warn_list(warns))
    out += figs
    return "".join(out)


def _sec_runs(ctx: _Context) -> str:
    runs = ctx.runs_frame()
    if not len(runs):
        return _p("No runs yet.", "note")
    header = (["#", "run_id", "source", "status", "strategy", "N", "D"]
              + [f"h_{d}" for d in ctx.domains] + [f"loss_{t}" for t in ctx.cfg.targets]
              + ["checkpoints", "6ND", "bought at (min)", "note"])
    rows, classes = [], []
    for _, r in runs.iterrows():
        src = _Raw(f'<span class="badge {_e(r["source"])}">{_e(r["source"])}</span>')
        rows.append([r["seq"], r["run_id"], src, r["status"], r["strategy"] or "-",
                     _num(r["N"], ".3g"), _num(r["D"], ".3g")]
                    + [_num(r[f"h_{d}"], ".3f") for d in ctx.domains]
                    + [_num(r[f"loss_{t}"], ".4f") for t in ctx.cfg.targets]
                    + [r["checkpoints"], _num(r["flops"], ".3g"), f"{r['t_min']:.1f}", r["error"]])
        classes.append(" ".join(c for c in (str(r["source"]), str(r["status"])) if c))
    n_imp = int((runs["source"] == "imported").sum())
    return (_p(f"{len(runs)} runs ({n_imp} imported from prior_runs, marked 'imported'); "
               f"{len(ctx.obs)} observations including checkpoints. Export them with "
               f"`planner runs {ctx.dir} --out runs.csv`.") +
            f'<div class="scroll">{_table(header, rows, classes, cls="runs")}</div>')


_BUILDERS: dict[str, Callable[[_Context], str]] = {
    "summary": _sec_summary, "h-star": _sec_hstar, "predicted-loss": _sec_predicted_loss,
    "caps": _sec_caps, "pred-vs-obs": _sec_pred_vs_obs, "holdout": _sec_holdout,
    "loss-vs-compute": _sec_loss_vs_compute, "eel": _sec_eel, "purchases": _sec_purchases,
    "diagnostics": _sec_diagnostics, "runs": _sec_runs,
}

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222;
background:#fff;line-height:1.4}
header{background:#1f3b57;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px 0;font-size:24px}
header p{margin:0;color:#d6e2ee;font-size:13px}
nav{padding:8px 28px;background:#eef2f6;font-size:13px;border-bottom:1px solid #d0d7de}
nav a{margin-right:14px;color:#1f3b57;text-decoration:none}
main{padding:8px 28px 40px 28px;max-width:1400px}
section{border-bottom:1px solid #e3e6ea;padding:10px 0 18px 0}
h2{font-size:19px;color:#1f3b57;margin:14px 0 8px 0}
h3{font-size:15px;color:#1f3b57;margin:12px 0 4px 0}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7}
table.facts td:first-child{font-weight:600;background:#f8f9fa}
tr.imported td{background:#fff8e6}
tr.failed td{color:#a00}
tr.binding td{background:#fdecea}
.badge{display:inline-block;padding:0 6px;border-radius:8px;background:#e6eef7;font-size:12px}
.badge.imported{background:#ffd98a}
.badge.tell{background:#d4f1d4}
img{max-width:100%;height:auto;display:block;margin:8px 0}
.note{color:#555;font-style:italic}
.warn{color:#8a4b00}
.good{color:#1a6b1a}
.headline{font-size:16px}
ul.warnings li{color:#8a4b00}
.section-error{color:#a00;font-weight:600}
.scroll{overflow-x:auto}
"""


def render(ctx: _Context, bodies: dict[str, str], errors: dict[str, str]) -> str:
    cfg = ctx.cfg
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    nav = "".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title in SECTIONS)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>mixture-planner report: {_e(ctx.dir.name)}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<header><h1>Data-mixture campaign report</h1><p>{_e(ctx.dir)} &middot; domains "
             f"{_e(', '.join(ctx.domains))} &middot; {_e(cfg.law)} law &middot; generated "
             f"{_e(now)}</p></header>", f"<nav>{nav}</nav><main>"]
    for sid, title in SECTIONS:
        body = bodies.get(sid, "")
        if sid in errors:
            body = (f'<p class="section-error">This section could not be produced: '
                    f'{_e(errors[sid])}</p>')
        parts.append(f'<section id="{sid}"><h2>{_e(title)}</h2>{body}</section>')
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
    from planner.config import FIT_METHODS

    if holdout_method is not None and holdout_method not in FIT_METHODS:
        raise InputError(f"--holdout-method must be one of {', '.join(FIT_METHODS)}, "
                         f"got {holdout_method!r}")
    ctx = _Context(d, seed, holdout, holdout_method, holdout_kwargs, notify)
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
    page = render(ctx, bodies, errors)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(target)
    return ReportResult(target, [s for s, _ in SECTIONS], errors, time.perf_counter() - t0)
