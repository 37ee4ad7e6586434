"""Stopping on SIGINT and SIGTERM at a point the run can come back to.

Job schedulers stop a job with SIGTERM (then SIGKILL after a grace period), people with Ctrl-C. Inside
:func:`stop_on_signals` either signal raises :class:`rssr_cli.errors.Interrupted` in the main thread, wherever it is
(Python runs the handler between bytecodes, so a long torch or GDAL call finishes first). What is written at that
moment is consistent on disk by construction (:mod:`rssr_cli.resume` journals a row of tiles only after its pixels are
on disk), so an exception anywhere is safe: the block in flight is dropped and ``--resume`` redoes it. Further signals
while the run winds down are ignored, so that the cleanup itself is not interrupted.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Iterator

from rssr_cli.errors import Interrupted

__all__ = ["stop_on_signals"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` (once); outside it, the previous handlers.

    Outside the main thread (where Python cannot install handlers) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            return  # already winding down: let the cleanup finish
        stopping = True
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
