"""Advisory file locks (fcntl.flock): released by the kernel when the holder dies, even by kill -9."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from locbench.errors import LocbenchError


class FileLock:
    """An exclusive lock on ``path``; ``acquire(blocking=False)`` returns False if another process holds it.

    ``with lock:`` fails at once when the lock is taken elsewhere; ``with lock.waiting():`` waits for it.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def held_elsewhere(self) -> bool:
        """True if another process holds the lock right now.

        Probes with a shared lock on a read-only descriptor: nothing is written (acquire() would rewrite the pid
        in the file), so it works in a folder the caller cannot write, such as a colleague's sweep.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the probe's shared lock
        return False

    @contextlib.contextmanager
    def waiting(self) -> Iterator[FileLock]:
        """Hold the lock for a ``with`` block, waiting as long as another process holds it."""
        self.acquire(blocking=True)
        try:
            yield self
        finally:
            self.release()

    def __enter__(self) -> FileLock:
        if not self.acquire(blocking=False):
            raise LocbenchError(f"{self.path.parent} is in use by another locbench process (lock {self.path})")
        return self

    def __exit__(self, *exc) -> None:
        self.release()
