"""Saving and loading a posterior; a damaged one is refused with one line, not a traceback."""
from __future__ import annotations

import json

import numpy as np
import pytest

from planner.cli import main as planner_main
from planner.core.errors import InputError
from planner.model.posterior import Posterior
from planner.model.runs import runs_from_frame
from tests.support.fakefit import fake_fit
from tests.support.sim import DOMAINS3, TRUE_ADDITIVE, grid_design, simulate


@pytest.fixture()
def saved(tmp_path):
    N, D, H = grid_design(6, [1e7, 3e7], [1e9], seed=0)
    post = fake_fit(runs_from_frame(simulate("additive", TRUE_ADDITIVE, N, D, H, 0.01, 0)))
    d = tmp_path / "post"
    post.save(d)
    return post, d


def test_round_trip_keeps_draws_and_diagnostics(saved):
    post, d = saved
    back = Posterior.load(d)
    assert back.law == post.law and back.domains == list(DOMAINS3)
    for k, v in post["web"].draws.items():
        np.testing.assert_allclose(back["web"].draws[k], v)
    assert back["web"].diagnostics["r_hat_max"] == pytest.approx(post["web"].diagnostics["r_hat_max"])


def test_truncated_netcdf_is_one_clear_error(saved, capsys):
    _, d = saved
    f = d / "posterior_0.nc"
    f.write_bytes(f.read_bytes()[:200])  # a copy cut short
    with pytest.raises(InputError, match=r"corrupt posterior file .*posterior_0\.nc"):
        Posterior.load(d)
    rc = planner_main(["optimum", str(d), "--N", "1e9", "--D", "1e10", "--out", str(d / "o.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: corrupt posterior file")


def test_damaged_metadata_is_one_clear_error(saved):
    _, d = saved
    meta = json.loads((d / "meta.json").read_text())
    del meta["per_target"]
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="corrupt posterior metadata .*missing"):
        Posterior.load(d)
    (d / "meta.json").write_text("{not json")
    with pytest.raises(InputError, match="corrupt posterior metadata"):
        Posterior.load(d)
