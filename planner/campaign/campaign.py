"""Campaigns as Python functions (the CLI only parses arguments and calls these).

    run_campaign(config, out)          run (or resume) a campaign to its end on Ray / in process
    campaign_status(campaign_dir)      runs by status, compute, current recommendation (a dict)
    suggest(campaign_dir, q)           ask: the next q runs, recorded as pending, not executed
    tell(campaign_dir, results)        tell: results in the runs-table schema (validated)
    export_runs(campaign_dir, out)     every observation (finals and checkpoints) with run_id
    load_campaign(campaign_dir)        a read-only handle: config, runs, posterior, recommendation

A campaign directory holds the ledger (``ledger.sqlite``), the resolved config
(``config.resolved.yaml``), posterior snapshots (``posteriors/NNNN``), ``recommendation.json``
(the ``optimum`` format) and a log (``planner.log``). Rerunning ``run_campaign`` with the same
config resumes; a different config (other than its ``executor`` section) is refused.
"""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from planner.calibrate.diagnose import (
    cached_holdout,
    fit_warnings,
    holdout_warnings,
    merge_warnings,
)
from planner.calibrate.trust import trust, with_reasons
from planner.campaign.executors import make_executor
from planner.campaign.executors.base import check_trainer
from planner.campaign.journal import JOURNAL, JournalLog, attach_journal
from planner.campaign.ledger import Ledger
from planner.campaign.lock import LOCK_NAME, CampaignLock
from planner.campaign.loop import LoopResult, run_loop
from planner.campaign.observations import (
    prepare_observations,
    read_results,
    record_observations,
    spec_json,
)
from planner.campaign.planner import RECOMMENDATION, Planner, load_posterior
from planner.campaign.records import VALIDATION_SOURCE
from planner.campaign.snapshots import UsableSnapshot, usable_snapshot
from planner.campaign.store import open_campaign, open_existing, stored_config
from planner.campaign.validation import validation_block
from planner.config.parse import coerce_config
from planner.config.schema import CampaignConfig
from planner.core.errors import InputError, LedgerError
from planner.core.io import write_json_atomic
from planner.core.types import RunStatus
from planner.decide.registry import get_strategy
from trainers.base import RunSpec, TrainerLoadError

log = JournalLog("planner.campaign")




# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------
def run_campaign(config, out: str | Path, *, executor=None, progress=None,
                 fitter=None) -> LoopResult:
    """Run the campaign described by ``config`` (path, mapping or CampaignConfig) in directory
    ``out`` until its budget is spent, its stop tolerance is met, or too many runs fail.
    Rerunning with the same config resumes (interrupted runs are dispatched again with their
    run ids). ``executor``: an Executor to use instead of the configured one (not shut down
    here); ``progress``: an object with ``update(stats)`` (see planner.report.progress); ``fitter``:
    replaces ``planner.campaign.planner.default_fitter``. Returns a ``LoopResult`` (``stop_reason``:
    budget, tolerance, failures or interrupted)."""

    cfg = coerce_config(config)
    get_strategy(cfg.acquisition.name)  # an unknown acquisition, or a trainer that cannot be
    if executor is None:                 # built here, fails before anything is created
        check_trainer(cfg.trainer.path, dict(cfg.trainer.args))
    cfg, ledger = open_campaign(cfg, out)
    handler = attach_journal(Path(out))
    ex = None
    try:
        planner = Planner(cfg, ledger, fitter=fitter)
        if executor is None:
            try:
                ex = make_executor(cfg, campaign_dir=out)
            except TrainerLoadError as e:
                raise InputError(str(e)) from None
        if progress is not None and hasattr(progress, "start"):
            progress.start()
        try:
            result = run_loop(planner, executor or ex, progress=progress)
        finally:
            if progress is not None and hasattr(progress, "stop"):
                progress.stop()
        log.info("campaign %s: %s (%s)", out, result.stop_reason, result.message)
        return result
    finally:
        if ex is not None:
            ex.shutdown()
        ledger.close()
        JOURNAL.removeHandler(handler)
        handler.close()


# --------------------------------------------------------------------------------------------
# status / export / load
# --------------------------------------------------------------------------------------------
def _running_holder(d: Path) -> str | None:
    """Who holds the campaign lock (a planner is running), or None. Never blocks."""
    p = d / LOCK_NAME
    if not p.exists():
        return None
    try:
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def campaign_status(campaign_dir: str | Path) -> dict[str, Any]:
    """A summary of a campaign (read-only; works while a planner is running it). Raises
    InputError when the campaign has posterior snapshots and none of them loads.

    Keys: dir, running (holder of the lock or None), law, domains, targets, acquisition,
    counts (runs by status), spent (FLOPs and runs, see Ledger.spent), budget {flops,
    max_runs}, observations, snapshots, recommendation (optimum format or None),
    expected_excess_loss, failures (last failed attempts: run_id, attempt, reason, error),
    last_fit_error, stopped (the last stop event's reason and message, and final_fit_error
    when the final fit failed; or None), sources (completed runs by source: planner, suggest,
    imported, tell), strategies (runs that did not fail, by the strategy that chose them:
    initial, random, grid, decision, prior, told), caps (data caps on the target run's weights
    below 1, or None), caps_binding (domains at their cap in the recommendation), warnings
    (``planner.calibrate.diagnose.fit_warnings`` of the posterior behind the recommendation,
    plus those of the report's held-out check of that snapshot when one was computed, and one
    per damaged snapshot), damaged_snapshots (snapshots newer than the one used that cannot be
    loaded: id, path, error; the status then shows the newest snapshot that loads and its
    recommendation), damage (the warnings about damaged snapshots or an unreadable
    recommendation.json, also in warnings) and discrepancy (the model discrepancy the
    recommendation used: ``recommendation.json``'s ``discrepancy``, or None), validation (the
    validation runs beside the newest usable posterior's predictions:
    ``planner.campaign.validation.validation_block``, or None) and trust ({"level": "low" |
    "ok", "reasons"}: ``planner.calibrate.trust.trust``; None without a recommendation)."""
    d = Path(campaign_dir)
    with Ledger.open(d, readonly=True) as ledger:
        cfg = stored_config(ledger)
        counts = ledger.counts()
        spent = ledger.spent()
        snaps = ledger.snapshots()
        good = usable_snapshot(snaps, load_posterior)  # InputError when none loads
        rec, rec_warns = _read_recommendation(d, good)
        fails = [a for a in ledger.attempts() if a["status"] == RunStatus.FAILED]
        fit_errors = ledger.events("fit_failed")
        stops = ledger.events("stopped")
        n_obs = ledger.n_observations()
        sources: dict[str, int] = {}
        strategies: dict[str, int] = {}
        for r in ledger.runs():
            if r.status == RunStatus.COMPLETED:
                sources[r.source] = sources.get(r.source, 0) + 1
            if r.status != RunStatus.FAILED:
                key = r.strategy or "unknown"
                strategies[key] = strategies.get(key, 0) + 1
        caps = cfg.weight_caps()
        last_fit_err = None
        if fit_errors and (not snaps or fit_errors[-1]["t"] > snaps[-1]["created_at"]):
            last_fit_err = fit_errors[-1]["data"].get("error")
        damage = good.warnings() + rec_warns
        warns = merge_warnings(damage, _status_warnings(d, rec, good))
        val = validation_block(ledger, dict(cfg.targets), good.posterior, good.id, seed=cfg.seed)
        tr = (None if rec is None else
              trust(good.posterior, cached_holdout(d, rec.get("snapshot")), val))
        return {
            "dir": str(d), "running": _running_holder(d), "law": cfg.law,
            "domains": list(cfg.domains), "targets": dict(cfg.targets),
            "acquisition": cfg.acquisition.name, "counts": counts, "spent": spent,
            "budget": {"flops": cfg.budget.flops, "max_runs": cfg.budget.max_runs},
            "target_budget": {"N": cfg.target_budget.N, "D": cfg.target_budget.D},
            "observations": n_obs, "snapshots": len(snaps),
            "recommendation": rec,
            "expected_excess_loss": None if rec is None else rec.get("expected_excess_loss"),
            "failures": [{"run_id": a["run_id"], "attempt": a["attempt"], "reason": a["reason"],
                          "error": (a["error"] or "").splitlines()[0][:300] if a["error"] else ""}
                         for a in fails[-10:]],
            "failed_attempts": len(fails),
            "last_fit_error": last_fit_err,
            "stopped": ({"reason": stops[-1]["data"].get("reason"),
                         "message": stops[-1]["data"].get("message"),
                         **{k: v for k, v in stops[-1]["data"].items() if k == "final_fit_error"}}
                        if stops else None),
            "sources": sources, "strategies": strategies,
            "caps": None if caps is None else {d: c for d, c in caps.items() if c < 1.0},
            "caps_binding": None if rec is None else rec.get("caps_binding"),
            "warnings": warns,
            "damaged_snapshots": good.damaged, "damage": damage,
            "discrepancy": None if rec is None else rec.get("discrepancy"),
            # law auto: {target: {family: stacking weight}} of the latest fit
            "law_weights": None if rec is None else rec.get("law_weights"),
            "validation": val, "trust": tr,
        }


def _read_recommendation(d: Path, good: UsableSnapshot) -> tuple[dict | None, list[str]]:
    """The recommendation status shows, and warnings about where it came from:
    ``recommendation.json``, unless it cannot be read or was made from a damaged snapshot; then
    the one the ledger stored with the newest usable snapshot."""
    rec, warns = None, []
    rp = d / RECOMMENDATION
    if rp.exists():
        try:
            rec = json.loads(rp.read_text())
            if not isinstance(rec, dict):
                raise ValueError(f"a JSON {type(rec).__name__}, not an object")
        except (OSError, ValueError) as e:
            rec = None
            warns.append(f"{RECOMMENDATION} cannot be read ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200] if str(e) else ''})"
                         + (f"; showing the recommendation of snapshot {good.id:04d}"
                            if good.snapshot is not None else ""))
    if rec is not None and rec.get("snapshot") in {x["id"] for x in good.damaged}:
        rec = None  # made from a snapshot that no longer loads (good.warnings() says so)
    if rec is None and good.snapshot is not None:
        rec = good.snapshot["recommendation"]
    return rec, warns


def _status_warnings(d: Path, rec: dict | None, good: UsableSnapshot) -> list[str]:
    """The recommendation's warnings, plus the report's held-out check of its snapshot. A
    recommendation written before they were recorded gets them from its snapshot."""
    if rec is None:
        return []
    warns = rec.get("warnings")
    snap_id = rec.get("snapshot")
    if warns is None and good.snapshot is not None:
        snap_id = good.id
        warns = fit_warnings(good.posterior)
    return merge_warnings(warns, holdout_warnings(cached_holdout(d, snap_id)))


def export_runs(campaign_dir: str | Path, out: str | Path | None = None,
                include_checkpoints: bool = True):
    """Every observation of a campaign in the runs-table schema (DESIGN.md section 3): run_id,
    N, D, h_<domain>, loss_<target>, plus ``final`` (False for checkpoints), ``source``,
    ``seed`` and ``strategy`` (which strategy chose the run: initial, random, grid, decision,
    prior, told). Failed runs are not observations. Writes CSV (or Parquet for .parquet) if ``out``."""
    d = Path(campaign_dir)
    with Ledger.open(d, readonly=True) as ledger:
        cfg = stored_config(ledger)
        df = ledger.observations(list(cfg.domains), include_checkpoints=include_checkpoints)
    if out is not None:
        p = Path(out)
        if p.parent and not p.parent.exists():
            raise InputError(f"output directory {p.parent} does not exist")
        if p.suffix.lower() in (".parquet", ".pq"):
            df.to_parquet(p, index=False)
        else:
            df.to_csv(p, index=False)
    return df


def add_recommendation_warnings(campaign_dir: str | Path, snapshot: int | None,
                                warnings: list[str], trust_reasons: list[str] = ()) -> bool:
    """Add ``warnings`` (and ``trust_reasons`` to its ``trust``) to ``recommendation.json`` if it
    was made from posterior ``snapshot``
    and no planner is running (its lock is taken for the write, so a running planner's newer
    recommendation is never overwritten; it merges the report's cached held-out check itself
    when it writes one for the same snapshot). Returns whether the file was rewritten."""
    d = Path(campaign_dir)
    p = d / RECOMMENDATION
    if not (warnings or trust_reasons) or snapshot is None or not p.exists() or not Ledger.exists(d):
        return False
    lock = CampaignLock(d)
    try:
        lock.acquire()
    except (LedgerError, OSError):
        return False  # a planner is running; status merges the cached check meanwhile
    try:
        rec = json.loads(p.read_text())
        if not isinstance(rec, dict) or rec.get("snapshot") != snapshot:
            return False
        merged = merge_warnings(rec.get("warnings"), warnings)
        tr = with_reasons(rec.get("trust"), list(trust_reasons))
        if merged == rec.get("warnings") and tr == rec.get("trust"):
            return False
        write_json_atomic(p, {**rec, "warnings": merged, "trust": tr})
        return True
    except (OSError, json.JSONDecodeError):
        return False
    finally:
        lock.release()


@dataclass
class Campaign:
    """A read-only view of a campaign directory (for notebooks)."""

    dir: Path
    config: CampaignConfig

    def status(self) -> dict:
        return campaign_status(self.dir)

    def runs(self, include_checkpoints: bool = True):
        return export_runs(self.dir, include_checkpoints=include_checkpoints)

    def ledger(self) -> Ledger:
        """A read-only Ledger (close it when done)."""
        return Ledger.open(self.dir, readonly=True)

    def recommendation(self) -> dict | None:
        p = self.dir / RECOMMENDATION
        return json.loads(p.read_text()) if p.exists() else None

    def posterior(self, snapshot: int | None = None):
        """The latest (or the given) posterior snapshot, or None before the first fit."""
        with self.ledger() as lg:
            snaps = lg.snapshots()
        if snapshot is not None:
            snaps = [s for s in snaps if s["id"] == snapshot]
        return load_posterior(snaps[-1]["path"]) if snaps else None


def load_campaign(campaign_dir: str | Path) -> Campaign:
    d = Path(campaign_dir)
    with Ledger.open(d, readonly=True) as ledger:
        return Campaign(d, stored_config(ledger))


# --------------------------------------------------------------------------------------------
# ask / tell without an executor
# --------------------------------------------------------------------------------------------
def suggest(campaign_dir: str | Path, q: int, out: str | Path | None = None,
            config=None) -> list[RunSpec]:
    """Ask: propose the next ``q`` runs of a campaign without executing them.

    They are recorded as pending (source ``suggest``; they count toward the budget and later
    proposals avoid them) and, with ``out``, written as a JSON list of objects with run_id, N,
    D, h ({domain: weight}), seed, flops and h_<domain> columns. Report their results with
    ``tell``. ``config`` creates the campaign directory if it does not exist yet."""
    if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or q < 1:
        raise InputError(f"-n must be a positive integer, got {q!r}")
    if out is not None and not Path(out).parent.exists():
        raise InputError(f"output directory {Path(out).parent} does not exist")
    cfg, ledger = open_existing(campaign_dir, config)
    try:

        get_strategy(cfg.acquisition.name)
        planner = Planner(cfg, ledger)
        if planner.can_fit() and planner.needs_fit():
            planner.refit()
        specs = planner.ask(int(q), source="suggest")
        if not specs:
            flops_left, runs_left = planner.budget_left()
            raise InputError(f"budget spent: no run fits in what is left (FLOPs left "
                             f"{'unlimited' if flops_left is None else f'{max(flops_left, 0):.3g}'}"
                             f", runs left {'unlimited' if runs_left is None else max(runs_left, 0)})")
    finally:
        ledger.close()
    if out is not None:
        write_json_atomic(Path(out), [spec_json(s, cfg.domains) for s in specs])
    return specs


def tell(campaign_dir: str | Path, results, config=None, refit: bool = True,
         validation: bool = False) -> dict:
    """Tell: record results given in the runs-table schema (a path to CSV/Parquet or a
    DataFrame), validated like any runs table. Rows with the run_id of a suggested run complete
    it; rows of other runs are added as external observations (source ``tell``). Rows of one
    run (same run_id; without run_id: same N and h) are its checkpoints, the largest D its
    final result. Idempotent: a run already completed with the same losses is skipped; one
    completed with a different loss is refused (InputError naming the run and both values),
    and then nothing is recorded. Refits (if enough runs) and
    rewrites recommendation.json. Returns {"added", "completed", "duplicates", "run_ids",
    "fit_error"} (fit_error: why that refit failed, else None; the results stay recorded).
    ``validation``: the runs are validation runs (source ``validation``, e.g. the user's own
    target run), kept out of every fit and shown beside their prediction like those of
    ``planner validate``; a run id of another source is refused."""
    df = read_results(results)
    source = VALIDATION_SOURCE if validation else "tell"
    # validated before the campaign is opened (or created, with ``config``)
    told = prepare_observations(coerce_config(config) if config is not None
                                else load_campaign(campaign_dir).config, df, source)
    cfg, ledger = open_existing(campaign_dir, config)
    try:
        counts = record_observations(ledger, told, source)
        counts["fit_error"] = None
        if refit:
            planner = Planner(cfg, ledger)
            if planner.can_fit() or planner.recommendation is not None:
                counts["fit_error"] = planner.finalize()
        elif validation:  # no fit needed: only the validation block and trust change
            Planner(cfg, ledger).write_recommendation()
        return counts
    finally:
        ledger.close()
