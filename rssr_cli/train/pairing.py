"""One real LR/HR pair -> aligned patches.

1. the band maps and radiometries of both rasters are decided (and reported);
2. the LR is read on its own grid over the overlap, or resampled onto the local UTM zone at ``lr_res`` when its CRS
   is not metric (:func:`~rssr_cli.train.grids.lr_work_grid`);
3. chunk by chunk, the HR is area-averaged onto the grid exactly ``scale`` x finer than the LR chunk, registered and
   radiometrically fitted to it (:func:`~rssr_cli.train.registration.register_and_fit`), and cut where every LR and
   HR pixel is valid (:mod:`~rssr_cli.train.patching`).

A rejected pair raises :class:`~rssr_cli.errors.DataError` with the reason; a rejected chunk is counted and reported.
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from rssr_cli.bands import S2_STACK_POSITIONS, Radiometry
from rssr_cli.errors import DataError
from rssr_cli.patches import PatchCache
from rssr_cli.scene import Grid
from rssr_cli.train.grids import footprint, ground_pixel_size, lr_work_grid, warp_bilinear
from rssr_cli.train.patching import Chunk, cache_part, chunks, collect, cut_offsets, patches_at
from rssr_cli.train.prepare_options import PrepareOptions
from rssr_cli.train.prepare_report import SourceReport
from rssr_cli.train.reading import Source, check_missing_bands, hr_radiometry, source_band_map, with_stand_ins
from rssr_cli.train.registration import ChunkRejected, misregistration_hint, register_and_fit
from rssr_cli.train.sources import SourceEntry

#: A chunk with less valid LR than this is skipped before any HR is read.
MIN_LR_VALID = 0.25


def pair_patches(lr_entry: SourceEntry, hr_entry: SourceEntry, index: int, options: PrepareOptions,
                 report: SourceReport) -> PatchCache:
    """The patches of one pair (``index`` numbers its source in the cache); what happened goes into ``report``."""
    with rasterio.open(lr_entry.path) as lds, rasterio.open(hr_entry.path) as hds:
        if lds.crs is None or hds.crs is None:
            raise DataError("a real pair needs georeferenced LR and HR")
        lr_source, hr_source = _sources(lds, hds, lr_entry, hr_entry, options, report)
        lr_grid, lr_offset = _work_grid(lds, hds, options, report)
        lr_all, lr_valid_all = _read_lr(lr_source, lr_grid, lr_offset)
        parts: list[PatchCache] = []
        rejected: Counter[str] = Counter()
        for chunk in chunks(lr_grid.height, lr_grid.width, options):
            part = _chunk_patches(hr_source, lr_grid, lr_all, lr_valid_all, chunk, index, options, report, rejected)
            if part is not None:
                parts.append(part)
    report.details["grid"] = {"crs": lr_grid.crs.to_string(), "transform": list(lr_grid.transform)[:6],
                              "width": lr_grid.width, "height": lr_grid.height}
    hint = misregistration_hint(report.chunks, options.max_shift)
    if hint is not None:
        report.hints.append(hint)
    return collect(parts, rejected, report)


def _sources(lds, hds, lr_entry: SourceEntry, hr_entry: SourceEntry, options: PrepareOptions,
             report: SourceReport) -> tuple[Source, Source]:
    """The LR and HR with their band maps and radiometries; the LR must have every model band (the model's input)."""
    lr_map = source_band_map(lds, lr_entry.band_map(options.lr_bands, options.bands), options, role="lr",
                             default_positions=S2_STACK_POSITIONS)
    report.details["lr_band_map"] = f"{lr_map.describe()} ({lr_map.how})"
    if lr_map.missing:
        raise DataError(f"LR lacks model band(s) {', '.join(lr_map.missing)} (the model's input needs them)")
    hr_map = source_band_map(hds, hr_entry.band_map(options.hr_bands, options.bands), options, role="hr")
    report.details["hr_band_map"] = f"{hr_map.describe()} ({hr_map.how})"
    check_missing_bands(hr_map, options, report)
    lr_rad = options.lr_radiometry or Radiometry.for_dtype(lds.dtypes[0])
    hr_rad = hr_radiometry(hds.dtypes[0], options)
    report.details["lr_radiometry"] = lr_rad.describe()
    report.details["hr_radiometry"] = hr_rad.describe()
    return (Source(lds, lr_map, lr_rad, lds.transform, lds.crs),
            Source(hds, hr_map, hr_rad, hds.transform, hds.crs))


def _work_grid(lds, hds, options: PrepareOptions, report: SourceReport) -> tuple[Grid, tuple[int, int] | None]:
    """The LR working grid over the overlap, and the LR's offset on it when no resampling is needed; refuses an HR
    much coarser than the target pixel (it would teach the model to blur)."""
    overlap = footprint(lds).intersection(footprint(hds))
    lr_grid, lr_offset = lr_work_grid(lds, overlap, lr_res=options.lr_res,
                                      multiple=Fraction(options.scale).denominator)
    lr_res = lr_grid.res[0]
    report.details["crs"] = lr_grid.crs.to_string()
    report.details["lr_pixel_m"] = lr_res
    report.details["lr_resampled"] = lr_offset is None
    src_px = ground_pixel_size(hds, lr_grid.crs)
    report.details["hr_ground_pixel_m"] = round(src_px, 4)
    if src_px > options.max_hr_coarsening * lr_res / float(options.scale):
        raise DataError(f"HR pixel {src_px:.2f} m is coarser than the {lr_res / float(options.scale):g} m target "
                        f"by more than x{options.max_hr_coarsening:g}")
    return lr_grid, lr_offset


def _read_lr(lr: Source, grid: Grid, offset: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """LR reflectance (C, h, w) and validity on ``grid``: a window of its own pixels, or resampled."""
    if offset is not None:
        r0, c0 = offset
        refl, valid, _ = lr.read(Window(c0, r0, grid.width, grid.height), zero_is_nodata=True)
        return refl, valid
    refl, valid, _ = lr.read(zero_is_nodata=True)
    data, valid_fraction = warp_bilinear(refl, valid, lr.transform, lr.crs, grid)
    return data, valid_fraction > 0


def _chunk_patches(hr: Source, lr_grid: Grid, lr_all: np.ndarray, lr_valid_all: np.ndarray, chunk: Chunk,
                   index: int, options: PrepareOptions, report: SourceReport,
                   rejected: Counter[str]) -> PatchCache | None:
    """The patches of one chunk, or None when it is rejected or has no valid patch (counted in ``rejected``)."""
    rows, cols = slice(chunk.row, chunk.row + chunk.height), slice(chunk.col, chunk.col + chunk.width)
    lr, lr_valid = lr_all[:, rows, cols], lr_valid_all[rows, cols]
    info: dict[str, Any] = {"row": chunk.row, "col": chunk.col}
    report.chunks.append(info)
    try:
        if lr_valid.mean() < MIN_LR_VALID:
            raise ChunkRejected("LR mostly nodata")
        chunk_grid = lr_grid.window(Window(chunk.col, chunk.row, chunk.width, chunk.height))
        aligned = register_and_fit(hr, chunk_grid, lr, lr_valid, options, info)
    except ChunkRejected as exc:
        info["status"] = f"rejected: {exc}"
        info["rejection"] = exc.kind
        rejected[f"chunk: {exc.kind}"] += 1
        return None
    info["status"] = "kept"
    s = Fraction(options.scale)
    hr_data = with_stand_ins(aligned.data, aligned.present, hr.band_map, lr_up=_upsample(lr, s))
    offsets = cut_offsets(lr, np.nan_to_num(hr_data), lr_valid, aligned.valid, options, rejected, chunk.limit)
    info["patches"] = len(offsets)
    if not offsets:
        return None
    valid_bands = np.array([src is not None for src in hr.band_map.sources], dtype=bool)
    return cache_part(patches_at(lr, offsets, options.patch), patches_at(hr_data, offsets, int(options.patch * s), s),
                      valid_bands, index, chunk, offsets, options)


def _upsample(lr: np.ndarray, scale: Fraction) -> np.ndarray:
    """The LR on the HR grid (the stand-in of a masked HR band in a real pair)."""
    import torch

    from rssr_cli.degrade import upsample

    return upsample(torch.from_numpy(np.ascontiguousarray(lr))[None], scale)[0].numpy()
