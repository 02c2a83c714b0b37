"""The runs table (DESIGN.md section 3): load, validate, and turn into model inputs.

One row per observation (a finished run or one checkpoint of it):
    N > 0, D > 0, h_<domain> >= 0 summing to 1 within 1e-6, loss_<target> > 0 (empty = not
    measured), optional run_id. Extra columns are ignored.
Every problem raises ``InputError`` with one line naming the column, row and value.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from planner.core.errors import InputError
from planner.core.io import read_table
from planner.core.types import run_identity
from planner.model.laws import SCALE_D, SCALE_N

SUM_TOL = 1e-6


@dataclass(frozen=True)
class Observations:
    """Model inputs for one target: rows whose loss for that target was measured.

    logn, logd: (m,) in the laws' units; H: (m, k); y: (m,) log-loss; group: (m,) int run index
    into 0..n_groups-1 (checkpoints of one run share a group)."""

    N: np.ndarray
    D: np.ndarray
    H: np.ndarray
    loss: np.ndarray
    group: np.ndarray
    n_groups: int

    @property
    def logn(self) -> np.ndarray:
        return np.log(self.N / SCALE_N)

    @property
    def logd(self) -> np.ndarray:
        return np.log(self.D / SCALE_D)

    @property
    def y(self) -> np.ndarray:
        return np.log(self.loss)

    def __len__(self) -> int:
        return len(self.loss)


@dataclass(frozen=True)
class RunsTable:
    frame: pd.DataFrame
    domains: list[str]
    targets: list[str]

    @property
    def N(self) -> np.ndarray:
        return self.frame["N"].to_numpy(float)

    @property
    def D(self) -> np.ndarray:
        return self.frame["D"].to_numpy(float)

    @property
    def H(self) -> np.ndarray:
        return self.frame[[f"h_{d}" for d in self.domains]].to_numpy(float)

    def loss(self, target: str) -> np.ndarray:
        return self.frame[f"loss_{target}"].to_numpy(float)

    def run_keys(self) -> np.ndarray:
        """Run identity per row (m,): its run_id when given, else ``run_identity(N, h)`` (the
        checkpoints of a run without an id share N and h)."""
        ids = (self.frame["run_id"].astype("string").str.strip() if "run_id" in self.frame
               else pd.Series(pd.NA, index=self.frame.index, dtype="string"))
        H = self.frame[[f"h_{d}" for d in self.domains]].to_numpy(float)
        return np.array([rid if isinstance(rid, str) and rid else run_identity(n, h)
                         for rid, n, h in zip(ids, self.frame["N"].to_numpy(float), H)], dtype=object)

    def top_levels(self, vals, want_runs: int, inner_rows_needed: int,
                   keep_levels: int = 1) -> np.ndarray:
        """Rows of the largest levels of ``vals`` (this table's N or D, per row), whole levels
        added from the top until at least ``want_runs`` runs are in, while at least
        ``keep_levels`` levels and more than ``inner_rows_needed`` rows stay below; an empty
        mask when not even the largest level can be taken."""
        vals = np.asarray(vals, float)
        keys = self.run_keys()
        levels = np.unique(vals)[::-1]
        mask = np.zeros(len(vals), bool)
        for i, lev in enumerate(levels):
            if len(levels) - i - 1 < keep_levels:
                break
            new = mask | np.isclose(vals, lev, rtol=1e-9, atol=0)
            if (~new).sum() <= inner_rows_needed:
                break
            mask = new
            if len(set(keys[mask])) >= want_runs:
                break
        return mask

    def observations(self, target: str) -> Observations:
        if target not in self.targets:
            raise InputError(f"unknown target {target!r}; the table has {', '.join(self.targets)}")
        loss = self.loss(target)
        keep = np.isfinite(loss)
        keys = self.run_keys()[keep]
        _, group = np.unique(keys, return_inverse=True)
        return Observations(self.N[keep], self.D[keep], self.H[keep], loss[keep],
                            group.astype(np.int32), int(group.max()) + 1 if keep.any() else 0)

    def select(self, mask) -> "RunsTable":
        return RunsTable(self.frame.loc[np.asarray(mask)].reset_index(drop=True),
                         self.domains, self.targets)


def load_runs(path, domains: list[str] | None = None,
              targets: list[str] | None = None) -> RunsTable:
    """Read a CSV or Parquet runs table and validate it (see module docstring)."""
    df = read_table(path, "runs table")
    return runs_from_frame(df, domains=domains, targets=targets, source=str(path))


def _numeric(df: pd.DataFrame, col: str, source: str) -> pd.Series:
    raw = df[col]
    num = pd.to_numeric(raw, errors="coerce")
    text = raw.astype(str).str.strip()
    bad = num.isna() & raw.notna() & (text != "")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        if text.iloc[i].lower() in ("nan", "-nan", "na", "n/a", "null", "none"):
            raise InputError(f"{source}: explicit {text.iloc[i]} in column {col!r} (row {i + 1}); "
                             "leave the cell empty when it was not measured")
        raise InputError(f"{source}: non-numeric value {raw.iloc[i]!r} in column {col!r} (row {i + 1})")
    return num.astype(float)


def runs_from_frame(df: pd.DataFrame, domains: list[str] | None = None,
                    targets: list[str] | None = None, source: str = "runs table") -> RunsTable:
    """Validate a DataFrame in the runs-table schema and return a ``RunsTable``.

    domains/targets: if given, the table must have exactly these h_ columns (in this order; others
    are an error) and at least these loss_ columns (others are ignored)."""
    if not isinstance(df, pd.DataFrame) or len(df) == 0:
        raise InputError(f"{source}: the runs table is empty")
    df = df.copy()
    df.columns = [str(c).strip() for c in df.columns]
    for col in ("N", "D"):
        if col not in df:
            raise InputError(f"{source}: missing column {col!r}")
    h_cols = [c for c in df.columns if c.startswith("h_")]
    loss_cols = [c for c in df.columns if c.startswith("loss_")]
    found_domains = [c[2:] for c in h_cols]
    found_targets = [c[5:] for c in loss_cols]
    if not h_cols:
        raise InputError(f"{source}: no mixture columns (h_<domain>)")
    if domains is not None:
        missing = [d for d in domains if d not in found_domains]
        extra = [d for d in found_domains if d not in domains]
        if missing:
            raise InputError(f"{source}: missing weight column h_{missing[0]}")
        if extra:
            raise InputError(f"{source}: unexpected domain column h_{extra[0]} (domains: {', '.join(domains)})")
        found_domains = list(domains)
    if targets is not None:
        for t in targets:
            if t not in found_targets:
                raise InputError(f"unknown target {t!r}; {source} has "
                                 f"{', '.join(found_targets) or 'no loss_ columns'}")
        found_targets = list(targets)
    if not found_targets:
        raise InputError(f"{source}: no loss columns (loss_<target>)")
    for col in ["N", "D"] + [f"h_{d}" for d in found_domains] + [f"loss_{t}" for t in found_targets]:
        df[col] = _numeric(df, col, source)
    for col in ("N", "D"):
        v = df[col].to_numpy()
        bad = ~np.isfinite(v) | (v <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"{source}: {col} must be a positive number, got {float(v[i])!r} (row {i + 1})")
    H = df[[f"h_{d}" for d in found_domains]].to_numpy(float)
    if (~np.isfinite(H)).any() or (H < 0).any():
        i, j = np.argwhere(~np.isfinite(H) | (H < 0))[0]
        raise InputError(f"{source}: weight h_{found_domains[j]} must be >= 0, got {float(H[i, j])!r} (row {i + 1})")
    sums = H.sum(axis=1)
    bad = np.abs(sums - 1.0) > SUM_TOL
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{source}: weights in row {i + 1} sum to {sums[i]:.9g}, not 1 (tolerance {SUM_TOL:g})")
    L = df[[f"loss_{t}" for t in found_targets]].to_numpy(float)
    bad = np.isinf(L) | (L <= 0)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise InputError(f"{source}: loss_{found_targets[j]} must be a positive finite number, "
                         f"got {float(L[i, j])!r} (row {i + 1})")
    empty = np.isnan(L).all(axis=1)
    if empty.any():
        i = int(np.flatnonzero(empty)[0])
        raise InputError(f"{source}: row {i + 1} has no measured loss")
    return RunsTable(df.reset_index(drop=True), found_domains, found_targets)


def design_from_frame(df: pd.DataFrame, domains: list[str], source: str = "design") -> tuple:
    """Validate a design table (N, D, h_<domain>; no losses needed) -> (N, D, H) arrays."""
    tmp = df.copy()
    tmp["loss___design"] = 1.0
    t = runs_from_frame(tmp, domains=domains, targets=["__design"], source=source)
    return t.N, t.D, t.H
