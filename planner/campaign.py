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
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from planner.config import (OPERATIONAL_KEYS, CampaignConfig, coerce_config, config_diff,
                            config_fingerprint, config_from_dict, config_to_dict, config_to_yaml)
from planner.errors import InputError, LedgerError
from planner.ledger import LEDGER_NAME, LOCK_NAME, Ledger
from planner.loop import (JOURNAL, POSTERIORS, RECOMMENDATION, LoopResult, Planner, _Log,
                          load_posterior, run_loop, write_json_atomic)
from trainers.base import RunResult, RunSpec, TrainerLoadError

RESOLVED_CONFIG = "config.resolved.yaml"
LOG_NAME = "planner.log"
log = _Log("planner.campaign")


# --------------------------------------------------------------------------------------------
# opening
# --------------------------------------------------------------------------------------------
def _refuse_damaged(d: Path) -> None:
    leftovers = [n for n in (RESOLVED_CONFIG, POSTERIORS, RECOMMENDATION, LEDGER_NAME + "-wal")
                 if (d / n).exists()]
    if leftovers:
        raise LedgerError(f"{d} looks like a campaign directory whose ledger ({LEDGER_NAME}) is "
                          f"missing (found {', '.join(leftovers)}); refusing to start a new "
                          f"campaign over it: use a new --out directory")
    if d.exists() and not d.is_dir():
        raise InputError(f"campaign directory {d} exists and is not a directory")


def stored_config(ledger: Ledger) -> CampaignConfig:
    raw, _ = ledger.config()
    return config_from_dict(raw, check_files=False)


def open_campaign(config, out: str | Path) -> tuple[CampaignConfig, Ledger]:
    """Create the campaign in ``out`` or reopen it (locked for writing).

    Reopening with a config whose science differs from the stored one raises LedgerError naming
    the differing keys; a change confined to ``executor`` is recorded and accepted."""
    cfg = coerce_config(config)
    d = Path(out)
    new = config_to_dict(cfg)
    fp = config_fingerprint(cfg)
    prior = _read_prior_runs(cfg) if cfg.prior_runs else None  # fail before creating anything
    if Ledger.exists(d):
        ledger = Ledger.open(d)
        try:
            stored, stored_fp = ledger.config()
            if stored_fp != fp:
                diff = [k for k in config_diff(stored, new)
                        if k.split(".")[0] not in OPERATIONAL_KEYS]
                raise LedgerError(
                    f"campaign {d} was started with a different config (differs in "
                    f"{', '.join(diff[:6]) or 'content'}); rerun with its original config "
                    f"(saved as {d / RESOLVED_CONFIG}) or use a new --out directory")
            if stored != new:
                ledger.update_config(new, fp, config_diff(stored, new))
                _write_text_atomic(d / RESOLVED_CONFIG, config_to_yaml(cfg))
        except BaseException:
            ledger.close()
            raise
    else:
        _refuse_damaged(d)
        for suffix in ("", "-wal", "-shm", "-journal"):  # an interrupted creation
            Path(str(d / LEDGER_NAME) + ".new" + suffix).unlink(missing_ok=True)
        ledger = Ledger.create(d, new, fp)
        _write_text_atomic(d / RESOLVED_CONFIG, config_to_yaml(cfg))
    if prior is not None:
        try:
            n = import_observations(ledger, cfg, prior, source="imported")
            if n["added"]:
                log.info("imported %d prior run(s) from %s", n["added"], cfg.prior_runs)
        except BaseException:
            ledger.close()
            raise
    return cfg, ledger


def _open_existing(campaign_dir: str | Path, config=None) -> tuple[CampaignConfig, Ledger]:
    """Open a campaign for writing; with ``config``, create it if it does not exist yet."""
    d = Path(campaign_dir)
    if config is not None:
        return open_campaign(config, d)
    ledger = Ledger.open(d)
    try:
        return stored_config(ledger), ledger
    except BaseException:
        ledger.close()
        raise


def _write_text_atomic(p: Path, text: str) -> None:
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, p)


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------
def run_campaign(config, out: str | Path, *, executor=None, progress=None,
                 fitter=None) -> LoopResult:
    """Run the campaign described by ``config`` (path, mapping or CampaignConfig) in directory
    ``out`` until its budget is spent, its stop tolerance is met, or too many runs fail.
    Rerunning with the same config resumes (interrupted runs are dispatched again with their
    run ids). ``executor``: an Executor to use instead of the configured one (not shut down
    here); ``progress``: an object with ``update(stats)`` (see planner.progress); ``fitter``:
    replaces ``planner.loop.default_fitter``. Returns a ``LoopResult`` (``stop_reason``:
    budget, tolerance, failures or interrupted)."""
    from planner.design import get_strategy
    from planner.executor import check_trainer, make_executor

    cfg = coerce_config(config)
    get_strategy(cfg.acquisition.name)  # an unknown acquisition or trainer fails before
    if executor is None:                 # anything is created
        check_trainer(cfg.trainer.path, dict(cfg.trainer.args))
    cfg, ledger = open_campaign(cfg, out)
    handler = _attach_log(Path(out))
    ex = None
    try:
        planner = Planner(cfg, ledger, fitter=fitter)
        if executor is None:
            try:
                ex = make_executor(cfg)
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


def _attach_log(d: Path) -> logging.Handler:
    h = logging.FileHandler(d / LOG_NAME)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    h.setLevel(logging.INFO)
    JOURNAL.addHandler(h)
    return h


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
    """A summary of a campaign (read-only; works while a planner is running it).

    Keys: dir, running (holder of the lock or None), law, domains, targets, acquisition,
    counts (runs by status), spent (FLOPs and runs, see Ledger.spent), budget {flops,
    max_runs}, observations, snapshots, recommendation (optimum format or None),
    expected_excess_loss, failures (last failed attempts: run_id, attempt, reason, error),
    last_fit_error, stopped (the last stop event's reason and message, or None), sources
    (completed runs by source: planner, suggest, imported, tell), caps (data caps on the target
    run's weights below 1, or None) and caps_binding (domains at their cap in the
    recommendation)."""
    d = Path(campaign_dir)
    with Ledger.open(d, readonly=True) as ledger:
        cfg = stored_config(ledger)
        counts = ledger.counts()
        spent = ledger.spent()
        snaps = ledger.snapshots()
        rec = None
        rp = d / RECOMMENDATION
        if rp.exists():
            try:
                rec = json.loads(rp.read_text())
            except (OSError, json.JSONDecodeError):
                rec = None
        if rec is None and snaps:
            rec = snaps[-1]["recommendation"]
        fails = [a for a in ledger.attempts() if a["status"] == "failed"]
        fit_errors = ledger.events("fit_failed")
        stops = ledger.events("stopped")
        n_obs = ledger.n_observations()
        sources: dict[str, int] = {}
        for r in ledger.runs("completed"):
            sources[r.source] = sources.get(r.source, 0) + 1
        caps = cfg.weight_caps()
        last_fit_err = None
        if fit_errors and (not snaps or fit_errors[-1]["t"] > snaps[-1]["created_at"]):
            last_fit_err = fit_errors[-1]["data"].get("error")
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
                         "message": stops[-1]["data"].get("message")} if stops else None),
            "sources": sources,
            "caps": None if caps is None else {d: c for d, c in caps.items() if c < 1.0},
            "caps_binding": None if rec is None else rec.get("caps_binding"),
        }


def export_runs(campaign_dir: str | Path, out: str | Path | None = None,
                include_checkpoints: bool = True):
    """Every observation of a campaign in the runs-table schema (DESIGN.md section 3): run_id,
    N, D, h_<domain>, loss_<target>, plus ``final`` (False for checkpoints), ``source`` and
    ``seed``. Failed runs are not observations. Writes CSV (or Parquet for .parquet) if ``out``."""
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
    cfg, ledger = _open_existing(campaign_dir, config)
    try:
        from planner.design import get_strategy

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


def spec_json(spec: RunSpec, domains) -> dict:
    d = spec.to_dict()
    d["flops"] = 6.0 * spec.N * spec.D
    for dom in domains:
        d[f"h_{dom}"] = float(spec.h.get(dom, 0.0))
    return d


def tell(campaign_dir: str | Path, results, config=None, refit: bool = True) -> dict:
    """Tell: record results given in the runs-table schema (a path to CSV/Parquet or a
    DataFrame), validated like any runs table. Rows with the run_id of a suggested run complete
    it; rows of other runs are added as external observations (source ``tell``). Rows of one
    run (same run_id; without run_id: same N and h) are its checkpoints, the largest D its
    final result. Idempotent: a run already completed is skipped. Refits (if enough runs) and
    rewrites recommendation.json. Returns {"added", "completed", "duplicates", "run_ids"}."""
    df = _read_table(results)
    cfg, ledger = _open_existing(campaign_dir, config)
    try:
        counts = import_observations(ledger, cfg, df, source="tell")
        if refit:
            planner = Planner(cfg, ledger)
            if planner.can_fit() or planner.recommendation is not None:
                planner.finalize()
        return counts
    finally:
        ledger.close()


def _read_table(results):
    import pandas as pd

    if isinstance(results, pd.DataFrame):
        return results
    p = Path(results)
    if not p.exists():
        raise InputError(f"results table not found: {p}")
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(p)
        return pd.read_csv(p)
    except Exception as e:  # noqa: BLE001 - any parse failure is bad input
        raise InputError(f"cannot read results table {p}: {str(e).splitlines()[0]}") from None


def _read_prior_runs(cfg: CampaignConfig):
    return _read_table(cfg.prior_runs)


def import_observations(ledger: Ledger, cfg: CampaignConfig, df, source: str) -> dict:
    """Validate a runs table and record its runs (see ``tell``). Returns counts."""
    import pandas as pd

    from planner.runs import runs_from_frame

    table = runs_from_frame(df, domains=list(cfg.domains), source=f"{source} table")
    frame = table.frame
    have = [t for t in cfg.targets if t in table.targets]
    if not have:
        raise InputError(f"{source} table: no loss column for the campaign's targets "
                         f"({', '.join('loss_' + t for t in cfg.targets)})")
    losses = table.targets
    hcols = [f"h_{d}" for d in cfg.domains]
    if "run_id" in frame and frame["run_id"].notna().any():
        has_id = frame["run_id"].notna() & (frame["run_id"].astype(str).str.strip() != "")
    else:
        has_id = pd.Series(False, index=frame.index)
    keys = []
    for i, row in frame.iterrows():
        if has_id[i]:
            keys.append(str(row["run_id"]).strip())
        else:
            ident = "|".join([f"{row['N']:.9g}"] + [f"{row[c]:.9g}" for c in hcols])
            prefix = "imp" if source == "imported" else "ext"
            keys.append(f"{prefix}-{hashlib.sha1(ident.encode()).hexdigest()[:12]}")
    frame = frame.assign(_key=keys)
    added, completed, dup, ids = 0, 0, 0, []
    for key, g in frame.groupby("_key", sort=False):
        g = g.sort_values("D")
        H = g[hcols].to_numpy(float)
        if np.abs(H - H[-1]).max() > 1e-6 or np.abs(g["N"].to_numpy(float) - g["N"].iloc[-1]).max() > 0.5:
            raise InputError(f"{source} table: rows of run {key!r} disagree on N or h (a run's "
                             f"rows must share N and h and differ in D)")
        last = g.iloc[-1]
        h = {d: float(last[f"h_{d}"]) for d in cfg.domains}

        def row_losses(r):
            return {t: float(r[f"loss_{t}"]) for t in losses if np.isfinite(r[f"loss_{t}"])}

        res = RunResult(run_id=key, losses=row_losses(last),
                        checkpoints=[(int(round(r["D"])), row_losses(r)) for _, r in g.iloc[:-1].iterrows()
                                     if row_losses(r)],
                        metadata={"source": source})
        run = ledger.run(key)
        if run is not None and run.status == "completed":
            dup += 1
            continue
        if run is None:
            ledger.add_runs([RunSpec(run_id=key, N=max(1, int(round(last["N"]))),
                                     D=max(1, int(round(last["D"]))), h=h,
                                     seed=int(last["seed"]) if "seed" in g and np.isfinite(
                                         pd.to_numeric(last["seed"], errors="coerce")) else 0)],
                            source=source, strategy=None)
            added += 1
        else:
            completed += 1
        ledger.record_result(key, res, N=float(last["N"]), D=float(last["D"]), h=h)
        ids.append(key)
    return {"added": added, "completed": completed, "duplicates": dup, "run_ids": ids}
