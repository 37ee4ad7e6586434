"""A PNG quick-look of an output (true colour B04/B03/B02, 2-98 % stretch), read from the COG's overviews."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

RGB_BANDS = ("B04", "B03", "B02")


def write_preview(cog: str | Path, png: str | Path | None = None, *, max_size: int = 1024) -> Path:
    """Write ``png`` (default: beside ``cog`` with a .png suffix) and return its path."""
    cog = Path(cog)
    png = Path(png) if png else cog.with_suffix(".png")
    with rasterio.open(cog) as src:
        names = list(src.descriptions)
        bands = [names.index(b) + 1 if b in names else i + 1 for i, b in enumerate(RGB_BANDS)][: src.count]
        factor = max(1.0, max(src.width, src.height) / max_size)
        shape = (len(bands), max(1, round(src.height / factor)), max(1, round(src.width / factor)))
        data = src.read(bands, out_shape=shape, resampling=Resampling.average, masked=True).astype(np.float32)
    valid = ~np.ma.getmaskarray(data).any(axis=0)
    rgb = np.zeros(shape, dtype=np.uint8)
    for i, band in enumerate(data.filled(np.nan)):
        values = band[valid]
        if values.size:
            lo, hi = np.percentile(values, (2, 98))
            stretched = np.clip((band - lo) / max(hi - lo, 1e-9) * 255, 0, 255)
            rgb[i] = np.where(valid, stretched, 0).astype(np.uint8)
    alpha = (valid * 255).astype(np.uint8)
    return write_png(np.concatenate([rgb, alpha[None]]), png)


def write_png(image: np.ndarray, path: str | Path) -> Path:
    """(bands, H, W) uint8 (3: RGB, 4: RGBA) -> a PNG through GDAL, with no georeferencing and no .aux.xml left
    beside it. Returns its path."""
    path = Path(path)
    with warnings.catch_warnings():  # a picture carries no georeferencing, by design
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        dst = rasterio.open(path, "w", driver="PNG", width=image.shape[2], height=image.shape[1],
                            count=image.shape[0], dtype="uint8")
    with dst:
        dst.write(image)
    path.with_name(path.name + ".aux.xml").unlink(missing_ok=True)
    return path
