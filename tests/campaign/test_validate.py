"""`planner validate` and `planner tell --validation` on a finished synthetic campaign (in-process
executor, the stub fitter): validation runs are recorded and marked, resumed after an
interruption without retraining, kept out of the fit unless asked, not charged to the budget, and
shown by status, its JSON, recommendation.json and the report."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from planner.campaign.campaign import campaign_status, load_campaign, run_campaign, tell
from planner.campaign.executors.inprocess import InProcessExecutor
from planner.campaign.ledger import Ledger
from planner.campaign.planner import Planner
from planner.campaign.store import stored_config
from planner.campaign.validate import validate
from planner.campaign.validation import validation_run_id
from planner.cli import main as planner_main
from planner.core.errors import LedgerError
from tests.support.fakefit import stub_fitter

DOMS = ["a", "b", "c"]
ROOT = Path(__file__).resolve().parents[2]


def finished(tmp_path, state, executor="inprocess", sleep_s=0.0):
    c = {"domains": DOMS, "targets": {"a": 1.0}, "target_budget": {"N": 1e8, "D": 2e9},
         "space": {"N": [1e6, 5e7], "D": [1e8, 1e9]}, "budget": {"max_runs": 6},
         "batch_size": 2, "acquisition": "random",
         "trainer": {"path": "tests.support.trainers:TinySynthetic",
                     "args": {"domains": DOMS, "checkpoints": 2, "state_dir": str(state),
                              "sleep_s": sleep_s}},
         "executor": {"kind": executor},
         "fit": {"method": "map", "min_runs": 4, "background": False}}
    out = tmp_path / "camp"
    # the campaign itself trains in process; its stored executor is what validate builds
    ex = InProcessExecutor(c["trainer"]["path"], c["trainer"]["args"])
    assert run_campaign(c, out, fitter=stub_fitter, executor=ex).stop_reason == "budget"
    return out


def trained(state) -> Counter:
    p = state / "done.jsonl"
    return Counter(json.loads(line)["run_id"] for line in p.read_text().splitlines())


def test_validate_records_marks_excludes_and_shows(tmp_path, capsys):
    state = tmp_path / "state"
    out = finished(tmp_path, state)
    with Ledger.open(out, readonly=True) as lg:
        spent0, fit0 = lg.spent(), lg.fit_run_ids()
    rec0 = json.loads((out / "recommendation.json").read_text())

    r = validate(out, seeds=[0])
    assert len(r["run_ids"]) == 3 and sorted(r["trained"]) == sorted(r["run_ids"])
    journal = (out / "planner.log").read_text()   # the campaign's journal records it
    assert "validate: N 1e+08, D 2e+09, mixtures recommended,uniform,best-seen" in journal
    assert "validate: 3 run(s) trained now, 0 failed, trust" in journal
    with Ledger.open(out, readonly=True) as lg:
        runs = {x.run_id: x for x in lg.runs() if x.source == "validation"}
        assert set(runs) == set(r["run_ids"])
        assert {x.info["validation"]["mixture"] for x in runs.values()} == \
            {"recommended", "uniform", "best-seen"}
        assert all(x.status == "completed" and x.N == 10 ** 8 and x.D == 2 * 10 ** 9
                   for x in runs.values())
        assert lg.spent() == spent0                      # not charged to the budget
        assert lg.fit_run_ids() == fit0                  # kept out of the fit
        obs = lg.observations(DOMS, fit_only=True)
        assert not set(obs["run_id"]) & set(runs)
        cfg = stored_config(lg)
    uniform = runs[validation_run_id("uniform", 1e8, 2e9, {d: 1 / 3 for d in DOMS}, 0)]
    assert uniform.h == pytest.approx({d: 1 / 3 for d in DOMS})

    # recommendation.json: the same recommendation plus the validation block and trust
    rec = json.loads((out / "recommendation.json").read_text())
    assert rec["mean"] == rec0["mean"]
    block = rec["validation"]
    assert [m["name"] for m in block["mixtures"]] == ["recommended", "uniform", "best-seen"]
    for m in block["mixtures"]:
        o = m["objective"]
        assert o["lo"] < o["mean"] < o["hi"] and o["inside"] == (o["lo"] <= o["measured"] <= o["hi"])
        assert m["losses"]["a"]["measured"] == pytest.approx(o["measured"])
    # the stub posterior has no discrepancy evidence: only a validation run outside can lower it
    outside = [m["name"] for m in block["mixtures"]
               if not all(q["inside"] for q in [m["objective"], *m["losses"].values()])]
    assert (rec["trust"]["level"] == "low") == bool(outside)
    assert len(rec["trust"]["reasons"]) == len(outside)

    # status (dict, JSON, table) shows the same block
    st = campaign_status(out)
    assert st["validation"] == block and st["trust"] == rec["trust"] == r["trust"]
    assert planner_main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["validation"]["mixtures"][1]["name"] == "uniform"
    assert planner_main(["status", str(out)]) == 0
    table = capsys.readouterr().out
    assert "validation (90%)" in table and "best-seen (N=1e+08" in table and "trust" in table
    assert "3 completed validation run(s)" in " ".join(table.split())

    # the report has a section
    from planner.report.build import build_report
    html = build_report(out, holdout=False).path.read_text()
    assert "Validation runs" in html and "best-seen" in html

    # a rerun trains nothing; the planner does not want a refit for them
    again = validate(out, seeds=[0])
    assert again["trained"] == [] and again["validation"]["mixtures"] == block["mixtures"]
    assert all(trained(state)[i] == 1 for i in r["run_ids"])
    with Ledger.open(out) as lg:
        assert not Planner(cfg, lg, fitter=stub_fitter).needs_fit()


def test_validate_resumes_after_interruption_and_kill(tmp_path):
    state = tmp_path / "state"
    out = finished(tmp_path, state)
    seen = []

    def stop_after_first(line):
        seen.append(line)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        validate(out, mixtures=["uniform"], custom=["mine=a:0.5,b:0.5"], seeds=[0, 1],
                 progress=stop_after_first)
    with Ledger.open(out, readonly=True) as lg:
        val = [x for x in lg.runs() if x.source == "validation"]
        assert len(val) == 4 and Counter(x.status for x in val) == {"completed": 1, "proposed": 3}
    first = [x.run_id for x in val if x.status == "completed"]
    # a planner killed mid-run leaves its attempt 'running'
    left = [x.run_id for x in val if x.status == "proposed"][0]
    with Ledger.open(out) as lg:
        lg.mark_dispatched(left, lg.run(left).attempts + 1)

    r = validate(out, mixtures=["uniform"], custom=["mine=a:0.5,b:0.5"], seeds=[0, 1])
    assert sorted(r["trained"]) == sorted(set(r["run_ids"]) - set(first)) and not r["failed"]
    counts = trained(state)
    assert all(counts[i] == 1 for i in r["run_ids"])   # nothing trained twice, nothing lost
    names = {m["name"]: m for m in r["validation"]["mixtures"]}
    assert set(names) == {"uniform", "mine"} and all(len(m["run_ids"]) == 2 for m in names.values())


def test_validate_killed_by_sigkill_resumes_with_the_same_command(tmp_path):
    """A real `planner validate` process killed by SIGKILL after its first result: every
    recorded result survives unchanged, and the same command completes the rest."""
    state = tmp_path / "state"
    out = finished(tmp_path, state, sleep_s=0.6)
    cmd = [sys.executable, "-m", "planner.cli", "validate", str(out), "--mixtures", "uniform",
           "--mixture", "mine=a:0.5,b:0.5", "--seeds", "0,1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def recorded():
        with Ledger.open(out, readonly=True) as lg:
            val = {x.run_id for x in lg.runs() if x.source == "validation"}
            return {r["run_id"]: r["losses"] for r in lg.results() if r["run_id"] in val}

    try:
        deadline = time.time() + 120
        while time.time() < deadline and not recorded() and proc.poll() is None:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = recorded()
    assert 1 <= len(before) < 4, "the kill came too late to test a resume"
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    after = recorded()
    assert len(after) == 4 and all(after[k] == v for k, v in before.items())
    counts = trained(state)
    assert all(counts[k] == 1 for k in before)   # a recorded run is never trained again


def test_use_in_fit_bad_mixture_and_lock(tmp_path, capsys):
    state = tmp_path / "state"
    out = finished(tmp_path, state)
    # a bad --mixture: exit 2, one line, nothing recorded
    with Ledger.open(out, readonly=True) as lg:
        n0 = len(lg.runs())
    for bad in ("x=a:0.5,b:0.6", "x=a:1,zz:0", "x=", "uniform=a:1"):
        assert planner_main(["validate", str(out), "--mixture", bad, "--mixtures", ""]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for bad in (["--mixtures", "nope"], ["--N", "inf"], ["--D", "-1"], ["--seeds", "x"]):
        assert planner_main(["validate", str(out), *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    with Ledger.open(out, readonly=True) as lg:
        assert len(lg.runs()) == n0
    # a second planner holding the lock is refused like `planner run` refuses it
    with Ledger.open(out):
        with pytest.raises(LedgerError):
            validate(out, mixtures=["uniform"])
    # --use-in-fit: the runs enter the next fit
    assert planner_main(["validate", str(out), "--mixtures", "uniform", "--N", "5e7",
                         "--D", "1e9", "--use-in-fit"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("uniform (N=5e+07, D=1e+09, 1 run(s); in the fit): objective ")
    assert "\ntrust: " in shown
    with Ledger.open(out) as lg:
        cfg = stored_config(lg)
        vid = [x.run_id for x in lg.runs() if x.source == "validation"]
        assert len(vid) == 1 and vid[0] in lg.fit_run_ids()
        p = Planner(cfg, lg, fitter=stub_fitter)
        assert p.needs_fit() and vid[0] in set(p.prepare_fit()[2]["run_id"])
        assert lg.spent()["runs_committed"] == 6
    # the same runs without --use-in-fit: refused (a recorded mark is never changed)
    assert planner_main(["validate", str(out), "--mixtures", "uniform", "--N", "5e7",
                         "--D", "1e9"]) == 2
    assert "recorded with --use-in-fit" in capsys.readouterr().err


def test_tell_validation_is_kept_out_of_the_fit(tmp_path):
    state = tmp_path / "state"
    out = finished(tmp_path, state)
    df = pd.DataFrame([{"run_id": "my-target-run", "N": 1e8, "D": 2e9, "h_a": 0.2, "h_b": 0.3,
                        "h_c": 0.5}])
    mean = float(load_campaign(out).posterior().predict(df)["pred_a"].iloc[0])
    df["loss_a"] = mean  # a run as predicted
    r = tell(out, df, validation=True, refit=False)
    assert r["added"] == 1
    with Ledger.open(out, readonly=True) as lg:
        run = lg.run("my-target-run")
        assert run.source == "validation" and "my-target-run" not in lg.fit_run_ids()
        assert lg.spent()["runs_committed"] == 6
    rec = json.loads((out / "recommendation.json").read_text())
    (m,) = rec["validation"]["mixtures"]
    assert m["name"] == "my-target-run" and m["objective"]["measured"] == pytest.approx(mean)
    assert m["objective"]["inside"] is True and rec["trust"] == {"level": "ok", "reasons": []}

    # a target run far worse than predicted: the law does not extrapolate, trust is low
    far = df.assign(run_id="my-second-run", loss_a=10 * mean)
    assert planner_main(["tell", str(out), "--validation", "--no-fit", str(write(far, tmp_path))]) == 0
    st = campaign_status(out)
    assert st["trust"]["level"] == "low" and "my-second-run" in st["trust"]["reasons"][0]
    assert json.loads((out / "recommendation.json").read_text())["trust"] == st["trust"]
    from planner.report.build import build_report
    # a run id the campaign bought cannot be told back as a validation run
    assert planner_main(["tell", str(out), "--validation", "--no-fit",
                         str(write(df.assign(run_id="r00001"), tmp_path))]) == 2
    html = build_report(out, holdout=False).path.read_text()
    assert html.index('id="trust-banner"') < html.index("<header>")
    assert "my-second-run" in html[:html.index("<header>")]


def write(df, tmp_path):
    p = tmp_path / "told.csv"
    df.to_csv(p, index=False)
    return p


def test_validate_on_the_campaigns_ray_executor(ray_session, tmp_path):
    state = tmp_path / "state"
    out = finished(tmp_path, state, executor="ray")
    r = validate(out, mixtures=["uniform", "best-seen"], seeds=[0])
    assert sorted(r["trained"]) == sorted(r["run_ids"]) and not r["failed"]
    assert len(r["validation"]["mixtures"]) == 2 and all(trained(state)[i] == 1 for i in r["run_ids"])
    pids = {json.loads(line)["pid"] for line in (state / "done.jsonl").read_text().splitlines()
            if json.loads(line)["run_id"] in r["run_ids"]}
    assert pids and os.getpid() not in pids  # trained in Ray workers, not in this process


def test_validate_predicts_with_the_newest_usable_snapshot(tmp_path):
    out = finished(tmp_path, tmp_path / "state")
    with Ledger.open(out, readonly=True) as lg:
        snaps = lg.snapshots()
    assert len(snaps) >= 2
    for f in (out / "posteriors" / f"{snaps[-1]['id']:04d}").iterdir():
        f.write_text("damaged")
    r = validate(out, mixtures=["uniform"])
    block = r["validation"]
    assert block["snapshot"] == snaps[-2]["id"] and "lo" in block["mixtures"][0]["objective"]
    assert campaign_status(out)["validation"] == block


def test_a_failed_validation_run_is_retried_by_a_rerun(tmp_path, capsys, monkeypatch):
    state = tmp_path / "state"
    out = finished(tmp_path, state)
    blocker = tmp_path / "blocked"  # the trainer fails while this file exists
    blocker.write_text("")
    import planner.campaign.validate as vmod

    monkeypatch.setattr(vmod, "make_executor", lambda cfg, campaign_dir=None: InProcessExecutor(
        cfg.trainer.path, {**cfg.trainer.args, "fail_while": str(blocker)}))
    assert planner_main(["validate", str(out), "--mixtures", "uniform"]) == 1
    assert "1 validation run(s) failed" in capsys.readouterr().err
    blocker.unlink()
    assert planner_main(["validate", str(out), "--mixtures", "uniform"]) == 0
    with Ledger.open(out, readonly=True) as lg:
        (run,) = [x for x in lg.runs() if x.source == "validation"]
        assert run.status == "completed" and run.attempts == 4  # 3 failed, then 1 completed
        assert lg.spent()["runs_failed"] == 0


def test_validation_runs_get_a_time_limit_scaled_by_their_compute(tmp_path, capsys):
    from planner.campaign.validate import validation_timeout
    from planner.config.parse import config_from_dict

    c = {"domains": DOMS, "targets": {"a": 1.0}, "target_budget": {"N": 1e8, "D": 2e9},
         "space": {"N": [1e6, 5e7], "D": [1e8, 1e9]}, "budget": {"max_runs": 6},
         "trainer": {"path": "tests.support.trainers:TinySynthetic", "args": {}},
         "executor": {"timeout_s": 300}}
    cfg = config_from_dict(c)
    # the target's 1e8 x 2e9 over the space's largest run's 5e7 x 1e9: 4x the compute
    assert validation_timeout(cfg, 1e8, 2e9) == pytest.approx(1200.0)
    # a run no larger than the space's largest keeps the campaign's own limit
    assert validation_timeout(cfg, 1e7, 1e8) == 300.0
    assert validation_timeout(cfg, 1e8, 2e9, 60.0) == 60.0
    assert validation_timeout(cfg, 1e8, 2e9, None) is None
    c["executor"] = {}
    assert validation_timeout(config_from_dict(c), 1e8, 2e9) is None   # no limit stays none
    with pytest.raises(SystemExit) as e:
        planner_main(["validate", str(tmp_path), "--timeout-s", "-5"])
    assert e.value.code == 2 and "--timeout-s" in capsys.readouterr().err
