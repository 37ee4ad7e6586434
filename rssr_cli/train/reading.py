"""A training source read as reflectance of the model bands: band map, radiometry, validity, stand-ins.

A :class:`Source` is an opened raster with the band map and :class:`~rssr_cli.bands.Radiometry` it is read with.
Reading returns only the model bands the source has (``present``); :func:`with_stand_ins` completes them on the HR
grid where the user chose to mask a missing band (see :mod:`rssr_cli.train.bands`).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Mapping

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from rssr_cli.bands import Radiometry, dn_to_reflectance, stand_in_nir
from rssr_cli.errors import DataError
from rssr_cli.scene import Grid
from rssr_cli.train.bands import BandMap, resolve_band_map
from rssr_cli.train.grids import source_window, warp_average
from rssr_cli.train.prepare_options import PrepareOptions
from rssr_cli.train.prepare_report import SourceReport

#: A target pixel counts as valid when valid source pixels cover this fraction of it (1 up to resampling noise).
FULLY_VALID = 0.999


@dataclass(frozen=True)
class Warped:
    """A source's present model bands (``data[k]`` is model band ``present[k]``) on a target grid, and the
    target pixels fully covered by valid source pixels."""

    data: np.ndarray
    valid: np.ndarray
    present: list[int]


@dataclass(frozen=True)
class Source:
    """An opened raster and how to read it. ``transform``/``crs`` are the dataset's own, or stand-ins (a local
    metric CRS and the pixel size) for a raster without georeferencing."""

    ds: rasterio.io.DatasetReader
    band_map: BandMap
    radiometry: Radiometry
    transform: Affine
    crs: CRS

    def read(self, window: Window | None = None, *, zero_is_nodata: bool = False
             ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Reflectance of the mapped bands present in the source, (C_present, h, w), the valid mask (h, w) and the
        model band index of each row.

        Invalid: masked by the dataset (nodata, internal mask, alpha) in any mapped band, saturated DNs, non-finite
        values, and with ``zero_is_nodata`` (Sentinel-2-like LR) for integer sources without a declared nodata, DN 0
        in every band.
        """
        present = [c for c, s in enumerate(self.band_map.sources) if s is not None]
        idx = [self.band_map.sources[c] for c in present]
        dn = self.ds.read(idx, window=window, boundless=False)
        masks = self.ds.read_masks(idx, window=window)
        undeclared_zero = zero_is_nodata and self.ds.nodata is None and np.issubdtype(dn.dtype, np.integer)
        refl, valid = dn_to_reflectance(dn, [self.radiometry] * len(idx), nodata=0.0 if undeclared_zero else None,
                                        nodata_in_every_band=True)
        valid &= (masks > 0).all(axis=0)
        return refl, valid, present

    def average_onto(self, grid: Grid, scale: Fraction) -> Warped | None:
        """The source area-averaged onto the grid ``scale`` x finer than ``grid``; None where it does not cover it."""
        win = source_window(self.ds, self.transform, self.crs, grid)
        if win is None:
            return None
        refl, valid, present = self.read(win)
        data, frac = warp_average(refl, valid, self.transform @ Affine.translation(win.col_off, win.row_off),
                                  self.crs, grid.zoom(scale))
        return Warped(data, frac >= FULLY_VALID, present)


def source_band_map(ds: rasterio.io.DatasetReader, explicit: Mapping[str, int | None] | None,
                    options: PrepareOptions, *, role: str,
                    default_positions: Mapping[str, int] | None = None) -> BandMap:
    """:func:`~rssr_cli.train.bands.resolve_band_map` from the dataset's descriptions and colour interpretation."""
    return resolve_band_map(options.bands, ds.count, ds.descriptions, [c.name for c in ds.colorinterp], explicit,
                            role=role, default_positions=default_positions)


def hr_radiometry(dtype: str, options: PrepareOptions) -> Radiometry:
    """The HR radiometry for a source of ``dtype``: ``hr_display`` applies to 8-bit sources only and
    ``hr_radiometry`` (linear) to the others, so that one archive can mix 8-bit orthophotos and 16-bit reflectance
    products (SWISSIMAGE + Satellogic) with an override for each."""
    if np.dtype(dtype) == np.uint8:
        return options.hr_display or Radiometry.for_dtype(dtype)
    return options.hr_radiometry or Radiometry.for_dtype(dtype)


def check_missing_bands(bmap: BandMap, options: PrepareOptions, report: SourceReport) -> None:
    """Refuse an HR source that lacks model bands unless the user chose to mask them, and only NIR can be masked
    (its stand-in comes from the visible bands)."""
    missing = bmap.missing
    if not missing:
        return
    if options.missing_band == "error":
        raise DataError(f"HR lacks model band(s) {', '.join(missing)}; map it with --hr-bands, or pass "
                        f"--missing-band mask to train without it for this source")
    unsupported = [b for b in missing if b != "B08"]
    if unsupported:
        raise DataError(f"HR lacks visible band(s) {', '.join(unsupported)}; only a missing B08 (NIR) can be masked")
    if not {"B02", "B03", "B04"} <= set(options.bands):
        raise DataError("a masked B08 needs B02, B03 and B04 for its stand-in")
    report.details["masked_bands"] = list(missing)


def with_stand_ins(data: np.ndarray, present: list[int], bmap: BandMap, lr_up: np.ndarray | None) -> np.ndarray:
    """All model bands on the HR grid: the present ones, and masked ones filled with a stand-in (the upsampled LR
    band for real pairs, :func:`~rssr_cli.bands.stand_in_nir` of the HR for synthetic ones). Masked bands never
    reach the loss."""
    out = np.zeros((len(bmap.bands),) + data.shape[1:], dtype=np.float32)
    for k, band in enumerate(present):
        out[band] = data[k]
    for band, src in enumerate(bmap.sources):
        if src is None:
            if lr_up is not None:
                out[band] = lr_up[band]
            else:
                rgb = np.stack([out[bmap.bands.index(b)] for b in ("B02", "B03", "B04")])
                out[band] = stand_in_nir(np.nan_to_num(rgb))
    return out
