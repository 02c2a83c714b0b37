"""Runs table validation: every bad input gets one InputError naming the problem."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from planner.core.errors import InputError
from planner.model.regmix import load_regmix
from planner.model.runs import load_runs, runs_from_frame

# the RegMix files live beside the checkout (../shared/data/regmix), not in it
REGMIX = Path(__file__).resolve().parents[3] / "shared" / "data" / "regmix"


def good():
    return pd.DataFrame({"N": [1e7, 2e7, 4e7], "D": [1e9, 1e9, 2e9],
                         "h_a": [0.5, 0.2, 1.0], "h_b": [0.5, 0.8, 0.0],
                         "loss_a": [3.1, np.nan, 2.9], "loss_b": [3.3, 3.2, 3.0],
                         "run_id": ["x", "y", "z"], "note": ["ignored", "", ""]})


def test_valid_table_and_partial_losses():
    t = runs_from_frame(good())
    assert t.domains == ["a", "b"] and t.targets == ["a", "b"]
    # an empty loss for one target still counts for the others
    assert len(t.observations("a")) == 2 and len(t.observations("b")) == 3
    np.testing.assert_allclose(t.observations("b").y, np.log([3.3, 3.2, 3.0]))


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.assign(h_a=[0.6, 0.2, 1.0]), "sum to 1.1"),
    (lambda d: d.assign(N=[-1e7, 2e7, 4e7]), r"N must be a positive number, got -10000000.0 \(row 1\)"),
    (lambda d: d.assign(D=[1e9, 0, 2e9]), "D must be a positive"),
    (lambda d: d.assign(loss_b=[3.3, "abc", 3.0]), "non-numeric value 'abc'"),
    (lambda d: d.assign(loss_b=[3.3, -1.0, 3.0]), "loss_b must be a positive"),
    (lambda d: d.assign(loss_b=[3.3, np.inf, 3.0]), "loss_b must be a positive"),
    (lambda d: d.assign(h_b=[0.5, 0.8, np.nan]), "h_b must be >= 0"),
    (lambda d: d.drop(columns=["D"]), "missing column 'D'"),
    (lambda d: d.drop(columns=["loss_a", "loss_b"]), "no loss columns"),
    (lambda d: d.assign(loss_a=[np.nan] * 3, loss_b=[3.3, np.nan, 3.0]), "row 2 has no measured loss"),
])
def test_bad_tables(mutate, match):
    with pytest.raises(InputError, match=match):
        runs_from_frame(mutate(good()))


def test_unknown_target_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="unknown target 'c'"):
        runs_from_frame(good(), targets=["c"])
    with pytest.raises(InputError, match="not found"):
        load_runs(tmp_path / "nope.csv")
    p = tmp_path / "bad.parquet"
    p.write_bytes(b"not parquet")
    with pytest.raises(InputError, match="cannot read"):
        load_runs(p)


def test_grouping_without_run_ids():
    d = good().drop(columns="run_id")
    d.loc[1, ["N", "h_a", "h_b"]] = [1e7, 0.5, 0.5]  # same N and h as row 0: one run, 2 checkpoints
    obs = runs_from_frame(d).observations("b")
    assert obs.n_groups == 2 and obs.group[0] == obs.group[1]


@pytest.mark.skipif(not REGMIX.exists(), reason="RegMix data not beside this checkout")
def test_regmix_conversion_is_a_valid_runs_table():
    df = load_regmix(REGMIX)
    t = runs_from_frame(df)
    counts = df["scale"].value_counts().to_dict()
    assert counts == {"1m": 768, "60m": 256, "1B": 64}
    assert len(t.domains) == 17 and len(t.targets) == 13 and "pile_cc" in t.targets


def test_written_nan_is_an_error_an_empty_cell_is_not_measured(tmp_path):
    p = tmp_path / "runs.csv"
    p.write_text("N,D,h_a,h_b,loss_x,loss_y\n1e6,1e8,0.5,0.5,3.1,\n1e6,2e8,0.5,0.5,2.9,2.8\n"
                 "2e6,1e8,0.2,0.8,3.0,2.7\n")
    t = load_runs(p)
    assert np.isnan(t.loss("y")[0]) and t.loss("x").tolist() == [3.1, 2.9, 3.0]
    p.write_text("N,D,h_a,h_b,loss_x,loss_y\n1e6,1e8,0.5,0.5,3.1,nan\n")
    with pytest.raises(InputError, match=r"explicit nan in column 'loss_y' \(row 1\); leave the cell"):
        load_runs(p)
