"""Observations entering a campaign from outside the loop: results tables (``planner tell``) and
``prior_runs`` imports, validated as runs tables and recorded in the ledger keyed by run id."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from planner.campaign.ledger import Ledger
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


def import_observations(ledger: Ledger, cfg: CampaignConfig, df, source: str) -> dict:
    """Validate a runs table and record its runs (see ``tell``). Returns counts."""
    import pandas as pd


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
            ident = run_identity(row["N"], [row[c] for c in hcols])
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
        if run is not None and run.status == RunStatus.COMPLETED:
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
