"""law auto from the outside: the config key and its default, ``planner fit/optimum/check --law``
(auto is the default), and the weights in ``planner status`` (table and JSON),
recommendation.json and the report."""
import json

import numpy as np
import pandas as pd
import pytest

from planner.calibrate.checks import holdout_check
from planner.cli import main
from planner.cli.main import build_parser
from planner.config.parse import config_from_dict
from planner.core.errors import InputError
from planner.model.posterior import Posterior
from planner.model.runs import runs_from_frame
from tests.support.sim import TRUE_ADDITIVE, grid_design, simulate


def _cfg(**over):
    d = {"domains": ["a", "b", "c"], "targets": {"a": 1.0},
         "target_budget": {"N": 1e9, "D": 2e10},
         "space": {"N": [1e6, 5e7], "D": [1e8, 1e9]}, "budget": {"max_runs": 10},
         "trainer": {"path": "trainers.synthetic:SyntheticTrainer", "args": {}}}
    d.update(over)
    return d


def test_config_law_auto_is_the_default_and_accepted():
    assert config_from_dict(_cfg()).law == "auto"
    for law in ("auto", "additive", "joint"):
        assert config_from_dict(_cfg(law=law)).law == law
    # auto fits as soon as the smallest family (additive, 5 + 2k) can be fitted
    assert config_from_dict(_cfg()).min_runs_to_fit() == 5 + 2 * 3 + 1
    assert config_from_dict(_cfg(law="joint")).min_runs_to_fit() == 5 + 4 * 3 + 1
    with pytest.raises(InputError, match="law must be one of .*auto"):
        config_from_dict(_cfg(law="best"))


def test_cli_law_defaults_to_auto():
    p = build_parser()
    assert p.parse_args(["fit", "r.csv", "--out", "o"]).law == "auto"
    assert p.parse_args(["check", "r.csv"]).law == "auto"
    assert p.parse_args(["fit", "r.csv", "--law", "joint", "--out", "o"]).law == "joint"


@pytest.fixture(scope="module")
def runs_csv(tmp_path_factory):
    d = tmp_path_factory.mktemp("auto_cli")
    N, D, H = grid_design(6, [1e7, 3e7, 1e8, 3e8], [1e9, 3e9], seed=2)
    simulate("additive", TRUE_ADDITIVE, N, D, H, 0.005, seed=3).to_csv(d / "runs.csv", index=False)
    return d


@pytest.mark.slow
def test_cli_fit_and_optimum_with_law_auto(runs_csv, capsys):
    """MAP fits (fast): 48 rows, the largest N level (12 runs) held out; the weights are
    printed, saved in meta.json and added to the optimum JSON."""
    post_dir = runs_csv / "post"
    assert main(["fit", str(runs_csv / "runs.csv"), "--method", "map", "--no-discrepancy",
                 "--out", str(post_dir)]) == 0
    out = capsys.readouterr().out
    assert "law weights additive" in out and "joint" in out
    meta = json.loads((post_dir / "meta.json").read_text())
    assert meta["law"] == "joint" and meta["meta"]["law"] == "auto"
    w = meta["meta"]["law_weights"]["web"]
    assert set(w) == {"additive", "joint"} and abs(sum(w.values()) - 1) < 1e-12
    assert meta["meta"]["stacking"]["web"]["kind"] == "stacking"
    assert meta["meta"]["stacking"]["web"]["n_heldout_runs"] == 12
    # combined diagnostics keep what the contract asks for, per family too
    diag = meta["per_target"]["web"]["diagnostics"]
    assert set(diag["families"]) == {"additive", "joint"} and diag["law_weights"] == w
    assert main(["optimum", str(post_dir), "--N", "1e9", "--D", "2e10",
                 "--out", str(runs_csv / "opt.json")]) == 0
    opt = json.loads((runs_csv / "opt.json").read_text())
    assert opt["law_weights"] == {"web": w} and opt["law"] == "auto"
    assert {"mean", "lo", "hi", "loss", "expected_excess_loss", "recommended"} <= set(opt)
    assert "law_weights" in capsys.readouterr().out


def test_unknown_law_names_auto_among_the_choices(runs_csv, capsys):
    assert main(["fit", str(runs_csv / "runs.csv"), "--law", "cubic", "--out", "x"]) == 2
    assert "choose one of additive, joint, chinchilla, auto" in capsys.readouterr().err


@pytest.mark.slow
def test_holdout_check_and_discrepancy_with_law_auto(runs_csv):
    """``planner check --law auto`` refits the combination (not the joint law alone) below the
    largest scale, and its discrepancy calibration refits the combination once more below
    that: both carry weights, each from its own held-out rows."""
    table = runs_from_frame(pd.read_csv(runs_csv / "runs.csv"))
    res = holdout_check(table, law="auto", method="map", map_starts=4)
    assert res["law"] == "auto" and set(res["law_weights"]["web"]) == {"additive", "joint"}
    t = res["targets"]["web"]
    assert t["n_heldout"] == 12 and np.isfinite(t["with_discrepancy"]["mean_relative_error"])
    # the calibration's inner fit was a combination too: its evidence names its own split
    from planner.calibrate.heldout import calibrate
    from planner.infer.auto import fit_auto

    post = fit_auto(table, method="map", map_starts=4)
    cal = calibrate(post, table, method="map", map_starts=4)
    assert cal.meta["law"] == "auto" and cal["web"].discrepancy["kind"] != "prior-default"
    assert cal.meta["law_weights"] == post.meta["law_weights"]


@pytest.fixture(scope="module")
def auto_campaign(tmp_path_factory):
    """A small campaign with the default law (auto) and the fake fit (a real Posterior around
    the synthetic truth: the machinery, not the numerics, is under test)."""
    from planner.campaign.campaign import run_campaign
    from tests.support.fakefit import fake_fit, patch_fit

    out = tmp_path_factory.mktemp("auto_camp") / "camp"
    cfg = _cfg(domains=["a", "b", "c"], targets={"a": 1.0}, budget={"max_runs": 14},
               batch_size=4, executor={"kind": "inprocess"},
               acquisition={"name": "decision", "candidates": 100, "fantasies": 4, "draws": 32},
               trainer={"path": "trainers.synthetic:SyntheticTrainer",
                        "args": {"domains": ["a", "b", "c"], "checkpoints": [0.5]}},
               fit={"method": "nuts", "background": False})
    with pytest.MonkeyPatch.context() as mp:
        patch_fit(mp, fake_fit)
        res = run_campaign(cfg, out)
    assert res.stop_reason == "budget"
    return out


def test_status_json_and_recommendation_show_the_weights(auto_campaign, capsys):
    rec = json.loads((auto_campaign / "recommendation.json").read_text())
    w = rec["law_weights"]["a"]
    assert set(w) == {"additive", "joint"} and abs(sum(w.values()) - 1) < 1e-9
    assert w["joint"] > 0  # 14 runs x 2 observations: the joint law (17 parameters) was fitted
    assert main(["status", str(auto_campaign), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["law"] == "auto" and st["law_weights"] == rec["law_weights"]
    assert main(["status", str(auto_campaign)]) == 0
    table = capsys.readouterr().out
    assert "law weights (held-out)" in table and "additive" in table
    post = Posterior.load(max((auto_campaign / "posteriors").iterdir()))
    assert post.meta["law_weights"] == rec["law_weights"]


def test_report_shows_the_weights(auto_campaign):
    from planner.report.build import build_report

    rep = build_report(auto_campaign, holdout=False)
    page = rep.path.read_text()
    assert "law weights" in page and "stacking on the held-out largest scale" in page
    assert "law auto: the draws are a mixture" in page
