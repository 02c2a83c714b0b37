"""ReplayTrainer: exact matches, replicates, checkpoints from the same run, and misses."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trainers.base import RunSpec, TrainerLoadError, load_trainer
from trainers.replay import ReplayTrainer

ROWS = [
    # run_id, N, D, h_a, h_b, loss_a, loss_b
    ("r1", 1e6, 1e7, 0.5, 0.5, 3.10, 3.20),
    ("r1", 1e6, 2e7, 0.5, 0.5, 3.00, 3.10),   # same run, later checkpoint
    ("r1", 1e6, 4e7, 0.5, 0.5, 2.90, 3.00),
    ("r2", 1e6, 4e7, 0.5, 0.5, 2.95, np.nan),  # a replicate (another seed), b not measured
    ("r3", 2e6, 4e7, 0.2, 0.8, 2.70, 2.60),
]


@pytest.fixture(params=["csv", "parquet"])
def table(tmp_path, request):
    df = pd.DataFrame(ROWS, columns=["run_id", "N", "D", "h_a", "h_b", "loss_a", "loss_b"])
    df["note"] = "ignored"
    path = tmp_path / f"runs.{request.param}"
    df.to_csv(path, index=False) if request.param == "csv" else df.to_parquet(path)
    return path


def spec(N, D, h, seed=0):
    return RunSpec(run_id="q", N=int(N), D=int(D), h=h, seed=seed)


def test_exact_match_with_checkpoints_of_the_same_run(table):
    t = ReplayTrainer(table=str(table))
    r = t(spec(1e6, 4e7, {"a": 0.5, "b": 0.5}, seed=0))
    assert r.losses == {"a": 2.90, "b": 3.00}
    assert r.checkpoints == [(10_000_000, {"a": 3.10, "b": 3.20}), (20_000_000, {"a": 3.00, "b": 3.10})]
    assert r.metadata["source_run_id"] == "r1" and r.metadata["replicates"] == 2


def test_seed_picks_replicate_and_unmeasured_loss_is_left_out(table):
    r = ReplayTrainer(table=str(table))(spec(1e6, 4e7, {"a": 0.5, "b": 0.5}, seed=1))
    assert r.metadata["source_run_id"] == "r2"
    assert r.losses == {"a": 2.95} and r.checkpoints == []


def test_h_within_tolerance_matches_and_missing_domain_counts_as_zero(table):
    t = ReplayTrainer(table=str(table), h_tol=1e-3)
    r = t(spec(2e6, 4e7, {"a": 0.2009, "b": 0.7991}))
    assert r.losses == {"a": 2.70, "b": 2.60}
    with pytest.raises(LookupError):
        t(spec(2e6, 4e7, {"a": 0.2011, "b": 0.7989}))   # 1.1e-3 away: outside h_tol
    # N within relative 1e-6 matches (2e6 * (1 + 5e-7)); a spec dict missing 'a' means a = 0
    assert t(spec(2e6 + 1, 4e7, {"a": 0.2, "b": 0.8})).losses["b"] == 2.60
    with pytest.raises(LookupError, match="row 4 run_id='r3'"):
        t(spec(2e6, 4e7, {"b": 1.0}))


def test_miss_names_nearest_run(table):
    t = ReplayTrainer(table=str(table))
    with pytest.raises(LookupError) as err:
        t(spec(2e6, 3e7, {"a": 0.2, "b": 0.8}))
    msg = str(err.value)
    assert "nearest recorded run: row 4 run_id='r3' N=2e+06 D=4e+07 h distance 0" in msg


def test_targets_subset_unknown_domain_and_load_by_path(table):
    t = load_trainer("trainers.replay:ReplayTrainer", {"table": str(table), "targets": ["b"]})
    assert t(spec(2e6, 4e7, {"a": 0.2, "b": 0.8})).losses == {"b": 2.60}
    with pytest.raises(LookupError, match=r"domains \['c'\] are not in"):
        t(spec(2e6, 4e7, {"a": 0.1, "b": 0.8, "c": 0.1}))
    with pytest.raises(TrainerLoadError, match="not in the table"):
        load_trainer("trainers.replay:ReplayTrainer", {"table": str(table), "targets": ["zz"]})
