"""The STAC Item of an output (``rssr upscale --stac``): ``OUTPUT.json`` beside ``OUTPUT.tif``.

The Item is read off the written COG itself (grid, data type, nodata, GDAL scale/offset, band names, rssr's
provenance tags), so it describes exactly the file that exists, plus what the input said about its acquisition
(:class:`~rssr_cli.stac.SourceMetadata`: datetime, platform ...). It declares STAC 1.0.0 with these extensions
(:data:`EXTENSIONS`), and tests/test_stac.py validates it against their JSON Schemas:

- projection v2.0.0: ``proj:code`` (``proj:wkt2`` for a CRS without a code), ``proj:shape``, ``proj:transform``;
- raster v1.1.0: ``raster:bands`` with ``data_type``, ``nodata``, ``scale``/``offset`` (integer outputs), and
  ``spatial_resolution``;
- eo v1.1.0: ``eo:bands`` with Sentinel-2's common names, centre wavelengths and widths;
- processing v1.2.0: ``processing:software`` (rssr and its version), ``processing:lineage``,
  ``processing:datetime``; rssr's own settings (method, model, weights digest, steps, seed ...) as ``rssr:*``.

Geometry and bbox are the output's footprint in EPSG:4326 (edges densified, so a UTM grid's curved outline is kept);
``gsd`` is the pixel size in metres (the CRS's unit for projected CRSs, geodesic at the centre for geographic ones).
``datetime`` is the input's acquisition time; an input that declares none (a plain GeoTIFF) gets the processing time,
and ``rssr:datetime_is_processing_time`` says so. ``derived_from`` links name the input Item (or its files).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit

import numpy as np
import rasterio
from rasterio.warp import transform as transform_coords

from rssr_cli.atomic import atomic_write
from rssr_cli.errors import OutputError, UsageError
from rssr_cli.input_checks import ground_pixel_size
from rssr_cli.scene import Grid
from rssr_cli.stac import COMMON_NAMES, SourceMetadata

__all__ = ["EXTENSIONS", "STAC_VERSION", "item_path", "output_item", "write_item"]

STAC_VERSION = "1.0.0"
EXTENSIONS = (
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
)
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
#: Sentinel-2 MSI centre wavelength and full width at half maximum (micrometres), as catalogues publish them.
S2_WAVELENGTHS: dict[str, tuple[float, float]] = {"B02": (0.49, 0.098), "B03": (0.56, 0.045), "B04": (0.665, 0.038),
                                                  "B08": (0.842, 0.145)}
#: Points per footprint edge when it is reprojected to longitude/latitude.
EDGE_POINTS = 21


def item_path(output: Path) -> Path:
    """Where ``--stac`` writes the Item of ``output``: the same name with ``.json``."""
    path = Path(output).with_suffix(".json")
    if path == Path(output):
        raise UsageError(f"--stac writes OUTPUT.json beside the output; {output} cannot be both")
    return path


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _footprint(grid: Grid) -> tuple[dict[str, Any], list[float]]:
    """The grid's outline in EPSG:4326 as a GeoJSON Polygon (counter-clockwise, closed) and its bbox."""
    w, s, e, n = grid.bounds
    steps = np.linspace(0.0, 1.0, EDGE_POINTS)[:-1]
    xs = np.concatenate([w + (e - w) * steps, np.full_like(steps, e), e - (e - w) * steps, np.full_like(steps, w)])
    ys = np.concatenate([np.full_like(steps, s), s + (n - s) * steps, np.full_like(steps, n), n - (n - s) * steps])
    lon, lat = transform_coords(grid.crs, "EPSG:4326", xs.tolist(), ys.tolist())
    ring = [[round(x, 9), round(y, 9)] for x, y in zip(lon, lat)]
    ring.append(ring[0])
    bbox = [min(p[0] for p in ring), min(p[1] for p in ring), max(p[0] for p in ring), max(p[1] for p in ring)]
    return {"type": "Polygon", "coordinates": [ring]}, bbox


def _gsd(grid: Grid) -> float | None:
    """Pixel size in metres: the CRS's linear unit for a projected CRS (10 m in UTM, as Sentinel-2's gsd), else the
    geodesic size at the centre."""
    if grid.crs.is_projected and grid.crs.linear_units_factor:
        size = abs(grid.transform.a) * grid.crs.linear_units_factor[1]
    else:
        ground = ground_pixel_size(grid)
        if ground is None:
            return None
        size = (ground[0] + ground[1]) / 2
    return round(size, 4)


def _nodata(value: float | None) -> float | str | None:
    if value is None:
        return None
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return int(value) if float(value).is_integer() else float(value)


def _bands(ds, gsd: float | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(eo:bands, raster:bands) of an open raster: names from its band descriptions, scale/offset where declared."""
    eo, raster = [], []
    for i, desc in enumerate(ds.descriptions):
        name = (desc or f"band {i + 1}").split(" ")[0]
        entry: dict[str, Any] = {"name": name}
        if name in COMMON_NAMES:
            entry["common_name"] = COMMON_NAMES[name]
        if name in S2_WAVELENGTHS:
            entry["center_wavelength"], entry["full_width_half_max"] = S2_WAVELENGTHS[name]
        eo.append(entry)
        band: dict[str, Any] = {"data_type": ds.dtypes[i]}
        if ds.nodata is not None:
            band["nodata"] = _nodata(ds.nodata)
        if (ds.scales[i], ds.offsets[i]) != (1.0, 0.0):
            band["scale"], band["offset"] = float(ds.scales[i]), float(ds.offsets[i])
        if gsd is not None:
            band["spatial_resolution"] = gsd
        raster.append(band)
    return eo, raster


def _asset(path: Path, item_folder: Path, title: str, roles: list[str]) -> dict[str, Any]:
    with rasterio.open(path) as ds:
        grid = Grid(ds.width, ds.height, ds.transform, ds.crs)
        eo, raster = _bands(ds, _gsd(grid))
    try:
        href = path.resolve().relative_to(item_folder.resolve()).as_posix()
    except ValueError:
        href = str(path.resolve())
    return {"href": href, "type": COG_MEDIA_TYPE, "title": title, "roles": roles, "eo:bands": eo,
            "raster:bands": raster}


def _link_href(source: str) -> str:
    """An input as a link href: URLs as they are (``/vsicurl/`` undone), local paths absolute."""
    if source.startswith("/vsicurl/"):
        return source[len("/vsicurl/"):]
    if urlsplit(source).scheme.lower() in ("http", "https", "s3", "gs", "file") or source.startswith("/vsi"):
        return source
    return str(Path(source).resolve())


def _links(origin: SourceMetadata | None, inputs: Sequence[str]) -> list[dict[str, Any]]:
    """``derived_from``: the input Item (its location, else its own ``self`` link), else each input file."""
    if origin is not None and origin.kind == "stac":
        href = origin.href
        return [{"rel": "derived_from", "href": _link_href(str(href)), "type": "application/geo+json",
                 "title": f"STAC item {origin.id}"}] if href else []
    return [{"rel": "derived_from", "href": _link_href(p), "title": "input"} for p in inputs]


def _provenance(tags: dict[str, str], origin: SourceMetadata | None, inputs: Sequence[str]) -> dict[str, Any]:
    """processing:* and rssr:* properties from the COG's RSSR_* tags."""
    rssr = {f"rssr:{k[len('RSSR_'):].lower()}": v for k, v in sorted(tags.items())
            if k.startswith("RSSR_") and k not in ("RSSR_VERSION", "RSSR_LAYER")}
    version = tags.get("RSSR_VERSION", "unknown")
    method = tags.get("RSSR_METHOD", "unknown method")
    model = f" model {tags['RSSR_MODEL']}" if "RSSR_MODEL" in tags else ""
    steps = f", {tags['RSSR_STEPS']} steps, seed {tags.get('RSSR_SEED', '?')}" if "RSSR_STEPS" in tags else ""
    source = (origin.id if origin is not None and origin.id else None) or ", ".join(Path(p).name for p in inputs)
    try:
        scale = f"{float(Fraction(tags['RSSR_SCALE'])):g}"
    except (KeyError, ValueError, ZeroDivisionError):
        scale = "?"
    lineage = f"Super-resolved x{scale} from {source} by rssr {version} ({method}{model}{steps})"
    return {"processing:software": {"rssr": version}, "processing:lineage": lineage, **rssr}


def output_item(cog: Path, *, origin: SourceMetadata | None = None, inputs: Sequence[str] = (),
                companion: Path | None = None, item_folder: Path | None = None) -> dict[str, Any]:
    """The STAC Item (a dict) of the COG at ``cog`` (and its ``_std`` ``companion``), made from ``inputs`` whose
    record is ``origin``; asset hrefs are relative to ``item_folder`` (default: the COG's folder)."""
    cog = Path(cog)
    folder = Path(item_folder) if item_folder is not None else cog.parent
    with rasterio.open(cog) as ds:
        grid = Grid(ds.width, ds.height, ds.transform, ds.crs)
        tags = ds.tags()
        bands = [(d or "").split(" ")[0] for d in ds.descriptions]
    geometry, bbox = _footprint(grid)
    created = _now()
    props: dict[str, Any] = {"datetime": origin.datetime if origin is not None and origin.datetime else created}
    if origin is None or not origin.datetime:
        props["rssr:datetime_is_processing_time"] = True
    if origin is not None:
        for key in ("platform", "constellation"):
            if getattr(origin, key):
                props[key] = getattr(origin, key)
        if origin.instruments:
            props["instruments"] = list(origin.instruments)
        props.update(origin.properties)
    crs_code = grid.crs.to_epsg()
    props.update({"created": created, "gsd": _gsd(grid),
                  "proj:code": f"EPSG:{crs_code}" if crs_code else None,
                  "proj:shape": [grid.height, grid.width], "proj:transform": list(grid.transform)[:6],
                  "processing:datetime": created})
    if crs_code is None:
        props["proj:wkt2"] = grid.crs.to_wkt()
    if props["gsd"] is None:
        del props["gsd"]
    props.update(_provenance(tags, origin, inputs))
    assets = {"data": _asset(cog, folder, f"Super-resolved reflectance ({', '.join(bands)})", ["data"])}
    if companion is not None and Path(companion).exists():
        assets["uncertainty"] = _asset(Path(companion), folder, "Per-pixel standard deviation of the samples "
                                       "(reflectance)", ["data", "uncertainty"])
    return {"type": "Feature", "stac_version": STAC_VERSION, "stac_extensions": list(EXTENSIONS), "id": cog.stem,
            "geometry": geometry, "bbox": bbox, "properties": props, "links": _links(origin, inputs),
            "assets": assets}


def write_item(item: dict[str, Any], path: Path, *, overwrite: bool = False) -> Path:
    """Write ``item`` as JSON at ``path``, atomically (never half a file); an existing file is replaced only with
    ``overwrite``."""
    if Path(path).exists() and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it")
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(item, indent=2) + "\n")
    return Path(path)
