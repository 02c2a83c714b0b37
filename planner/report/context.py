"""What the report reads from a campaign directory (config, ledger, latest posterior, status), and
the cached held-out check."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from planner.calibrate.checks import holdout_check
from planner.calibrate.diagnose import (
    HOLDOUT_CACHE,
    fit_warnings,
    holdout_warnings,
    merge_warnings,
)
from planner.calibrate.trust import holdout_reasons, trust
from planner.campaign.campaign import (
    add_recommendation_warnings,
    campaign_status,
    export_runs,
    load_campaign,
)
from planner.campaign.planner import load_posterior
from planner.campaign.snapshots import usable_snapshot
from planner.core.errors import InputError
from planner.core.io import write_text_atomic
from planner.decide.optimum import optimum_draws
from planner.model.runs import runs_from_frame
from planner.report.html import lenient_json

log = logging.getLogger("planner.report")


REPORT_NAME = "report.html"


SECTIONS: list[tuple[str, str]] = [
    ("trust", "Can the law be trusted at the target?"),
    ("summary", "Recommendation"),
    ("h-star", "Posterior over the optimal mixture h*"),
    ("predicted-loss", "Predicted loss at the recommended mixture"),
    ("caps", "Data limits"),
    ("pred-vs-obs", "Predicted vs observed"),
    ("holdout", "Held-out check (largest scale left out)"),
    ("loss-vs-compute", "Loss vs compute per mixture"),
    ("eel", "Expected excess loss over the campaign"),
    ("purchases", "What the planner bought, and when"),
    ("validation", "Validation runs"),
    ("diagnostics", "Sampler diagnostics"),
    ("runs", "Runs table"),
]


# ------------------------------------------------------------------------------ data
class Context:
    """Everything read from the campaign directory once, shared by the sections."""

    def __init__(self, campaign_dir: Path, seed: int, holdout: bool, holdout_method: str | None,
                 holdout_kwargs: dict | None, notify: Callable[[str], None] | None = None):

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
            fit_ids = lg.fit_run_ids()
            self.snapshots = lg.snapshots()
            self.attempts = lg.attempts()
            events = lg.events()
        self.t0 = min([e["t"] for e in events] + [r.created_at for r in self.run_records]
                      or [time.time()])
        self.obs = export_runs(campaign_dir)
        # what the fits see (validation runs are kept out unless recorded for the fit)
        self.fit_obs = self.obs[self.obs["run_id"].isin(fit_ids)] if len(self.obs) else self.obs
        self.rec = self.status.get("recommendation")
        # the newest snapshot that loads (the status already refused a campaign with none)
        good = usable_snapshot(self.snapshots, load_posterior)
        self.posterior = good.posterior
        self._snapshot_id = good.id
        self.caps = self.cfg.weight_caps()
        self._od = None
        self._holdout: dict | None = None
        self._holdout_error: str | None = None
        self._holdout_done = False
        self.holdout_exception: Exception | None = None  # a failed check (not bad input)

    @property
    def snapshot_id(self) -> int | None:
        """The snapshot the report shows: the newest one that loads."""
        return self._snapshot_id

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

            tg = self.cfg.decision_target()
            self._od = optimum_draws(self.posterior, tg.N, tg.D, self.target_weights(), hi=tg.hi)
        return self._od

    def holdout_result(self) -> dict | None:
        """The held-out check (``run_holdout``, cached), computed once; None when the report is
        built without it, there is no posterior, or it cannot be computed (``holdout_error``
        says why for bad input; ``holdout_exception`` holds any other failure, which the
        holdout section raises so that the report lists it). Its warnings are added to ``recommendation.json`` when that file comes from
        the same snapshot and no planner is running (``add_recommendation_warnings``)."""
        if not self._holdout_done:
            self._holdout_done = True
            if self.holdout and self.posterior is not None:
                try:
                    self._holdout = run_holdout(self)
                except InputError as e:
                    self._holdout_error = str(e)
                except Exception as e:  # noqa: BLE001 - the holdout section reports it
                    self.holdout_exception = e
                else:
                    add_recommendation_warnings(self.dir, self.snapshot_id,
                                                holdout_warnings(self._holdout),
                                                holdout_reasons(self._holdout))
        return self._holdout

    def trust(self) -> dict | None:
        """``planner.calibrate.trust.trust`` with the report's held-out check (None without a
        recommendation)."""
        if not self.rec:
            return None
        return trust(self.posterior, self.holdout_result(), self.status.get("validation"))

    @property
    def holdout_error(self) -> str | None:
        return self._holdout_error

    def warnings(self) -> list[str]:
        """Every warning about the recommendation: ``fit_warnings`` of the posterior and the
        held-out check, merged with ``recommendation.json``'s (the same function made them) and
        the status's. What ``planner status`` and ``recommendation.json`` list, too."""
        own = fit_warnings(self.posterior, self.holdout_result()) \
            if self.posterior is not None else []
        return merge_warnings(own, (self.rec or {}).get("warnings"), self.status.get("warnings"))

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


def need_posterior(ctx: Context) -> str | None:
    if ctx.posterior is not None:
        return None
    return (f"No posterior yet: the campaign has {ctx.status['counts']['completed']} completed "
            f"run(s); the first fit needs {ctx.cfg.min_runs_to_fit()}.")


def _holdout_settings(ctx: Context) -> tuple[str, dict]:
    method = ctx.holdout_method or ctx.cfg.fit.method
    kw: dict = {}
    if method in ("nuts", "laplace"):
        kw = {"num_warmup": ctx.cfg.fit.num_warmup, "num_samples": ctx.cfg.fit.num_samples,
              "num_chains": ctx.cfg.fit.num_chains}
    kw.update(ctx.holdout_kwargs)
    kw.pop("method", None)
    return method, kw


def run_holdout(ctx: Context) -> dict:
    """``calibration.holdout_check`` on the campaign's observations (cached per snapshot)."""

    method, kw = _holdout_settings(ctx)
    targets = list(ctx.posterior.targets) if ctx.posterior is not None else list(ctx.cfg.targets)
    key = json.dumps({"snapshot": ctx.snapshot_id, "n_obs": len(ctx.fit_obs), "law": ctx.cfg.law,
                      "method": method, "kwargs": kw, "targets": targets, "seed": ctx.seed},
                     sort_keys=True, default=lenient_json)
    cache = ctx.dir / HOLDOUT_CACHE
    if cache.exists():
        try:
            c = json.loads(cache.read_text())
            if c.get("key") == key:
                return c["result"]
        except (OSError, json.JSONDecodeError, KeyError):
            pass
    table = runs_from_frame(ctx.fit_obs, domains=ctx.domains, targets=targets)
    ctx.notify(f"held-out check: refitting the {ctx.cfg.law} law ({method}) without the largest "
               f"scale; the result is cached in {cache} (--no-holdout skips it)")
    res = holdout_check(table, law=ctx.cfg.law, targets=targets, method=method, seed=ctx.seed, **kw)
    res = json.loads(json.dumps(res, default=lenient_json))
    try:
        write_text_atomic(cache, json.dumps({"key": key, "result": res}))
    except OSError:
        pass  # a read-only campaign directory only costs a recomputation
    return res
