"""Crash safety: the planner killed by SIGKILL at random points and restarted with the same
command completes its budget with no finished result lost and none counted twice; a second
planner on the same directory is refused; a dead planner's lock never blocks a resume.

The planners run as subprocesses (`python -m planner.cli run ...`) that join the test
session's Ray cluster through `executor.address`, so they also exercise joining a cluster."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from planner.campaign.campaign import campaign_status, export_runs, run_campaign
from planner.campaign.ledger import Ledger
from planner.cli import main as planner_main

ROOT = Path(__file__).resolve().parents[2]
DOMS = ["a", "b", "c"]


def config(address: str, state: Path, max_runs: int, sleep_s: float, jitter: float, **over):
    c = {"domains": DOMS, "targets": {"a": 1.0}, "target_budget": {"N": 1e9, "D": 2e10},
         "space": {"N": [1e6, 5e7], "D": [1e8, 1e9]}, "budget": {"max_runs": max_runs},
         "batch_size": 2, "acquisition": "random",
         "trainer": {"path": "tests.support.trainers:TinySynthetic",
                     "args": {"domains": DOMS, "checkpoints": 2, "sleep_s": sleep_s,
                              "sleep_jitter_s": jitter, "state_dir": str(state)}},
         "executor": {"kind": "ray", "address": address, "max_retries": 2},
         "fit": {"method": "map", "min_runs": 8, "background": True}}
    c.update(over)
    return c


def start_planner(cfg_path: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "planner.cli", "run", str(cfg_path),
                             "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def completed_results(out: Path) -> dict:
    if not (out / "ledger.sqlite").exists():
        return {}
    with Ledger.open(out, readonly=True) as lg:
        return {r["run_id"]: r["losses"] for r in lg.results()}


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing(ray_session, tmp_path):
    address = ray_session.get_runtime_context().gcs_address
    state, out = tmp_path / "state", tmp_path / "camp"
    p = tmp_path / "c.yaml"
    max_runs = 10
    p.write_text(yaml.safe_dump(config(address, state, max_runs, 0.4, 0.6)))
    rng = random.Random(1234)
    seen: dict = {}
    kills = 0
    for _ in range(4):
        proc = start_planner(p, out)
        time.sleep(rng.uniform(2.0, 7.0))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        now = completed_results(out)
        # nothing recorded before this kill was lost or changed
        assert all(now.get(k) == v for k, v in seen.items())
        seen = now
    proc = start_planner(p, out)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-2000:]
    final = completed_results(out)
    assert all(final.get(k) == v for k, v in seen.items())
    assert len(final) == max_runs  # none counted twice toward the budget
    df = export_runs(out)
    assert df["final"].sum() == max_runs and df[df["final"]]["run_id"].is_unique
    assert len(df) == 3 * max_runs
    # every recorded result is one the trainer really produced for that run
    done = [json.loads(line) for line in (state / "done.jsonl").read_text().splitlines()]
    produced = {}
    for d in done:
        produced.setdefault(d["run_id"], []).append(d["losses"])
    assert all(final[k] in produced[k] for k in final)
    with Ledger.open(out, readonly=True) as lg:
        att = lg.attempts()
        assert all(a["status"] in ("completed", "interrupted") for a in att)
        assert sum(a["status"] == "completed" for a in att) == max_runs
        assert lg.latest_snapshot()["n_runs"] == max_runs
    st = campaign_status(out)
    assert st["counts"]["completed"] == max_runs and st["counts"]["failed"] == 0
    assert json.loads((out / "recommendation.json").read_text())["mean"].keys() == set(DOMS)
    assert kills >= 2


@pytest.mark.slow
def test_second_planner_refused_then_resume_after_kill(ray_session, tmp_path, capsys):
    address = ray_session.get_runtime_context().gcs_address
    state, out = tmp_path / "state", tmp_path / "camp"
    p = tmp_path / "c.yaml"
    c = config(address, state, 4, 1.5, 0.0, fit={"method": "map", "min_runs": 100, "background": False})
    p.write_text(yaml.safe_dump(c))
    proc = start_planner(p, out)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if (out / "ledger.sqlite").exists() and campaign_status(out)["running"]:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the first planner never started")
        before = (out / "ledger.sqlite").stat().st_mtime_ns
        assert planner_main(["run", str(p), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "in use by another planner" in err[0] and f"pid {proc.pid}" in err[0]
        assert planner_main(["suggest", str(out), "-n", "1", "--out", str(tmp_path / "s.json")]) == 2
        assert "in use by another planner" in capsys.readouterr().err
        assert planner_main(["status", str(out)]) == 0  # reading is always allowed
        assert campaign_status(out)["running"].startswith(f"pid {proc.pid}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert before > 0
    # the dead planner's lock does not block: resume here, on the session's Ray
    res = run_campaign(c, out)
    assert res.stop_reason == "budget" and res.completed == 4
    assert campaign_status(out)["running"] is None
