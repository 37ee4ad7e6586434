"""One writer per output: a lock file beside it (``.NAME.rssr-lock``) that a second run finds taken.

The lock is an exclusive ``flock`` on that file, which the kernel releases when its process ends in any way (SIGKILL
and crashes included): a lock left by a dead run is free to take, with no PID guesswork and no race between two runs
taking it over. The file holds the holder's PID and host, so the run that is refused can say who writes the output.
It is removed when the holder releases it; a file left by a killed run is simply taken over.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from contextlib import suppress
from pathlib import Path

from rssr_cli.atomic import work_path
from rssr_cli.errors import OutputError

__all__ = ["OutputLock", "lock_path"]


def lock_path(output: Path) -> Path:
    return work_path(output, "lock")


class OutputLock:
    """Held while an output is written: ``with OutputLock(output): ...``; a second holder is refused at once.

    Raises :class:`OutputError` naming the other run's PID when the lock is taken.
    """

    def __init__(self, output: Path) -> None:
        self.output = Path(output)
        self.path = lock_path(self.output)
        self._fd: int | None = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputError(f"cannot create the lock {self.path}: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read(fd)
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise OutputError(f"{self.output} is being written by another rssr run ({holder or 'pid unknown'}"
                                      f"); wait for it to finish or stop it") from None
                raise OutputError(f"cannot lock {self.path}: {exc.strerror}") from None
            if _is_current(fd, self.path):
                break
            os.close(fd)  # the holder removed the file between our open and flock: lock the one there now
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with suppress(OSError):  # removed while still held, so that no one locks a file about to vanish
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


def _read(fd: int) -> str:
    with suppress(OSError):
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    return ""


def _is_current(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
