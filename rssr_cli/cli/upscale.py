"""``rssr upscale``: thin click layer over :func:`rssr_cli.pipeline.upscale`."""

from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path

import click

from rssr_cli.cli.options import (IntList, KeyValue, chroma_sigma_opt, consistency_value, device_opt, flatten_bidx,
                                  json_opt, overwrite_opt, sampler_mode_options, texture_opt, verbosity_options,
                                  weights_opt)
from rssr_cli.cli.progress import tile_progress
from rssr_cli.methods import METHODS
from rssr_cli.tiling import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE

#: Exit code when some inputs of a batch failed and the others were written.
EXIT_PARTIAL = 3


def _read_list(source: str) -> list[str]:
    return _lines(sys.stdin.read() if source == "-" else Path(source).read_text())


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def group_inputs(paths: list[str], separate: bool) -> list[tuple[str, ...]]:
    """Inputs -> scenes. Single-band files named after distinct 10 m bands (B02.tif, B03.tif ...) form one scene."""
    if separate or len(paths) <= 1:
        return [tuple(paths)] if paths else []
    from rssr_cli.bands import identify_band

    names = [identify_band(Path(p).name.split(".")[0]) for p in paths]
    if all(names) and len(set(names)) == len(names) and _all_single_band(paths):
        return [tuple(paths)]
    return [(p,) for p in paths]


def _all_single_band(paths: list[str]) -> bool:
    import rasterio

    try:
        for p in paths:
            with rasterio.open(p) as ds:
                if ds.count != 1:
                    return False
    except rasterio.errors.RasterioIOError:
        return False
    return True


@click.command(short_help="Super-resolve Sentinel-2 scenes to 0.8 m COGs.")
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output COG (one scene). Default: "
              "INPUT_sr.tif in the current folder.")
@click.option("--output-dir", type=click.Path(file_okay=False), help="Folder for the outputs of several scenes "
              "(each named INPUT_sr.tif).")
@click.option("--from", "from_list", metavar="FILE|-", help="Read input paths from a file (one per line) or stdin.")
@click.option("--separate", is_flag=True, help="The inputs are one scene, one file per band, in model band order.")
@click.option("-b", "--bidx", multiple=True, type=IntList(), help="Input bands in model order (B02,B03,B04,B08), "
              "1-based, e.g. -b 2,3,4,8. Default: from band descriptions or file names.")
@click.option("--nodata", type=float, help="Input nodata value (overrides the file's).")
@click.option("--offset", type=float, help="Sentinel-2 additive offset in DN (-1000 for processing baseline 04.00 and "
              "later); replaces what the file's metadata, the SAFE product or the STAC item's raster:bands declare, "
              "which are used without it. Reflectance = (DN + offset) / 10000.")
@click.option("--allow-unusual-input", is_flag=True, help="Skip the checks that the input is what the diffusion "
              "model was made for (pixels of 8-12.5 m on the ground, values that look like reflectance) and run it "
              "anyway.")
@click.option("--bbox", metavar="XMIN,YMIN,XMAX,YMAX", help="Area of interest as a box in --bbox-crs.")
@click.option("--bbox-crs", default="EPSG:4326", show_default=True,
              help="CRS of --bbox: anything pyproj knows, or 'scene' for the scene's own CRS.")
@click.option("--aoi", metavar="FILE|-", help="Area of interest as GeoJSON (geometry, Feature or FeatureCollection, "
              "lon/lat); pixels outside the polygon become nodata.")
@click.option("--method", type=click.Choice(METHODS), default="diffusion", show_default=True,
              help="diffusion: the model; bicubic: interpolation baseline.")
@weights_opt
@device_opt
@click.option("--steps", type=click.IntRange(min=1), help="Reverse diffusion steps (network evaluations per sample). "
              "Default: the model's.")
@click.option("--start", type=click.FloatRange(0, 1, min_open=True), help="Where the LR-start sampler begins, as a "
              "fraction of the T training steps (1 = pure noise). Default: the model's.")
@click.option("--eta", type=click.FloatRange(min=0), help="Sampler stochasticity (0 = deterministic DDIM). "
              "Default: the model's.")
@texture_opt
@chroma_sigma_opt
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the noise field.")
@click.option("--samples", type=click.IntRange(min=1), default=1, show_default=True,
              help="Draws per pixel; the output is their mean and OUTPUT_std.tif their standard deviation.")
@sampler_mode_options
@click.option("--batch-size", type=click.IntRange(min=1), help="Tiles per model call. Default: the method's (on a "
              "GPU, as many as its free memory takes).")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the network (CUDA only; the first tiles wait "
              "for the compilation; results may differ from an uncompiled run in the last bits).")
@click.option("--scale", type=float, help="Scale factor for --method bicubic (default 12.5: 10 m -> 0.8 m).")
@click.option("--tile-size", type=click.IntRange(min=2), default=DEFAULT_TILE_SIZE, show_default=True,
              help="Tile core size in LR pixels (a multiple of 2 at 12.5x).")
@click.option("--overlap", type=click.IntRange(min=0), default=DEFAULT_OVERLAP, show_default=True,
              help="Overlap of neighbouring tiles in LR pixels, blended with cosine ramps.")
@click.option("-t", "--dtype", type=click.Choice(("auto", "uint16", "int16", "float32")), default="auto",
              show_default=True, help="Output type; auto keeps the input's (DN with its scale/offset); float32 writes "
              "reflectance.")
@click.option("--co", "creation_options", multiple=True, type=KeyValue(),
              help="GDAL creation option for the COG, NAME=VALUE (repeatable), e.g. --co COMPRESS=ZSTD.")
@click.option("--config", "gdal_config", multiple=True, type=KeyValue(), help="GDAL configuration option NAME=VALUE.")
@click.option("--blocksize", type=click.IntRange(min=16), default=512, show_default=True, help="COG tile size.")
@click.option("--overview-resampling", default="average", show_default=True,
              type=click.Choice(("average", "nearest", "bilinear", "cubic", "lanczos", "gauss", "rms")))
@click.option("--threads", default="ALL_CPUS", show_default=True, help="GDAL threads for compression.")
@overwrite_opt
@click.option("--resume", is_flag=True, help="Continue an interrupted run of the same command from its finished work "
              "(refused, naming what differs, if a setting that changes pixels changed); in a batch, inputs whose "
              "output is already finished are skipped.")
@click.option("--preview", is_flag=True, help="Also write a PNG quick-look (true colour) beside each output.")
@click.option("--stac", is_flag=True, help="Also write OUTPUT.json, a STAC Item describing each output COG (footprint, "
              "projection, raster:bands scale/offset/nodata, eo:bands, the input's datetime and platform, a "
              "derived_from link, rssr's settings), after the COG; an existing one is kept unless --overwrite.")
@click.option("--dry-run", is_flag=True, help="Print the plan (window, tiles, sizes) and write nothing.")
@json_opt
@verbosity_options
@click.pass_context
def upscale(ctx: click.Context, **params) -> None:
    """Super-resolve Sentinel-2 scene(s) from 10 m to 0.8 m and write Cloud-Optimized GeoTIFFs.

    INPUT is a raster GDAL can open (GeoTIFF, VRT), one file per band (B02.tif B03.tif B04.tif B08.tif), a STAC
    Item (ITEM.json, an http(s) URL, or '-' with the Item on stdin) whose assets are the bands, or a Sentinel-2 SAFE
    product (.SAFE folder or .zip, L1C or L2A). Several scenes are written to --output-dir (default: the current
    folder); '-' reads the input list from stdin.

    Under torchrun (torchrun --nproc-per-node N -m rssr_cli upscale ...), the processes share one input's rows of
    tiles and write one COG, or share a batch's inputs; each takes its own GPU (see docs/scale-out.md).

    Exit codes: 0 ok, 1 error, 2 usage error, 3 some inputs of a batch failed (the others were written), 130/143
    interrupted by SIGINT/SIGTERM (the finished work is kept for --resume).
    """
    from rssr_cli.errors import RssrError
    from rssr_cli.interrupt import stop_on_signals
    from rssr_cli.world import joined_world

    # SIGINT/SIGTERM raise Interrupted: the run stops where --resume can continue.
    with stop_on_signals(), joined_world() as world:
        if not world.distributed:
            code = _upscale(ctx, world, **params)
        else:
            try:
                code = _upscale(ctx, world, **params)
            except RssrError as exc:  # the same on every rank: one line, from rank 0, before any rank ends
                if world.main:
                    click.echo(f"Error: {exc}", err=True)
                code = exc.exit_code
            except click.UsageError as exc:  # the same on every rank too: rank 0 prints it as click would
                if world.main:
                    exc.show()
                code = exc.exit_code
    ctx.exit(code)


def _upscale(ctx: click.Context, world, inputs, output, output_dir, from_list, separate, dry_run, as_json, preview,
             **params) -> int:
    """The scenes of the command through :func:`rssr_cli.pipeline.upscale`, one JSON record each; the exit code."""
    from rssr_cli.pipeline import default_output
    from rssr_cli.world import World

    paths: list = list(inputs)
    stdin_item = None
    if world.distributed and (paths == ["-"] or from_list == "-"):
        raise click.UsageError("under torchrun stdin reaches one process only: pass the inputs as paths or --from FILE")
    if paths == ["-"]:
        text = sys.stdin.read()
        if text.lstrip().startswith("{"):  # a STAC Item (JSON), not a list of paths
            from rssr_cli.stac import parse_item

            stdin_item = parse_item(text)
            paths = []
        else:
            paths = _lines(text)
    if from_list:
        paths += _read_list(from_list)
    if not paths and stdin_item is None:
        raise click.UsageError("no INPUT given (pass paths, '-' or --from FILE)")
    scenes = [(stdin_item,)] if stdin_item is not None else group_inputs(paths, separate)
    if len(scenes) > 1 and output:
        raise click.UsageError("-o/--output names one file; use --output-dir for several scenes")
    if output_dir and not Path(output_dir).is_dir():
        raise click.UsageError(f"--output-dir {output_dir} is not an existing folder")
    options = _options(ctx, world, **params)
    # One input under torchrun: every process computes a band of it. Several: each process takes its share of them.
    sharded = world.distributed and len(scenes) == 1 and not dry_run
    if dry_run:
        mine = range(len(scenes)) if world.main else range(0)
    else:
        mine = range(len(scenes)) if sharded else world.share(len(scenes))
    run_world = world if sharded else World()
    # Loaded once (a batch reuses it), on every process that has work: a failure to load stops every process.
    upsampler = world.agree(lambda: options.method.build() if mine else None)
    report = _Reporter(ctx, as_json=as_json, quiet=sharded and not world.main, single=len(scenes) == 1,
                       bars=world.main)
    for i in mine:
        scene = scenes[i]
        out = Path(output) if output else default_output(scene[0], output_dir)
        if not report.run(scene, out, lambda s=scene, o=out: _one(s, o, options, upsampler, run_world, report,
                                                                     dry_run=dry_run, preview=preview)):
            break  # interrupted: the other inputs are left for --resume
    failures, total = report.failures, len(mine)
    if world.distributed and not sharded:  # every process ends with the exit code of the whole batch
        counts = world.gather((failures, total))
        failures, total = sum(f for f, _ in counts), sum(t for _, t in counts)
    if report.interrupted is not None:
        return report.interrupted.exit_code
    if failures:
        return 1 if failures == total else EXIT_PARTIAL
    return 0


def _options(ctx: click.Context, world, bidx, nodata, offset, bbox, bbox_crs, aoi, method, weights, device, steps,
             start, eta, texture, chroma_sigma, seed, samples, consistency, init, batch_size, compile_, scale,
             tile_size, overlap, dtype, creation_options, gdal_config, blocksize, overview_resampling, threads,
             overwrite, resume, allow_unusual_input, stac):
    from rssr_cli.aoi import parse_bbox
    from rssr_cli.errors import UsageError
    from rssr_cli.methods import method_options
    from rssr_cli.pipeline import UpscaleOptions

    if scale and method != "bicubic":
        raise UsageError("--scale applies to --method bicubic; the diffusion model works at its trained scale")
    # Each method takes the flags it defines (rssr_cli.methods); the others keep their defaults. Under torchrun each
    # process takes its own GPU (world.device).
    return UpscaleOptions(
        method=method_options(method, weights=weights, device=world.device(device), steps=steps, start=start,
                              eta=eta, seed=seed, samples=samples, consistency=consistency_value(ctx, consistency),
                              init=init, texture=texture, chroma_sigma=chroma_sigma, batch_size=batch_size,
                              compile=compile_ or None,
                              scale=Fraction(scale).limit_denominator(1000) if scale else None),
        bidx=flatten_bidx(bidx), nodata=nodata, offset=offset, bbox=parse_bbox(bbox) if bbox else None,
        bbox_crs=bbox_crs, aoi=aoi, tile_size=tile_size, overlap=overlap, dtype=dtype,
        blocksize=blocksize, creation_options=dict(creation_options), overview_resampling=overview_resampling,
        threads=threads, gdal_config=dict(gdal_config), overwrite=overwrite, resume=resume,
        allow_unusual_input=allow_unusual_input, stac=stac)


def _one(scene: tuple[str, ...], out: Path, options, upsampler, world, report: "_Reporter", *, dry_run: bool,
         preview: bool) -> dict:
    """One scene planned or upscaled; its JSON record."""
    from rssr_cli.pipeline import plan_upscale
    from rssr_cli.pipeline import upscale as run_upscale

    if dry_run:
        plan = plan_upscale(scene, out, options, upsampler=upsampler)
        record = {**plan.to_dict(), "status": "planned", "error": None}
        if not report.as_json:
            _print_plan(record)
        return record
    with tile_progress(enabled=report.verbosity >= 0 and report.bars and sys.stderr.isatty(),
                       label=Path(str(scene[0])).name) as cb:
        result = run_upscale(scene, out, options, upsampler=upsampler, progress=cb, world=world)
    record = result.to_dict()
    if preview and result.status == "ok" and world.main:
        from rssr_cli.preview import write_preview

        record["preview"] = str(write_preview(out))
    if report.verbosity >= 0 and not report.quiet:
        click.echo(_done_line(out, record), err=True)
    return record


class _Reporter:
    """The records and messages of the scenes of one process: JSON lines (one per scene, flushed: the processes of a
    torchrun launch share stdout), errors and interruptions as in a single process. ``quiet``: a process that is not
    rank 0 of a sharded run, which prints nothing (rank 0 speaks for the run); ``bars``: progress bars (rank 0's
    only, on a terminal)."""

    def __init__(self, ctx: click.Context, *, as_json: bool, quiet: bool, single: bool, bars: bool) -> None:
        self.ctx, self.as_json, self.quiet, self.single, self.bars = ctx, as_json, quiet, single, bars
        self.verbosity = ctx.obj.get("verbosity", 0) if ctx.obj else 0
        self.failures = 0
        self.interrupted = None

    def run(self, scene: tuple[str, ...], out: Path, work) -> bool:
        """Run ``work`` for one scene and report it; False after an interruption (the batch stops there)."""
        from rssr_cli.errors import Interrupted, RssrError

        record = {"input": str(scene[0]) if len(scene) == 1 else [str(p) for p in scene], "output": str(out)}
        try:
            record = work()
        except Interrupted as exc:
            record.update({"status": "interrupted", "error": str(exc)})
            self._json(record)
            if not self.quiet:
                click.echo(f"Interrupted by {exc.signal_name}: the finished work is kept beside {out}; run the same "
                           "command with --resume to continue", err=True)
            self.interrupted = exc
            return False
        except RssrError as exc:
            if self.single and not self.as_json:
                raise
            self.failures += 1
            record.update({"status": "error", "error": str(exc)})
            if not self.quiet and (not self.as_json or self.verbosity >= 0):
                click.echo(f"Error: {scene[0]}: {exc}", err=True)
            if self.single:
                self._json(record, always=True)
                self.ctx.exit(exc.exit_code)
        self._json(record)
        return True

    def _json(self, record: dict, always: bool = False) -> None:
        if (self.as_json or always) and not self.quiet:
            click.echo(json.dumps(record))
            sys.stdout.flush()


def _done_line(out: Path, record: dict) -> str:
    if record["status"] == "skipped":
        return f"kept {out}: already finished with the same settings (--resume)"
    c, h, w = record["shape"]
    reused = f", {record['reused_tiles']} reused" if record.get("reused_tiles") else ""
    return f"wrote {out} ({c} bands, {w} x {h} px, {record['tiles']} tiles{reused}, {record['seconds']:.1f} s)"


def _print_plan(record: dict) -> None:
    from rssr_cli.diskspace import human_bytes

    c, h, w = record["shape"]
    win = record["lr_window"]
    lines = [
        f"input:    {record['input']}",
        f"output:   {record['output']}",
        f"crs:      {record['crs']}",
        f"window:   LR cols {win['col_off']}..{win['col_off'] + win['width']}, "
        f"rows {win['row_off']}..{win['row_off'] + win['height']} ({win['width']} x {win['height']} px)",
        f"output:   {w} x {h} px x {c} bands {record['dtype']}, pixel {record['resolution'][0]:.6g}, "
        f"scale {record['scale']:g}",
        f"bounds:   {', '.join(f'{v:.6f}' for v in record['bounds'])}",
        f"tiles:    {record['tiles']}",
        f"size:     {human_bytes(record['output_bytes'])} uncompressed; scratch disk needed "
        f"{human_bytes(record['scratch_bytes'])}"
        + (f"; {human_bytes(record['free_bytes'])} free" if record.get("free_bytes") is not None else ""),
    ]
    click.echo("\n".join(lines))
