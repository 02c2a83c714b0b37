"""What a fit is doing: one log line per finished phase, and a live status line on a terminal.

Every phase of a fit (Huber fit, mode search, warm-up, sampling, the Laplace grid and moves)
runs inside ``reporter.phase(target, name, total)``. When it ends, one INFO line goes to the
``planner.inference`` logger: target, phase, seconds and a summary. With a ``stream`` (``fit``'s
``progress=True`` draws on stderr; ``planner fit`` does so when stderr is a terminal) a status
line is redrawn in place while the phase runs:

    [pile_cc] sampling, chains 1-2: 600/1000 iterations, 14 s, ETA 9 s

The ETA extrapolates the rate since the phase's first update (which includes compiling).
"""
from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager

log = logging.getLogger("planner.inference")


def _secs(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


class Phase:
    """A running phase: ``update(done, note)`` redraws the status line; ``summary`` (set by the
    caller) ends up in the phase's log line."""

    def __init__(self, reporter: Reporter, target: str, name: str, total: int | None,
                 unit: str, chains: str):
        self.reporter, self.target, self.name = reporter, target, name
        self.total, self.unit, self.chains = total, unit, chains
        self.t0 = time.perf_counter()
        self._first: tuple[float, int] | None = None
        self.summary = ""

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def eta(self, done: int) -> float | None:
        now = time.perf_counter()
        if self._first is None:
            self._first = (now, done)
            return None
        t1, d1 = self._first
        if not self.total or done <= d1 or now <= t1:
            return None
        return (self.total - done) * (now - t1) / (done - d1)

    def line(self, done: int | None = None, note: str = "") -> str:
        head = f"[{self.target}] {self.name}" + (f", {self.chains}" if self.chains else "")
        parts = []
        if done is not None and self.total:
            parts.append(f"{done}/{self.total} {self.unit}")
        parts.append(_secs(self.elapsed))
        eta = self.eta(done) if done is not None else None
        if eta is not None:
            parts.append(f"ETA {_secs(eta)}")
        if note:
            parts.append(note)
        return head + ": " + ", ".join(parts)

    def update(self, done: int | None = None, note: str = "") -> None:
        self.reporter.draw(self.line(done, note))


class Reporter:
    """Phase lines to the log; a live line on ``stream`` (None: log only)."""

    def __init__(self, stream=None, min_interval_s: float = 0.25):
        self.stream = stream
        self.min_interval_s = min_interval_s
        self._last = 0.0
        self._width = 0

    def draw(self, text: str, force: bool = False) -> None:
        if self.stream is None:
            return
        now = time.perf_counter()
        if not force and now - self._last < self.min_interval_s:
            return
        self._last = now
        pad = max(0, self._width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)

    def end_line(self, text: str) -> None:
        if self.stream is None:
            return
        self.draw(text, force=True)
        self.stream.write("\n")
        self.stream.flush()
        self._width = 0

    @contextmanager
    def phase(self, target: str, name: str, total: int | None = None,
              unit: str = "iterations", chains: str = ""):
        ph = Phase(self, target, name, total, unit, chains)
        ph.update(0 if total else None)
        ok = False
        try:
            yield ph
            ok = True
        finally:
            status = "done" if ok else "stopped"
            msg = f"{target}: {name} {status} in {ph.elapsed:.1f} s"
            if ph.summary:
                msg += f" ({ph.summary})"
            log.info(msg)
            self.end_line(f"[{target}] {name} {status}, {_secs(ph.elapsed)}"
                          + (f": {ph.summary}" if ph.summary else ""))


def reporter_for(progress) -> Reporter:
    """``fit``'s ``progress`` argument: a ``Reporter``, True (draw on stderr) or False (log
    lines only)."""
    if isinstance(progress, Reporter):
        return progress
    return Reporter(sys.stderr if progress else None)
