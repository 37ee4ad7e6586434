"""``rssr upscale``: thin click layer over :func:`rssr_cli.pipeline.upscale`."""

from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path

import click

from rssr_cli.cli.options import (IntList, KeyValue, consistency_value, device_opt, flatten_bidx, json_opt,
                                  overwrite_opt, sampler_mode_options, verbosity_options, weights_opt)
from rssr_cli.cli.progress import tile_progress
from rssr_cli.methods import METHODS
from rssr_cli.tiling import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE

#: Exit code when some inputs of a batch failed and the others were written.
EXIT_PARTIAL = 3


def _read_list(source: str) -> list[str]:
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
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
@click.option("--offset", type=float, help="Sentinel-2 additive offset in DN, used when the file's metadata has none "
              "(-1000 for processing baseline 04.00 and later). Reflectance = (DN + offset) / 10000.")
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
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the noise field.")
@click.option("--samples", type=click.IntRange(min=1), default=1, show_default=True,
              help="Draws per pixel; the output is their mean and OUTPUT_std.tif their standard deviation.")
@sampler_mode_options
@click.option("--batch-size", type=click.IntRange(min=1), help="Tiles per model call. Default: the method's.")
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
@click.option("--dry-run", is_flag=True, help="Print the plan (window, tiles, sizes) and write nothing.")
@json_opt
@verbosity_options
@click.pass_context
def upscale(ctx: click.Context, **params) -> None:
    """Super-resolve Sentinel-2 scene(s) from 10 m to 0.8 m and write Cloud-Optimized GeoTIFFs.

    INPUT is a raster GDAL can open (GeoTIFF, VRT, SAFE/JP2), or one file per band (B02.tif B03.tif B04.tif
    B08.tif). Several scenes are written to --output-dir (default: the current folder); '-' reads the input list from stdin.

    Exit codes: 0 ok, 1 error, 2 usage error, 3 some inputs of a batch failed (the others were written), 130/143
    interrupted by SIGINT/SIGTERM (the finished work is kept for --resume).
    """
    from rssr_cli.interrupt import stop_on_signals

    with stop_on_signals():  # SIGINT/SIGTERM raise Interrupted: the run stops where --resume can continue
        _upscale(ctx, **params)


def _upscale(ctx: click.Context, inputs, output, output_dir, from_list, separate, bidx, nodata, offset, bbox,
             bbox_crs, aoi, method, weights, device, steps, start, eta, seed, samples, consistency, init, batch_size,
             scale, tile_size, overlap, dtype, creation_options, gdal_config, blocksize, overview_resampling, threads,
             overwrite, resume, preview, dry_run, as_json, allow_unusual_input):
    from rssr_cli.aoi import parse_bbox
    from rssr_cli.errors import Interrupted, RssrError, UsageError
    from rssr_cli.methods import method_options
    from rssr_cli.pipeline import UpscaleOptions, default_output, plan_upscale
    from rssr_cli.pipeline import upscale as run_upscale

    verbosity = ctx.obj.get("verbosity", 0) if ctx.obj else 0
    paths = list(inputs)
    if paths == ["-"]:
        paths = _read_list("-")
    if from_list:
        paths += _read_list(from_list)
    if not paths:
        raise click.UsageError("no INPUT given (pass paths, '-' or --from FILE)")
    scenes = group_inputs(paths, separate)
    if len(scenes) > 1 and output:
        raise click.UsageError("-o/--output names one file; use --output-dir for several scenes")
    if output_dir and not Path(output_dir).is_dir():
        raise click.UsageError(f"--output-dir {output_dir} is not an existing folder")

    if scale and method != "bicubic":
        raise UsageError("--scale applies to --method bicubic; the diffusion model works at its trained scale")
    # Each method takes the flags it defines (rssr_cli.methods); the others keep their defaults.
    options = UpscaleOptions(
        method=method_options(method, weights=weights, device=device, steps=steps, start=start, eta=eta, seed=seed,
                              samples=samples, consistency=consistency_value(ctx, consistency), init=init,
                              batch_size=batch_size,
                              scale=Fraction(scale).limit_denominator(1000) if scale else None),
        bidx=flatten_bidx(bidx), nodata=nodata, offset=offset, bbox=parse_bbox(bbox) if bbox else None,
        bbox_crs=bbox_crs, aoi=aoi, tile_size=tile_size, overlap=overlap, dtype=dtype,
        blocksize=blocksize, creation_options=dict(creation_options), overview_resampling=overview_resampling,
        threads=threads, gdal_config=dict(gdal_config), overwrite=overwrite, resume=resume,
        allow_unusual_input=allow_unusual_input)
    upsampler = options.method.build()  # once: a batch reuses the loaded model
    failures = 0
    for scene in scenes:
        out = Path(output) if output else default_output(scene[0], output_dir)
        record = {"input": scene[0] if len(scene) == 1 else list(scene), "output": str(out)}
        try:
            if dry_run:
                plan = plan_upscale(scene, out, options, upsampler=upsampler)
                record = {**plan.to_dict(), "status": "planned", "error": None}
                if not as_json:
                    _print_plan(record)
            else:
                with tile_progress(enabled=verbosity >= 0 and sys.stderr.isatty(), label=Path(scene[0]).name) as cb:
                    result = run_upscale(scene, out, options, upsampler=upsampler, progress=cb)
                record = result.to_dict()
                if preview and result.status == "ok":
                    from rssr_cli.preview import write_preview

                    record["preview"] = str(write_preview(out))
                if verbosity >= 0:
                    click.echo(_done_line(out, record), err=True)
        except Interrupted as exc:
            record.update({"status": "interrupted", "error": str(exc)})
            if as_json:
                click.echo(json.dumps(record))
            click.echo(f"Interrupted by {exc.signal_name}: the finished work is kept beside {out}; run the same "
                       "command with --resume to continue", err=True)
            ctx.exit(exc.exit_code)
        except RssrError as exc:
            if len(scenes) == 1 and not as_json:
                raise
            failures += 1
            record.update({"status": "error", "error": str(exc)})
            if not as_json or verbosity >= 0:
                click.echo(f"Error: {scene[0]}: {exc}", err=True)
            if len(scenes) == 1:
                click.echo(json.dumps(record))
                ctx.exit(exc.exit_code)
        if as_json:
            click.echo(json.dumps(record))
    if failures:
        ctx.exit(1 if failures == len(scenes) else EXIT_PARTIAL)


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
