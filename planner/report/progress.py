"""Progress and status display (rich).

``Progress`` shows a live line while a campaign runs (runs done, in flight, compute spent,
expected excess loss) on a terminal, and stays quiet when stderr is not a TTY.
``status_table(status)`` renders ``campaign_status(...)`` as a table; ``print_status`` prints it.
"""
from __future__ import annotations

import sys
import time
from typing import Any

from planner.model.discrepancy import field_summary


def _fmt_flops(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _fmt_eel(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def format_law_weights(lw: dict | None) -> str | None:
    """law auto's stacking weights {target: {family: w}} as one line ("additive 0.02, joint
    0.98"; per target when there are several); None without them."""
    if not lw:
        return None
    parts = {t: ", ".join(f"{f} {w:.2f}" for f, w in ws.items()) for t, ws in lw.items()}
    return next(iter(parts.values())) if len(parts) == 1 else \
        "; ".join(f"{t}: {v}" for t, v in parts.items())


def progress_line(stats: dict[str, Any]) -> str:
    runs = f"{stats.get('completed', 0)}"
    if stats.get("max_runs"):
        runs += f"/{stats['max_runs']}"
    flops = _fmt_flops(stats.get("flops_completed"))
    if stats.get("flops_budget"):
        flops += f"/{_fmt_flops(stats['flops_budget'])}"
    parts = [f"runs done {runs}", f"in flight {stats.get('in_flight', 0)}",
             f"failed {stats.get('failed', 0)}", f"FLOPs {flops}",
             f"expected excess loss {_fmt_eel(stats.get('expected_excess_loss'))}",
             f"fits {stats.get('snapshots', 0)}"]
    if stats.get("warnings"):
        parts.append(f"warnings {len(stats['warnings'])} (see planner status)")
    if stats.get("last_fit_error"):
        parts.append(f"last fit failed: {str(stats['last_fit_error'])[:60]}")
    return " | ".join(parts)


class Progress:
    """Live campaign progress on stderr; a no-op unless stderr is a terminal (or ``enabled``)."""

    def __init__(self, enabled: bool | None = None, stream=None, min_interval_s: float = 0.2):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.min_interval_s = min_interval_s
        self._live = None
        self._last = 0.0
        self._stats: dict = {}

    def start(self) -> None:
        if not self.enabled or self._live is not None:
            return
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        self._live = Live(Text("starting..."), console=Console(file=self.stream),
                          refresh_per_second=4, transient=False)
        self._live.start()

    def update(self, stats: dict[str, Any]) -> None:
        self._stats = dict(stats)
        if self._live is None:
            return
        now = time.time()
        if now - self._last < self.min_interval_s:
            return
        self._last = now
        from rich.text import Text

        self._live.update(Text(progress_line(stats)))

    def stop(self) -> None:
        if self._live is not None:
            from rich.text import Text

            if self._stats:
                self._live.update(Text(progress_line(self._stats)))
            self._live.stop()
            self._live = None


def discrepancy_line(disc: dict | None) -> str:
    """One line on the model discrepancy a recommendation used (``discrepancy_summary``)."""
    if not disc:
        return "none (law's parameter uncertainty only)"
    age = disc.get("refits_since_learned") or 0
    info = disc.get("split") or {}
    split = info.get("rule")
    if split and info.get("N_min") is not None:  # a band of the largest N levels
        split = (f"{split} levels (N >= {float(info['N_min']):.3g}, "
                 f"{info.get('n_heldout_runs', '?')} runs)")
    kinds = {(d or {}).get("kind") for d in (disc.get("targets") or {}).values()}
    if kinds == {"prior-default"}:
        when = ("the prior's, not learned from the data (nothing could be held out)"
                + ("" if age == 0 else f", {age} refit(s) ago"))
    else:
        when = "learned on the latest fit" if age == 0 else f"learned {age} refit(s) ago, reused"
        if split and not split.startswith("none"):
            when += f" (held out the {split})"
    per = []
    for t, d in (disc.get("targets") or {}).items():
        if not d:
            per.append(f"{t} none")
            continue
        txt = f"{t} s1 {float(d['s1']):.3g}"
        if d.get("kind") == "prior-default":
            txt += " (prior)"
        fld = d.get("mixture_field")
        if fld:
            txt += f", smooth over h ({field_summary(fld)})"
        per.append(txt)
    return f"{when}; " + "; ".join(per)


def _cell(q: dict) -> str:
    if "lo" not in q:
        return f"{q['measured']:.4g}"
    mark = "inside" if q.get("inside") else "OUTSIDE"
    return f"{q['measured']:.4g} vs {q['mean']:.4g} [{q['lo']:.4g}, {q['hi']:.4g}] {mark}"


def validation_lines(block: dict | None) -> list[str]:
    """One line per validated mixture: measured objective (and target losses) vs the predicted
    mean and 90 % interval, and whether each falls inside."""
    out = []
    for m in (block or {}).get("mixtures") or []:
        parts = []
        if m.get("objective"):
            parts.append(f"objective {_cell(m['objective'])}")
        if len(m.get("losses") or {}) > 1 or not m.get("objective"):
            parts += [f"{t} {_cell(q)}" for t, q in (m.get("losses") or {}).items()]
        fit = "; in the fit" if m.get("in_fit") else ""
        out.append(f"{m['name']} (N={m['N']:.3g}, D={m['D']:.3g}, {len(m['run_ids'])} run(s)"
                   f"{fit}): " + "; ".join(parts))
    return out


def status_table(st: dict[str, Any]):
    """A rich Table for a ``campaign_status`` dict."""
    from rich.table import Table

    t = Table(title=f"campaign {st['dir']}", show_header=False, box=None, pad_edge=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    c = st["counts"]
    stopped = st.get("stopped") or {}
    t.add_row("state", f"running ({st['running']})" if st.get("running") else
              (f"stopped: {stopped['reason']} - {stopped['message']}"
               + (f"; the final fit failed: {stopped['final_fit_error']}"
                  if stopped.get("final_fit_error") else "")
               if stopped else "not running"))
    t.add_row("law / acquisition", f"{st['law']} / {st['acquisition']}")
    lw = format_law_weights(st.get("law_weights"))
    if lw:
        t.add_row("law weights (held-out)", lw)
    n_val = (st.get("sources") or {}).get("validation", 0)
    t.add_row("runs", f"completed {c['completed']}, running {c['running']}, proposed "
                      f"{c['proposed']}, failed {c['failed']}  (observations {st['observations']})"
                      + (f"; {n_val} completed validation run(s), not fitted unless marked"
                         if n_val else ""))
    sp, b = st["spent"], st["budget"]
    t.add_row("compute (FLOPs)", f"completed {_fmt_flops(sp['flops_completed'])}, in flight "
                                 f"{_fmt_flops(sp['flops_in_flight'])}, budget {_fmt_flops(b['flops'])}")
    t.add_row("runs bought", f"{sp['runs_committed']} of {b['max_runs'] if b['max_runs'] else 'unlimited'}")
    strat = st.get("strategies") or {}
    if strat:
        t.add_row("chosen by", ", ".join(f"{k} {v}" for k, v in strat.items())
                  + " (runs not failed, by strategy)")
    src = st.get("sources") or {}
    given = {k: v for k, v in src.items() if k not in ("planner", "suggest", "validation")}
    if given:
        t.add_row("runs given", ", ".join(f"{v} {k}" for k, v in given.items())
                  + " (counted as observations, not against the budget)")
    t.add_row("target", f"N={st['target_budget']['N']:.3g}, D={st['target_budget']['D']:.3g}; "
                        f"targets {', '.join(f'{k}={v:g}' for k, v in st['targets'].items())}")
    rec = st.get("recommendation")
    if rec:
        mix = ", ".join(f"{d} {rec['mean'][d]:.3f} [{rec['lo'][d]:.3f}, {rec['hi'][d]:.3f}]"
                        for d in st["domains"] if d in rec.get("mean", {}))
        t.add_row("optimal mixture h* (90%)", mix)
        if "recommended" in rec:
            t.add_row("recommended (Bayes)", ", ".join(f"{d} {v:.3f}" for d, v in rec["recommended"].items()))
        L = rec.get("loss", {})
        if L:
            t.add_row("predicted loss", f"{L['mean']:.4g} [{L['lo']:.4g}, {L['hi']:.4g}]")
        t.add_row("expected excess loss", _fmt_eel(rec.get("expected_excess_loss")))
        t.add_row("model discrepancy", discrepancy_line(st.get("discrepancy")))
    else:
        t.add_row("recommendation", "none yet (not enough completed runs to fit)")
    if st.get("caps"):
        binding = st.get("caps_binding") or []
        t.add_row("data caps on h", ", ".join(f"{d} <= {c:.3g}" + (" (binds)" if d in binding else "")
                                             for d, c in st["caps"].items()))
    t.add_row("posterior snapshots", str(st["snapshots"]))
    for i, line in enumerate(validation_lines(st.get("validation"))):
        t.add_row("validation (90%)" if i == 0 else "", line)
    tr = st.get("trust")
    if tr:
        reasons = tr.get("reasons") or []
        t.add_row("trust", tr["level"] + (f": {reasons[0]}" if reasons else ""))
        for r in reasons[1:]:
            t.add_row("", r)
    warns = st.get("warnings") or []
    if rec:
        t.add_row(f"warnings ({len(warns)})" if warns else "warnings", warns[0] if warns else "none")
        for w in warns[1:]:
            t.add_row("", w)
    if st.get("last_fit_error"):
        t.add_row("last fit", f"failed: {st['last_fit_error']}")
    if st.get("failed_attempts"):
        last = st["failures"][-1]
        t.add_row("failed attempts", f"{st['failed_attempts']} (last: {last['run_id']} attempt "
                                     f"{last['attempt']}, {last['reason']}: {last['error']})")
    return t


def print_status(st: dict[str, Any], file=None) -> None:
    from rich.console import Console

    Console(file=file or sys.stdout, soft_wrap=True).print(status_table(st))
