"""The one-writer lock of a campaign directory: an exclusive ``flock`` on ``.planner.lock``
(the kernel drops it when the holder dies, even by SIGKILL, so a crash never blocks a resume)."""
from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path

from planner.core.errors import LedgerError

LOCK_NAME = ".planner.lock"


# --------------------------------------------------------------------------------------------
# the lock
# --------------------------------------------------------------------------------------------
class CampaignLock:
    """Exclusive, non-blocking flock on CAMPAIGN_DIR/.planner.lock (released on process death)."""

    def __init__(self, campaign_dir: str | Path):
        self.path = Path(campaign_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = ""
            try:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            except OSError:
                pass
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LedgerError(
                    f"campaign {self.path.parent} is in use by another planner"
                    f"{' (' + holder + ')' if holder else ''}; wait for it to finish or stop it "
                    f"before running another command that writes to this campaign") from None
            raise LedgerError(f"cannot lock campaign {self.path.parent}: {e}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None
