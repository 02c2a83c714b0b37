"""A trainer that answers runs from a recorded runs table, for offline campaigns.

``ReplayTrainer(table=PATH, h_tol=1e-3, rtol=1e-6, targets=None, with_checkpoints=True)``.

The table is CSV or Parquet in the runs-table schema (DESIGN.md section 3): ``N``, ``D``,
``h_<domain>`` for every training domain, ``loss_<target>`` (empty = not measured) and optionally
``run_id``; other columns are ignored. A RunSpec matches a row when N and D agree within relative
tolerance ``rtol`` and every weight agrees within ``h_tol`` (max absolute difference; domains
missing from the spec count as 0). Several matching rows are replicates (e.g. seeds): the spec's
seed picks one, ``matches[seed % len(matches)]`` in table order, so a campaign that repeats a
configuration with new seeds walks through the recorded replicates.

If the matched row has a ``run_id``, the other rows of that run at the same N and h with smaller D
come back as checkpoints (they share the run's noise, as real checkpoints do). A spec with no
matching row raises ``LookupError`` naming the nearest recorded run: its row, run_id, N, D and h
distance, nearest by |log N ratio| + |log D ratio| + max |h difference|.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from trainers.base import RunResult, RunSpec


def read_runs_table(path: str | Path) -> pd.DataFrame:
    """Read a runs table (``.csv``/``.csv.gz`` or ``.parquet``/``.pq``) and check its columns."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"runs table {path} does not exist")  # ValueError: a bad trainer arg
    suffixes = "".join(path.suffixes).lower()
    df = pd.read_parquet(path) if suffixes.endswith((".parquet", ".pq")) else pd.read_csv(path)
    missing = [c for c in ("N", "D") if c not in df.columns]
    if missing:
        raise ValueError(f"runs table {path} lacks columns {missing}")
    if not any(c.startswith("h_") for c in df.columns):
        raise ValueError(f"runs table {path} has no h_<domain> columns")
    if not any(c.startswith("loss_") for c in df.columns):
        raise ValueError(f"runs table {path} has no loss_<target> columns")
    if (df["N"] <= 0).any() or (df["D"] <= 0).any():
        raise ValueError(f"runs table {path} has N or D <= 0")
    return df.reset_index(drop=True)


class ReplayTrainer:
    """Looks each RunSpec up in a recorded runs table instead of training."""

    def __init__(self, table: str, h_tol: float = 1e-3, rtol: float = 1e-6,
                 targets: list[str] | None = None, with_checkpoints: bool = True):
        if h_tol < 0 or rtol < 0:
            raise ValueError("h_tol and rtol must be >= 0")
        self.table_path = str(table)
        self.df = read_runs_table(table)
        self.h_tol, self.rtol, self.with_checkpoints = float(h_tol), float(rtol), bool(with_checkpoints)
        self.domains = [c[2:] for c in self.df.columns if c.startswith("h_")]
        all_targets = [c[5:] for c in self.df.columns if c.startswith("loss_")]
        if targets is not None:
            unknown = [t for t in targets if t not in all_targets]
            if unknown:
                raise ValueError(f"targets {unknown} are not in the table (has {all_targets})")
        self.targets = list(targets) if targets is not None else all_targets
        self._N = self.df["N"].to_numpy(float)
        self._D = self.df["D"].to_numpy(float)
        self._H = self.df[[f"h_{d}" for d in self.domains]].fillna(0.0).to_numpy(float)
        self._run_ids = (self.df["run_id"].astype(str).to_numpy() if "run_id" in self.df.columns else None)

    def _h_of(self, spec: RunSpec) -> np.ndarray:
        extra = {d: w for d, w in spec.h.items() if d not in self.domains and w > self.h_tol}
        if extra:
            raise LookupError(f"run {spec.run_id}: domains {sorted(extra)} are not in {self.table_path} "
                              f"(its domains: {self.domains})")
        return np.array([float(spec.h.get(d, 0.0)) for d in self.domains])

    def _describe(self, i: int, h_dist: float) -> str:
        rid = f" run_id={self._run_ids[i]!r}" if self._run_ids is not None else ""
        return f"row {i}{rid} N={self._N[i]:.6g} D={self._D[i]:.6g} h distance {h_dist:.3g}"

    def __call__(self, spec: RunSpec) -> RunResult:
        h = self._h_of(spec)
        h_dist = np.abs(self._H - h).max(axis=1)
        same_N = np.abs(self._N - spec.N) <= self.rtol * abs(spec.N)
        same_D = np.abs(self._D - spec.D) <= self.rtol * abs(spec.D)
        matches = np.flatnonzero(same_N & same_D & (h_dist <= self.h_tol))
        if matches.size == 0:
            score = (np.abs(np.log(self._N / spec.N)) + np.abs(np.log(self._D / spec.D)) + h_dist)
            j = int(np.argmin(score))
            raise LookupError(f"run {spec.run_id} (N={spec.N:.6g}, D={spec.D:.6g}) is not in "
                              f"{self.table_path} within rtol={self.rtol} and h_tol={self.h_tol}; "
                              f"nearest recorded run: {self._describe(j, float(h_dist[j]))}")
        i = int(matches[int(spec.seed) % matches.size])
        losses = self._losses(i)
        if not losses:
            raise ValueError(f"row {i} of {self.table_path} has no measured loss for {self.targets}")
        checkpoints = []
        if self.with_checkpoints and self._run_ids is not None:
            same_run = np.flatnonzero((self._run_ids == self._run_ids[i]) & same_N
                                      & (np.abs(self._H - self._H[i]).max(axis=1) <= 1e-12)
                                      & (self._D < self._D[i]))
            checkpoints = [(int(self._D[k]), self._losses(int(k)))
                           for k in sorted(same_run, key=lambda k: self._D[k])]
            checkpoints = [(t, l) for t, l in checkpoints if l]
        meta = {"trainer": "replay", "table": self.table_path, "row": i,
                "replicates": int(matches.size), "h_distance": float(h_dist[i])}
        if self._run_ids is not None:
            meta["source_run_id"] = str(self._run_ids[i])
        return RunResult(run_id=spec.run_id, losses=losses, checkpoints=checkpoints, metadata=meta)

    def _losses(self, i: int) -> dict[str, float]:
        row = self.df.iloc[i]
        out = {}
        for t in self.targets:
            v = row[f"loss_{t}"]
            if pd.notna(v):
                out[t] = float(v)
        return out
