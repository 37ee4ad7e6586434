"""A scene described as data (``rssr info``): what rssr will read and what it would write."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from rasterio.warp import transform_bounds

from rssr_cli.input_checks import DIFFUSION_INPUT, UnusualInputError, check_input, ground_pixel_size
from rssr_cli.methods import DEFAULT_BANDS, DEFAULT_SCALE
from rssr_cli.scene import open_scene
from rssr_cli.stac import SourceMetadata, StacItem


def scene_info(paths: Sequence[str] | StacItem, *, bidx: Sequence[int] | None = None, nodata: float | None = None,
               offset: float | None = None, weights: str | None = None) -> dict[str, Any]:
    """What rssr reads from ``paths`` (rasters, a STAC Item or a SAFE product) and the output it would write; a STAC
    Item or SAFE product adds what it says about its acquisition (``source``), and each band where its scale and
    offset come from (``radiometry``: ``STAC raster:bands``, ``metadata``, ``--offset`` or a default)."""
    scale, bands = DEFAULT_SCALE, DEFAULT_BANDS
    if weights:
        from rssr_cli.weights import read_config
        from fractions import Fraction

        config = read_config(weights)
        scale = Fraction(str(config.get("scale", DEFAULT_SCALE)))
        bands = tuple(config.get("bands", DEFAULT_BANDS))
    with open_scene(paths, bidx=bidx, bands=bands, nodata=nodata, offset=offset) as scene:
        grid = scene.grid
        hr = grid.zoom(scale)
        lonlat = transform_bounds(grid.crs, "EPSG:4326", *grid.bounds, densify_pts=21)
        ground = ground_pixel_size(grid)
        try:
            check_input(scene, DIFFUSION_INPUT)
            verdict = "ok (Sentinel-2 10 m bands as reflectance, what the diffusion model was made for)"
        except UnusualInputError as exc:
            verdict = f"refused by the diffusion model: {exc}"
        record = {
            "input": ", ".join(scene.paths),
            "size": f"{grid.width} x {grid.height} px",
            "dtype": scene.dtype,
            "crs": grid.crs.to_string(),
            "resolution": f"{grid.res[0]:.6g} x {grid.res[1]:.6g}",
            "ground pixel": f"{ground[0]:.4g} x {ground[1]:.4g} m" if ground else "unknown",
            "bounds": ", ".join(f"{v:.6f}" for v in grid.bounds),
            "footprint (lon/lat)": ", ".join(f"{v:.6f}" for v in lonlat),
            "nodata": f"{scene.nodata:g} ({scene.nodata_source})",
            "bands": [{"name": b.name, "file": Path(scene.paths[b.file]).name, "bidx": b.bidx,
                       "description": b.description, "scale": r.scale, "offset": r.offset,
                       "radiometry": r.source, **({"asset": b.asset} if b.asset else {})}
                      for b, r in zip(scene.bands, scene.radiometry)],
            "output": f"{hr.width} x {hr.height} px x {len(bands)} bands at scale {float(scale):g} "
                      f"(pixel {hr.res[0]:.6g}); {hr.width * hr.height * len(bands) * 2 / 2**20:.1f} MiB as uint16",
            "model input": verdict,
        }
        if scene.origin is not None:
            if scene.origin.kind == "stac":
                record["input"] = scene.origin.href or f"STAC item {scene.origin.id} (stdin)"
            record = {"input": record.pop("input"), "source": _origin(scene.origin), **record}
        return record


def _origin(origin: SourceMetadata) -> str:
    """One line about the input's record: ``STAC item ID, 2020-02-19T11:34:25Z, sentinel-2a (L2A, baseline 02.14)``."""
    kind = {"stac": "STAC item", "safe": "SAFE product"}.get(origin.kind, origin.kind)
    props = origin.properties
    extra = ", ".join(str(v) for v in (props.get("processing:level"), props.get("s2:processing_baseline") and
                                       f"baseline {props['s2:processing_baseline']}") if v)
    parts = [f"{kind} {origin.id or '?'}", origin.datetime or "no acquisition time", origin.platform or "no platform"]
    return ", ".join(parts) + (f" ({extra})" if extra else "")
