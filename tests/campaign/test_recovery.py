"""Campaigns that recover and inputs that are refused (issue 13): a campaign stopped for
failures continues when the same command is rerun after the cause is fixed; a trainer whose
constructor rejects its args, or a bad prior_runs table, fails before anything is recorded."""
from __future__ import annotations

import hashlib

import pandas as pd
import pytest
import yaml

from planner.campaign.campaign import campaign_status, run_campaign
from planner.campaign.ledger import Ledger
from planner.cli import main as planner_main
from planner.core.errors import InputError, LedgerError
from tests.campaign.test_campaign import DOMS, TRAINER
from tests.support.fakefit import stub_fitter
from tests.support.trainers import TinySynthetic


def config(tmp_path, trainer_args=None, **over):
    c = {"domains": DOMS, "targets": {"a": 1.0}, "target_budget": {"N": 1e9, "D": 2e10},
         "space": {"N": [1e6, 5e7], "D": [1e8, 1e9]}, "budget": {"max_runs": 5},
         "batch_size": 1, "acquisition": "random",
         "trainer": {"path": TRAINER, "args": {"domains": DOMS, **(trainer_args or {})}},
         "executor": {"kind": "inprocess", "max_retries": 0},
         "fit": {"method": "map", "min_runs": 100, "background": False},
         "max_failure_fraction": 0.5}
    c.update(over)
    return c


def write(tmp_path, c, name="c.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(c))
    return p


def tree(d):
    """Every file under d with its content hash (what 'nothing changed' compares)."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file() and p.name != ".planner.lock"}


def test_a_campaign_stopped_for_failures_continues_once_the_cause_is_fixed(tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.write_text("the trainer cannot run while this file exists")
    out = tmp_path / "camp"
    p = write(tmp_path, config(tmp_path, {"fail_while": str(broken)}))
    assert planner_main(["run", str(p), "--out", str(out)]) == 1
    assert "campaign stopped: 3 of 3 runs failed" in capsys.readouterr().err
    # rerun with the cause still there: only new failures count, so it stops again after
    # three more, instead of replaying the old stop at once
    assert planner_main(["run", str(p), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "3 of 3 runs failed since the campaign resumed after its last stop for failures" in err
    assert campaign_status(out)["counts"]["failed"] == 6
    broken.unlink()  # the cause is fixed: the same command continues to the budget
    res = run_campaign(p, out, fitter=stub_fitter)
    assert res.stop_reason == "budget" and res.completed == 5
    st = campaign_status(out)
    # the failed attempts stay recorded; failed runs were not charged to the budget
    assert st["counts"] == {"proposed": 0, "running": 0, "completed": 5, "failed": 6}
    assert st["failed_attempts"] == 6 and st["stopped"]["reason"] == "budget"
    assert "exists" in st["failures"][-1]["error"]


def test_max_failure_fraction_may_change_on_resume(tmp_path):
    broken = tmp_path / "broken"
    broken.write_text("")
    out = tmp_path / "camp"
    c = config(tmp_path, {"fail_while": str(broken)}, budget={"max_runs": 4})
    res = run_campaign(c, out)
    assert res.stop_reason == "failures"
    broken.unlink()
    # a changed policy is accepted and recorded; a changed science key is still refused
    res = run_campaign({**c, "max_failure_fraction": 0.9}, out, fitter=stub_fitter)
    assert res.stop_reason == "budget" and res.completed == 4 and res.failed == 3
    with Ledger.open(out, readonly=True) as lg:
        changed = lg.events("config_changed")
        assert lg.config()[0]["max_failure_fraction"] == 0.9
    assert changed and changed[-1]["data"]["keys"] == ["max_failure_fraction"]
    with pytest.raises(LedgerError, match="differs in seed"):
        run_campaign({**c, "max_failure_fraction": 0.9, "seed": 4}, out)


def test_a_trainer_that_rejects_its_args_fails_before_anything_is_recorded(tmp_path, capsys,
                                                                           monkeypatch):
    out = tmp_path / "camp"
    p = write(tmp_path, config(tmp_path, {"noise": -1.0}, executor={"kind": "ray"}))
    assert planner_main(["run", str(p), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: trainer ") and "noise must be >= 0" in err[0]
    assert not out.exists()
    # an existing campaign whose trainer cannot be built any more: nothing changes
    c = config(tmp_path, budget={"max_runs": 4})
    run_campaign(c, out, fitter=stub_fitter)
    before = tree(out)

    def refuse(self, *a, **k):
        raise RuntimeError("no licence server")

    monkeypatch.setattr(TinySynthetic, "__init__", refuse)
    with pytest.raises(InputError, match="cannot be built with trainer.args: RuntimeError: no "
                                         "licence server"):
        run_campaign(c, out)
    assert tree(out) == before


def prior_rows(h_b=0.5):
    tr = TinySynthetic(DOMS)
    rows = []
    for i, N in enumerate([2e6, 4e6, 8e6]):
        from trainers.base import RunSpec
        h = {"a": 0.5, "b": h_b, "c": 1.0 - 0.5 - h_b}
        r = tr(RunSpec(f"p{i}", int(N), int(3e8), h, i))
        rows.append({"N": N, "D": 3e8, **{f"h_{d}": v for d, v in h.items()},
                     "loss_a": r.losses["a"]})
    return rows


def test_a_bad_prior_runs_table_leaves_no_directory_and_the_corrected_one_works(tmp_path, capsys):
    prior = tmp_path / "prior.csv"
    bad = prior_rows()
    bad[1]["h_b"] = 0.9  # this row's weights sum to 1.4
    pd.DataFrame(bad).to_csv(prior, index=False)
    out = tmp_path / "camp"
    p = write(tmp_path, config(tmp_path, prior_runs=str(prior), budget={"max_runs": 2}))
    assert planner_main(["run", str(p), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: prior_runs table {prior}") \
        and "sum to" in err[0], err
    assert not out.exists()
    # a table without the campaign's target fails the same way
    pd.DataFrame(prior_rows()).rename(columns={"loss_a": "loss_z"}).to_csv(prior, index=False)
    assert planner_main(["run", str(p), "--out", str(out)]) == 2
    assert "no loss column" in capsys.readouterr().err and not out.exists()
    # the corrected table, same command: a new campaign that imports it
    pd.DataFrame(prior_rows()).to_csv(prior, index=False)
    res = run_campaign(p, out, fitter=stub_fitter)
    assert res.stop_reason == "budget"
    assert campaign_status(out)["sources"] == {"imported": 3, "planner": 2}


def test_telling_a_different_loss_for_a_recorded_run_is_refused(tmp_path, capsys):
    out = tmp_path / "camp"
    c = write(tmp_path, config(tmp_path, budget={"max_runs": 4}))
    rows = [{"run_id": "x1", **r} for r in prior_rows()[:1]]
    pd.DataFrame(rows).to_csv(tmp_path / "t1.csv", index=False)
    assert planner_main(["tell", str(out), str(tmp_path / "t1.csv"), "--config", str(c),
                         "--no-fit"]) == 0
    # the same loss again is idempotent
    assert planner_main(["tell", str(out), str(tmp_path / "t1.csv"), "--no-fit"]) == 0
    assert "1 already recorded" in capsys.readouterr().err
    before = tree(out)
    changed = [{**rows[0], "loss_a": rows[0]["loss_a"] + 0.25},
               {"run_id": "x2", **prior_rows()[1]}]  # a new run in the same table
    pd.DataFrame(changed).to_csv(tmp_path / "t2.csv", index=False)
    assert planner_main(["tell", str(out), str(tmp_path / "t2.csv"), "--no-fit"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'x1'" in err[0] and repr(rows[0]["loss_a"]) in err[0] \
        and repr(changed[0]["loss_a"]) in err[0], err
    assert tree(out) == before  # nothing recorded, not even the new run x2
    with Ledger.open(out, readonly=True) as lg:
        assert lg.run("x2") is None and lg.result("x1")["losses"]["a"] == rows[0]["loss_a"]
    # a bad table given with --config creates no campaign
    bad = tmp_path / "bad.csv"
    pd.DataFrame([{**rows[0], "h_b": 0.9}]).to_csv(bad, index=False)
    assert planner_main(["tell", str(tmp_path / "new"), str(bad), "--config", str(c)]) == 2
    assert not (tmp_path / "new").exists()


def test_a_damaged_snapshot_is_reported_and_the_previous_good_one_used(tmp_path, capsys):
    import json

    out = tmp_path / "camp"
    # a refit after each of runs 3-5 (5 observations per run: 15 > the law's 11 parameters)
    run_campaign(config(tmp_path, {"checkpoints": 4}, budget={"max_runs": 5},
                        fit={"method": "map", "min_runs": 2, "background": False}),
                 out, fitter=stub_fitter)
    with Ledger.open(out, readonly=True) as lg:
        snaps = lg.snapshots()
    assert len(snaps) >= 3
    last, prev = snaps[-1], snaps[-2]
    assert json.loads((out / "recommendation.json").read_text())["snapshot"] == last["id"]
    nc = sorted((out / "posteriors" / f"{last['id']:04d}").glob("*.nc"))[0]
    nc.write_bytes(nc.read_bytes()[:200])  # truncated
    assert planner_main(["status", str(out), "--json"]) == 0
    cap = capsys.readouterr()
    st = json.loads(cap.out)
    lines = [x for x in cap.err.splitlines() if x.startswith("warning: ")]
    assert len(lines) == 1 and f"snapshot {last['id']:04d} is damaged" in lines[0] \
        and f"using snapshot {prev['id']:04d}" in lines[0]
    assert lines[0][len("warning: "):] in st["warnings"]
    assert st["recommendation"]["snapshot"] == prev["id"]
    assert [d["id"] for d in st["damaged_snapshots"]] == [last["id"]]
    # the report shows the previous snapshot and says why
    assert planner_main(["report", str(out), "--no-holdout"]) == 0
    cap = capsys.readouterr()
    assert f"snapshot {last['id']:04d} is damaged" in cap.err
    page = (out / "report.html").read_text()
    assert f"snapshot {last['id']:04d} is damaged" in page
    # no snapshot loads: exit 2 with one line
    for s in snaps:
        for f in (out / "posteriors" / f"{s['id']:04d}").glob("meta.json"):
            f.write_text("{")
    for argv in (["status", str(out)], ["report", str(out), "--no-holdout"]):
        assert planner_main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: no usable posterior snapshot"), err


def test_too_few_runs_are_refused_and_a_failed_final_fit_is_not_success(tmp_path, capsys):
    out = tmp_path / "camp"
    p = write(tmp_path, config(tmp_path, budget={"max_runs": 3}))
    assert planner_main(["run", str(p), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: config: budget.max_runs (3) is too few") \
        and "11 parameters" in err[0]
    assert not out.exists()
    # with prior runs the floor does not apply (they count as runs of the first fit)
    from planner.config.parse import config_from_dict
    pd.DataFrame(prior_rows()).to_csv(tmp_path / "prior.csv", index=False)
    config_from_dict(config(tmp_path, budget={"max_runs": 1}, prior_runs=str(tmp_path / "prior.csv")))
    # 4 runs without checkpoints: 4 observations, fewer than the law's 11 parameters, so the
    # final (real) fit fails: exit 1 and a line that says so, no recommendation path
    p = write(tmp_path, config(tmp_path, budget={"max_runs": 4}))
    assert planner_main(["run", str(p), "--out", str(out)]) == 1
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert len(err) == 1 and err[0].startswith("error: the final fit failed (InputError: target "
                                               "'a' has 4 observations") \
        and "no recommendation was written" in err[0], err
    assert not (out / "recommendation.json").exists()
    stopped = campaign_status(out)["stopped"]
    assert stopped["reason"] == "budget" and "4 observations" in stopped["final_fit_error"]


def test_a_tell_whose_refit_fails_keeps_the_results_and_exits_1(tmp_path, capsys, monkeypatch):
    import planner.campaign.planner as planner_mod

    def boom(obs, cfg, seed, previous=None, final=False):
        raise RuntimeError("sampler exploded")

    monkeypatch.setattr(planner_mod, "default_fitter", boom)
    out = tmp_path / "camp"
    c = write(tmp_path, config(tmp_path, fit={"method": "map", "min_runs": 1}))
    rows = []
    for i, r in enumerate(prior_rows()):
        rows += [{"run_id": f"x{i}", **r, "D": D} for D in (1e8, 2e8, 3e8, 4e8)]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)  # 12 rows > 11 parameters
    assert planner_main(["tell", str(out), str(tmp_path / "t.csv"), "--config", str(c)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("told: 0 suggested run(s) completed, 3 new run(s) added")
    assert err[1] == ("error: the results are recorded but the refit failed (RuntimeError: "
                      "sampler exploded); recommendation.json is not up to date")
    assert campaign_status(out)["observations"] == 12
