"""Files appear complete or not at all: write under a hidden temporary name beside the target, rename when done.

A rename within one folder is atomic on POSIX filesystems, so a reader (or a crashed run) never sees half a COG, model,
patch cache, checkpoint or report. The content is flushed to disk before the rename and the folder after it, so that
a power loss cannot leave the target empty or half-written either. The temporary name keeps the target's suffix,
because some writers choose their format from it (``np.savez`` appends ``.npz``, GDAL picks drivers by extension).

Work that outlives one process (the partial output and journal of an interrupted upscale, :mod:`rssr_cli.resume`;
the lock of an output, :mod:`rssr_cli.lock`) lives under deterministic hidden names beside its target
(:func:`work_path`), so that the next run finds it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

from rssr_cli.errors import OutputError

__all__ = ["atomic_write", "fsync_folder", "temporary_path", "work_path"]


def temporary_path(path: Path, kind: str = "tmp") -> Path:
    """A hidden name beside ``path`` for work in progress of one process: ``.NAME.rssr-KIND-PID.SUFFIX``."""
    return path.with_name(f".{path.stem}.rssr-{kind}-{os.getpid()}{path.suffix}")


def work_path(path: Path, kind: str) -> Path:
    """A hidden name beside ``path`` that every run targeting ``path`` agrees on: ``.NAME.rssr-KIND``."""
    return path.with_name(f".{path.name}.rssr-{kind}")


def fsync_folder(folder: Path) -> None:
    """Make the names created, renamed or removed in ``folder`` durable (best effort: some filesystems refuse)."""
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | os.PathLike[str], *, overwrite: bool = True,
                 folder: Path | None = None) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; rename it to ``path`` when the block succeeds.

    On any error the temporary file is removed and ``path`` is left as it was. Without ``overwrite``, a ``path``
    that appeared while the content was being written is not replaced (:class:`OutputError`). The file gets the
    usual permissions (0666 minus the umask) whatever the writer created it with. ``folder`` (on the target's
    filesystem) holds the temporary file instead of the target's folder, for writers that leave files of their own
    beside it.
    """
    target = Path(path)
    tmp = temporary_path(target)
    if folder is not None:
        tmp = folder / tmp.name
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"internal: nothing was written for {target}")
        if target.exists() and not overwrite:
            raise OutputError(f"{target} appeared while rssr was running; pass --overwrite to replace it")
        os.chmod(tmp, 0o666 & ~_umask())
        _fsync_file(tmp)
        os.replace(tmp, target)
        fsync_folder(target.parent)
    finally:
        with suppress(OSError):  # a folder turned read-only: report the first error, not this one
            tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
