"""Exceptions raised by the rssr library.

Every error a user can cause is an :class:`RssrError`; the CLI turns one into a single-line message and an exit code.
Subclasses also inherit from a built-in exception so that callers can catch them the way they already do.
"""

from __future__ import annotations

import signal


class RssrError(Exception):
    """Base class of every error rssr reports to its user. ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1


class InputError(RssrError, ValueError):
    """The input raster cannot be used: not georeferenced, too few bands, unreadable, bad scale/offset."""


class AOIError(RssrError, ValueError):
    """The area of interest is malformed or does not intersect the scene."""


class OutputError(RssrError, OSError):
    """The output cannot be written: it exists without ``--overwrite``, or the folder is not writable."""


class WeightsError(RssrError, ValueError):
    """A weights file is missing, corrupt, truncated or does not match what it is used for."""


class DataError(RssrError, ValueError):
    """A training archive, manifest or patch cache cannot be used."""


class TrainingError(RssrError, RuntimeError):
    """Training cannot go on (for example the loss became NaN or infinite)."""


class UsageError(RssrError, ValueError):
    """Options that contradict each other or values out of range; the CLI exits with 2 as for other usage errors."""

    exit_code = 2


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (SIGINT, SIGTERM; :mod:`rssr_cli.interrupt`).

    A :class:`KeyboardInterrupt`, not an :class:`RssrError`: it stops a whole batch, not one input, and code that
    handles Ctrl-C handles it. What an interrupted upscale finished is kept for ``--resume``. The CLI exits with
    128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as shells do.
    """

    def __init__(self, signum: int = signal.SIGINT) -> None:
        self.signum = int(signum)
        super().__init__(f"interrupted by {self.signal_name}")

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def underlying_reason(exc: BaseException) -> str:
    """The most specific words in ``exc``'s chain of causes: the OS's (``No space left on device``) when there are
    some, else the deepest of GDAL's messages (rasterio's own, "Read failed. See previous exception for details.",
    says nothing), without libtiff's function-name prefix."""
    texts: list[str] = []
    cause: BaseException | None = exc
    while cause is not None and len(texts) < 10:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        texts.append(str(cause).strip())
        cause = cause.__cause__ or cause.__context__
    useful = [t for t in texts if t and "previous exception" not in t]
    if not useful:
        return type(exc).__name__
    last = useful[-1].splitlines()[-1]
    head, sep, rest = last.partition(":")
    return rest.strip() if sep and head.startswith("TIFF") and " " not in head else last

