"""The campaign journal: events logged both to the user's logging and to ``CAMPAIGN_DIR/planner.log``."""
from __future__ import annotations

import logging
from pathlib import Path

LOG_NAME = "planner.log"


class JournalLog:
    """Logs to the named logger (the user's logging config decides what reaches stderr) and to
    the campaign journal (``CAMPAIGN_DIR/planner.log``, every INFO event, with tracebacks)."""

    def __init__(self, name: str):
        self.log = logging.getLogger(name)

    def _emit(self, level: int, msg: str, *args, exc_info: bool = False) -> None:
        JOURNAL.log(level, msg, *args, exc_info=exc_info)
        self.log.log(level, msg, *args)

    def info(self, msg, *args, **kw):
        self._emit(logging.INFO, msg, *args, **kw)

    def warning(self, msg, *args, **kw):
        self._emit(logging.WARNING, msg, *args, **kw)

    def error(self, msg, *args, **kw):
        self._emit(logging.ERROR, msg, *args, **kw)


# the campaign journal: file handlers only (planner.campaign attaches one per campaign run)
JOURNAL = logging.getLogger("planner_journal")


JOURNAL.propagate = False


JOURNAL.setLevel(logging.INFO)


JOURNAL.addHandler(logging.NullHandler())


def attach_journal(campaign_dir: str | Path) -> logging.Handler:
    """Send the journal to ``CAMPAIGN_DIR/planner.log`` (appended) until the returned handler
    is removed from ``JOURNAL`` and closed."""
    h = logging.FileHandler(Path(campaign_dir) / LOG_NAME)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    h.setLevel(logging.INFO)
    JOURNAL.addHandler(h)
    return h
