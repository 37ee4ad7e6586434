"""Grids for training pairs: metric working CRSs, footprints, and the HR grid exactly ``scale`` x finer than the LR.

Also the windows that cover a grid, and the LR working grid of a pair (the LR's own pixels where it can be).

Why a metric CRS: the model maps 10 m to 0.8 m on the ground. EPSG:3857 pixel sizes are map units, ``1/cos(lat)``
larger than ground metres (1.19 m map = 0.82 m ground at 46.5 N), and degrees are not lengths at all, so sources in
those CRSs are resampled onto the local UTM zone before anything is cut.
"""

from __future__ import annotations

import math

import numpy as np
import rasterio
import shapely
from affine import Affine
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info
from rasterio.crs import CRS
from rasterio.warp import Resampling, reproject, transform_bounds, transform_geom
from rasterio.windows import Window, from_bounds
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry

from rssr_cli.errors import DataError
from rssr_cli.scene import Grid

#: Each edge of a footprint gets at least this many points before reprojection.
DENSIFY_POINTS = 16

#: A stand-in CRS for rasters without georeferencing (resampled by pixel size only: source and target share it, so
#: the warp is a pure affine resampling). Never written to an output.
LOCAL_CRS = CRS.from_epsg(32631)


def is_metric(crs: CRS | None) -> bool:
    """Projected, in metres, and not a Mercator (whose map units are not ground metres away from the equator)."""
    if crs is None or not crs.is_projected:
        return False
    if (crs.linear_units or "").lower() not in ("metre", "meter", "m"):
        return False
    import pyproj

    method = pyproj.CRS.from_wkt(crs.to_wkt()).coordinate_operation
    name = (method.method_name if method is not None else "").lower()
    return not ("mercator" in name and "transverse" not in name)


def utm_crs(lon: float, lat: float) -> CRS:
    """The WGS 84 UTM zone of a point, from the zones' areas of use in the PROJ database. A point on a zone edge
    gets the zone east of it, a point on the equator the northern zone."""
    zones = query_utm_crs_info(datum_name="WGS 84", area_of_interest=AreaOfInterest(lon, lat, lon, lat))
    if not zones:
        raise DataError(f"no UTM zone covers lon {lon:.4f}, lat {lat:.4f} (UTM ends at 84 N and 80 S); "
                        "reproject the raster to a metric CRS such as a polar stereographic one")
    east_north = max(zones, key=lambda z: (z.area_of_use.west, z.area_of_use.south))
    return CRS.from_epsg(int(east_north.code))


def footprint(ds: rasterio.io.DatasetReader) -> BaseGeometry:
    """The raster's outline in lon/lat, its edges densified so that they stay accurate as curves after
    reprojection."""
    minx, miny, maxx, maxy = ds.bounds
    outline = shapely.segmentize(box(minx, miny, maxx, maxy), min(maxx - minx, maxy - miny) / DENSIFY_POINTS)
    return shape(transform_geom(ds.crs, "EPSG:4326", mapping(outline)))


def to_crs(geom: BaseGeometry, crs: CRS) -> BaseGeometry:
    """A lon/lat geometry in ``crs``."""
    return shape(transform_geom("EPSG:4326", crs, mapping(geom)))


def snapped_grid(bounds: tuple[float, float, float, float], crs: CRS, res: float, multiple: int) -> Grid | None:
    """The largest grid of ``res`` pixels inside ``bounds`` whose corner lies on multiples of ``res`` and whose
    sizes are multiples of ``multiple``; None if it would be empty."""
    minx, miny, maxx, maxy = bounds
    left = math.ceil(minx / res - 1e-9) * res
    top = math.floor(maxy / res + 1e-9) * res
    width = int(math.floor((maxx - left) / res + 1e-9))
    height = int(math.floor((top - miny) / res + 1e-9))
    width -= width % multiple
    height -= height % multiple
    if width <= 0 or height <= 0:
        return None
    return Grid(width, height, Affine(res, 0, left, 0, -res, top), crs)


def ground_pixel_size(ds: rasterio.io.DatasetReader, crs: CRS) -> float:
    """The source's mean pixel size on the ground, in ``crs`` units (metres for a metric CRS)."""
    return math.sqrt(to_crs(footprint(ds), crs).area / (ds.width * ds.height))


def warp_average(
    data: np.ndarray,
    valid: np.ndarray,
    src_transform: Affine,
    src_crs: CRS,
    dst: Grid,
) -> tuple[np.ndarray, np.ndarray]:
    """Area-average ``data`` (C, h, w) float32 onto ``dst``; returns (values, valid fraction).

    Invalid source pixels do not contribute to the average (NaN nodata); the fraction of each target pixel covered
    by valid source pixels is warped alongside so that callers can demand fully valid pixels.
    """
    src = np.where(valid[None], data, np.nan).astype(np.float32)
    out = np.full((data.shape[0], dst.height, dst.width), np.nan, dtype=np.float32)
    reproject(src, out, src_transform=src_transform, src_crs=src_crs, dst_transform=dst.transform,
              dst_crs=dst.crs, resampling=Resampling.average, src_nodata=np.nan, dst_nodata=np.nan, tolerance=0)
    frac = np.zeros((1, dst.height, dst.width), dtype=np.float32)
    reproject(valid[None].astype(np.float32), frac, src_transform=src_transform, src_crs=src_crs,
              dst_transform=dst.transform, dst_crs=dst.crs, resampling=Resampling.average, src_nodata=None, tolerance=0,
              dst_nodata=None, init_dest_nodata=False)
    frac = frac[0]
    frac[~np.isfinite(out).all(axis=0)] = 0.0
    return out, frac


def warp_bilinear(data: np.ndarray, valid: np.ndarray, src_transform: Affine, src_crs: CRS,
                  dst: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Resample an LR source at (about) its own resolution onto ``dst`` (used only when the LR is not in a metric
    CRS); a target pixel is valid when its value comes from valid pixels only."""
    src = np.where(valid[None], data, np.nan).astype(np.float32)
    out = np.full((data.shape[0], dst.height, dst.width), np.nan, dtype=np.float32)
    reproject(src, out, src_transform=src_transform, src_crs=src_crs, dst_transform=dst.transform,
              dst_crs=dst.crs, resampling=Resampling.bilinear, src_nodata=np.nan, dst_nodata=np.nan)
    ok = np.isfinite(out).all(axis=0)
    return out, ok.astype(np.float32)


def source_window(ds: rasterio.io.DatasetReader, src_transform: Affine, src_crs: CRS, grid: Grid,
                  margin: int = 2) -> Window | None:
    """The window of ``ds`` (with a margin for the resampling kernel) that covers ``grid``; None if they do not
    overlap. ``src_transform``/``src_crs`` may be stand-ins for a raster without georeferencing."""
    b = grid.bounds if src_crs == grid.crs else transform_bounds(grid.crs, src_crs, *grid.bounds, densify_pts=21)
    win = from_bounds(*b, transform=src_transform)
    col0 = max(0, int(math.floor(win.col_off)) - margin)
    row0 = max(0, int(math.floor(win.row_off)) - margin)
    col1 = min(ds.width, int(math.ceil(win.col_off + win.width)) + margin)
    row1 = min(ds.height, int(math.ceil(win.row_off + win.height)) + margin)
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def lr_work_grid(ds: rasterio.io.DatasetReader, overlap_lonlat: BaseGeometry, *, lr_res: float,
                 multiple: int) -> tuple[Grid, tuple[int, int] | None]:
    """The LR grid a pair is chunked on, over the overlap, with sizes multiples of ``multiple``, and its (row, col)
    offset in ``ds`` when it is the LR's own pixels (metric CRS); else (None) a UTM grid at ``lr_res``: the LR is
    then resampled bilinearly, which softens it a little, so prefer LR in a metric CRS."""
    if not is_metric(ds.crs):
        c = overlap_lonlat.centroid
        crs = utm_crs(c.x, c.y)
        grid = snapped_grid(to_crs(overlap_lonlat, crs).bounds, crs, lr_res, multiple)
        if grid is None:
            raise DataError("overlap smaller than one LR pixel")
        return grid, None
    t = ds.transform
    if abs(t.b) > 1e-9 or abs(t.d) > 1e-9 or not math.isclose(abs(t.a), abs(t.e), rel_tol=1e-6):
        raise DataError("LR grid is rotated or has non-square pixels")
    minx, miny, maxx, maxy = to_crs(overlap_lonlat, ds.crs).bounds
    col0 = max(0, math.ceil((minx - t.c) / t.a - 1e-6))
    col1 = min(ds.width, math.floor((maxx - t.c) / t.a + 1e-6))
    row0 = max(0, math.ceil((t.f - maxy) / -t.e - 1e-6))
    row1 = min(ds.height, math.floor((t.f - miny) / -t.e + 1e-6))
    w = (col1 - col0) - (col1 - col0) % multiple
    h = (row1 - row0) - (row1 - row0) % multiple
    if w <= 0 or h <= 0:
        raise DataError("overlap smaller than one LR pixel")
    return Grid(w, h, t @ Affine.translation(col0, row0), ds.crs), (row0, col0)
