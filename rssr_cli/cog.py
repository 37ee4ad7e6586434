"""Writing outputs: a tiled BigTIFF scratch file beside the output, then a Cloud-Optimized GeoTIFF from it.

A COG needs its whole raster before it can be laid out (overviews come first in the file), and GDAL's COG driver is
create-copy only; so tiles are written into an uncompressed tiled BigTIFF scratch file (random access, any size) and
rio-cogeo turns it into the COG with ``average`` overviews, never in memory. Both files live beside the output under
hidden temporary names and the COG is renamed into place only when complete: a failed run leaves nothing behind.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import rasterio

from rssr_cli.atomic import atomic_write
from rssr_cli.errors import OutputError
from rssr_cli.scene import Grid

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


@contextmanager
def scratch_raster(path: Path, grid: Grid, *, count: int, dtype: str, nodata: float | None,
                   blocksize: int = 512) -> Iterator[rasterio.io.DatasetWriter]:
    """A tiled, uncompressed BigTIFF on ``grid``; removed when the block exits (also on error)."""
    profile = {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "count": count, "dtype": dtype,
        "crs": grid.crs, "transform": grid.transform, "nodata": nodata, "tiled": True,
        "blockxsize": blocksize, "blockysize": blocksize, "bigtiff": "YES", "sparse_ok": True,
        "interleave": "pixel",
    }
    try:
        with rasterio.open(path, "w", **profile) as dst:
            yield dst
    finally:
        path.unlink(missing_ok=True)


def describe(dst, *, descriptions: Sequence[str], tags: Mapping[str, str],
             scales: Sequence[float] | None = None, offsets: Sequence[float] | None = None) -> None:
    """Band descriptions, provenance tags and scale/offset on the scratch file (rio-cogeo carries them over)."""
    for i, text in enumerate(descriptions, start=1):
        dst.set_band_description(i, text)
    dst.update_tags(**{k: str(v) for k, v in tags.items()})
    if scales is not None:
        dst.scales = tuple(scales)
    if offsets is not None:
        dst.offsets = tuple(offsets)


def cog_profile(*, blocksize: int, creation_options: Mapping[str, str], nbytes: int) -> dict:
    from rio_cogeo.profiles import cog_profiles

    profile = dict(cog_profiles.get("deflate"))
    profile.update({"blockxsize": blocksize, "blockysize": blocksize, "predictor": 2})
    # Classic TIFF stops at 4 GiB; compressed data might cross it too, so decide on the uncompressed size.
    profile["bigtiff"] = "IF_SAFER" if nbytes < 2**32 else "YES"
    profile.update({k.lower(): v for k, v in creation_options.items()})
    return profile


def translate_to_cog(scratch: Path, output: Path, options: CogOptions) -> None:
    """scratch -> COG at ``output`` (via a temporary name, renamed when complete), then validated."""
    from rio_cogeo.cogeo import cog_translate, cog_validate

    with rasterio.open(scratch) as src:
        nbytes = src.width * src.height * src.count * np.dtype(src.dtypes[0]).itemsize
        is_float = np.dtype(src.dtypes[0]).kind == "f"
    profile = cog_profile(blocksize=options.blocksize, creation_options=options.creation_options, nbytes=nbytes)
    if is_float and profile.get("predictor") == 2:
        profile["predictor"] = 3  # floating-point predictor
    with atomic_write(output, overwrite=options.overwrite) as tmp:
        cog_translate(str(scratch), str(tmp), profile, overview_resampling=options.overview_resampling,
                      in_memory=False, quiet=True, config={"GDAL_NUM_THREADS": str(options.threads),
                                                           "GDAL_TIFF_INTERNAL_MASK": "TRUE"})
        valid, errors, _ = cog_validate(str(tmp), quiet=True)
        if not valid:
            raise OutputError(f"the written file is not a valid COG: {'; '.join(errors)}")
