"""One writer per run directory: an exclusive, non-blocking ``fcntl.flock`` on ``<directory>/.lock``.

The kernel drops the lock when its process ends, however it ends, so a crashed run never leaves a stale
lock behind; the pid written into the file only serves the message a second writer gets.

    with RunLock(out_dir):
        ...                      # nobody else writes into out_dir meanwhile
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from jaxebm.runs.errors import RunLocked

__all__ = ["RunLock"]


class RunLock:
    """Exclusive lock of ``directory`` (created if absent) while held; `RunLocked` if another process has it."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / ".lock"
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock without waiting; raises `RunLocked` naming the directory and the holder's pid."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLocked(f"run directory {self.directory} is in use by process {holder} (lock file {self.path}): "
                            "wait for it to finish or stop it, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (closing the file descriptor releases the flock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()
