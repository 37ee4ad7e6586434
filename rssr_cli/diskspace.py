"""Free space before a long run: refuse at once, with the numbers, when the outputs cannot fit.

A run that fills the disk after hours has wasted them; the estimate (:class:`rssr_cli.pipeline.UpscalePlan`:
scratch + output, uncompressed) is compared with what the output's filesystem has free before any work starts, and in
``--dry-run``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Mapping

from rssr_cli.errors import OutputError

__all__ = ["check_free_space", "free_bytes", "human_bytes"]


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def free_bytes(folder: Path) -> int | None:
    """Bytes free for an unprivileged writer in ``folder``, or None when it cannot be told (no such folder)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def check_free_space(folder: Path, needed: Mapping[str, int], free: int | None) -> None:
    """Refuse when the sum of ``needed`` (what -> bytes) exceeds ``free`` bytes in ``folder``."""
    total = sum(needed.values())
    if free is None or total <= free:
        return
    parts = " + ".join(f"{what} {human_bytes(n)}" for what, n in needed.items() if n)
    raise OutputError(f"not enough free space in {folder}: the run needs about {human_bytes(total)} ({parts}), "
                      f"{human_bytes(free)} is free; free some space or write elsewhere (-o/--output-dir)")
