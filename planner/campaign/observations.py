"""Observations entering a campaign from outside the loop: results tables (``planner tell``) and
``prior_runs`` imports, validated as runs tables and recorded in the ledger keyed by run id."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from planner.campaign.ledger import Ledger
from planner.campaign.records import GIVEN_STRATEGY, VALIDATION_SOURCE
from planner.config.schema import CampaignConfig
from planner.core.errors import InputError
from planner.core.io import read_table
from planner.core.types import RunStatus, flops, run_identity
from planner.model.runs import runs_from_frame
from trainers.base import RunResult, RunSpec


def spec_json(spec: RunSpec, domains) -> dict:
    d = spec.to_dict()
    d["flops"] = flops(float(spec.N), float(spec.D))
    for dom in domains:
        d[f"h_{dom}"] = float(spec.h.get(dom, 0.0))
    return d


def read_results(results) -> "pd.DataFrame":
    """A DataFrame as is, or a results table read from a path."""
    return results if isinstance(results, pd.DataFrame) else read_table(results, "results table")


def read_prior_runs(cfg: CampaignConfig):
    return read_table(cfg.prior_runs, "prior_runs table")


@dataclass(frozen=True)
class ToldRun:
    """One run of a results table, validated and ready to record: its spec, its result and the
    N and D its final observation is fitted at (as given, not rounded)."""

    spec: RunSpec
    result: RunResult
    N: float
    D: float


def prepare_observations(cfg: CampaignConfig, df, source: str,
                         label: str | None = None) -> list[ToldRun]:
    """Validate a runs table against the campaign (schema, targets, one N and h per run) and
    group its rows into runs, without touching any ledger: a bad table fails before anything
    is created or recorded. Rows of one run (same run_id; without it, same N and h) are its
    checkpoints, the largest D its final result. ``label`` names the table in errors."""
    label = label or f"{source} table"
    table = runs_from_frame(df, domains=list(cfg.domains), source=label)
    frame = table.frame
    have = [t for t in cfg.targets if t in table.targets]
    if not have:
        raise InputError(f"{label}: no loss column for the campaign's targets "
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
            ident = run_identity(row["N"], [row[c] for c in hcols])
            prefix = "imp" if source == "imported" else "ext"
            keys.append(f"{prefix}-{hashlib.sha1(ident.encode()).hexdigest()[:12]}")
    frame = frame.assign(_key=keys)
    out = []
    for key, g in frame.groupby("_key", sort=False):
        g = g.sort_values("D")
        H = g[hcols].to_numpy(float)
        if np.abs(H - H[-1]).max() > 1e-6 or np.abs(g["N"].to_numpy(float) - g["N"].iloc[-1]).max() > 0.5:
            raise InputError(f"{label}: rows of run {key!r} disagree on N or h (a run's "
                             f"rows must share N and h and differ in D)")
        last = g.iloc[-1]
        h = {d: float(last[f"h_{d}"]) for d in cfg.domains}

        def row_losses(r):
            return {t: float(r[f"loss_{t}"]) for t in losses if np.isfinite(r[f"loss_{t}"])}

        res = RunResult(run_id=key, losses=row_losses(last),
                        checkpoints=[(int(round(r["D"])), row_losses(r)) for _, r in g.iloc[:-1].iterrows()
                                     if row_losses(r)],
                        metadata={"source": source})
        seed = int(last["seed"]) if "seed" in g and np.isfinite(
            pd.to_numeric(last["seed"], errors="coerce")) else 0
        out.append(ToldRun(RunSpec(run_id=key, N=max(1, int(round(last["N"]))),
                                   D=max(1, int(round(last["D"]))), h=h, seed=seed), res,
                           N=float(last["N"]), D=float(last["D"])))
    return out


# relative tolerance within which a re-told loss equals the recorded one (CSV round trips of
# float64 are exact; this only absorbs formatting with fewer digits)
SAME_LOSS_RTOL = 1e-9


def _conflict(ledger: Ledger, run: ToldRun, label: str) -> str | None:
    """Why ``run`` contradicts the result already recorded for its run id, or None."""
    rec = ledger.result(run.spec.run_id)
    if rec is None:
        return None
    old, new = rec["losses"], run.result.losses
    for t in [t for t in new if t in old]:  # a loss measured on one side only is no conflict
        a, b = float(old[t]), float(new[t])
        if not math.isclose(a, b, rel_tol=SAME_LOSS_RTOL, abs_tol=0.0):
            return (f"{label}: run {run.spec.run_id!r} is already recorded with "
                    f"loss_{t} = {a!r}, the table has {b!r}; a recorded result is never "
                    f"overwritten (give the new result another run_id)")
    return None


def record_observations(ledger: Ledger, runs: list[ToldRun], source: str,
                        label: str | None = None) -> dict:
    """Record prepared runs (``prepare_observations``). A run already completed with the same
    final losses is skipped (telling is idempotent); one with different losses is refused
    (InputError naming the run and both values) before anything is recorded, and so is a
    validation run whose run id another source recorded. Returns counts."""
    for run in runs:
        why = _conflict(ledger, run, label or f"{source} table")
        old = ledger.run(run.spec.run_id)
        if source == VALIDATION_SOURCE and old is not None and old.source != source:
            why = (f"run {run.spec.run_id!r} is already recorded as a {old.source} run; give "
                   f"the validation run another run_id")
        if why:
            raise InputError(why)
    added, completed, dup, ids = 0, 0, 0, []
    for run in runs:
        spec, key = run.spec, run.spec.run_id
        rec = ledger.run(key)
        if rec is not None and rec.status == RunStatus.COMPLETED:
            dup += 1
            continue
        if rec is None:
            ledger.add_runs([spec], source=source, strategy=GIVEN_STRATEGY.get(source))
            added += 1
        else:
            completed += 1
        ledger.record_result(key, run.result, N=run.N, D=run.D, h=spec.h)
        ids.append(key)
    return {"added": added, "completed": completed, "duplicates": dup, "run_ids": ids}


def import_observations(ledger: Ledger, cfg: CampaignConfig, df, source: str) -> dict:
    """Validate a runs table and record its runs (see ``tell``). Returns counts."""
    return record_observations(ledger, prepare_observations(cfg, df, source), source)
