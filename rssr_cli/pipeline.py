"""``rssr_cli.upscale``: the Python API under ``rssr upscale``.

The scene, the AOI and the tile plan are settled first (:func:`plan_upscale` stops there); then the stages run one
column chunk at a time, top to bottom, one row of tiles at a time:

- read (:func:`rssr_cli.strips.read_strips`): the row's LR strip, reflectance and validity;
- infer (:func:`rssr_cli.infer.infer_strip`): its tiles through the method in batches, HR cores out;
- blend (:func:`rssr_cli.blend.blend_row`): feathered into finished output blocks, each masked
  (:class:`rssr_cli.validity.OutputMask`) from the strip's validity;
- sink (:class:`rssr_cli.sink.CogSink`): encoded and written on a writer thread, then the COG (and ``_std``).

Example (a notebook)::

    import rssr_cli
    result = rssr_cli.upscale("scene.tif", "scene_sr.tif",
                              rssr_cli.UpscaleOptions(method="bicubic", bbox=(2.80, 42.34, 2.81, 42.35)))
    result.to_dict()
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import rasterio
from rasterio.windows import Window

from rssr_cli.version import __version__
from rssr_cli.aoi import AOI, bbox_aoi, geojson_aoi, parse_crs, snapped_window
from rssr_cli.blend import RowBlender, blend_row
from rssr_cli.cog import CogOptions, check_output
from rssr_cli.encoding import output_encoding
from rssr_cli.errors import UsageError
from rssr_cli.infer import infer_strip
from rssr_cli.methods import MethodOptions, TileUpsampler
from rssr_cli.methods.diffusion import DiffusionOptions
from rssr_cli.scene import Grid, Scene, open_scene
from rssr_cli.sink import CogSink
from rssr_cli.strips import read_strips
from rssr_cli.tiling import DEFAULT_CHUNK_WIDTH, DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, TilePlan, plan_tiles
from rssr_cli.validity import OutputMask

#: GDAL's block cache: small and fixed, so memory does not grow with the output (GDAL's default is 5 % of RAM).
GDAL_CACHEMAX_MB = 32

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class UpscaleOptions:
    """Everything about one upscale except the input and output paths."""

    method: MethodOptions = field(default_factory=DiffusionOptions)
    bidx: tuple[int, ...] | None = None
    nodata: float | None = None
    offset: float | None = None
    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: str | None = "EPSG:4326"
    aoi: str | Path | dict | None = None
    tile_size: int = DEFAULT_TILE_SIZE
    overlap: int = DEFAULT_OVERLAP
    dtype: str = "auto"
    blocksize: int = 512
    creation_options: Mapping[str, str] = field(default_factory=dict)
    overview_resampling: str = "average"
    threads: str = "ALL_CPUS"
    gdal_config: Mapping[str, str] = field(default_factory=dict)
    overwrite: bool = False
    chunk_width: int = DEFAULT_CHUNK_WIDTH


@dataclass(frozen=True)
class UpscalePlan:
    """What an upscale will do, before it does it (``--dry-run``)."""

    inputs: tuple[str, ...]
    output: str
    window: Window
    lr_grid: Grid
    hr_grid: Grid
    tiles: int
    bands: tuple[str, ...]
    dtype: str
    scale: Fraction

    @property
    def output_bytes(self) -> int:
        """Uncompressed size of the output raster."""
        return self.hr_grid.width * self.hr_grid.height * len(self.bands) * np.dtype(self.dtype).itemsize

    @property
    def scratch_bytes(self) -> int:
        """Disk needed beside the output while running: the scratch raster plus rio-cogeo's intermediate."""
        return 2 * self.output_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.inputs[0] if len(self.inputs) == 1 else list(self.inputs),
            "output": self.output,
            "crs": self.hr_grid.crs.to_string(),
            "bounds": list(self.hr_grid.bounds),
            "lr_window": {"col_off": int(self.window.col_off), "row_off": int(self.window.row_off),
                          "width": int(self.window.width), "height": int(self.window.height)},
            "shape": [len(self.bands), self.hr_grid.height, self.hr_grid.width],
            "resolution": list(self.hr_grid.res),
            "scale": float(self.scale),
            "tiles": self.tiles,
            "dtype": self.dtype,
            "output_bytes": self.output_bytes,
            "scratch_bytes": self.scratch_bytes,
        }


@dataclass
class UpscaleResult:
    plan: UpscalePlan
    seconds: float
    uncertainty: str | None = None
    status: str = "ok"

    def to_dict(self) -> dict[str, Any]:
        out = self.plan.to_dict()
        out.update({"seconds": round(self.seconds, 3), "status": self.status, "error": None})
        if self.uncertainty:
            out["uncertainty"] = self.uncertainty
        return out


def default_output(path: str | Path, output_dir: str | Path | None = None) -> Path:
    """``scene.tif`` -> ``scene_sr.tif`` (in ``output_dir`` when given, else the current folder)."""
    stem = Path(str(path)).name.split(".")[0] or "scene"
    return Path(output_dir or ".") / f"{stem}_sr.tif"


def uncertainty_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}_std{output.suffix or '.tif'}")


def _output_dtype(requested: str, scene: Scene) -> str:
    if requested == "auto":
        return scene.dtype if np.dtype(scene.dtype).kind in "iu" else "float32"
    if requested not in ("uint16", "int16", "float32"):
        raise UsageError(f"--dtype {requested}: choose auto, uint16, int16 or float32")
    return requested


def _resolve_aoi(options: UpscaleOptions, scene: Scene) -> AOI | None:
    if options.bbox is not None and options.aoi is not None:
        raise UsageError("--bbox and --aoi are exclusive; give one area of interest")
    if options.bbox is not None:
        return bbox_aoi(options.bbox, parse_crs(options.bbox_crs, scene.grid.crs), scene.grid.crs)
    if options.aoi is not None:
        return geojson_aoi(options.aoi, scene.grid.crs)
    return None


def _plan(scene: Scene, inputs: tuple[str, ...], output: Path, options: UpscaleOptions,
          upsampler: TileUpsampler) -> tuple[UpscalePlan, TilePlan, AOI | None]:
    aoi = _resolve_aoi(options, scene)
    window = snapped_window(scene.grid, aoi, upsampler.scale)
    tiles = plan_tiles(window, upsampler.scale, tile_size=options.tile_size, overlap=options.overlap,
                       context=max(upsampler.context, options.overlap // 2))
    lr_grid = scene.grid.window(window)
    plan = UpscalePlan(inputs=inputs, output=str(output), window=window, lr_grid=lr_grid,
                       hr_grid=lr_grid.zoom(upsampler.scale), tiles=tiles.count, bands=upsampler.bands,
                       dtype=_output_dtype(options.dtype, scene), scale=upsampler.scale)
    return plan, tiles, aoi


def _inputs(inputs: str | Path | Sequence[str | Path]) -> tuple[str, ...]:
    return (str(inputs),) if isinstance(inputs, (str, Path)) else tuple(str(p) for p in inputs)


def _env(options: UpscaleOptions) -> rasterio.Env:
    config = {"GDAL_CACHEMAX": GDAL_CACHEMAX_MB, "GDAL_NUM_THREADS": options.threads}
    config.update(options.gdal_config)
    return rasterio.Env(**config)


def plan_upscale(inputs: str | Path | Sequence[str | Path], output: str | Path | None = None,
                 options: UpscaleOptions = UpscaleOptions(), *,
                 upsampler: TileUpsampler | None = None) -> UpscalePlan:
    """The plan of an upscale (window, grid, tiles, sizes) without writing anything."""
    paths = _inputs(inputs)
    output = Path(output) if output else default_output(paths[0])
    upsampler = upsampler or options.method.build()
    with _env(options), open_scene(paths, bidx=options.bidx, bands=upsampler.bands, nodata=options.nodata,
                                   offset=options.offset) as scene:
        return _plan(scene, paths, output, options, upsampler)[0]


def upscale(inputs: str | Path | Sequence[str | Path], output: str | Path | None = None,
            options: UpscaleOptions = UpscaleOptions(), *, upsampler: TileUpsampler | None = None,
            progress: ProgressCallback | None = None) -> UpscaleResult:
    """Super-resolve one scene (one raster, or one single-band raster per band) into a COG at ``output``.

    Pass ``upsampler`` to reuse a loaded model across many scenes; otherwise one is built from ``options.method``.
    ``progress(done_tiles, total_tiles)`` is called as tiles finish. Nothing is left at ``output`` on failure.
    """
    t0 = time.perf_counter()
    paths = _inputs(inputs)
    output = Path(output) if output else default_output(paths[0])
    check_output(output, overwrite=options.overwrite)
    upsampler = upsampler or options.method.build()
    with _env(options), open_scene(paths, bidx=options.bidx, bands=upsampler.bands, nodata=options.nodata,
                                   offset=options.offset) as scene:
        plan, tiles, aoi = _plan(scene, paths, output, options, upsampler)
        std_output = uncertainty_path(output) if upsampler.samples > 1 else None
        if std_output is not None:
            check_output(std_output, overwrite=options.overwrite)
        mask = OutputMask(plan.window, plan.hr_grid, plan.scale,
                          polygon=aoi.geometry if aoi is not None and aoi.mask_outside else None)
        counter = _TileCounter(_total_tiles(tiles, options.chunk_width), progress)
        with _cog_sink(scene, plan, upsampler, options, output, std_output) as sink:
            _upscale_tiles(scene, tiles, upsampler, mask, sink, chunk_width=options.chunk_width, counter=counter)
            sink.commit()
    return UpscaleResult(plan=plan, seconds=time.perf_counter() - t0,
                         uncertainty=str(std_output) if std_output else None)


def _upscale_tiles(scene: Scene, tiles: TilePlan, upsampler: TileUpsampler, mask: OutputMask, sink: CogSink, *,
                   chunk_width: int, counter: _TileCounter) -> None:
    """read -> infer -> blend -> sink, one column chunk at a time, each top to bottom one row of tiles at a time."""
    hr_height = tiles.hr_shape[0]
    for chunk in tiles.column_chunks(chunk_width):
        blender = RowBlender(len(upsampler.bands), *chunk.write, height=hr_height, with_std=sink.with_std)
        for strip in read_strips(scene, tiles, chunk):
            hr_tiles = infer_strip(upsampler, strip, on_batch=counter.add)
            for block in blend_row(blender, tiles, strip.row, hr_tiles):
                sink.write(block, mask.valid(block, strip))


def _cog_sink(scene: Scene, plan: UpscalePlan, upsampler: TileUpsampler, options: UpscaleOptions, output: Path,
              std_output: Path | None) -> CogSink:
    cog = CogOptions(blocksize=options.blocksize, creation_options=options.creation_options,
                     overview_resampling=options.overview_resampling, threads=options.threads,
                     overwrite=options.overwrite)
    return CogSink(output, plan.hr_grid, output_encoding(plan.dtype, scene), bands=scene.band_names,
                   tags=_provenance(plan, upsampler, options), cog=cog, std_output=std_output)


def _provenance(plan: UpscalePlan, upsampler: TileUpsampler, options: UpscaleOptions) -> dict[str, str]:
    tags = {
        "RSSR_VERSION": __version__,
        "RSSR_SOURCE": ",".join(Path(p).name for p in plan.inputs),
        "RSSR_SCALE": str(plan.scale),
        "RSSR_LR_WINDOW": f"{int(plan.window.col_off)},{int(plan.window.row_off)},"
                          f"{int(plan.window.width)},{int(plan.window.height)}",
        "RSSR_TILE_SIZE": str(options.tile_size),
        "RSSR_OVERLAP": str(options.overlap),
    }
    tags.update(upsampler.provenance())
    return tags


def _total_tiles(tiles: TilePlan, chunk_width: int) -> int:
    return len(tiles.rows.starts) * sum(len(c.cols) for c in tiles.column_chunks(chunk_width))


class _TileCounter:
    """Counts finished tiles for the ``progress(done, total)`` callback."""

    def __init__(self, total: int, progress: ProgressCallback | None) -> None:
        self.total, self.done, self.progress = total, 0, progress

    def add(self, tiles: int) -> None:
        self.done += tiles
        if self.progress is not None:
            self.progress(self.done, self.total)
