"""Read-only queries over a campaign ledger (a mixin of ``Ledger``): attempts, events, results,
the runs-table projection of every observation, run counts, compute spent and snapshots. They
read ``self._con`` and never write."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from planner.campaign.records import BOUGHT_SOURCES, STATUSES, in_fit, run_strategy


class LedgerQueries:
    """Queries shared by a writable and a read-only ``Ledger``."""

    _con: sqlite3.Connection

    def attempts(self, run_id: str | None = None) -> list[dict]:
        q = "SELECT * FROM attempts"
        args: tuple = ()
        if run_id is not None:
            q += " WHERE run_id = ?"
            args = (run_id,)
        return [dict(r) for r in self._con.execute(q + " ORDER BY id", args)]

    def events(self, kind: str | None = None) -> list[dict]:
        q, args = "SELECT * FROM events", ()
        if kind is not None:
            q, args = q + " WHERE kind = ?", (kind,)
        out = []
        for r in self._con.execute(q + " ORDER BY id", args):
            e = dict(r)
            e["data"] = json.loads(e.pop("data_json") or "{}")
            out.append(e)
        return out

    # -- results & observations -----------------------------------------------------------------
    def results(self) -> list[dict]:
        """Stored results joined with their runs, in proposal order."""
        rows = self._con.execute(
            "SELECT r.*, runs.seq, runs.source, runs.seed, runs.flops, runs.strategy, runs.info_json "
            "FROM results r "
            "JOIN runs ON runs.run_id = r.run_id ORDER BY runs.seq").fetchall()
        out = []
        for r in rows:
            out.append({"run_id": r["run_id"], "N": r["N"], "D": r["D"], "h": json.loads(r["h_json"]),
                        "losses": json.loads(r["losses_json"]),
                        "checkpoints": json.loads(r["checkpoints_json"]),
                        "metadata": json.loads(r["metadata_json"]), "source": r["source"],
                        "strategy": run_strategy(r["source"], r["strategy"]),
                        "seed": r["seed"], "flops": r["flops"], "attempt": r["attempt"],
                        "recorded_at": r["recorded_at"],
                        "info": json.loads(r["info_json"] or "{}"),
                        "in_fit": in_fit(r["source"], json.loads(r["info_json"] or "{}"))})
        return out

    def result(self, run_id: str) -> dict | None:
        """The stored result of one run: {"losses", "checkpoints", "N", "D"}, or None."""
        r = self._con.execute("SELECT * FROM results WHERE run_id = ?", (run_id,)).fetchone()
        if r is None:
            return None
        return {"losses": json.loads(r["losses_json"]), "checkpoints": json.loads(r["checkpoints_json"]),
                "N": r["N"], "D": r["D"]}

    def n_observations(self, fit_only: bool = False) -> int:
        """Rows ``observations`` would return (finals plus checkpoints before D)."""
        n = 0
        for D, ck, src, info in self._con.execute(
                "SELECT r.D, r.checkpoints_json, runs.source, runs.info_json FROM results r "
                "JOIN runs ON runs.run_id = r.run_id"):
            if fit_only and not in_fit(src, json.loads(info or "{}")):
                continue
            n += 1 + sum(1 for t, _ in json.loads(ck) if float(t) < float(D))
        return n

    def fit_run_ids(self) -> frozenset[str]:
        """Completed runs whose observations enter the fits (records.in_fit)."""
        rows = self._con.execute("SELECT runs.run_id, runs.source, runs.info_json FROM runs "
                                 "JOIN results r ON r.run_id = runs.run_id")
        return frozenset(r[0] for r in rows if in_fit(r[1], json.loads(r[2] or "{}")))

    def observations(self, domains: list[str], include_checkpoints: bool = True,
                     fit_only: bool = False):
        """Every observation (final results and checkpoints) as a runs-table DataFrame;
        ``fit_only``: only those that enter the fits (validation runs are left out unless
        recorded for the fit, records.in_fit).

        Columns: run_id, N, D, h_<domain>..., loss_<target>... (empty where not measured), then
        the extras ``final`` (True for a run's final result), ``source``, ``seed`` and
        ``strategy`` (which strategy chose the run: records.run_strategy).
        """
        import pandas as pd

        rows = []
        targets: list[str] = []
        for r in self.results():
            if fit_only and not r["in_fit"]:
                continue
            names = list(r["losses"]) + [k for _, l in r["checkpoints"] for k in l]
            for t in names:
                if t not in targets:
                    targets.append(t)
            base = {"run_id": r["run_id"], "N": r["N"]}
            hs = {f"h_{d}": float(r["h"].get(d, 0.0)) for d in domains}
            extra = {"source": r["source"], "seed": r["seed"], "strategy": r["strategy"]}
            if include_checkpoints:
                for tokens, losses in sorted(r["checkpoints"], key=lambda c: c[0]):
                    if float(tokens) >= float(r["D"]):
                        continue  # the final result is the observation at D
                    rows.append({**base, "D": float(tokens), **hs,
                                 **{f"loss_{k}": v for k, v in losses.items()},
                                 "final": False, **extra})
            rows.append({**base, "D": r["D"], **hs,
                         **{f"loss_{k}": v for k, v in r["losses"].items()},
                         "final": True, **extra})
        cols = (["run_id", "N", "D"] + [f"h_{d}" for d in domains] + [f"loss_{t}" for t in targets]
                + ["final", "source", "seed", "strategy"])
        df = pd.DataFrame(rows, columns=cols)
        if len(df):
            df["N"] = df["N"].astype(float)
            df["D"] = df["D"].astype(float)
        return df

    # -- budget -------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for r in self._con.execute("SELECT status, COUNT(*) FROM runs GROUP BY status"):
            out[r[0]] = r[1]
        return out

    def spent(self) -> dict[str, float]:
        """FLOPs and run counts of runs the planner bought (planner or suggest sources)."""
        src = ",".join(f"'{s}'" for s in BOUGHT_SOURCES)
        out = {"flops_completed": 0.0, "flops_in_flight": 0.0, "flops_failed": 0.0,
               "runs_completed": 0, "runs_in_flight": 0, "runs_failed": 0}
        for r in self._con.execute(f"SELECT status, COUNT(*), COALESCE(SUM(flops), 0) FROM runs "
                                   f"WHERE source IN ({src}) GROUP BY status"):
            key = {"completed": "completed", "failed": "failed"}.get(r[0], "in_flight")
            out[f"runs_{key}"] += r[1]
            out[f"flops_{key}"] += r[2]
        out["flops_committed"] = out["flops_completed"] + out["flops_in_flight"]
        out["runs_committed"] = out["runs_completed"] + out["runs_in_flight"]
        return out

    def ended_since(self, event_id: int = 0) -> dict[str, int]:
        """Bought runs (planner or suggest sources) whose final result or final failure was
        recorded after event ``event_id`` (0: ever): {"completed": n, "failed": n}."""
        src = ",".join(f"'{s}'" for s in BOUGHT_SOURCES)
        out = {"completed": 0, "failed": 0}
        for r in self._con.execute(
                f"SELECT runs.status, COUNT(DISTINCT runs.run_id) FROM runs JOIN events e "
                f"ON e.run_id = runs.run_id WHERE e.id > ? AND ((e.kind = 'result' AND "
                f"runs.status = 'completed') OR (e.kind = 'failed' AND runs.status = 'failed')) "
                f"AND runs.source IN ({src}) GROUP BY runs.status", (int(event_id),)):
            out[r[0]] = r[1]
        return out

    def last_event_id(self, kind: str, **match) -> int:
        """Id of the latest event of ``kind`` whose data has every ``match`` item; 0 if none."""
        for e in reversed(self.events(kind)):
            if all(e["data"].get(k) == v for k, v in match.items()):
                return int(e["id"])
        return 0

    # -- snapshots --------------------------------------------------------------------------------
    def next_snapshot_id(self) -> int:
        return int(self._con.execute("SELECT COALESCE(MAX(id), 0) FROM snapshots").fetchone()[0]) + 1

    def snapshots(self) -> list[dict]:
        """Snapshot rows, oldest first. ``path`` is where the snapshot is now: its directory
        inside this campaign's directory (``posteriors/NNNN``) when that exists, so a campaign
        read from another working directory, or moved, still finds its snapshots (the ledger
        stores the path as the planner that wrote it named it)."""
        out = []
        for r in self._con.execute("SELECT * FROM snapshots ORDER BY id"):
            s = dict(r)
            stored = Path(s["path"])
            here = Path(self.path).parent.joinpath(*stored.parts[-2:])
            if len(stored.parts) >= 2 and here.exists():
                s["path"] = str(here)
            s["run_ids"] = json.loads(s.pop("run_ids_json"))
            rec = s.pop("recommendation_json")
            s["recommendation"] = json.loads(rec) if rec else None
            out.append(s)
        return out

    def latest_snapshot(self) -> dict | None:
        snaps = self.snapshots()
        return snaps[-1] if snaps else None
