"""Files appear complete or not at all: write under a hidden temporary name beside the target, rename when done.

A rename within one folder is atomic on POSIX filesystems, so a reader (or a crashed run) never sees half a COG, model,
patch cache, checkpoint or report. The temporary name keeps the target's suffix, because some writers choose their
format from it (``np.savez`` appends ``.npz``, GDAL picks drivers by extension).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rssr_cli.errors import OutputError

__all__ = ["atomic_write", "temporary_path"]


def temporary_path(path: Path, kind: str = "tmp") -> Path:
    """A hidden name beside ``path`` for work in progress of one process: ``.NAME.rssr-KIND-PID.SUFFIX``."""
    return path.with_name(f".{path.stem}.rssr-{kind}-{os.getpid()}{path.suffix}")


@contextmanager
def atomic_write(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; rename it to ``path`` when the block succeeds.

    On any error the temporary file is removed and ``path`` is left as it was. Without ``overwrite``, a ``path``
    that appeared while the content was being written is not replaced (:class:`OutputError`). The file gets the
    usual permissions (0666 minus the umask) whatever the writer created it with.
    """
    target = Path(path)
    tmp = temporary_path(target)
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"internal: nothing was written for {target}")
        if target.exists() and not overwrite:
            raise OutputError(f"{target} appeared while rssr was running; pass --overwrite to replace it")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
