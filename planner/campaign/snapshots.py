"""Which posterior snapshot a reader of a campaign can use: the newest one that loads.

A snapshot (``posteriors/NNNN``: NetCDF per target and ``meta.json``) can be damaged after the
ledger recorded it (a disk filled up, a file was deleted or truncated by hand). ``planner
status`` and ``planner report`` then fall back to the previous snapshot that loads, with its
recommendation as stored in the ledger, and say so in their warnings; when no snapshot loads
they refuse with one ``InputError`` line."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from planner.core.errors import InputError


@dataclass
class UsableSnapshot:
    """The newest loadable snapshot (``snapshot``: its ledger row, or None when the campaign has
    none), its posterior, and the newer snapshots that could not be loaded, newest first:
    ``damaged`` rows of {"id", "path", "error"}."""

    snapshot: dict | None = None
    posterior: Any = None
    damaged: list[dict] = field(default_factory=list)

    @property
    def id(self) -> int | None:
        return None if self.snapshot is None else int(self.snapshot["id"])

    def warnings(self) -> list[str]:
        """One line per damaged snapshot, naming the one used instead."""
        return [f"posterior snapshot {d['id']:04d} is damaged ({d['error']}); using snapshot "
                f"{self.id:04d} and its recommendation instead" for d in self.damaged]


def _why(e: Exception) -> str:
    first = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {first}"[:300]


def usable_snapshot(snapshots: list[dict], load: Callable[[str], Any]) -> UsableSnapshot:
    """The newest of ``snapshots`` (ledger rows, oldest first) that ``load(path)`` reads.

    Raises InputError when there are snapshots and none loads."""
    damaged = []
    for s in reversed(snapshots):
        try:
            post = load(s["path"])
        except Exception as e:  # noqa: BLE001 - any unreadable snapshot is damaged
            damaged.append({"id": int(s["id"]), "path": str(s["path"]), "error": _why(e)})
            continue
        return UsableSnapshot(s, post, damaged)
    if damaged:
        last = damaged[0]
        raise InputError(f"no usable posterior snapshot: all {len(damaged)} are damaged (latest "
                         f"{last['id']:04d} at {last['path']}: {last['error']}); rerun `planner "
                         f"run` with the campaign's config to refit")
    return UsableSnapshot()
