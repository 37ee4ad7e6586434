"""How glibc hands big blocks back to the kernel: one process-wide knob, set for the kind of work at hand.

glibc serves blocks above its mmap threshold with fresh mmaps (returned on free, paid for in page faults when
touched) and smaller ones from the heap (kept after free). By default the threshold moves up to 32 MB after big frees.

- The geospatial pipeline frees tile-sized numpy temporaries all the time: with the moving threshold they end up in
  the heap and RSS grows with the number of tiles, not with live memory. :func:`return_big_blocks` pins it at 4 MiB.
- A CPU network evaluation allocates and frees 30-200 MB activations many times per step: as fresh mmaps a third of
  the CPU time went to page faults (sys 3.5 s of 12 s per 1200² tile). :func:`keep_big_blocks` keeps them in the heap;
  the process then holds its peak heap, which a long diffusion run reaches anyway.
"""

from __future__ import annotations

import ctypes
import logging
import sys

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from malloc.h


def _mallopt(*settings: tuple[int, int]) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = all(libc.mallopt(param, value) == 1 for param, value in settings)
    except (OSError, AttributeError):  # not glibc
        return False
    logger.debug("glibc mallopt %s: %s", settings, "applied" if ok else "refused")
    return ok


def return_big_blocks() -> bool:
    """Blocks of 4 MiB and more are mmapped and returned on free; True if applied."""
    return _mallopt((_M_MMAP_THRESHOLD, 4 << 20))


def keep_big_blocks() -> bool:
    """Freed blocks up to 1 GiB stay in the heap for reuse; True if applied."""
    return _mallopt((_M_MMAP_THRESHOLD, 1 << 30), (_M_TRIM_THRESHOLD, 1 << 30))
