"""The campaign ledger: a durable record of every run, in SQLite inside the campaign directory.

Layout of a campaign directory::

    CAMPAIGN_DIR/ledger.sqlite     this ledger (WAL journal: ledger.sqlite-wal, -shm)
    CAMPAIGN_DIR/.planner.lock     flock()ed by the one planner that may write the ledger
    CAMPAIGN_DIR/config.yaml       the resolved config (also stored in the ledger)
    CAMPAIGN_DIR/posteriors/NNNN/  one posterior snapshot per refit
    CAMPAIGN_DIR/recommendation.json

Every event (a proposal, a dispatch, a result, a failure) is one transaction, committed with
``synchronous=FULL`` before the planner acts on it, so a planner killed at any instant loses at
most the event it was writing. A run moves ``proposed -> running -> completed | failed`` (back
to ``proposed`` between retries). Results are keyed by ``run_id`` and written with ``INSERT OR
IGNORE``: a retried or re-told run can never count twice.

Safety: an existing file is checked *before* it is opened for writing: its SQLite header, its
``application_id`` and its meta table are read through a read-only connection, so a corrupt or
foreign file is refused (``LedgerError``) and left byte-for-byte unchanged. A second planner on
the same directory is refused by an exclusive ``flock`` on ``.planner.lock``; the kernel drops
that lock when its process dies (even by SIGKILL), so a crashed planner never blocks a resume.
"""
from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from planner.campaign.ledger_queries import LedgerQueries
from planner.campaign.lock import CampaignLock
from planner.campaign.records import (
    APP_NAME,
    APPLICATION_ID,
    LEDGER_NAME,
    SCHEMA,
    SCHEMA_VERSION,
    RunRecord,
    check_ledger_file,
    ledger_path,
    run_strategy,
)
from planner.core.errors import LedgerError
from planner.core.types import RunStatus, flops
from trainers.base import RunResult, RunSpec


# --------------------------------------------------------------------------------------------
# the ledger
# --------------------------------------------------------------------------------------------
def _j(v: Any) -> str:
    return json.dumps(v, sort_keys=True, allow_nan=True)


class Ledger(LedgerQueries):
    """Durable run store of one campaign. Use ``Ledger.open`` / ``Ledger.create``.

    A writable ledger holds the campaign lock until ``close()``; a read-only one
    (``readonly=True``) takes no lock and may be opened while a planner runs.
    """

    def __init__(self, campaign_dir: Path, con: sqlite3.Connection, lock: CampaignLock | None,
                 readonly: bool):
        self.dir = Path(campaign_dir)
        self.path = ledger_path(campaign_dir)
        self._con = con
        self._lock = lock
        self.readonly = readonly

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def exists(cls, campaign_dir: str | Path) -> bool:
        return ledger_path(campaign_dir).exists()

    @classmethod
    def open(cls, campaign_dir: str | Path, readonly: bool = False) -> "Ledger":
        """Open an existing ledger (checked first; locked unless read-only)."""
        d = Path(campaign_dir)
        p = ledger_path(d)
        if not p.exists():
            raise LedgerError(f"no campaign in {d} (no {LEDGER_NAME}); start one with "
                              f"`planner run CONFIG --out {d}`")
        check_ledger_file(p)
        if readonly:
            con = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, timeout=30,
                                  check_same_thread=False)
            con.row_factory = sqlite3.Row
            return cls(d, con, None, True)
        lock = CampaignLock(d)
        lock.acquire()
        try:
            check_ledger_file(p)  # again, now that no other planner can be writing it
            con = cls._connect(p)
        except BaseException:
            lock.release()
            raise
        return cls(d, con, lock, False)

    @classmethod
    def create(cls, campaign_dir: str | Path, config_json: Mapping[str, Any],
               fingerprint: str) -> "Ledger":
        """Create a new ledger (the directory may exist but must not hold one)."""
        d = Path(campaign_dir)
        d.mkdir(parents=True, exist_ok=True)
        lock = CampaignLock(d)
        lock.acquire()
        try:
            p = ledger_path(d)
            if p.exists():
                raise LedgerError(f"campaign {d} already has a ledger")
            tmp = d / (LEDGER_NAME + ".new")
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(str(tmp) + suffix).unlink(missing_ok=True)
            con = sqlite3.connect(tmp, isolation_level=None)
            con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            con.executescript("BEGIN;" + SCHEMA + "COMMIT;")
            now = time.time()
            con.execute("BEGIN")
            con.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("app", APP_NAME), ("schema_version", str(SCHEMA_VERSION)),
                ("created_at", repr(now)), ("created_by", f"pid {os.getpid()} on {socket.gethostname()}")])
            con.execute("INSERT INTO config (created_at, fingerprint, json) VALUES (?, ?, ?)",
                        (now, fingerprint, _j(config_json)))
            con.execute("INSERT INTO events (t, kind, data_json) VALUES (?, 'created', ?)",
                        (now, _j({"fingerprint": fingerprint})))
            con.execute("COMMIT")
            con.close()
            os.replace(tmp, p)  # the ledger appears complete or not at all
            _fsync_dir(d)
            con = cls._connect(p)
        except BaseException:
            lock.release()
            raise
        return cls(d, con, lock, False)

    @staticmethod
    def _connect(p: Path) -> sqlite3.Connection:
        con = sqlite3.connect(p, isolation_level=None, timeout=30, check_same_thread=False)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA foreign_keys=ON")
        return con

    def close(self) -> None:
        if self._con is not None:
            try:
                if not self.readonly:
                    try:
                        self._con.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    except sqlite3.Error:
                        pass
                self._con.close()
            finally:
                self._con = None
                if self._lock is not None:
                    self._lock.release()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------------------
    def _tx(self):
        if self.readonly:
            raise LedgerError(f"ledger {self.path} is open read-only")
        return _Tx(self._con)

    def _event(self, kind: str, run_id: str | None = None, **data) -> None:
        self._con.execute("INSERT INTO events (t, kind, run_id, data_json) VALUES (?, ?, ?, ?)",
                          (time.time(), kind, run_id, _j(data)))

    def event(self, kind: str, run_id: str | None = None, **data) -> None:
        """Record a free-form event (one transaction)."""
        with self._tx():
            self._event(kind, run_id, **data)

    # -- config -----------------------------------------------------------------------------
    def config(self) -> tuple[dict, str]:
        """The latest stored resolved config and its fingerprint."""
        row = self._con.execute("SELECT json, fingerprint FROM config ORDER BY id DESC LIMIT 1").fetchone()
        return json.loads(row["json"]), row["fingerprint"]

    def update_config(self, config_json: Mapping[str, Any], fingerprint: str, changed: list[str]) -> None:
        with self._tx():
            self._con.execute("INSERT INTO config (created_at, fingerprint, json) VALUES (?, ?, ?)",
                              (time.time(), fingerprint, _j(config_json)))
            self._event("config_changed", keys=changed)

    # -- runs -------------------------------------------------------------------------------
    def next_seq(self) -> int:
        row = self._con.execute("SELECT COALESCE(MAX(seq), 0) FROM runs").fetchone()
        return int(row[0]) + 1

    def add_runs(self, specs: Iterable[RunSpec], source: str = "planner",
                 strategy: str | list[str | None] | None = None,
                 infos: Iterable[dict] | None = None) -> list[str]:
        """Record new runs as ``proposed`` (one transaction). ``strategy``: which strategy chose
        them (one for all, or one per run; records.run_strategy). Returns their run ids."""
        specs = list(specs)
        infos = list(infos) if infos is not None else [{}] * len(specs)
        strategies = list(strategy) if isinstance(strategy, list) else [strategy] * len(specs)
        now = time.time()
        with self._tx():
            seq = self.next_seq()
            for spec, info, strat in zip(specs, infos, strategies):
                self._con.execute(
                    "INSERT INTO runs (run_id, seq, N, D, h_json, seed, flops, status, source, "
                    "strategy, info_json, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 'proposed', ?, ?, ?, ?, ?)",
                    (spec.run_id, seq, int(spec.N), int(spec.D), _j(spec.h), int(spec.seed),
                     flops(float(spec.N), float(spec.D)), source, strat, _j(info), now, now))
                seq += 1
            self._event("proposed", None, run_ids=[s.run_id for s in specs], source=source,
                        strategy=strategy if len(set(strategies)) != 1 else strategies[0])
        return [s.run_id for s in specs]

    def _row_to_run(self, r: sqlite3.Row) -> RunRecord:
        return RunRecord(run_id=r["run_id"], seq=r["seq"], N=r["N"], D=r["D"],
                         h=json.loads(r["h_json"]), seed=r["seed"], flops=r["flops"],
                         status=r["status"], source=r["source"],
                         strategy=run_strategy(r["source"], r["strategy"]),
                         attempts=r["attempts"], failures=r["failures"], error=r["error"],
                         created_at=r["created_at"], updated_at=r["updated_at"],
                         info=json.loads(r["info_json"] or "{}"))

    def runs(self, status: str | Iterable[str] | None = None) -> list[RunRecord]:
        """Runs in proposal order, optionally filtered by status."""
        q = "SELECT * FROM runs"
        args: tuple = ()
        if status is not None:
            sts = [status] if isinstance(status, str) else list(status)
            q += f" WHERE status IN ({','.join('?' * len(sts))})"
            args = tuple(str(s) for s in sts)
        return [self._row_to_run(r) for r in self._con.execute(q + " ORDER BY seq", args)]

    def run(self, run_id: str) -> RunRecord | None:
        r = self._con.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return self._row_to_run(r) if r else None

    def mark_dispatched(self, run_id: str, attempt: int) -> None:
        """A run was handed to the executor (attempt numbers start at 1)."""
        now = time.time()
        with self._tx():
            self._con.execute(
                "INSERT INTO attempts (run_id, attempt, status, dispatched_at) "
                "VALUES (?, ?, 'running', ?)", (run_id, attempt, now))
            self._con.execute("UPDATE runs SET status = 'running', attempts = ?, updated_at = ? "
                              "WHERE run_id = ? AND status != 'completed'", (attempt, now, run_id))
            self._event("dispatched", run_id, attempt=attempt)

    def record_result(self, run_id: str, result: RunResult, *, N: float, D: float,
                      h: Mapping[str, float], attempt: int | None = None,
                      started_at: float | None = None, ended_at: float | None = None,
                      worker: str | None = None) -> bool:
        """Store a run's result (idempotent by run_id). Returns False if it was already stored.

        ``N``, ``D``, ``h`` are the values the observation is fitted at (N may be the trainer's
        reported true parameter count).
        """
        now = time.time()
        with self._tx():
            cur = self._con.execute(
                "INSERT OR IGNORE INTO results (run_id, N, D, h_json, losses_json, "
                "checkpoints_json, metadata_json, attempt, recorded_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (run_id, float(N), float(D), _j(dict(h)), _j(result.losses),
                 _j([[int(t), dict(l)] for t, l in result.checkpoints]),
                 _j(_jsonable(result.metadata)), attempt, now))
            new = cur.rowcount == 1
            if attempt is not None:
                self._con.execute(
                    "UPDATE attempts SET status = 'completed', started_at = ?, ended_at = ?, "
                    "worker = ? WHERE run_id = ? AND attempt = ?",
                    (started_at, ended_at, worker, run_id, attempt))
            self._con.execute("UPDATE runs SET status = 'completed', error = NULL, updated_at = ? "
                              "WHERE run_id = ?", (now, run_id))
            self._event("result" if new else "duplicate_result", run_id, attempt=attempt)
        return new

    def record_failure(self, run_id: str, attempt: int, reason: str, error: str, *,
                       final: bool, started_at: float | None = None,
                       ended_at: float | None = None, worker: str | None = None) -> None:
        """An attempt failed (``reason``: exception, non_finite, invalid, timeout, worker_died).

        ``final``: no retry is left, the run becomes ``failed``; otherwise it goes back to
        ``proposed`` to be dispatched again with the same run_id.
        """
        now = time.time()
        with self._tx():
            self._con.execute(
                "UPDATE attempts SET status = 'failed', reason = ?, error = ?, started_at = ?, "
                "ended_at = ?, worker = ? WHERE run_id = ? AND attempt = ?",
                (reason, error, started_at, ended_at or now, worker, run_id, attempt))
            self._con.execute(
                "UPDATE runs SET status = ?, failures = failures + 1, error = ?, updated_at = ? "
                "WHERE run_id = ? AND status != 'completed'",
                (str(RunStatus.FAILED if final else RunStatus.PROPOSED), f"{reason}: {error}", now,
                 run_id))
            self._event("failed" if final else "attempt_failed", run_id, attempt=attempt,
                        reason=reason, error=error[:2000])

    def requeue_interrupted(self) -> list[str]:
        """On resume: attempts left ``running`` by a dead planner become ``interrupted`` (not a
        failure) and their runs go back to ``proposed``, to be dispatched again."""
        now = time.time()
        with self._tx():
            ids = [r[0] for r in self._con.execute("SELECT run_id FROM runs WHERE status = 'running'")]
            self._con.execute("UPDATE attempts SET status = 'interrupted', ended_at = ? "
                              "WHERE status = 'running'", (now,))
            self._con.execute("UPDATE runs SET status = 'proposed', updated_at = ? "
                              "WHERE status = 'running'", (now,))
            if ids:
                self._event("requeued", None, run_ids=ids)
        return ids

    def release_attempt(self, run_id: str, attempt: int, why: str = "interrupted") -> None:
        """An attempt stopped by the planner itself (Ctrl-C, campaign stop): not a failure."""
        now = time.time()
        with self._tx():
            self._con.execute("UPDATE attempts SET status = 'interrupted', ended_at = ?, "
                              "reason = ? WHERE run_id = ? AND attempt = ? AND status = 'running'",
                              (now, why, run_id, attempt))
            self._con.execute("UPDATE runs SET status = 'proposed', updated_at = ? "
                              "WHERE run_id = ? AND status = 'running'", (now, run_id))
            self._event("released", run_id, attempt=attempt, why=why)

    def retry_failed(self, run_ids: Iterable[str], why: str) -> list[str]:
        """Give runs that failed for good a fresh set of retries: back to ``proposed`` with the
        failure count reset (their failed attempts stay recorded). Returns their ids."""
        ids = [i for i in run_ids if (r := self.run(i)) is not None and r.status == RunStatus.FAILED]
        if not ids:
            return []
        with self._tx():
            self._con.executemany("UPDATE runs SET status = 'proposed', failures = 0, "
                                  "updated_at = ? WHERE run_id = ? AND status = 'failed'",
                                  [(time.time(), i) for i in ids])
            self._event("retried", None, run_ids=ids, why=why)
        return ids

    def cancel_proposed(self, run_ids: Iterable[str], why: str) -> None:
        """Drop runs that were proposed but never dispatched (e.g. stop tolerance reached)."""
        ids = list(run_ids)
        if not ids:
            return
        with self._tx():
            self._con.executemany("UPDATE runs SET status = 'failed', error = ? "
                                  "WHERE run_id = ? AND status = 'proposed'",
                                  [(f"cancelled: {why}", i) for i in ids])
            self._event("cancelled", None, run_ids=ids, why=why)

    def add_snapshot(self, snap_id: int, path: str, run_ids: list[str], n_obs: int,
                     flops_spent: float, recommendation: dict | None,
                     fit_seconds: float | None = None) -> None:
        eel = None
        if recommendation is not None:
            v = recommendation.get("expected_excess_loss")
            eel = float(v) if v is not None and math.isfinite(float(v)) else None
        with self._tx():
            self._con.execute(
                "INSERT OR REPLACE INTO snapshots (id, created_at, path, n_runs, n_obs, run_ids_json, "
                "flops_spent, expected_excess_loss, recommendation_json, fit_seconds) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                (snap_id, time.time(), path, len(run_ids), n_obs, _j(sorted(run_ids)),
                 flops_spent, eel, _j(recommendation) if recommendation is not None else None,
                 fit_seconds))
            self._event("snapshot", None, id=snap_id, n_runs=len(run_ids), n_obs=n_obs,
                        expected_excess_loss=eel)


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK on error)."""

    def __init__(self, con: sqlite3.Connection):
        self.con = con

    def __enter__(self):
        self.con.execute("BEGIN IMMEDIATE")
        return self.con

    def __exit__(self, et, ev, tb):
        if et is None:
            self.con.execute("COMMIT")
        else:
            self.con.execute("ROLLBACK")
        return False


def _jsonable(v: Any) -> Any:
    try:
        return json.loads(json.dumps(v, default=str))
    except (TypeError, ValueError):
        return {"repr": repr(v)}


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
