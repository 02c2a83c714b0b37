"""SIGTERM handled like Ctrl-C.

A planner stopped by a scheduler or ``kill`` gets SIGTERM. ``handle_sigterm`` (called by the
CLI) turns it into ``Terminated``, a ``KeyboardInterrupt``, so the loop releases its in-flight
runs and the process exits cleanly (the CLI returns 128 + 15). Ray's ``ray.init`` installs its
own SIGTERM handler in the driver (exit at once, with a stack dump); ``keep_sigterm_handler``
puts ours back around such calls."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

EXIT_CODE = 128 + signal.SIGTERM
_received = False


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""


def _on_sigterm(signum, frame) -> None:
    global _received
    _received = True
    raise Terminated()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def handle_sigterm() -> None:
    """Raise ``Terminated`` on SIGTERM (main thread only; elsewhere signals cannot be set)."""
    if _main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def sigterm_received() -> bool:
    return _received


@contextlib.contextmanager
def keep_sigterm_handler() -> Iterator[None]:
    """Restore the SIGTERM handler a third-party call (``ray.init``) replaces."""
    before = signal.getsignal(signal.SIGTERM) if _main_thread() else None
    try:
        yield
    finally:
        if before is not None:
            signal.signal(signal.SIGTERM, before)
