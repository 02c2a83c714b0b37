"""The report's figures: small functions from arrays / DataFrames to matplotlib Figures.

Each function takes plain data (no ledger, no posterior object) and returns a ``Figure`` drawn
with the non-interactive Agg backend; ``to_png(fig)`` turns it into PNG bytes (and closes it).
``planner.report`` gathers the data and embeds the PNGs in ``report.html``.

    hstar_intervals(hs, domains, recommended, caps)    posterior of h* per domain (50/90 %)
    ternary(hs, domains, recommended, caps, runs_h)     h* draws on the triangle (k = 3)
    predicted_loss(draws, summary)                      predictive loss at the recommendation
    pred_vs_obs(frames)                                 predicted vs observed, coloured by N
    loss_vs_compute(obs, domains, targets)              loss against 6 N D, one colour a mixture
    eel_over_campaign(snaps, tolerance)                 expected excess loss per refit
    purchases(runs, domains, target)                    which (N, D, h) was bought, and when
    arviz_trace(idata, var_names)                       ArviZ trace plot (NUTS posteriors)
"""
from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg", force=True)  # no display: figures are rendered to PNG

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from planner.core.types import RunStatus, flops  # noqa: E402

SQ3 = math.sqrt(3.0) / 2.0


DPI = 96


BOUGHT = ("planner", "suggest")


_SOURCE_MARKER = {"planner": "o", "suggest": "D", "imported": "s", "tell": "^"}


def to_png(fig: Figure, dpi: int = DPI) -> bytes:
    """PNG bytes of a figure; the figure is closed."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()


def _fig(w: float, h: float, ncols: int = 1, nrows: int = 1, **kw):
    fig, axes = plt.subplots(nrows, ncols, figsize=(w, h), squeeze=False, **kw)
    return fig, axes


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=10,
            color="0.35", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


# ------------------------------------------------------------------------------ h*
def hstar_intervals(hs: np.ndarray, domains, recommended: dict | None = None,
                    caps: dict | None = None) -> Figure:
    """Per-domain posterior of the optimal weight: 90 % (thin) and 50 % (thick) intervals,
    median (dot), the recommended mixture (diamond) and the data cap (red bar) if any."""
    hs = np.asarray(hs, float)
    k = len(domains)
    fig, axes = _fig(7.5, 0.55 * k + 1.3)
    ax = axes[0, 0]
    y = np.arange(k)[::-1]
    q = np.quantile(hs, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
    ax.hlines(y, q[0], q[4], color="tab:blue", lw=1.5, label="90 % interval")
    ax.hlines(y, q[1], q[3], color="tab:blue", lw=5, alpha=0.6, label="50 % interval")
    ax.plot(q[2], y, "o", color="tab:blue", ms=5, label="median")
    if recommended:
        ax.plot([recommended.get(d, np.nan) for d in domains], y, "D", color="tab:orange", ms=7,
                label="recommended")
    if caps:
        cx = [caps.get(d, 1.0) for d in domains]
        for yi, c in zip(y, cx):
            if c < 1.0:
                ax.plot([c, c], [yi - 0.35, yi + 0.35], color="tab:red", lw=2)
        if any(c < 1.0 for c in cx):
            ax.plot([], [], color="tab:red", lw=2, label="data cap")
    ax.set_yticks(y, list(domains))
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("optimal weight h*")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, ncol=2, framealpha=0.8)
    ax.set_title(f"posterior of h* ({hs.shape[0]} draw{'s' if hs.shape[0] != 1 else ''})")
    return fig


def _tern(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = np.atleast_2d(np.asarray(h, float))
    return h[:, 1] + 0.5 * h[:, 2], SQ3 * h[:, 2]


def ternary(hs: np.ndarray, domains, recommended: dict | None = None, caps: dict | None = None,
            runs_h: np.ndarray | None = None) -> Figure:
    """The three-domain simplex: h* draws, the recommendation, the runs' mixtures and caps."""
    if len(domains) != 3:
        raise ValueError("a ternary plot needs exactly 3 domains")
    fig, axes = _fig(6.0, 5.4)
    ax = axes[0, 0]
    corners = np.array([[0, 0], [1, 0], [0.5, SQ3], [0, 0]])
    ax.plot(corners[:, 0], corners[:, 1], color="0.3", lw=1)
    for f in (0.25, 0.5, 0.75):  # grid lines h_i = f
        for i in range(3):
            j, m = (i + 1) % 3, (i + 2) % 3
            a, b = np.zeros(3), np.zeros(3)
            a[i], a[j] = f, 1 - f
            b[i], b[m] = f, 1 - f
            x, yv = _tern(np.stack([a, b]))
            ax.plot(x, yv, color="0.85", lw=0.6, zorder=0)
    off = 0.05
    ax.text(-off, -off, domains[0], ha="right", va="top", fontsize=11)
    ax.text(1 + off, -off, domains[1], ha="left", va="top", fontsize=11)
    ax.text(0.5, SQ3 + off, domains[2], ha="center", va="bottom", fontsize=11)
    if runs_h is not None and len(runs_h):
        x, yv = _tern(runs_h)
        ax.scatter(x, yv, marker="x", color="0.5", s=18, lw=0.8, label="runs' mixtures", zorder=2)
    hs = np.asarray(hs, float)
    x, yv = _tern(hs)
    ax.scatter(x, yv, s=10, alpha=0.35 if len(hs) > 20 else 0.8, color="tab:blue",
               label="h* draws", zorder=3)
    if recommended:
        x, yv = _tern(np.array([[recommended.get(d, 0.0) for d in domains]]))
        ax.scatter(x, yv, marker="*", s=220, color="tab:orange", edgecolor="k", lw=0.6,
                   label="recommended", zorder=4)
    if caps:
        first = True
        for i, d in enumerate(domains):
            c = caps.get(d, 1.0)
            if c >= 1.0:
                continue
            j, m = (i + 1) % 3, (i + 2) % 3
            a, b = np.zeros(3), np.zeros(3)
            a[i], a[j] = c, 1 - c
            b[i], b[m] = c, 1 - c
            x, yv = _tern(np.stack([a, b]))
            ax.plot(x, yv, color="tab:red", ls="--", lw=1.5,
                    label="data cap" if first else None, zorder=3)
            first = False
    ax.set_xlim(-0.12, 1.12)
    ax.set_ylim(-0.12, SQ3 + 0.12)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    ax.set_title("h* on the simplex")
    return fig


# ------------------------------------------------------------------------------ losses
def predicted_loss(draws: dict[str, np.ndarray], summary: dict[str, dict]) -> Figure:
    """Histogram of the predictive loss at the recommended mixture, one panel per target;
    ``summary`` {target: {"mean", "lo", "hi"}} is marked on each."""
    names = list(draws)
    n = max(1, len(names))
    fig, axes = _fig(min(4.2 * n, 12.5), 3.0, ncols=n)
    for ax, t in zip(axes[0], names):
        v = np.asarray(draws[t], float)
        ax.hist(v, bins=min(40, max(10, len(v) // 10)), color="tab:blue", alpha=0.6)
        s = summary.get(t, {})
        for key, ls in (("lo", ":"), ("mean", "-"), ("hi", ":")):
            if s.get(key) is not None:
                ax.axvline(s[key], color="tab:orange", ls=ls, lw=1.5)
        ax.set_title(t)
        ax.set_xlabel("predicted loss at the target run")
        ax.set_yticks([])
    return fig


def pred_vs_obs(frames: dict) -> Figure:
    """Predicted vs observed loss per target. ``frames`` {target: DataFrame with columns obs,
    pred, lo, hi, N, final}: error bars are 90 % predictive intervals, colour is N (log)."""
    names = list(frames)
    n = max(1, len(names))
    fig, axes = _fig(min(4.8 * n, 13.0), 4.4, ncols=n)
    allN = np.concatenate([np.asarray(f["N"], float) for f in frames.values()]) if frames else [1.0]
    norm = LogNorm(vmin=float(np.min(allN)), vmax=float(max(np.max(allN), np.min(allN) * 1.0001)))
    cmap = plt.get_cmap("viridis")
    sc = None
    for ax, t in zip(axes[0], names):
        f = frames[t]
        if not len(f):
            _note(ax, f"{t}: no observations")
            continue
        obs, pred = np.asarray(f["obs"], float), np.asarray(f["pred"], float)
        lo, hi = np.asarray(f["lo"], float), np.asarray(f["hi"], float)
        cols = cmap(norm(np.asarray(f["N"], float)))
        for o, p, l, h, c in zip(obs, pred, lo, hi, cols):
            ax.plot([o, o], [l, h], color=c, lw=1, alpha=0.6)
        final = np.asarray(f["final"], bool) if "final" in f else np.ones(len(f), bool)
        sc = ax.scatter(obs[final], pred[final], c=np.asarray(f["N"], float)[final], cmap=cmap,
                        norm=norm, s=22, edgecolor="k", lw=0.3, label="final", zorder=3)
        if (~final).any():
            ax.scatter(obs[~final], pred[~final], c=np.asarray(f["N"], float)[~final], cmap=cmap,
                       norm=norm, s=14, marker="^", lw=0.3, label="checkpoint", zorder=3)
        lim = [min(obs.min(), lo.min()), max(obs.max(), hi.max())]
        pad = 0.03 * (lim[1] - lim[0] or 1.0)
        ax.plot([lim[0] - pad, lim[1] + pad], [lim[0] - pad, lim[1] + pad], color="0.4", lw=0.8,
                ls="--")
        inside = float(np.mean((obs >= lo) & (obs <= hi)))
        ax.set_title(f"{t}: {100 * inside:.0f} % inside the 90 % interval")
        ax.set_xlabel("observed loss")
        ax.set_ylabel("predicted loss")
        ax.legend(fontsize=8, loc="upper left")
    if sc is not None:
        fig.colorbar(sc, ax=list(axes[0]), label="N (parameters)", shrink=0.9)
    return fig


def _mixture_groups(H: np.ndarray, domains, max_groups: int = 8):
    """(labels per row, legend names, by_dominant): one group per distinct mixture when there
    are at most ``max_groups``, else one per dominant domain."""
    keys = [tuple(np.round(h, 3)) for h in H]
    uniq = list(dict.fromkeys(keys))
    if len(uniq) <= max_groups:
        names = [" ".join(f"{d}={w:.2f}" for d, w in zip(domains, u) if w > 0) for u in uniq]
        return np.array([uniq.index(k) for k in keys]), names, False
    dom = np.argmax(H, axis=1)
    return dom, [f"mostly {d}" for d in domains], True


def loss_vs_compute(obs, domains, targets) -> Figure:
    """Loss against compute 6 N D (checkpoints of a run joined by a line), one colour per
    mixture (or per dominant domain when there are many mixtures), one panel per target."""
    domains = list(domains)
    n = max(1, len(targets))
    fig, axes = _fig(min(5.6 * n, 13.5), 4.2, ncols=n)
    if not len(obs):
        _note(axes[0, 0], "no observations yet")
        return fig
    H = obs[[f"h_{d}" for d in domains]].to_numpy(float)
    groups, names, by_dom = _mixture_groups(H, domains)
    cmap = plt.get_cmap("tab10")
    compute = flops(obs["N"].to_numpy(float), obs["D"].to_numpy(float))
    for ax, t in zip(axes[0], targets):
        col = f"loss_{t}"
        if col not in obs:
            _note(ax, f"{t}: not measured")
            continue
        y = obs[col].to_numpy(float)
        seen = set()
        for rid in dict.fromkeys(obs["run_id"]):
            m = (obs["run_id"] == rid).to_numpy() & np.isfinite(y)
            if not m.any():
                continue
            g = int(groups[np.flatnonzero(m)[0]])
            order = np.argsort(compute[m])
            ax.plot(compute[m][order], y[m][order], "-o", ms=3.5, lw=1, color=cmap(g % 10),
                    alpha=0.85, label=None if g in seen else names[g])
            seen.add(g)
        ax.set_xscale("log")
        ax.set_xlabel("compute 6 N D (FLOPs)")
        ax.set_ylabel(f"loss {t}")
        ax.set_title(f"{t}: loss vs compute" + (" (colour: dominant domain)" if by_dom else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right", title="mixture" if not by_dom else None)
    return fig


# ------------------------------------------------------------------------------ campaign
def eel_over_campaign(snaps, tolerance: float | None = None) -> Figure:
    """Expected excess loss of the recommendation after each refit, against the compute spent
    (and the number of runs fitted, top axis labels)."""
    fig, axes = _fig(7.5, 3.6)
    ax = axes[0, 0]
    if not len(snaps):
        _note(ax, "no posterior snapshot yet")
        return fig
    x = np.asarray(snaps["flops_spent"], float)
    y = np.asarray(snaps["expected_excess_loss"], float)
    runs = np.asarray(snaps["n_runs"], int)
    use_runs = not np.any(x > 0)  # only imported runs: no compute bought yet
    xv = runs.astype(float) if use_runs else np.maximum(x, 1.0)
    pos = np.isfinite(y) & (y > 0)
    ax.plot(xv, np.where(pos, y, np.nan), "-o", color="tab:purple", ms=4)
    if (~pos).any():  # zero (a one-draw MAP posterior, or no doubt left): drawn at the bottom
        floor = np.nanmin(y[pos]) / 3.0 if pos.any() else 0.0
        ax.plot(xv[~pos], np.full((~pos).sum(), floor), "v", color="0.5", ms=6,
                label="0 (one posterior draw, or no doubt left)")
    if pos.any():
        ax.set_yscale("log")
    else:
        ax.set_ylim(-1.0, 1.0)
    if tolerance:
        ax.axhline(tolerance, color="tab:red", ls="--", lw=1, label="stop tolerance")
    if not use_runs and (x > 0).all() and x.max() / x.min() > 10:
        ax.set_xscale("log")
    for xi, yi, r in zip(xv, y, runs):
        if np.isfinite(yi) and yi > 0:
            ax.annotate(str(r), (xi, yi), textcoords="offset points", xytext=(0, 5), fontsize=7,
                        ha="center", color="0.3")
    ax.set_xlabel("runs fitted" if use_runs else "compute spent on completed runs (FLOPs)")
    ax.set_ylabel("expected excess loss")
    ax.set_title("decision uncertainty after each refit (labels: runs fitted)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig


def purchases(runs, domains, target: tuple[float, float] | None = None) -> Figure:
    """What was bought: (N, D) of each run coloured by purchase order (marker: source), the
    mixture of each run in order (stacked bars), and cumulative compute over time.
    ``runs``: DataFrame with seq, N, D, h_<domain>, source, flops, t_min (minutes since the
    campaign started), status. Compute over time counts runs bought by the planner (sources
    planner and suggest), not imported or told ones."""
    domains = list(domains)
    fig, axes = _fig(13.5, 3.9, ncols=3, gridspec_kw={"width_ratios": [1.0, 1.5, 1.0]},
                     layout="constrained")
    a1, a2, a3 = axes[0]
    if not len(runs):
        for ax in axes[0]:
            _note(ax, "no runs yet")
        return fig
    order = np.asarray(runs["seq"], float)
    norm = plt.Normalize(order.min(), max(order.max(), order.min() + 1))
    sc = None
    for src, g in runs.groupby("source", sort=False):
        sc = a1.scatter(g["N"], g["D"], c=g["seq"], cmap="viridis", norm=norm, s=34,
                        marker=_SOURCE_MARKER.get(src, "o"), edgecolor="k", lw=0.3, label=src)
    if target is not None:
        a1.scatter([target[0]], [target[1]], marker="*", s=200, color="tab:orange",
                   edgecolor="k", lw=0.5, label="target run")
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("N (parameters)")
    a1.set_ylabel("D (tokens)")
    a1.set_title("sizes bought (colour: order)")
    a1.legend(fontsize=7, loc="upper left")
    if sc is not None:
        fig.colorbar(sc, ax=a1, label="purchase order")
    H = runs[[f"h_{d}" for d in domains]].to_numpy(float)
    x = np.arange(len(runs))
    bottom = np.zeros(len(runs))
    cmap = plt.get_cmap("tab10")
    for i, d in enumerate(domains):
        a2.bar(x, H[:, i], bottom=bottom, color=cmap(i % 10), width=0.85, label=d)
        bottom += H[:, i]
    step = max(1, len(runs) // 20)
    a2.set_xticks(x[::step], [str(r) for r in runs["run_id"]][::step], rotation=60, fontsize=7)
    a2.set_ylim(0, 1)
    a2.set_ylabel("mixture h")
    a2.set_title("mixture of each run, in purchase order")
    a2.legend(fontsize=7, ncol=min(len(domains), 4), loc="upper right", framealpha=0.8)
    failed = np.asarray(runs["status"] == RunStatus.FAILED.value)
    if failed.any():
        a2.scatter(x[failed], np.full(failed.sum(), 0.5), marker="x", color="k", s=40,
                   label="failed")
    bought = runs[runs["source"].isin(BOUGHT) & (runs["status"] != RunStatus.FAILED.value)]
    if len(bought):
        t = np.asarray(bought["t_min"], float)
        o = np.argsort(t)
        a3.step(t[o], np.cumsum(np.asarray(bought["flops"], float)[o]), where="post",
                color="tab:green")
    else:
        _note(a3, "no run bought (all imported)")
    a3.set_xlabel("minutes since the campaign started")
    a3.set_ylabel("cumulative 6 N D (FLOPs)")
    a3.set_title("compute bought over time")
    a3.grid(alpha=0.3)
    return fig


def arviz_trace(idata, var_names) -> Figure:
    """ArviZ trace plot (density and chain traces) of a few scalar parameters."""
    import warnings

    import arviz as az

    with warnings.catch_warnings():  # arviz 0.23 + matplotlib 3.11 deprecation chatter
        warnings.simplefilter("ignore")
        axes = az.plot_trace(idata, var_names=list(var_names), compact=True,
                             figsize=(9, 1.15 * len(var_names)))
    fig = np.asarray(axes).ravel()[0].figure
    fig.tight_layout()
    return fig
