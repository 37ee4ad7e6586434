"""Areas of interest: a bbox or a GeoJSON geometry -> a window on the scene's LR grid, snapped so the HR grid aligns.

The AOI is reprojected into the scene CRS with pyproj after densifying its edges (a straight edge in lon/lat is a curve
in UTM), intersected with the scene footprint with shapely, and turned into a window snapped *outward* to multiples
of the scale's denominator (2 LR px for 12.5x: 2 LR px = 25 HR px), so every HR pixel edge falls on an LR pixel edge.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import shapely
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from pyproj.exceptions import CRSError
from rasterio.windows import Window, from_bounds
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from rssr_cli.errors import AOIError, UsageError
from rssr_cli.scene import Grid

#: Densify AOI edges to this many points per edge before reprojecting.
DENSIFY_POINTS = 21


@dataclass(frozen=True)
class AOI:
    """An area of interest in the scene CRS. ``mask_outside`` is True for polygons (pixels outside become nodata)."""

    geometry: BaseGeometry
    mask_outside: bool


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``"xmin,ymin,xmax,ymax"`` -> floats, checked."""
    try:
        values = tuple(float(v) for v in text.replace(" ", ",").split(",") if v)
    except ValueError:
        raise UsageError(f"--bbox {text!r}: expected four numbers xmin,ymin,xmax,ymax") from None
    if len(values) != 4:
        raise UsageError(f"--bbox {text!r}: expected four numbers xmin,ymin,xmax,ymax, got {len(values)}")
    xmin, ymin, xmax, ymax = values
    if not (xmin < xmax and ymin < ymax):
        raise UsageError(f"--bbox {text!r}: xmin must be < xmax and ymin < ymax")
    return xmin, ymin, xmax, ymax


def parse_crs(text: str | None, scene_crs) -> ProjCRS:
    """A CRS from anything pyproj understands; ``scene`` (or None) means the scene's own CRS."""
    if text is None or text.lower() == "scene":
        return ProjCRS.from_user_input(scene_crs.to_wkt())
    try:
        return ProjCRS.from_user_input(text)
    except CRSError:
        raise UsageError(f"--bbox-crs {text!r} is not a CRS pyproj knows (try EPSG:4326, EPSG:32632 or 'scene')") \
            from None


def load_geojson(source: str | Path | dict[str, Any]) -> tuple[BaseGeometry, ProjCRS]:
    """A GeoJSON geometry, Feature or FeatureCollection (union of its features) from a file, ``-`` or a dict.

    Coordinates are lon/lat (RFC 7946); a legacy ``crs`` member (GeoJSON 2008) is honoured when present.
    """
    if isinstance(source, dict):
        data = source
    else:
        try:
            text = sys.stdin.read() if str(source) == "-" else Path(source).read_text()
            data = json.loads(text)
        except OSError as exc:
            raise AOIError(f"cannot read --aoi {source}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise AOIError(f"--aoi {source} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict) or "type" not in data:
        raise AOIError("--aoi: not a GeoJSON object (no 'type')")
    crs = ProjCRS.from_epsg(4326)
    legacy = data.get("crs", {}).get("properties", {}).get("name") if isinstance(data.get("crs"), dict) else None
    if legacy:
        try:
            crs = ProjCRS.from_user_input(legacy)
        except CRSError:
            raise AOIError(f"--aoi: unknown crs {legacy!r}") from None
    kind = data["type"]
    try:
        if kind == "FeatureCollection":
            geoms = [shape(f["geometry"]) for f in data.get("features", []) if f.get("geometry")]
            if not geoms:
                raise AOIError("--aoi: the FeatureCollection has no geometries")
            geometry = shapely.union_all(geoms)
        elif kind == "Feature":
            if not data.get("geometry"):
                raise AOIError("--aoi: the Feature has no geometry")
            geometry = shape(data["geometry"])
        else:
            geometry = shape(data)
    except (KeyError, TypeError, ValueError, shapely.errors.GEOSException) as exc:
        raise AOIError(f"--aoi: invalid GeoJSON geometry ({exc})") from None
    if geometry.is_empty or geometry.area == 0:
        raise AOIError("--aoi: the geometry is empty or has no area (a polygon is needed)")
    return shapely.make_valid(geometry), crs


def to_scene_crs(geometry: BaseGeometry, src_crs: ProjCRS, scene_crs) -> BaseGeometry:
    """Reproject with densified edges (pyproj, always_xy)."""
    dst = ProjCRS.from_user_input(scene_crs.to_wkt())
    if src_crs == dst:
        return geometry
    transformer = Transformer.from_crs(src_crs, dst, always_xy=True)
    minx, miny, maxx, maxy = geometry.bounds
    step = max(maxx - minx, maxy - miny) / (DENSIFY_POINTS - 1)
    dense = shapely.segmentize(geometry, step) if step > 0 else geometry
    projected = shapely.transform(dense, lambda xy: _transform_xy(transformer, xy))
    if not projected.is_valid:
        projected = shapely.make_valid(projected)
    return projected


def _transform_xy(transformer: Transformer, xy):
    import numpy as np

    x, y = transformer.transform(xy[:, 0], xy[:, 1])
    out = np.column_stack([x, y])
    if not np.isfinite(out).all():
        raise AOIError("the area of interest cannot be projected into the scene's CRS (outside its valid area)")
    return out


def bbox_aoi(bbox: tuple[float, float, float, float], crs: ProjCRS, scene_crs) -> AOI:
    return AOI(to_scene_crs(box(*bbox), crs, scene_crs), mask_outside=False)


def geojson_aoi(source: str | Path | dict[str, Any], scene_crs) -> AOI:
    geometry, crs = load_geojson(source)
    return AOI(to_scene_crs(geometry, crs, scene_crs), mask_outside=True)


def snapped_window(grid: Grid, aoi: AOI | None, scale: Fraction) -> Window:
    """The LR window covering ``aoi`` within the scene, offsets snapped outward to multiples of the denominator.

    The end of the window is snapped outward too, but never beyond the scene; the HR size then rounds up
    (``Grid.zoom``), so a window ending at an odd scene edge loses nothing.
    """
    step = Fraction(scale).denominator
    if aoi is None:
        return Window(0, 0, grid.width, grid.height)
    footprint = box(*grid.bounds)
    inside = aoi.geometry.intersection(footprint)
    if inside.is_empty or inside.area == 0:
        raise AOIError("the area of interest does not intersect the scene")
    window = from_bounds(*inside.bounds, transform=grid.transform)
    col0 = max(0, math.floor(round(window.col_off, 6) / step) * step)
    row0 = max(0, math.floor(round(window.row_off, 6) / step) * step)
    col1 = min(grid.width, math.ceil(round(window.col_off + window.width, 6) / step) * step)
    row1 = min(grid.height, math.ceil(round(window.row_off + window.height, 6) / step) * step)
    if col1 <= col0 or row1 <= row0:
        raise AOIError("the area of interest does not intersect the scene")
    return Window(col0, row0, col1 - col0, row1 - row0)
