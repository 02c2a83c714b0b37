"""SIGTERM stops a planner like Ctrl-C: in-flight runs released, exit 143, no traceback, and the
same command resumes. The planner starts its own embedded Ray here, because ray.init replaces
the driver's SIGTERM handler (the behaviour this guards against)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from planner.campaign.ledger import Ledger
from planner.core import signals

ROOT = Path(__file__).resolve().parents[2]
DOMS = ["a", "b", "c"]


def test_handler_raises_terminated_and_is_restored_around_a_replacing_call():
    before = signal.getsignal(signal.SIGTERM)
    try:
        signals.handle_sigterm()
        with signals.keep_sigterm_handler():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # what ray.init does
        with pytest.raises(signals.Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs at the next bytecode boundary
        assert signals.sigterm_received()
    finally:
        signal.signal(signal.SIGTERM, before)
        signals._received = False


@pytest.mark.slow
def test_sigterm_releases_runs_and_the_same_command_resumes(tmp_path):
    cfg = {"domains": DOMS, "targets": {"a": 1.0}, "target_budget": {"N": 1e9, "D": 2e10},
           "space": {"N": [1e6, 5e7], "D": [1e8, 1e9]}, "budget": {"max_runs": 4},
           "batch_size": 2, "acquisition": "random",
           "trainer": {"path": "tests.support.trainers:TinySynthetic",
                       # 2 checkpoints: 12 observations, more than the law's 11 parameters,
                       # so the final fit succeeds and the resumed command exits 0
                       "args": {"domains": DOMS, "sleep_s": 3.0, "checkpoints": 2}},
           "executor": {"kind": "ray", "num_cpus_per_run": 0.5},
           "fit": {"method": "map", "min_runs": 99}}
    p, out = tmp_path / "c.yaml", tmp_path / "camp"
    p.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "planner.cli", "run", str(p), "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    running = 0
    while time.time() < deadline and not running:  # wait until runs are in flight
        time.sleep(0.5)
        if (out / "ledger.sqlite").exists():
            with Ledger.open(out, readonly=True) as lg:
                running = lg.counts()["running"]
    assert running, "no run was dispatched within 120 s"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err
    with Ledger.open(out, readonly=True) as lg:
        assert lg.counts()["running"] == 0  # released for a rerun
        assert any(a["status"] == "interrupted" for a in lg.attempts())
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    with Ledger.open(out, readonly=True) as lg:
        assert lg.counts()["completed"] == 4
