"""How reflectance becomes output pixels: the output's data type, nodata value and per-band DN radiometry.

Integer outputs keep the input's DNs (``DN = (reflectance - offset) / scale`` with the input's radiometry) so that an
output reads like its input in any GIS; float inputs written as integers get the Sentinel-2 quantification. Every band
of an integer output declares that radiometry as GDAL scale/offset (1e-4 and -0.1 for a processing-baseline 04.00
product), so QGIS, GDAL and rasterio users read reflectance without knowing which baseline the input was. float32
outputs hold reflectance with NaN as nodata and declare nothing (scale 1, offset 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rssr_cli.scene import QUANTIFICATION, Radiometry, Scene


@dataclass(frozen=True)
class OutputEncoding:
    """``dtype`` and ``nodata`` of the output; ``radiometry`` per band for integers (None: float32 reflectance).

    ``declares_radiometry``: the output declares its radiometry as GDAL scale/offset, so GIS software shows
    reflectance (every integer output of :func:`output_encoding` does).
    """

    dtype: str
    nodata: float
    radiometry: tuple[Radiometry, ...] | None
    declares_radiometry: bool = False

    @property
    def scales(self) -> tuple[float, ...] | None:
        """Per-band scale to declare in the output, or None to declare none."""
        return tuple(r.scale for r in self.radiometry) if self.declares_radiometry and self.radiometry else None

    @property
    def offsets(self) -> tuple[float, ...] | None:
        """Per-band offset to declare in the output, or None to declare none."""
        return tuple(r.offset for r in self.radiometry) if self.declares_radiometry and self.radiometry else None

    def encode(self, reflectance: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Reflectance (C, h, w) -> output pixels of ``dtype``; ``nodata`` where ``valid`` (h, w) is False."""
        if self.radiometry is None:
            out = reflectance.astype(np.float32)
            out[:, ~valid] = np.nan
            return out
        info = np.iinfo(self.dtype)
        out = np.empty(reflectance.shape, dtype=self.dtype)
        for i, rad in enumerate(self.radiometry):
            dn = rad.to_dn(reflectance[i])
            np.clip(np.rint(dn, out=dn), info.min, info.max, out=dn)
            # A valid pixel must never read as nodata (e.g. DN 0 over dark water): nudge it one DN.
            dn[dn == self.nodata] += 1 if self.nodata < info.max else -1
            out[i] = dn
        out[:, ~valid] = self.nodata
        return out


def output_encoding(dtype: str, scene: Scene) -> OutputEncoding:
    """The encoding of an output of ``dtype`` (``uint16``, ``int16`` or ``float32``) for ``scene``."""
    if dtype == "float32":
        return OutputEncoding("float32", float("nan"), None)
    info = np.iinfo(dtype)
    nodata = scene.nodata if scene.nodata is not None and not math.isnan(scene.nodata) else 0.0
    if not info.min <= nodata <= info.max:
        nodata = 0.0
    if np.dtype(scene.dtype).kind == "f":  # float reflectance in, integers out: Sentinel-2 quantification
        radiometry = tuple(Radiometry(1 / QUANTIFICATION, 0.0, "default") for _ in scene.radiometry)
    else:
        radiometry = scene.radiometry
    return OutputEncoding(dtype, nodata, radiometry, declares_radiometry=True)
