"""The data-directory lock: one writer (Store or writer process) per directory."""

from __future__ import annotations

import fcntl
import os

from hydra.errors import StoreLocked

LOCK_NAME = "hydra.lock"


class DirectoryLock:
    """An exclusive ``flock`` on ``DIR/hydra.lock``, held until ``release``.

    flock (not a PID file) so the kernel drops it when the owner dies, even on
    SIGKILL, and a stale lock can never block recovery.
    """

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, LOCK_NAME)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLocked(
                f"data directory {directory} is locked by another Hydra process "
                f"(a writer or an embedded Store already owns it)"
            ) from None
        # Record the owner for operators; the flock, not this text, is the lock.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
