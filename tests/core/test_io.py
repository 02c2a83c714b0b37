"""Atomic writes and table reading (planner.core.io)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from planner.core.errors import InputError
from planner.core.io import (
    atomic_target,
    finite_json,
    json_default,
    plain_json,
    read_table,
    write_json_atomic,
    write_text_atomic,
)


def test_json_with_numpy_values_round_trips(tmp_path):
    p = tmp_path / "sub" / "x.json"  # the parent is created
    write_json_atomic(p, {"a": np.float64(0.25), "v": np.arange(3), "i": np.int64(7)})
    assert json.loads(p.read_text()) == {"a": 0.25, "v": [0, 1, 2], "i": 7}
    assert plain_json({"m": np.eye(2)}) == {"m": [[1.0, 0.0], [0.0, 1.0]]}
    with pytest.raises(TypeError):
        json_default(object())


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "rec.json"
    write_json_atomic(p, {"ok": 1})
    before = p.read_bytes()
    with pytest.raises(ValueError):  # NaN is not JSON: refused before anything is replaced
        write_json_atomic(p, {"bad": float("nan")})
    with pytest.raises(RuntimeError):
        with atomic_target(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["rec.json"]
    write_text_atomic(p, "new")
    assert p.read_text() == "new"


def test_read_table_csv_parquet_and_bad_files(tmp_path):
    df = pd.DataFrame({"N": [1e6, 2e6], "D": [1e8, 1e8]})
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_parquet(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(read_table(tmp_path / "t.csv"), df)
    pd.testing.assert_frame_equal(read_table(tmp_path / "t.parquet"), df)
    with pytest.raises(InputError, match="runs table not found"):
        read_table(tmp_path / "missing.csv", "runs table")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="cannot read design table"):
        read_table(tmp_path / "bad.parquet", "design table")


def test_only_an_empty_value_means_not_measured(tmp_path):
    # CSV: an empty cell is missing; a written NaN stays text for the runs-table parser to refuse
    (tmp_path / "t.csv").write_text("N,D,h_a,h_b,loss_x,loss_y\n1e6,1e8,0.5,0.5,3.1,\n"
                                    "1e6,2e8,0.5,0.5,NaN,2.9\n")
    df = read_table(tmp_path / "t.csv")
    assert np.isnan(df.loc[0, "loss_y"]) and df.loc[1, "loss_x"] == "NaN"
    # Parquet: null is missing, NaN in a schema column is refused with the file, column and row
    pd.DataFrame({"N": [1e6, 1e6], "D": [1e8, 2e8], "loss_x": [3.1, None]}).to_parquet(
        tmp_path / "ok.parquet")
    assert read_table(tmp_path / "ok.parquet")["loss_x"].isna().tolist() == [False, True]
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"N": [1e6, 1e6], "loss_x": pa.array([3.1, float("nan")]),
                             "note": pa.array([float("nan"), 1.0])}), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=r"explicit NaN in column 'loss_x' \(row 2\)"):
        read_table(tmp_path / "bad.parquet", "runs table")


def test_finite_json_turns_nan_into_null():
    out = finite_json({"a": float("nan"), "b": [1.0, float("inf")], "c": np.float64(2.5)})
    assert out == {"a": None, "b": [1.0, None], "c": 2.5}
    json.dumps(out, allow_nan=False)  # strict JSON
