"""The ledger's schema and records: file names, statuses, the SQLite schema, ``RunRecord`` (one run
as stored), and the read-only check that refuses a corrupt or foreign ledger file untouched."""
from __future__ import annotations

import sqlite3
import struct
from dataclasses import dataclass, field
from pathlib import Path

from planner.core.errors import LedgerError
from planner.core.types import RunStatus
from trainers.base import RunSpec

LEDGER_NAME = "ledger.sqlite"


APPLICATION_ID = 0x4D504C4E  # "MPLN": marks a mixture-planner ledger in the SQLite header


APP_NAME = "mixture-planner-ledger"


SCHEMA_VERSION = 1


STATUSES = tuple(s.value for s in RunStatus)


# runs the planner bought (count toward the budget) vs. observations it was given
BOUGHT_SOURCES = ("planner", "suggest")


# validation runs (``planner validate``, ``planner tell --validation``): trained or told at a
# chosen (N, D) to check the law's prediction; not bought (no budget) and kept out of every fit
# unless recorded with ``info["use_in_fit"]`` true
VALIDATION_SOURCE = "validation"


def in_fit(source: str, info: dict | None) -> bool:
    """Whether a run's observations enter the campaign's fits."""
    return source != VALIDATION_SOURCE or bool((info or {}).get("use_in_fit"))


# which strategy chose a run (``runs.strategy``): ``initial`` for the design bought before the
# first fit, else the name of the strategy that proposed it (``random``, ``grid``,
# ``decision``, or ``random`` when the acquisition failed and random stood in); runs given to the
# campaign are ``prior`` (prior_runs), ``told`` (external results of ``tell``) or ``validation``
INITIAL_STRATEGY = "initial"
GIVEN_STRATEGY = {"imported": "prior", "tell": "told", VALIDATION_SOURCE: "validation"}


def run_strategy(source: str, strategy: str | None) -> str | None:
    """The strategy of a run as shown (a given run recorded without one gets its source's)."""
    return strategy or GIVEN_STRATEGY.get(source)


SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE config (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created_at REAL NOT NULL,
    fingerprint TEXT NOT NULL, json TEXT NOT NULL);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE,
    N INTEGER NOT NULL, D INTEGER NOT NULL, h_json TEXT NOT NULL, seed INTEGER NOT NULL,
    flops REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('proposed','running','completed','failed')),
    source TEXT NOT NULL, strategy TEXT, info_json TEXT NOT NULL DEFAULT '{}',
    attempts INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0,
    error TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL REFERENCES runs(run_id),
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running','completed','failed','interrupted')),
    reason TEXT, error TEXT, worker TEXT,
    dispatched_at REAL NOT NULL, started_at REAL, ended_at REAL,
    UNIQUE (run_id, attempt));
CREATE TABLE results (
    run_id TEXT PRIMARY KEY REFERENCES runs(run_id),
    N REAL NOT NULL, D REAL NOT NULL, h_json TEXT NOT NULL,
    losses_json TEXT NOT NULL, checkpoints_json TEXT NOT NULL, metadata_json TEXT NOT NULL,
    attempt INTEGER, recorded_at REAL NOT NULL);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, t REAL NOT NULL, kind TEXT NOT NULL,
    run_id TEXT, data_json TEXT NOT NULL DEFAULT '{}');
CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY, created_at REAL NOT NULL, path TEXT NOT NULL,
    n_runs INTEGER NOT NULL, n_obs INTEGER NOT NULL, run_ids_json TEXT NOT NULL,
    flops_spent REAL NOT NULL, expected_excess_loss REAL, recommendation_json TEXT,
    fit_seconds REAL);
CREATE INDEX runs_status ON runs(status);
CREATE INDEX events_kind ON events(kind);
"""


@dataclass
class RunRecord:
    """One row of the runs table of the ledger."""

    run_id: str
    seq: int
    N: int
    D: int
    h: dict[str, float]
    seed: int
    flops: float
    status: str
    source: str
    strategy: str | None
    attempts: int
    failures: int
    error: str | None
    created_at: float
    updated_at: float
    info: dict = field(default_factory=dict)

    def spec(self) -> RunSpec:
        return RunSpec(run_id=self.run_id, N=int(self.N), D=int(self.D), h=dict(self.h),
                       seed=int(self.seed))


# --------------------------------------------------------------------------------------------
# checks that never modify the file
# --------------------------------------------------------------------------------------------
def ledger_path(campaign_dir: str | Path) -> Path:
    return Path(campaign_dir) / LEDGER_NAME


def check_ledger_file(path: str | Path) -> None:
    """Refuse (LedgerError) a file that is not an intact ledger of this program; never writes.

    Checks, in order: the 100-byte SQLite header and its application_id (raw bytes), then, via
    a read-only connection, the meta table (application name and schema version) and
    ``PRAGMA quick_check``.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            header = f.read(100)
    except OSError as e:
        raise LedgerError(f"ledger {p} cannot be read: {e.strerror or e}") from None
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise LedgerError(f"{p} is not a planner ledger (not an SQLite database: corrupt or "
                          f"foreign file); refusing to touch it")
    app_id = struct.unpack(">I", header[68:72])[0]
    if app_id != APPLICATION_ID:
        raise LedgerError(f"{p} is an SQLite database of another program (application_id "
                          f"{app_id:#x}), not a planner ledger; refusing to touch it")
    # with its WAL files present (a planner running or killed) SQLite reads them read-only;
    # without them, immutable=1 keeps SQLite from creating any file next to a suspect one
    wal = Path(str(p) + "-wal").exists() and Path(str(p) + "-shm").exists()
    try:
        con = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro{'' if wal else '&immutable=1'}",
                              uri=True, timeout=30)
    except sqlite3.Error as e:
        raise LedgerError(f"ledger {p} cannot be opened read-only: {e}") from None
    try:
        rows = dict(con.execute("SELECT key, value FROM meta").fetchall())
        if rows.get("app") != APP_NAME:
            raise LedgerError(f"{p} is not a planner ledger (meta table says app="
                              f"{rows.get('app')!r}); refusing to touch it")
        version = int(rows.get("schema_version", -1))
        if version != SCHEMA_VERSION:
            raise LedgerError(f"ledger {p} has schema version {version}; this planner reads "
                              f"version {SCHEMA_VERSION}")
        check = con.execute("PRAGMA quick_check").fetchall()
        if [r[0] for r in check] != ["ok"]:
            raise LedgerError(f"ledger {p} is corrupt (integrity check: {check[0][0]}); "
                              f"refusing to touch it")
    except sqlite3.DatabaseError as e:
        raise LedgerError(f"ledger {p} is corrupt or foreign ({e}); refusing to touch it") from None
    finally:
        con.close()
