"""``rssr_cli.upscale``: scene -> AOI window -> tiles -> method -> blend -> COG. The Python API under ``rssr upscale``.

Example (a notebook)::

    import rssr_cli
    result = rssr_cli.upscale("scene.tif", "scene_sr.tif",
                              rssr_cli.UpscaleOptions(method="bicubic", bbox=(2.80, 42.34, 2.81, 42.35)))
    result.to_dict()
"""

from __future__ import annotations

import math
import time
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import rasterio
from rasterio.features import geometry_mask
from rasterio.windows import Window

from rssr_cli.version import __version__
from rssr_cli.aoi import AOI, bbox_aoi, geojson_aoi, parse_crs, snapped_window
from rssr_cli.blend import FinishedRows, RowBlender
from rssr_cli.atomic import temporary_path
from rssr_cli.cog import check_output, describe, scratch_raster, translate_to_cog, write_rows
from rssr_cli.errors import UsageError
from rssr_cli.methods import MethodOptions, TileUpsampler
from rssr_cli.methods.diffusion import DiffusionOptions
from rssr_cli.scene import Grid, Radiometry, Scene, open_scene
from rssr_cli.tiling import DEFAULT_CHUNK_WIDTH, DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, TilePlan, plan_tiles

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
        _run(scene, plan, tiles, aoi, upsampler, options, output, std_output, progress)
    return UpscaleResult(plan=plan, seconds=time.perf_counter() - t0,
                         uncertainty=str(std_output) if std_output else None)


@dataclass(frozen=True)
class _Encoding:
    """How reflectance becomes output pixels: dtype, nodata and (for integers) the per-band DN radiometry."""

    dtype: str
    nodata: float
    radiometry: tuple[Radiometry, ...] | None  # None: float32 reflectance

    def encode(self, reflectance: np.ndarray, valid: np.ndarray) -> np.ndarray:
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


def _encoding(plan: UpscalePlan, scene: Scene) -> _Encoding:
    if plan.dtype == "float32":
        return _Encoding("float32", float("nan"), None)
    info = np.iinfo(plan.dtype)
    nodata = scene.nodata if scene.nodata is not None and not math.isnan(scene.nodata) else 0.0
    if not info.min <= nodata <= info.max:
        nodata = 0.0
    if np.dtype(scene.dtype).kind == "f":  # float reflectance in, integers out: Sentinel-2 quantification
        from rssr_cli.scene import QUANTIFICATION

        radiometry = tuple(Radiometry(1 / QUANTIFICATION, 0.0, "default") for _ in scene.radiometry)
    else:
        radiometry = scene.radiometry
    return _Encoding(plan.dtype, nodata, radiometry)


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


def _run(scene: Scene, plan: UpscalePlan, tiles: TilePlan, aoi: AOI | None, upsampler: TileUpsampler,
         options: UpscaleOptions, output: Path, std_output: Path | None,
         progress: ProgressCallback | None) -> None:
    encoding = _encoding(plan, scene)
    channels = len(plan.bands)
    scratch_path = temporary_path(output, "scratch")
    std_scratch_path = temporary_path(std_output, "scratch") if std_output else None
    tags = _provenance(plan, upsampler, options)
    descriptions = [b.name for b in scene.bands]
    write_scale = encoding.radiometry is not None and scene.has_metadata_radiometry
    batch = upsampler.batch_size
    done = 0

    with ExitStack() as stack:
        dst = stack.enter_context(scratch_raster(scratch_path, plan.hr_grid, count=channels, dtype=encoding.dtype,
                                                 nodata=encoding.nodata, blocksize=options.blocksize))
        std_dst = None
        if std_scratch_path is not None:
            std_dst = stack.enter_context(scratch_raster(std_scratch_path, plan.hr_grid, count=channels,
                                                         dtype="float32", nodata=float("nan"),
                                                         blocksize=options.blocksize))
        total = _total_tiles(tiles, options.chunk_width)
        crop = tiles.hr(tiles.context)
        hr_height = plan.hr_grid.height

        def write(block: FinishedRows, valid: np.ndarray) -> None:  # on the writer thread: dst is only used there
            write_rows(dst, encoding.encode(block.data, valid), block.row0, block.col0)
            if std_dst is not None and block.std is not None:
                block.std[:, ~valid] = np.nan
                write_rows(std_dst, block.std, block.row0, block.col0)

        writer = stack.enter_context(_BlockWriter(write))

        def emit(block: FinishedRows) -> None:
            rows = min(block.data.shape[1], hr_height - block.row0)  # the last tile row may reach past the edge
            if rows <= 0:
                return
            block = FinishedRows(block.row0, block.col0, block.data[:, :rows],
                                 block.std[:, :rows] if block.std is not None else None)
            writer.put(block, _valid_mask(scene, plan, aoi, block))  # scene reads stay on this thread

        for chunk in tiles.column_chunks(options.chunk_width):
            blender = RowBlender(channels, *chunk.write, emit, with_std=std_dst is not None)
            nrows = len(tiles.rows.starts)
            for i in range(nrows):
                row_tiles = [tiles.tile(i, j) for j in chunk.cols]
                top, bottom = row_tiles[0].hr_core[:2]
                next_top = tiles.hr(tiles.rows.starts[i + 1]) if i + 1 < nrows else bottom
                blender.start_row(top, bottom - top, next_top)
                lr_strip, strip_window = _read_strip(scene, row_tiles)
                for b in range(0, len(row_tiles), batch):
                    group = row_tiles[b:b + batch]
                    lr = np.stack([_slice(lr_strip, strip_window, t.read) for t in group])
                    result = upsampler.upscale_tiles(lr, [t.hr_origin for t in group])
                    for k, tile in enumerate(group):
                        core = (slice(None), slice(crop, crop + tile.hr_core[1] - tile.hr_core[0]),
                                slice(crop, crop + tile.hr_core[3] - tile.hr_core[2]))
                        std = result.std[k][core] if result.std is not None else None
                        blender.add(result.mean[k][core], tiles.weights(tile.row, tile.col), tile.hr_core[2],
                                    std=std)
                    done += len(group)
                    if progress:
                        progress(done, total)
                blender.finish_row()
        writer.close()
        describe(dst, descriptions=descriptions, tags=tags,
                 scales=[r.scale for r in encoding.radiometry] if write_scale else None,
                 offsets=[r.offset for r in encoding.radiometry] if write_scale else None)
        dst.close()
        cog_args = dict(overwrite=options.overwrite, blocksize=options.blocksize,
                        creation_options=options.creation_options,
                        overview_resampling=options.overview_resampling, threads=options.threads)
        if std_dst is not None:
            describe(std_dst, descriptions=[f"{d} std" for d in descriptions],
                     tags={**tags, "RSSR_LAYER": "per-pixel standard deviation of the samples (reflectance)"})
            std_dst.close()
            translate_to_cog(std_scratch_path, std_output, **cog_args)
        try:
            translate_to_cog(scratch_path, output, **cog_args)
        except BaseException:
            if std_output is not None:
                std_output.unlink(missing_ok=True)  # no half-written pair
            raise


class _BlockWriter:
    """Encodes and writes finished blocks on one worker thread, so GDAL I/O overlaps the model's next tiles.

    At most ``depth`` blocks wait; an error on the worker is raised in the caller at the next ``put`` or ``close``.
    """

    def __init__(self, write: Callable[[FinishedRows, np.ndarray], None], depth: int = 4) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._write = write
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rssr-writer")
        self._pending: deque = deque()
        self._depth = depth

    def put(self, block: FinishedRows, valid: np.ndarray) -> None:
        self._pending.append(self._pool.submit(self._write, block, valid))
        while len(self._pending) > self._depth:
            self._pending.popleft().result()

    def close(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> "_BlockWriter":
        return self

    def __exit__(self, *exc) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)


def _total_tiles(tiles: TilePlan, chunk_width: int) -> int:
    return len(tiles.rows.starts) * sum(len(c.cols) for c in tiles.column_chunks(chunk_width))


def _read_strip(scene: Scene, row_tiles) -> tuple[np.ndarray, Window]:
    """One read covering the LR windows of a row of tiles (they share rows and overlap in columns)."""
    first, last = row_tiles[0].read, row_tiles[-1].read
    window = Window(first.col_off, first.row_off, last.col_off + last.width - first.col_off, first.height)
    data, _ = scene.read(window)
    return data, window


def _slice(strip: np.ndarray, strip_window: Window, read: Window) -> np.ndarray:
    c0 = int(read.col_off - strip_window.col_off)
    return strip[:, :, c0:c0 + int(read.width)]


def _valid_mask(scene: Scene, plan: UpscalePlan, aoi: AOI | None, rows: FinishedRows) -> np.ndarray:
    """Valid output pixels: their LR pixel is valid (nearest) and, for polygon AOIs, their centre is inside."""
    h, w = rows.data.shape[1:]
    scale = float(plan.scale)
    # The LR pixel under each HR pixel centre, relative to the output window.
    lr_rows = np.floor((np.arange(rows.row0, rows.row0 + h) + 0.5) / scale).astype(int)
    lr_cols = np.floor((np.arange(rows.col0, rows.col0 + w) + 0.5) / scale).astype(int)
    lr_rows = np.minimum(lr_rows, int(plan.window.height) - 1)
    lr_cols = np.minimum(lr_cols, int(plan.window.width) - 1)
    window = Window(int(plan.window.col_off) + lr_cols[0], int(plan.window.row_off) + lr_rows[0],
                    lr_cols[-1] - lr_cols[0] + 1, lr_rows[-1] - lr_rows[0] + 1)
    _, lr_valid = scene.read(window)
    valid = lr_valid[np.ix_(lr_rows - lr_rows[0], lr_cols - lr_cols[0])]
    if aoi is not None and aoi.mask_outside:
        sub = plan.hr_grid.window(Window(rows.col0, rows.row0, w, h))
        valid &= geometry_mask([aoi.geometry], out_shape=(h, w), transform=sub.transform, invert=True)
    return valid
