"""One HR-only raster -> patches whose LR is the S2-like degradation of the HR (``--synthetic-lr``).

The HR is area-averaged onto a metric grid at ``lr_res / scale`` (its own CRS when metric, else the local UTM zone;
a raster without georeferencing keeps its pixel grid, given its pixel size) and cut into patches; a zoomed entry
(manifest ``hr_zoom``, scale augmentation) keeps its pixel grid too, with ``zoom`` times its ground pixel size, so its
objects come out that many times larger (a stand-in frame: its geography is no longer the ground's). The LR of each
patch is :func:`rssr_cli.degrade.degrade` of its HR, drawn from a seed per source and chunk so that a cache is
reproducible (training draws a fresh degradation every step anyway).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from rssr_cli.errors import DataError
from rssr_cli.patches import PatchCache
from rssr_cli.scene import Grid
from rssr_cli.train.grids import LOCAL_CRS, footprint, ground_pixel_size, is_metric, snapped_grid, to_crs, utm_crs
from rssr_cli.train.patching import Chunk, cache_part, chunks, collect, cut_offsets, patches_at
from rssr_cli.train.prepare_options import PrepareOptions
from rssr_cli.train.prepare_report import SourceReport
from rssr_cli.train.reading import Source, check_missing_bands, hr_radiometry, source_band_map, with_stand_ins
from rssr_cli.train.sources import SourceEntry, open_raster


@dataclass(frozen=True)
class _Placement:
    """Where an HR raster lies: its transform and CRS (stand-ins without georeferencing), the metric CRS it is
    cut in, its bounds there, and its ground pixel size."""

    transform: Affine
    crs: CRS
    work_crs: CRS
    bounds: tuple[float, float, float, float]
    pixel_m: float


def synthetic_patches(entry: SourceEntry, index: int, options: PrepareOptions, report: SourceReport) -> PatchCache:
    """The patches of one HR raster (``index`` numbers its source in the cache); what happened goes into ``report``."""
    with open_raster(entry.path) as ds:
        bmap = source_band_map(ds, entry.band_map(options.hr_bands, options.bands), options, role="hr")
        report.details["hr_band_map"] = f"{bmap.describe()} ({bmap.how})"
        check_missing_bands(bmap, options, report)
        rad = hr_radiometry(ds.dtypes[0], options)
        report.details["hr_radiometry"] = rad.describe()
        place = _placement(ds, entry, options)
        if entry.zoom != 1:
            report.details["hr_zoom"] = entry.zoom
        source = Source(ds, bmap, rad, place.transform, place.crs)
        lr_grid = _lr_grid(place, options, report)
        parts: list[PatchCache] = []
        rejected: Counter[str] = Counter()
        for k, chunk in enumerate(chunks(lr_grid.height, lr_grid.width, options)):
            seed = options.seed * 1_000_003 + index * 10_007 + k
            part = _chunk_patches(source, lr_grid, chunk, seed, index, options, rejected)
            if part is not None:
                parts.append(part)
    return collect(parts, rejected, report)


def _placement(ds, entry: SourceEntry, options: PrepareOptions) -> _Placement:
    georeferenced = ds.crs is not None and not (ds.transform == Affine.identity() and not ds.gcps[0])
    if georeferenced:
        if is_metric(ds.crs):
            work_crs = ds.crs
        else:
            c = footprint(ds).centroid
            work_crs = utm_crs(c.x, c.y)
        if entry.zoom == 1:
            return _Placement(ds.transform, ds.crs, work_crs, to_crs(footprint(ds), work_crs).bounds,
                              ground_pixel_size(ds, work_crs))
        res = ground_pixel_size(ds, work_crs)
    else:
        res = entry.res or options.hr_res
        if res is None:
            raise DataError("not georeferenced: give its pixel size in metres (--hr-res, or a manifest hr_res)")
    res *= entry.zoom
    # Source and target share the stand-in CRS, so the warp is a pure resampling by pixel size.
    return _Placement(Affine(res, 0, 0, 0, -res, ds.height * res), LOCAL_CRS, LOCAL_CRS,
                      (0.0, 0.0, ds.width * res, ds.height * res), res)


def _lr_grid(place: _Placement, options: PrepareOptions, report: SourceReport) -> Grid:
    """The LR grid the raster is cut on (snapped to multiples of ``lr_res``); refuses an HR much coarser than the
    target pixel and one smaller than a patch."""
    hr_res = float(options.lr_res / Fraction(options.scale))
    report.details["hr_ground_pixel_m"] = round(place.pixel_m, 4)
    report.details["crs"] = place.work_crs.to_string()
    if place.pixel_m > options.max_hr_coarsening * hr_res:
        raise DataError(f"HR pixel {place.pixel_m:.2f} m is coarser than the {hr_res:g} m target by more than "
                        f"x{options.max_hr_coarsening:g}")
    grid = snapped_grid(place.bounds, place.work_crs, options.lr_res, Fraction(options.scale).denominator)
    if grid is None or grid.width < options.patch or grid.height < options.patch:
        raise DataError(f"smaller than one patch ({options.patch} LR px = {options.patch * options.lr_res:g} m)")
    report.details["grid"] = {"crs": place.work_crs.to_string(), "lr_res": options.lr_res,
                              "transform": list(grid.transform)[:6], "width": grid.width, "height": grid.height}
    return grid


def _chunk_patches(source: Source, lr_grid: Grid, chunk: Chunk, seed: int, index: int, options: PrepareOptions,
                   rejected: Counter[str]) -> PatchCache | None:
    """The patches of one chunk with their degraded LR, or None when it has none."""
    import torch

    from rssr_cli.degrade import degrade

    s = Fraction(options.scale)
    warped = source.average_onto(lr_grid.window(Window(chunk.col, chunk.row, chunk.width, chunk.height)), s)
    if warped is None:
        return None
    hr = with_stand_ins(warped.data, warped.present, source.band_map, lr_up=None)
    offsets = cut_offsets(None, np.nan_to_num(hr), None, warped.valid, options, rejected, chunk.limit)
    if not offsets:
        return None
    hr_patches = patches_at(hr, offsets, int(options.patch * s), s)
    lr_patches = degrade(torch.from_numpy(hr_patches), s, generator=torch.Generator().manual_seed(seed)).numpy()
    valid_bands = np.array([src is not None for src in source.band_map.sources], dtype=bool)
    return cache_part(lr_patches, hr_patches, valid_bands, index, chunk, offsets, options)
