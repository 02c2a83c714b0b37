"""Campaigns end to end on a real local Ray (the session's `ray_session`) with a synthetic
trainer: completion to budget, failures retried and recorded, failure stop, ask/tell, resume
bookkeeping, refusal of a changed config, the CLI handlers. Fits use MAP to stay fast."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from planner.campaign.campaign import (
    campaign_status,
    export_runs,
    load_campaign,
    run_campaign,
    suggest,
    tell,
)
from planner.campaign.ledger import Ledger
from planner.cli import main as planner_main
from planner.core.errors import InputError, LedgerError
from tests.support.fakefit import stub_fitter
from tests.support.trainers import TinySynthetic
from trainers.base import RunSpec

DOMS = ["a", "b", "c"]
TRAINER = "tests.support.trainers:TinySynthetic"
OPTIMUM_KEYS = {"mean", "lo", "hi", "loss", "expected_excess_loss"}


def cfg(tmp_path=None, trainer_args=None, **over):
    d = {"domains": DOMS, "targets": {"a": 1.0}, "target_budget": {"N": 1e9, "D": 2e10},
         "space": {"N": [1e6, 5e7], "D": [1e8, 1e9]}, "budget": {"max_runs": 6},
         "batch_size": 2, "acquisition": "random",
         "trainer": {"path": TRAINER, "args": {"domains": DOMS, "checkpoints": 2, **(trainer_args or {})}},
         "executor": {"kind": "ray", "max_retries": 2},
         # one fit at the end keeps these tests fast; test_loop_resume exercises refits
         "fit": {"method": "map", "min_runs": 100, "background": False}}
    for k, v in over.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    return d


@pytest.mark.slow
def test_campaign_completes_to_budget(ray_session, tmp_path):
    out = tmp_path / "camp"
    state = tmp_path / "state"
    res = run_campaign(cfg(trainer_args={"state_dir": str(state)}, budget={"max_runs": 6, "flops": 1e18}), out)
    assert res.stop_reason == "budget" and res.completed == 6 and res.failed == 0
    rec = json.loads((out / "recommendation.json").read_text())
    assert OPTIMUM_KEYS <= set(rec) and set(rec["mean"]) == set(DOMS)
    assert abs(sum(rec["mean"].values()) - 1) < 1e-6
    st = campaign_status(out)
    assert st["counts"]["completed"] == 6 and st["spent"]["runs_committed"] == 6
    assert st["spent"]["flops_committed"] <= 1e18 and st["running"] is None
    df = export_runs(out, tmp_path / "runs.csv")
    assert len(df) == 18 and df["run_id"].nunique() == 6 and df["final"].sum() == 6
    back = pd.read_csv(tmp_path / "runs.csv")
    assert {"run_id", "N", "D", "h_a", "h_b", "h_c", "loss_a"} <= set(back.columns)
    # each worker process built the trainer once, not once per run
    builds = (state / "builds.log").read_text().split()
    assert len(builds) == len(set(builds)) and len(builds) < 6
    c = load_campaign(out)
    assert c.posterior() is not None and c.recommendation() == rec
    # Ray workers run the trainer without importing the planner (or JAX)
    with Ledger.open(out, readonly=True) as lg:
        metas = [r["metadata"] for r in lg.results()]
    assert not any(m["planner_loaded"] or m["jax_loaded"] for m in metas)


def test_flops_budget_counts_in_flight(ray_session, tmp_path):
    out = tmp_path / "camp"
    budget = 6 * 5e7 * 1e9 * 2.5  # about 2.5 of the most expensive runs
    res = run_campaign(cfg(budget={"flops": budget, "max_runs": None}, batch_size=3), out,
                       fitter=stub_fitter)
    st = campaign_status(out)
    assert res.stop_reason == "budget"
    assert st["spent"]["flops_completed"] <= budget
    assert st["spent"]["flops_completed"] + 6 * 1e6 * 1e8 > budget  # nothing affordable left


@pytest.mark.slow
def test_failures_are_retried_and_recorded(ray_session, tmp_path):
    out = tmp_path / "camp"
    state = tmp_path / "state"
    inject = {"r00001": ["raise"], "r00002": ["nan", "inf"], "r00003": ["hang"],
              "r00004": ["raise", "raise", "raise"], "r00005": ["die"]}
    # timeout_s leaves room for a dead worker's replacement to start on a loaded 2-core machine
    c = cfg(trainer_args={"state_dir": str(state), "inject": inject, "hang_s": 300},
            executor={"timeout_s": 20.0, "max_retries": 2}, budget={"max_runs": 5},
            max_failure_fraction=0.5)
    res = run_campaign(c, out)
    assert res.stop_reason == "budget"
    with Ledger.open(out, readonly=True) as lg:
        runs = {r.run_id: r for r in lg.runs()}
        att = {rid: [(a["status"], a["reason"]) for a in lg.attempts(rid)] for rid in runs}
        obs = lg.observations(DOMS)
    assert att["r00001"] == [("failed", "exception"), ("completed", None)]
    assert att["r00002"] == [("failed", "non_finite"), ("failed", "non_finite"), ("completed", None)]
    assert att["r00003"] == [("failed", "timeout"), ("completed", None)]
    # three failures exhaust max_retries=2: the run fails and is replaced by a new one
    assert att["r00004"] == [("failed", "exception")] * 3 and runs["r00004"].status == "failed"
    assert "injected failure" in runs["r00004"].error
    # a worker process that dies is retried by Ray: the planner sees one successful attempt
    assert att["r00005"] == [("completed", None)]
    calls = [json.loads(x)["run_id"] for x in (state / "calls.jsonl").read_text().splitlines()]
    assert calls.count("r00005") == 2
    assert sum(r.status == "completed" for r in runs.values()) == 5
    assert "r00004" not in set(obs["run_id"])  # failed runs never enter the fit
    assert obs[["loss_a"]].notna().all().all()
    st = campaign_status(out)
    assert st["failed_attempts"] == 7 and st["counts"]["failed"] == 1


def test_too_many_failures_stop_the_campaign(ray_session, tmp_path, capsys):
    out = tmp_path / "camp"
    c = cfg(trainer_args={"fail_all": True}, executor={"max_retries": 0},
            max_failure_fraction=0.5, budget={"max_runs": 20})
    p = tmp_path / "c.yaml"
    import yaml
    p.write_text(yaml.safe_dump(c))
    rc = planner_main(["run", str(p), "--out", str(out)])
    assert rc == 1
    err = capsys.readouterr().err
    # the stop is checked once the third run has ended (MIN_ENDED_FOR_FAILURE_STOP); with
    # batch_size=2 the other run in flight may end in the same poll and is recorded, not lost,
    # so 3 or 4 ended runs are both correct
    m = re.search(r"campaign stopped: (\d+) of (\d+) runs failed", err)
    assert m and m.group(1) == m.group(2) and int(m.group(1)) in (3, 4), err
    assert "max_failure_fraction" in err
    assert campaign_status(out)["counts"]["completed"] == 0


def test_changed_config_refused_same_config_resumes(ray_session, tmp_path):
    out = tmp_path / "camp"
    c = cfg(budget={"max_runs": 4})
    run_campaign(c, out, fitter=stub_fitter)
    (out / "recommendation.json").unlink()
    with pytest.raises(LedgerError, match=r"different config \(differs in budget.max_runs\)"):
        run_campaign(cfg(budget={"max_runs": 5}), out)
    # same science, another executor: accepted; the spent budget ends it at once, and it
    # still leaves recommendation.json
    res = run_campaign({**c, "executor": {"kind": "inprocess"}}, out, fitter=stub_fitter)
    assert res.stop_reason == "budget" and res.completed == 4
    assert (out / "recommendation.json").exists()
    assert len(export_runs(out)) == 12


def test_suggest_and_tell(tmp_path):
    out = tmp_path / "camp"
    c = cfg(budget={"max_runs": 7}, executor={"kind": "inprocess"}, fit={"min_runs": 6})
    specs = suggest(out, 3, out=tmp_path / "runs.json", config=c)
    assert [s.run_id for s in specs] == ["r00001", "r00002", "r00003"]
    data = json.loads((tmp_path / "runs.json").read_text())
    assert [d["run_id"] for d in data] == ["r00001", "r00002", "r00003"]
    assert all(abs(sum(d["h"].values()) - 1) < 1e-9 and d["h_a"] == d["h"]["a"] for d in data)
    # the next suggestion avoids the pending ones and continues the sequence
    more = suggest(out, 2)
    assert [s.run_id for s in more] == ["r00004", "r00005"]
    tr = TinySynthetic(DOMS, checkpoints=2)
    rows = []
    for d in data + [s.to_dict() for s in more]:
        r = tr(RunSpec.from_dict(d))
        for D, losses in list(r.checkpoints) + [(d["D"], r.losses)]:
            rows.append({"run_id": d["run_id"], "N": d["N"], "D": D,
                         **{f"h_{k}": v for k, v in d["h"].items()}, "loss_a": losses["a"]})
    rows.append({"N": 3e6, "D": 2e8, "h_a": 0.5, "h_b": 0.5, "h_c": 0.0, "loss_a": 3.3})  # external
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    r1 = tell(out, tmp_path / "results.csv")
    assert r1["completed"] == 5 and r1["added"] == 1 and r1["duplicates"] == 0
    r2 = tell(out, tmp_path / "results.csv")  # idempotent
    assert r2["completed"] == 0 and r2["added"] == 0 and r2["duplicates"] == 6
    df = export_runs(out)
    assert df["run_id"].nunique() == 6 and len(df) == 16
    assert (out / "recommendation.json").exists()
    st = campaign_status(out)
    assert st["counts"] == {"proposed": 0, "running": 0, "completed": 6, "failed": 0}
    assert st["spent"]["runs_committed"] == 5  # the external run does not spend the budget
    # the budget has 2 runs left
    assert len(suggest(out, 5)) == 2
    with pytest.raises(InputError, match="budget spent"):
        suggest(out, 1)
    bad = pd.DataFrame([{"N": 3e6, "D": 2e8, "h_a": 0.5, "h_b": 0.6, "h_c": 0.0, "loss_a": 3.3}])
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match="sum to"):
        tell(out, tmp_path / "bad.csv")


def test_cli_handlers(tmp_path, capsys):
    out = tmp_path / "camp"
    import yaml
    p = tmp_path / "c.yaml"
    real = {"path": "trainers.synthetic:SyntheticTrainer",
            "args": {"domains": DOMS, "checkpoints": [0.3, 0.6]}}
    p.write_text(yaml.safe_dump(cfg(executor={"kind": "inprocess"}, budget={"max_runs": 4},
                                    trainer=real)))
    assert planner_main(["run", str(p), "--out", str(out)]) == 0
    assert planner_main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "completed 4" in text and "expected excess loss" in text
    assert planner_main(["runs", str(out), "--out", str(tmp_path / "r.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "r.csv")) == 12
    assert planner_main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["completed"] == 4
    # bad input: exit 2 with one line
    p.write_text("domains: [a, b]\nbogus: 1\n")
    assert planner_main(["run", str(p), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: config: unknown key 'bogus'")
    assert planner_main(["status", str(tmp_path / "nowhere")]) == 2
    p.write_text(yaml.safe_dump(cfg(trainer={"path": "tests.support.trainers:Nope"})))
    assert planner_main(["run", str(p), "--out", str(tmp_path / "y")]) == 2
    assert "has no attribute 'Nope'" in capsys.readouterr().err
    p.write_text(yaml.safe_dump(cfg(trainer={"path": TRAINER, "args": {"domains": DOMS, "colour": 1}})))
    assert planner_main(["run", str(p), "--out", str(tmp_path / "z")]) == 2
    assert "does not accept args" in capsys.readouterr().err
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_stop_tolerance_and_threaded_inprocess_timeouts(tmp_path):
    out = tmp_path / "camp"
    state = tmp_path / "state"
    c = cfg(executor={"kind": "inprocess", "threads": 2, "timeout_s": 1.0},
            trainer_args={"state_dir": str(state), "inject": {"r00002": ["hang"]}, "hang_s": 2.0},
            budget={"max_runs": 12}, fit={"min_runs": 3, "background": False},
            stop={"expected_excess_loss": 0.05})
    res = run_campaign(c, out, fitter=stub_fitter)  # the stub reports 0.01 < 0.05
    assert res.stop_reason == "tolerance" and "below stop.expected_excess_loss" in res.message
    st = campaign_status(out)
    assert 3 <= st["counts"]["completed"] < 12 and st["stopped"]["reason"] == "tolerance"
    with Ledger.open(out, readonly=True) as lg:
        # timed out (the thread cannot be killed; its late result is dropped); after the stop
        # its retry is not bought
        assert lg.attempts("r00002")[0]["reason"] == "timeout"
        assert lg.run("r00002").status in ("proposed", "completed")
