"""File I/O shared by every module.

Atomic writes: the content goes to a temporary file beside the target, is flushed and fsynced,
and is renamed over the target, so a reader (or a planner killed mid-write) sees the old file or
the new one, never half of one. Tables: the runs-table formats (CSV or Parquet) read with one
clear error line for a missing or unreadable file."""
from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from planner.core.errors import InputError


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and arrays; TypeError for anything else."""
    if hasattr(o, "item") and getattr(o, "ndim", 0) == 0:
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def finite_json(obj: Any) -> Any:
    """``plain_json(obj)`` with NaN and infinities as null: strict JSON for printing."""
    def fix(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v
    return fix(plain_json(obj))


def plain_json(obj: Any) -> Any:
    """``obj`` with numpy values turned into plain JSON types (a JSON round trip)."""
    return json.loads(json.dumps(obj, default=json_default))


@contextlib.contextmanager
def atomic_target(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_target(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj: Any, indent: int = 2) -> None:
    """Strict JSON (NaN is an error, numpy values converted), written atomically."""
    write_text_atomic(path, json.dumps(obj, indent=indent, allow_nan=False,
                                       default=json_default) + "\n")


def read_table(path: str | Path, what: str = "file") -> pd.DataFrame:
    """A CSV or Parquet table (by suffix); InputError naming the file when missing or unreadable.

    Missing values: only an empty CSV cell or a Parquet null is missing (a loss not measured).
    A written ``NaN`` is kept as the text "NaN" in a CSV (the runs-table parser refuses it) and
    refused here in a Parquet column of the runs-table schema (N, D, h_*, loss_*)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found: {p}")
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            return _read_parquet(p, what)
        return pd.read_csv(p, keep_default_na=False, na_values=[""])
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any parser error is bad input
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"cannot read {what} {p}: {first}") from None



def _read_parquet(p: Path, what: str) -> pd.DataFrame:
    table = pq.read_table(p)
    for name in table.column_names:
        col = table.column(name)
        schema_col = name in ("N", "D") or name.startswith(("h_", "loss_"))
        if schema_col and pa.types.is_floating(col.type):
            nan = pc.fill_null(pc.is_nan(col), False).to_numpy(zero_copy_only=False)
            if nan.any():
                row = int(nan.nonzero()[0][0]) + 1
                raise InputError(f"{what} {p}: explicit NaN in column {name!r} (row {row}); "
                                 "leave the value empty (null) when it was not measured")
    return table.to_pandas()
