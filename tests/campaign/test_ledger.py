"""The ledger: idempotent results, export, resume bookkeeping, refusal of corrupt/foreign files
without modifying them, and the one-planner lock (released when its process dies)."""
from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from planner.campaign.ledger import Ledger
from planner.campaign.records import LEDGER_NAME, check_ledger_file
from planner.core.errors import LedgerError
from trainers.base import RunResult, RunSpec

DOMS = ["a", "b", "c"]


def spec(i, N=1_000_000, D=100_000_000):
    return RunSpec(run_id=f"r{i:05d}", N=N, D=D, h={"a": 0.2, "b": 0.3, "c": 0.5}, seed=i)


def new_ledger(d: Path) -> Ledger:
    return Ledger.create(d, {"domains": DOMS}, "fp")


def digest(d: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


def test_lifecycle_and_idempotent_results(tmp_path):
    lg = new_ledger(tmp_path)
    lg.add_runs([spec(1), spec(2)], source="planner", strategy="random")
    lg.mark_dispatched("r00001", 1)
    res = RunResult("r00001", {"a": 3.0}, checkpoints=[(50_000_000, {"a": 3.5})], metadata={"N": 1_100_000})
    assert lg.record_result("r00001", res, N=1_100_000, D=1e8, h=spec(1).h, attempt=1) is True
    # the same result again (a retried run, a re-told file): stored once
    assert lg.record_result("r00001", res, N=1_100_000, D=1e8, h=spec(1).h, attempt=1) is False
    df = lg.observations(DOMS)
    assert list(df["run_id"]) == ["r00001", "r00001"]
    assert list(df["final"]) == [False, True]
    assert list(df["D"]) == [5e7, 1e8] and set(df["N"]) == {1.1e6}
    assert list(df["loss_a"]) == [3.5, 3.0]
    assert lg.counts() == {"proposed": 1, "running": 0, "completed": 1, "failed": 0}
    s = lg.spent()
    assert s["runs_committed"] == 2 and s["flops_completed"] == 6 * 1e6 * 1e8
    # a failed attempt goes back to proposed, the last one fails the run
    lg.mark_dispatched("r00002", 1)
    lg.record_failure("r00002", 1, "exception", "RuntimeError: boom", final=False)
    assert lg.run("r00002").status == "proposed"
    lg.mark_dispatched("r00002", 2)
    lg.record_failure("r00002", 2, "timeout", "too slow", final=True)
    r = lg.run("r00002")
    assert r.status == "failed" and r.failures == 2 and "timeout" in r.error
    assert [a["status"] for a in lg.attempts("r00002")] == ["failed", "failed"]
    lg.close()


def test_requeue_interrupted(tmp_path):
    lg = new_ledger(tmp_path)
    lg.add_runs([spec(1)])
    lg.mark_dispatched("r00001", 1)
    lg.close()  # as if the planner died with r00001 in flight
    lg = Ledger.open(tmp_path)
    assert lg.requeue_interrupted() == ["r00001"]
    r = lg.run("r00001")
    assert r.status == "proposed" and r.failures == 0 and r.attempts == 1
    assert lg.attempts("r00001")[0]["status"] == "interrupted"
    lg.close()


def _garbage(p: Path):
    p.write_bytes(os.urandom(5000))


def _foreign_sqlite(p: Path):
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (1)")
    con.commit()
    con.close()


def _damaged_ledger(p: Path):
    lg = new_ledger(p.parent)
    lg.add_runs([spec(i) for i in range(1, 200)])
    lg.close()
    data = bytearray(p.read_bytes())
    data[4096 * 2: 4096 * 2 + 600] = os.urandom(600)  # smash a page, keep the header
    p.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        Path(str(p) + suffix).unlink(missing_ok=True)


@pytest.mark.parametrize("make", [_garbage, _foreign_sqlite, _damaged_ledger])
def test_corrupt_or_foreign_file_refused_unmodified(tmp_path, make):
    p = tmp_path / LEDGER_NAME
    make(p)
    before = digest(tmp_path)
    with pytest.raises(LedgerError, match="refusing to touch it|not a planner ledger|corrupt"):
        Ledger.open(tmp_path)
    with pytest.raises(LedgerError):
        check_ledger_file(p)
    assert digest(tmp_path) == before
    assert not Path(str(p) + "-wal").exists()


def test_second_planner_refused_and_stale_lock_released(tmp_path):
    lg = new_ledger(tmp_path)
    with pytest.raises(LedgerError, match="in use by another planner"):
        Ledger.open(tmp_path)
    ro = Ledger.open(tmp_path, readonly=True)  # readers never need the lock
    assert ro.counts()["proposed"] == 0
    ro.close()
    lg.close()
    # a process holding the lock dies by SIGKILL: the lock goes with it
    code = ("import sys, time; from planner.campaign.ledger import Ledger; "
            f"lg = Ledger.open({str(tmp_path)!r}); print('locked', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         cwd=Path(__file__).resolve().parents[2])
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(LedgerError, match="in use by another planner .*pid"):
            Ledger.open(tmp_path)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    Ledger.open(tmp_path).close()


def test_ledger_is_durable_per_event(tmp_path):
    lg = new_ledger(tmp_path)
    lg.add_runs([spec(1)])
    lg.mark_dispatched("r00001", 1)
    lg.record_result("r00001", RunResult("r00001", {"a": 3.0}), N=1e6, D=1e8, h=spec(1).h, attempt=1)
    # another connection sees the committed result immediately (no close, no checkpoint)
    ro = Ledger.open(tmp_path, readonly=True)
    assert ro.run("r00001").status == "completed"
    assert [e["kind"] for e in ro.events()] == ["created", "proposed", "dispatched", "result"]
    ro.close()
    lg.close()


def test_snapshot_paths_resolve_inside_the_campaign_dir(tmp_path, monkeypatch):
    # the planner records a snapshot's path as it named it (relative to its working directory);
    # a reader elsewhere, or after the campaign directory moved, finds posteriors/NNNN inside it
    monkeypatch.chdir(tmp_path)
    lg = new_ledger(Path("camp"))
    (tmp_path / "camp" / "posteriors" / "0001").mkdir(parents=True)
    lg.add_snapshot(1, "camp/posteriors/0001", ["r00001"], 3, 1.0, None)
    lg.add_snapshot(2, "camp/posteriors/0002", ["r00001"], 3, 1.0, None)   # missing on disk
    lg.close()
    moved = tmp_path / "elsewhere" / "camp2"
    moved.parent.mkdir()
    (tmp_path / "camp").rename(moved)
    monkeypatch.chdir(moved.parent)
    with Ledger.open(moved, readonly=True) as lg:
        paths = [s["path"] for s in lg.snapshots()]
    assert paths[0] == str(moved / "posteriors" / "0001")
    assert paths[1] == "camp/posteriors/0002"   # not there: kept as recorded, reported as damaged
