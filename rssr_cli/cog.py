"""Writing outputs: a Cloud-Optimized GeoTIFF from the scratch raster written beside the output.

A COG needs its whole raster before it can be laid out (overviews come first in the file), and GDAL's COG driver is
create-copy only; so blocks are written into an uncompressed raw scratch file (:mod:`rssr_cli.scratch`: random access,
any size, safe to keep after a kill) and rio-cogeo turns it (through a VRT) into the COG with ``average`` overviews,
never in memory. Everything lives beside the output under hidden names and the COG is renamed into place only when
complete: a failed run leaves nothing at the output path. Write errors (disk full, I/O errors, a folder turned
read-only) become one :class:`OutputError` naming the output.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np
import rasterio

from rssr_cli.atomic import atomic_write
from rssr_cli.errors import OutputError, RssrError, underlying_reason

OVERVIEW_RESAMPLINGS = ("average", "nearest", "bilinear", "cubic", "lanczos", "gauss", "rms")
OUTPUT_DTYPES = ("auto", "uint16", "int16", "float32")


@dataclass(frozen=True)
class CogOptions:
    """How a COG is laid out and put in place: rio-cogeo's deflate profile with these changes."""

    blocksize: int = 512
    creation_options: Mapping[str, str] = field(default_factory=dict)  # GDAL creation options, override the profile
    overview_resampling: str = "average"
    threads: str | int = "ALL_CPUS"  # GDAL_NUM_THREADS while compressing
    overwrite: bool = False  # replace an output that appeared while rssr was running


def check_output(path: Path, *, overwrite: bool) -> None:
    """Refuse to clobber an existing file without ``overwrite``; refuse folders that do not exist."""
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it")
    if path.is_dir():
        raise OutputError(f"{path} is a directory, not an output file")
    if not path.parent.exists():
        raise OutputError(f"the output folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise OutputError(f"the output folder {path.parent} is not writable")


def cog_profile(*, blocksize: int, creation_options: Mapping[str, str], nbytes: int) -> dict:
    from rio_cogeo.profiles import cog_profiles

    profile = dict(cog_profiles.get("deflate"))
    profile.update({"blockxsize": blocksize, "blockysize": blocksize, "predictor": 2})
    # Classic TIFF stops at 4 GiB; compressed data might cross it too, so decide on the uncompressed size.
    profile["bigtiff"] = "IF_SAFER" if nbytes < 2**32 else "YES"
    profile.update({k.lower(): v for k, v in creation_options.items()})
    return profile


def translate_to_cog(scratch: Path, output: Path, options: CogOptions, *, workdir: Path | None = None) -> None:
    """scratch (any raster GDAL reads; rssr passes a VRT over the raw scratch) -> COG at ``output`` (via a temporary
    name, renamed when complete), then validated. Failures to write (disk full, I/O errors) are one
    :class:`OutputError` that names ``output`` and the cause. ``workdir`` (an existing folder beside ``output``)
    receives the temporary files, rio-cogeo's intermediate among them, instead of ``output``'s folder."""
    with _held_stderr() as held:
        try:
            _translate(scratch, output, options, workdir)
        except RssrError:
            raise
        except (OSError, rasterio.errors.RasterioError) as exc:
            raise OutputError(f"cannot write {output}: {_reason(exc, held())}") from None


@contextmanager
def _held_stderr() -> Iterator[Callable[[], str]]:
    """Hold back what C libraries print straight to stderr while GDAL writes (libtiff prints
    ``_tiffWriteProc: No space left on device.`` once per failed write, beside the exception GDAL raises): the caller
    reads it (``held()``) to explain a failure in one line; after a success it is passed on to stderr unchanged."""
    with suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all (a daemon): nothing to hold
        yield lambda: ""
        return
    try:
        held = tempfile.TemporaryFile()
    except OSError:  # no room for a temporary file: let it through
        os.close(saved)
        yield lambda: ""
        return

    def text() -> str:
        held.seek(0)
        return held.read().decode(errors="replace")

    failed = True
    try:
        os.dup2(held.fileno(), 2)
        yield text
        failed = False
    finally:
        # Signals wait while stderr is given back, so that a Ctrl-C here cannot leave it redirected.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            os.dup2(saved, 2)
            os.close(saved)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if not failed:
            with suppress(OSError):
                os.write(2, text().encode())
        held.close()


def _reason(exc: Exception, printed: str = "") -> str:
    """One line of what went wrong: the OS's words (``No space left on device``) from the exception or from what
    libtiff printed, else the most specific of GDAL's messages."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    lines = [line.strip().rstrip(".") for line in printed.splitlines() if line.strip()]
    if lines:
        return lines[-1].split(": ", 1)[-1]
    return underlying_reason(exc)


def _translate(scratch: Path, output: Path, options: CogOptions, workdir: Path | None) -> None:
    from rio_cogeo.cogeo import cog_translate, cog_validate

    with rasterio.open(scratch) as src:
        nbytes = src.width * src.height * src.count * np.dtype(src.dtypes[0]).itemsize
        is_float = np.dtype(src.dtypes[0]).kind == "f"
    profile = cog_profile(blocksize=options.blocksize, creation_options=options.creation_options, nbytes=nbytes)
    if is_float and profile.get("predictor") == 2:
        profile["predictor"] = 3  # floating-point predictor
    with atomic_write(output, overwrite=options.overwrite, folder=workdir) as tmp:  # rio-cogeo's tmp goes beside tmp
        cog_translate(str(scratch), str(tmp), profile, overview_resampling=options.overview_resampling,
                      in_memory=False, quiet=True, config={"GDAL_NUM_THREADS": str(options.threads),
                                                           "GDAL_TIFF_INTERNAL_MASK": "TRUE"})
        valid, errors, _ = cog_validate(str(tmp), quiet=True)
        if not valid:
            raise OutputError(f"the written file is not a valid COG: {'; '.join(errors)}")
