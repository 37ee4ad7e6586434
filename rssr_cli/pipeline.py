"""``rssr_cli.upscale``: the Python API under ``rssr upscale``.

The scene, the AOI and the tile plan are settled first (:func:`plan_upscale` stops there); then the stages run one
column chunk at a time, top to bottom, one row of tiles at a time:

- read (:func:`rssr_cli.strips.read_strips`): the row's LR strip, reflectance and validity;
- infer (:func:`rssr_cli.infer.infer_strip`): its tiles through the method in batches, HR cores out;
- blend (:func:`rssr_cli.blend.blend_row`): feathered into finished output blocks, each masked
  (:class:`rssr_cli.validity.OutputMask`) from the strip's validity;
- sink (:class:`rssr_cli.sink.CogSink`): encoded and written on a writer thread, then the COG (and ``_std``).

Each finished row of tiles is journaled (:mod:`rssr_cli.resume`) after its pixels are on disk, so an interrupted run
continues with ``UpscaleOptions(resume=True)`` from where it stopped and writes the same pixels as an uninterrupted one;
one run at a time writes an output (:class:`rssr_cli.lock.OutputLock`), and the free space is checked first
(:mod:`rssr_cli.diskspace`).

Example (a notebook)::

    import rssr_cli
    result = rssr_cli.upscale("scene.tif", "scene_sr.tif",
                              rssr_cli.UpscaleOptions(method="bicubic", bbox=(2.80, 42.34, 2.81, 42.35)))
    result.to_dict()
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from contextlib import ExitStack
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
from rssr_cli.diskspace import check_free_space, free_bytes
from rssr_cli.encoding import output_encoding
from rssr_cli.errors import InputError, OutputError, UsageError
from rssr_cli.infer import infer_strip
from rssr_cli.input_checks import check_input, expected_input
from rssr_cli.lock import OutputLock
from rssr_cli.methods import MethodOptions, TileUpsampler
from rssr_cli.methods.diffusion import DiffusionOptions
from rssr_cli.resume import Journal, RunFiles, fingerprint_digest, resumable_run
from rssr_cli.scene import Grid, Scene, open_scene
from rssr_cli.sink import CogSink, PartialFiles
from rssr_cli.strips import read_strips
from rssr_cli.tiling import DEFAULT_CHUNK_WIDTH, DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, Chunk, TilePlan, plan_tiles
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
    #: Continue an interrupted run of the same settings from its finished rows of tiles (refused if any setting that
    #: changes pixels differs); an output already finished by such a run is left as it is (status ``skipped``).
    resume: bool = False
    #: Skip the checks that the input is what the method was made for (:mod:`rssr_cli.input_checks`: pixels of about
    #: 10 m on the ground, values that look like reflectance), for inputs their user knows better about.
    allow_unusual_input: bool = False


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
    with_std: bool = False  # several samples: an ``_std`` companion is written too
    free_bytes: int | None = None  # free space in the output's folder when planned (None: unknown)

    @property
    def output_bytes(self) -> int:
        """Uncompressed size of the output raster."""
        return self.hr_grid.width * self.hr_grid.height * len(self.bands) * np.dtype(self.dtype).itemsize

    @property
    def std_bytes(self) -> int:
        """Uncompressed size of the ``_std`` companion (float32), 0 without one."""
        return self.hr_grid.width * self.hr_grid.height * len(self.bands) * 4 if self.with_std else 0

    @property
    def scratch_bytes(self) -> int:
        """Disk needed beside the outputs while running: the scratch rasters plus rio-cogeo's intermediates."""
        return 2 * (self.output_bytes + self.std_bytes)

    def check_free_space(self, *, already: int = 0) -> None:
        """Refuse (:class:`OutputError`, with the numbers) when scratch + outputs, less ``already`` bytes that a
        resumed run's scratch files hold, exceed the free space of the output's folder."""
        check_free_space(Path(self.output).parent, {"scratch": max(self.scratch_bytes - already, 0),
                                                    "output": self.output_bytes + self.std_bytes},
                         self.free_bytes)

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
            "output_bytes": self.output_bytes + self.std_bytes,
            "scratch_bytes": self.scratch_bytes,
            "free_bytes": self.free_bytes,
        }


@dataclass
class UpscaleResult:
    plan: UpscalePlan
    seconds: float
    uncertainty: str | None = None
    status: str = "ok"  # or "skipped": resumed, the output was already finished
    reused_tiles: int = 0  # tiles a resumed run took from the interrupted one

    def to_dict(self) -> dict[str, Any]:
        out = self.plan.to_dict()
        out.update({"seconds": round(self.seconds, 3), "status": self.status, "error": None,
                    "reused_tiles": self.reused_tiles})
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
    if not options.allow_unusual_input:
        check_input(scene, expected_input(upsampler))
    aoi = _resolve_aoi(options, scene)
    window = snapped_window(scene.grid, aoi, upsampler.scale)
    tiles = plan_tiles(window, upsampler.scale, tile_size=options.tile_size, overlap=options.overlap,
                       context=max(upsampler.context, options.overlap // 2))
    lr_grid = scene.grid.window(window)
    plan = UpscalePlan(inputs=inputs, output=str(output), window=window, lr_grid=lr_grid,
                       hr_grid=lr_grid.zoom(upsampler.scale), tiles=tiles.count, bands=upsampler.bands,
                       dtype=_output_dtype(options.dtype, scene), scale=upsampler.scale,
                       with_std=upsampler.samples > 1, free_bytes=free_bytes(output.parent))
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
    """The plan of an upscale (window, grid, tiles, sizes) without writing anything; refused like the run itself when
    the output's folder has too little free space."""
    paths = _inputs(inputs)
    output = Path(output) if output else default_output(paths[0])
    upsampler = upsampler or options.method.build()
    with _env(options), open_scene(paths, bidx=options.bidx, bands=upsampler.bands, nodata=options.nodata,
                                   offset=options.offset) as scene:
        plan = _plan(scene, paths, output, options, upsampler)[0]
    plan.check_free_space()
    return plan


def upscale(inputs: str | Path | Sequence[str | Path], output: str | Path | None = None,
            options: UpscaleOptions = UpscaleOptions(), *, upsampler: TileUpsampler | None = None,
            progress: ProgressCallback | None = None) -> UpscaleResult:
    """Super-resolve one scene (one raster, or one single-band raster per band) into a COG at ``output``.

    Pass ``upsampler`` to reuse a loaded model across many scenes; otherwise one is built from ``options.method``.
    ``progress(done_tiles, total_tiles)`` is called as tiles finish. Nothing is left at ``output`` on failure; after
    an interruption (:class:`KeyboardInterrupt`, :class:`rssr_cli.errors.Interrupted`) the finished work stays beside
    it for ``options.resume``. Another run writing ``output`` at the same time is refused (:class:`OutputError`).
    """
    t0 = time.perf_counter()
    paths = _inputs(inputs)
    output = Path(output) if output else default_output(paths[0])
    check_output(output, overwrite=options.overwrite or options.resume)
    with ExitStack() as stack:
        stack.enter_context(OutputLock(output))  # first: a second writer is refused before any work
        upsampler = upsampler or options.method.build()
        stack.enter_context(_env(options))
        scene = stack.enter_context(open_scene(paths, bidx=options.bidx, bands=upsampler.bands,
                                               nodata=options.nodata, offset=options.offset))
        plan, tiles, aoi = _plan(scene, paths, output, options, upsampler)
        fingerprint = run_fingerprint(scene, plan, tiles, aoi, upsampler, options)
        files = RunFiles(output, uncertainty_path(output), with_std=plan.with_std)
        std_output = str(files.companion) if plan.with_std else None
        if _finished_before(files, fingerprint, options):
            files.remove()
            return UpscaleResult(plan=plan, seconds=time.perf_counter() - t0, uncertainty=std_output,
                                 status="skipped")
        chunks = list(tiles.column_chunks(options.chunk_width))
        journal = stack.enter_context(resumable_run(files, fingerprint, units=len(chunks) * len(tiles.rows.starts),
                                                    resume=options.resume))
        plan.check_free_space(already=files.allocated_bytes() if journal.done else 0)
        reused = _run(scene, plan, tiles, chunks, aoi, upsampler, options, fingerprint,
                      files.partial(reuse=bool(journal.done)), journal, progress)
    return UpscaleResult(plan=plan, seconds=time.perf_counter() - t0, uncertainty=std_output, reused_tiles=reused)


def _finished_before(files: RunFiles, fingerprint: dict[str, str], options: UpscaleOptions) -> bool:
    """Whether the output is already this run's finished output (resume only); refuses other files in the place of
    the output or its companion without ``overwrite``."""
    output = files.output
    if output.exists() and options.resume and _fingerprint_tag(output) == fingerprint_digest(fingerprint):
        return True
    for path in (output, files.companion) if files.with_std else (output,):
        if path.exists() and not options.overwrite:
            raise OutputError(f"{path} exists; pass --overwrite to replace it")
    return False


def _fingerprint_tag(path: Path) -> str | None:
    try:
        with rasterio.open(path) as ds:
            return ds.tags().get("RSSR_FINGERPRINT")
    except rasterio.errors.RasterioError:
        return None


def _run(scene: Scene, plan: UpscalePlan, tiles: TilePlan, chunks: list[Chunk], aoi: AOI | None,
         upsampler: TileUpsampler, options: UpscaleOptions, fingerprint: dict[str, str], partial: PartialFiles,
         journal: Journal, progress: ProgressCallback | None) -> int:
    """The stages over the tiles not finished yet, then the COG(s); returns how many tiles were reused."""
    mask = OutputMask(plan.window, plan.hr_grid, plan.scale,
                      polygon=aoi.geometry if aoi is not None and aoi.mask_outside else None)
    counter = _TileCounter(len(tiles.rows.starts) * sum(len(c.cols) for c in chunks), progress)
    tags = {**_provenance(plan, upsampler, options), "RSSR_FINGERPRINT": fingerprint_digest(fingerprint)}
    with _cog_sink(scene, plan, options, tags, partial) as sink:
        _upscale_tiles(scene, tiles, upsampler, mask, sink, chunks=chunks, counter=counter, journal=journal)
        sink.flush()
        if journal.valid_pixels == 0:
            raise InputError(f"{', '.join(plan.inputs)}: every input pixel in the window is nodata; there is "
                             "nothing to super-resolve (choose another --bbox/--aoi, or check --nodata)")
        sink.commit()
    return counter.reused


def _upscale_tiles(scene: Scene, tiles: TilePlan, upsampler: TileUpsampler, mask: OutputMask, sink: CogSink, *,
                   chunks: Sequence[Chunk], counter: _TileCounter, journal: Journal) -> None:
    """read -> infer -> blend -> sink, one column chunk at a time, each top to bottom one row of tiles at a time.

    Rows of tiles the journal lists as finished are skipped, except the last of them in a chunk, which is computed
    again without being written: its overlap with the next row is the blender's carry. Each row written is journaled
    once its pixels are on disk.
    """
    hr_height = tiles.hr_shape[0]
    for k, chunk in enumerate(chunks):
        done = journal.rows_done(k)
        counter.reuse(done * len(chunk.cols))
        if done == len(tiles.rows.starts):
            continue
        blender = RowBlender(len(upsampler.bands), *chunk.write, height=hr_height, with_std=sink.with_std)
        for strip in read_strips(scene, tiles, chunk, first=max(done - 1, 0)):
            if strip.row < done:  # on disk already: only its carry into the next row is needed
                for _ in blend_row(blender, tiles, strip.row, infer_strip(upsampler, strip)):
                    pass
                continue
            valid = 0
            for block in blend_row(blender, tiles, strip.row, infer_strip(upsampler, strip, on_batch=counter.add)):
                block_valid = mask.valid(block, strip)
                valid += int(block_valid.sum())
                sink.write(block, block_valid)
            sink.checkpoint(functools.partial(journal.record, k, strip.row, valid))


def _cog_sink(scene: Scene, plan: UpscalePlan, options: UpscaleOptions, tags: dict[str, str],
              partial: PartialFiles) -> CogSink:
    cog = CogOptions(blocksize=options.blocksize, creation_options=options.creation_options,
                     overview_resampling=options.overview_resampling, threads=options.threads,
                     overwrite=options.overwrite)
    output = Path(plan.output)
    return CogSink(output, plan.hr_grid, output_encoding(plan.dtype, scene), bands=scene.band_names, tags=tags,
                   cog=cog, std_output=uncertainty_path(output) if plan.with_std else None, partial=partial)


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


def run_fingerprint(scene: Scene, plan: UpscalePlan, tiles: TilePlan, aoi: AOI | None, upsampler: TileUpsampler,
                    options: UpscaleOptions) -> dict[str, str]:
    """Every setting that changes the output's pixels, by name: what ``--resume`` requires to be unchanged.

    The inputs (resolved path, size, modification time), the bands read and their radiometry, nodata, the LR window
    and the polygon that masks it, scale, tiling (tile size, overlap, context, column chunks), output type, batch
    size, samples, the method's provenance (model and its weights digest, sampler settings, seed, device) and rssr's
    version.
    """
    fp = {"rssr": __version__}
    fp.update({f"input {i + 1}": _stamp(p) for i, p in enumerate(plan.inputs)})
    fp["bands"] = ",".join(f"{b.name}={b.file + 1}:{b.bidx}" for b in scene.bands)
    fp["radiometry"] = ",".join(f"{r.scale!r}/{r.offset!r}" for r in scene.radiometry)
    fp["nodata"] = f"{scene.nodata!r}{' (every band)' if scene.nodata_all_bands else ''}"
    w = plan.window
    fp["lr_window"] = f"{int(w.col_off)},{int(w.row_off)},{int(w.width)},{int(w.height)}"
    polygon = aoi.geometry if aoi is not None and aoi.mask_outside else None
    fp["aoi_mask"] = hashlib.sha256(polygon.wkb).hexdigest()[:16] if polygon is not None else "none"
    fp.update({"scale": str(plan.scale), "tile_size": str(options.tile_size), "overlap": str(options.overlap),
               "context": str(tiles.context), "chunk_width": str(options.chunk_width), "dtype": plan.dtype,
               "batch_size": str(upsampler.batch_size), "samples": str(upsampler.samples)})
    fp.update({tag.removeprefix("RSSR_").lower(): str(v) for tag, v in upsampler.provenance().items()})
    digest = getattr(getattr(upsampler, "loaded", None), "digest", "")  # the diffusion method's weights
    if digest:
        fp["weights_sha256"] = str(digest)
    return fp


def _stamp(path: str) -> str:
    """An input as it is now: resolved path, size and modification time (a path GDAL opens remotely: itself)."""
    try:
        st = os.stat(path)
    except OSError:
        return path
    return f"{Path(path).resolve()} ({st.st_size} B, mtime {st.st_mtime_ns})"


class _TileCounter:
    """Counts finished tiles for the ``progress(done, total)`` callback; ``reused`` of them came from an interrupted
    run."""

    def __init__(self, total: int, progress: ProgressCallback | None) -> None:
        self.total, self.done, self.reused, self.progress = total, 0, 0, progress

    def reuse(self, tiles: int) -> None:
        if tiles:
            self.reused += tiles
            self.add(tiles)

    def add(self, tiles: int) -> None:
        self.done += tiles
        if self.progress is not None:
            self.progress(self.done, self.total)
