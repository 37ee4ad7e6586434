"""``rssr_cli.upscale``: the Python API under ``rssr upscale``.

The scene, the AOI and the tile plan are settled first (:func:`plan_upscale` stops there); then the stages run one
column chunk at a time, top to bottom, one row of tiles at a time (:func:`rssr_cli.stream.stream_rows`, each stage on
its own thread):

- read (:func:`rssr_cli.strips.read_strips`): the row's LR strip, reflectance and validity;
- infer (:func:`rssr_cli.infer.infer_strip`): its tiles through the method in batches, HR cores out;
- blend (:func:`rssr_cli.blend.blend_row`): feathered into finished output blocks, each masked
  (:class:`rssr_cli.validity.OutputMask`) from the strip's validity;
- sink (:class:`rssr_cli.sink.CogSink`): encoded and written on a writer thread, then the COG (and ``_std``).

Each finished row of tiles is journaled (:mod:`rssr_cli.resume`) after its pixels are on disk, so an interrupted run
continues with ``UpscaleOptions(resume=True)`` from where it stopped and writes the same pixels as an uninterrupted one;
one run at a time writes an output (:class:`rssr_cli.lock.OutputLock`), and the free space is checked first
(:mod:`rssr_cli.diskspace`). Under ``torchrun`` the processes share the rows of tiles of one output
(``upscale(..., world=World.from_env())``, :mod:`rssr_cli.world`) and write the COG one process writes.

Example (a notebook)::

    import rssr_cli
    result = rssr_cli.upscale("scene.tif", "scene_sr.tif",
                              rssr_cli.UpscaleOptions(method="bicubic", bbox=(2.80, 42.34, 2.81, 42.35)))
    result.to_dict()
"""

from __future__ import annotations

import hashlib
import os
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import rasterio
from rasterio.windows import Window

from rssr_cli.version import __version__
from rssr_cli.aoi import AOI, bbox_aoi, geojson_aoi, parse_crs, snapped_window
from rssr_cli.cog import CogOptions, check_output
from rssr_cli.diskspace import check_free_space, free_bytes
from rssr_cli.encoding import output_encoding
from rssr_cli.errors import InputError, OutputError, UsageError
from rssr_cli.input_checks import check_input, expected_input
from rssr_cli.lock import OutputLock
from rssr_cli.methods import MethodOptions, TileUpsampler
from rssr_cli.methods.diffusion import DiffusionOptions
from rssr_cli.resume import Journal, RunFiles, fingerprint_differences, fingerprint_digest, resumable_run
from rssr_cli.scene import Grid, Scene, open_scene
from rssr_cli.sink import CogSink, PartialFiles
from rssr_cli.stac import StacItem
from rssr_cli.stac_item import item_path, output_item, write_item
from rssr_cli.stream import stream_rows
from rssr_cli.tiling import DEFAULT_CHUNK_WIDTH, DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, TilePlan, plan_tiles
from rssr_cli.validity import OutputMask
from rssr_cli.world import World

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
    #: Also write OUTPUT.json, the output's STAC Item (:mod:`rssr_cli.stac_item`), after the COG.
    stac: bool = False


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
    stac: str | None = None  # the output's STAC Item (``UpscaleOptions(stac=True)``)

    def to_dict(self) -> dict[str, Any]:
        out = self.plan.to_dict()
        out.update({"seconds": round(self.seconds, 3), "status": self.status, "error": None,
                    "reused_tiles": self.reused_tiles})
        if self.uncertainty:
            out["uncertainty"] = self.uncertainty
        if self.stac:
            out["stac"] = self.stac
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
    if not scene.any_valid(window):  # refused before any tile is computed (the commit checks the AOI's pixels)
        raise _nothing_to_do(inputs)
    lr_grid = scene.grid.window(window)
    plan = UpscalePlan(inputs=inputs, output=str(output), window=window, lr_grid=lr_grid,
                       hr_grid=lr_grid.zoom(upsampler.scale), tiles=tiles.count, bands=upsampler.bands,
                       dtype=_output_dtype(options.dtype, scene), scale=upsampler.scale,
                       with_std=upsampler.samples > 1, free_bytes=free_bytes(output.parent))
    return plan, tiles, aoi


def _nothing_to_do(inputs: Sequence[str]) -> InputError:
    return InputError(f"{', '.join(inputs)}: every input pixel in the window is nodata; there is nothing to "
                      "super-resolve (choose another --bbox/--aoi, or check --nodata)")


def _inputs(inputs: str | Path | StacItem | Sequence[str | Path]) -> tuple[str, ...]:
    """The inputs as named in plans, records and tags (a STAC Item read from stdin: its id)."""
    if isinstance(inputs, StacItem):
        return (inputs.label,)
    return (str(inputs),) if isinstance(inputs, (str, Path)) else tuple(str(p) for p in inputs)


def _source(inputs: str | Path | StacItem | Sequence[str | Path], paths: tuple[str, ...]) -> StacItem | tuple[str, ...]:
    """What :func:`open_scene` opens: an Item object as it is (it may have no path; alone or as a 1-tuple), else the
    paths."""
    if not isinstance(inputs, (str, Path, StacItem)) and len(inputs) == 1 and isinstance(inputs[0], StacItem):
        return inputs[0]
    return inputs if isinstance(inputs, StacItem) else paths


def _env(options: UpscaleOptions) -> rasterio.Env:
    config = {"GDAL_CACHEMAX": GDAL_CACHEMAX_MB, "GDAL_NUM_THREADS": options.threads}
    config.update(options.gdal_config)
    return rasterio.Env(**config)


def plan_upscale(inputs: str | Path | StacItem | Sequence[str | Path], output: str | Path | None = None,
                 options: UpscaleOptions = UpscaleOptions(), *,
                 upsampler: TileUpsampler | None = None) -> UpscalePlan:
    """The plan of an upscale (window, grid, tiles, sizes) without writing anything; refused like the run itself when
    the output's folder has too little free space."""
    paths = _inputs(inputs)
    output = Path(output) if output else default_output(paths[0])
    upsampler = upsampler or options.method.build()
    with _env(options), open_scene(_source(inputs, paths), bidx=options.bidx, bands=upsampler.bands,
                                   nodata=options.nodata, offset=options.offset) as scene:
        plan = _plan(scene, paths, output, options, upsampler)[0]
    plan.check_free_space()
    return plan


def upscale(inputs: str | Path | StacItem | Sequence[str | Path], output: str | Path | None = None,
            options: UpscaleOptions = UpscaleOptions(), *, upsampler: TileUpsampler | None = None,
            progress: ProgressCallback | None = None, world: World | None = None) -> UpscaleResult:
    """Super-resolve one scene (one raster, one single-band raster per band, a STAC Item given as a path, URL or
    :class:`~rssr_cli.stac.StacItem`, or a SAFE product) into a COG at ``output``; with ``options.stac`` also its STAC
    Item, ``OUTPUT.json``, written after the COG (an existing one is refused without ``overwrite``).

    Pass ``upsampler`` to reuse a loaded model across many scenes; otherwise one is built from ``options.method``.
    ``progress(done_tiles, total_tiles)`` is called as tiles finish. Nothing is left at ``output`` on failure; after
    an interruption (:class:`KeyboardInterrupt`, :class:`rssr_cli.errors.Interrupted`) the finished work stays beside
    it for ``options.resume``. Another run writing ``output`` at the same time is refused (:class:`OutputError`).

    ``world``: the processes sharing this output under ``torchrun`` (:func:`rssr_cli.world.joined_world`; every one
    calls ``upscale`` with the same arguments). Each computes a band of the rows of tiles and writes its finished rows
    into the scratch raster that rank 0 created; rank 0 locks the output, writes the COG and removes the work files. The
    COG is the one a single process writes, pixel for pixel; every rank returns (the same status) or raises, together.
    ``progress`` then counts this rank's tiles.
    """
    t0 = time.perf_counter()
    world = world or World()
    paths = _inputs(inputs)
    run = _Run(paths, Path(output) if output else default_output(paths[0]), options, world, progress,
               source=_source(inputs, paths))
    try:
        with ExitStack() as stack:
            local_batch = world.agree(lambda: run.open(stack, upsampler))
            batches = [b for b in world.gather(local_batch) if b is not None]
            if batches:
                run.upsampler.batch_size = min(batches)  # the same batches everywhere: a carry row is recomputed
            run.check_same_run(world.gather(world.agree(run.fingerprint)))
            if world.gather(world.agree(lambda: run.prepare(stack)))[0]:
                world.agree(lambda: run.write_item(fresh=False))
                return run.result(t0, status="skipped")
            reused = sum(world.gather(world.agree(lambda: run.compute(stack))))
            world.agree(run.commit)
    except BaseException:
        _barrier_quietly(world)  # rank 0 has removed the work files when any rank leaves
        raise
    world.barrier()
    return run.result(t0, reused=reused)


def _barrier_quietly(world: World) -> None:
    with suppress(Exception):  # a process that died: nothing to wait for
        world.barrier()


class _Run:
    """One upscale in phases that every process of a sharded run goes through together (:meth:`World.agree`):
    :meth:`open`, :meth:`fingerprint`, :meth:`prepare`, :meth:`compute`, :meth:`commit`. Alone, a plain sequence."""

    def __init__(self, paths: tuple[str, ...], output: Path, options: UpscaleOptions, world: World,
                 progress: ProgressCallback | None, source: StacItem | tuple[str, ...] | None = None) -> None:
        self.paths, self.output, self.options, self.world, self.progress = paths, output, options, world, progress
        self.source = source if source is not None else paths

    def open(self, stack: ExitStack, upsampler: TileUpsampler | None) -> int | None:
        """Lock the output (rank 0), load the method, open the scene and plan the tiles; returns the batch size this
        process would choose from its free device memory (None: the method's own)."""
        options = self.options
        if self.world.main:
            check_output(self.output, overwrite=options.overwrite or options.resume)
            if options.stac:
                check_output(item_path(self.output), overwrite=options.overwrite or options.resume)
            stack.enter_context(OutputLock(self.output))  # first: a second writer is refused before any work
        self.upsampler = upsampler or options.method.build()
        stack.enter_context(_env(options))
        self.scene = stack.enter_context(open_scene(self.source, bidx=options.bidx, bands=self.upsampler.bands,
                                                    nodata=options.nodata, offset=options.offset))
        self.plan, self.tiles, self.aoi = _plan(self.scene, self.paths, self.output, options, self.upsampler)
        fit = getattr(self.upsampler, "fit_batch_size", None)
        ctx = self.tiles.context
        return fit((self.tiles.rows.size + 2 * ctx, self.tiles.cols.size + 2 * ctx)) if fit is not None else None

    def fingerprint(self) -> dict[str, str]:
        self.fp = run_fingerprint(self.scene, self.plan, self.tiles, self.aoi, self.upsampler, self.options)
        self.files = RunFiles(self.output, uncertainty_path(self.output), with_std=self.plan.with_std)
        self.chunks = list(self.tiles.column_chunks(self.options.chunk_width))
        return self.fp

    def check_same_run(self, fingerprints: list[dict[str, str]]) -> None:
        """Every process must compute the same run (inputs, weights, rssr's version ...), or the bands would not fit."""
        for rank, fp in enumerate(fingerprints[1:], start=1):
            differ = fingerprint_differences(fingerprints[0], fp)
            if differ:
                raise UsageError(f"rank {rank} of {len(fingerprints)} would compute another output than rank 0 "
                                 f"({'; '.join(differ)}); give every process the same inputs, weights and rssr")

    def prepare(self, stack: ExitStack) -> bool:
        """Rank 0: the journal (new, or the interrupted run's with ``resume``), the free-space check and the scratch
        rasters; True when ``resume`` finds the output already finished (nothing left to do)."""
        if not self.world.main:
            return False
        files = self.files
        if _finished_before(files, self.fp, self.options):
            files.remove()
            return True
        units = len(self.chunks) * len(self.tiles.rows.starts)
        self.journal = stack.enter_context(resumable_run(files, self.fp, units=units, resume=self.options.resume))
        self.plan.check_free_space(already=files.allocated_bytes() if self.journal.done else 0)
        self.sink = stack.enter_context(self._sink(files.partial(reuse=bool(self.journal.done))))
        return False

    def compute(self, stack: ExitStack) -> int:
        """This process's rows of tiles (all of them alone), written into the scratch rasters and journaled; returns
        how many of its tiles an interrupted run had finished."""
        if not self.world.main:  # rank 0 created the journal and the scratch rasters: write into them
            self.journal = Journal.join(self.files.journal, self.fp)
            stack.callback(self.journal.close)
            self.sink = stack.enter_context(self._sink(self.files.partial(reuse=True, owner=False)))
        rows = self.world.band(len(self.tiles.rows.starts), carry=1)  # a band recomputes the row above it
        counter = _TileCounter(len(rows) * sum(len(c.cols) for c in self.chunks), self.progress)
        plan, aoi = self.plan, self.aoi
        mask = OutputMask(plan.window, plan.hr_grid, plan.scale,
                          polygon=aoi.geometry if aoi is not None and aoi.mask_outside else None)
        stream_rows(self.scene, self.tiles, self.upsampler, mask, self.sink, chunks=self.chunks, journal=self.journal,
                    rows=rows, progress=counter, check=self.world.check)
        self.sink.flush()
        return counter.reused

    def commit(self) -> None:
        """Rank 0, once every process's rows are on disk: the COG(s)."""
        if not self.world.main:
            return
        valid = self.journal.valid_on_disk() if self.world.distributed else self.journal.valid_pixels
        if valid == 0:
            raise _nothing_to_do(self.plan.inputs)
        self.sink.commit()
        self.write_item(fresh=True)

    def write_item(self, *, fresh: bool) -> None:
        """Rank 0, with ``stac``: OUTPUT.json for the COG just written (``fresh``: if the Item cannot be written, that
        COG is removed again, so that a run leaves both or neither) or for the finished output a resumed run found
        (written only if missing)."""
        path = item_path(self.output)
        if not self.options.stac or not self.world.main or (not fresh and path.exists()):
            return
        companion = uncertainty_path(self.output) if self.plan.with_std else None
        try:
            item = output_item(self.output, origin=self.scene.origin, inputs=self.plan.inputs, companion=companion)
            write_item(item, path, overwrite=self.options.overwrite or self.options.resume)
        except BaseException:
            for written in (self.output, companion) if fresh else ():
                if written is not None:
                    written.unlink(missing_ok=True)
            raise

    def _sink(self, partial: PartialFiles) -> CogSink:
        tags = {**_provenance(self.plan, self.upsampler, self.options), "RSSR_FINGERPRINT": fingerprint_digest(self.fp)}
        return _cog_sink(self.scene, self.plan, self.options, tags, partial)

    def result(self, t0: float, *, status: str = "ok", reused: int = 0) -> UpscaleResult:
        std = str(uncertainty_path(self.output)) if self.plan.with_std else None
        return UpscaleResult(plan=self.plan, seconds=time.perf_counter() - t0, uncertainty=std, status=status,
                             reused_tiles=reused, stac=str(item_path(self.output)) if self.options.stac else None)


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
    digest = getattr(getattr(upsampler, "loaded", None), "digest", "")  # the diffusion method's weights
    if digest:
        tags["RSSR_WEIGHTS_SHA256"] = str(digest)
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
    # A STAC Item's band files (the Item's own stamp says nothing about them).
    fp.update({f"band file {i + 1}": _stamp(p) for i, p in enumerate(scene.paths) if p not in plan.inputs})
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
