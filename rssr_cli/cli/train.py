"""``rssr prepare`` and ``rssr train``: thin click layers over :mod:`rssr_cli.train`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

from rssr_cli.cli.options import device_opt, overwrite_opt

MISSING_CHOICES = ("error", "mask")


def prepare_opts(func: Callable) -> Callable:
    """The archive options shared by ``prepare``, ``evaluate`` (and ``train`` through its [prepare] table)."""
    options = [
        click.option("--synthetic-lr", is_flag=True, help="HR-only archive: make the LR with the S2-like "
                     "degradation (PSF, 10 m area averaging, noise, gain jitter)."),
        click.option("--patch", type=int, default=16, show_default=True,
                     help="Patch size in LR pixels (a multiple of the scale's denominator, 2 at 12.5x)."),
        click.option("--stride", type=int, help="Patch stride in LR pixels (default: the patch size)."),
        click.option("--scale", default="25/2", show_default=True, help="HR pixels per LR pixel (12.5 = 25/2)."),
        click.option("--bands", default="B02,B03,B04,B08", show_default=True, help="Model bands, in order."),
        click.option("--lr-bands", metavar="B02=2,...", help="Which LR band feeds each model band (1-based). "
                     "Default: band descriptions, or bands 2,3,4,8 of a 12/13-band Sentinel-2 stack."),
        click.option("--hr-bands", metavar="B04=1,...", help="Which HR band feeds each model band; leave a band "
                     "out when the HR lacks it. Default: band descriptions / colour interpretation."),
        click.option("--missing-band", type=click.Choice(MISSING_CHOICES), default="error", show_default=True,
                     help="When the HR lacks a model band (NIR in RGB imagery): refuse, or mask it out of the "
                     "loss for those patches (see docs/training.md)."),
        click.option("--lr-res", type=float, default=10.0, show_default=True,
                     help="LR pixel size in metres (synthetic LR, or an LR not in a metric CRS)."),
        click.option("--hr-res", type=float, help="HR pixel size in metres for rasters without georeferencing."),
        click.option("--lr-scale-offset", metavar="SCALE,OFFSET", help="LR reflectance = DN*SCALE+OFFSET "
                     "(default 1e-4,0; Sentinel-2 baseline 04.00 without the offset removed: 1e-4,-0.1)."),
        click.option("--hr-scale-offset", metavar="SCALE,OFFSET", help="HR reflectance = DN*SCALE+OFFSET "
                     "for HR that is not 8-bit (default 1e-4,0)."),
        click.option("--hr-display", metavar="GAIN,GAMMA", help="8-bit (display) HR: reflectance = "
                     "GAIN*(DN/255)^GAMMA (default 0.3,2.2); other HR keeps --hr-scale-offset."),
        click.option("--max-shift", type=float, default=1.0, show_default=True,
                     help="Largest misregistration (LR pixels) corrected; larger ones are rejected."),
        click.option("--min-r2", type=float, default=0.5, show_default=True,
                     help="Smallest R^2 of the per-band LR vs degraded-HR fit that keeps a pair."),
        click.option("--min-std", type=float, default=0.002, show_default=True,
                     help="Patches whose HR standard deviation (reflectance) is lower are near-constant: skipped."),
        click.option("--seed", "prep_seed", type=int, default=0, show_default=True,
                     help="Seed of the stored synthetic LR."),
    ]
    for opt in reversed(options):
        func = opt(func)
    return func


def build_prepare_options(kw: dict[str, Any]):
    """PrepareOptions from the click keywords added by :func:`prepare_opts` (they are popped from ``kw``)."""
    from rssr_cli.train.archive import PrepareOptions

    names = ("synthetic_lr", "patch", "stride", "scale", "bands", "lr_bands", "hr_bands", "missing_band", "lr_res",
             "hr_res", "lr_scale_offset", "hr_scale_offset", "hr_display", "max_shift", "min_r2", "min_std")
    table = {name: kw.pop(name) for name in names}
    table["seed"] = kw.pop("prep_seed")
    return PrepareOptions.from_table({k: v for k, v in table.items() if v is not None})


def _interactive(ctx: click.Context) -> bool:
    verbosity = ctx.obj.get("verbosity", 0) if ctx.obj else 0
    return verbosity >= 0 and sys.stderr.isatty()


def _quiet(ctx: click.Context) -> bool:
    return bool(ctx.obj and ctx.obj.get("verbosity", 0) < 0)


@click.command(short_help="Cut aligned LR/HR patch pairs from an archive into a compact cache.")
@click.argument("archive", type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The patch cache to write (.npz). The report goes beside it as OUTPUT.report.json.")
@prepare_opts
@overwrite_opt
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.pass_context
def prepare(ctx: click.Context, archive: str, output: str, overwrite: bool, as_json: bool, **kw: Any) -> None:
    """Pair, align and cut ARCHIVE into LR/HR patches.

    The report (OUTPUT.report.json) says what was kept and why everything else was rejected, with the measured
    figures; it is written also when nothing was kept (the command then fails and writes no patch cache).

    ARCHIVE is a folder with lr/ and hr/ sub-folders (pairs are found by footprint intersection), a CSV/JSON
    manifest with lr and hr columns, or with --synthetic-lr a folder (or manifest, or raster) of HR imagery only.
    Optional manifest columns: hr_res (metres, rasters without georeferencing), lr_bands / hr_bands (band maps) and,
    with --synthetic-lr, hr_zoom (scale augmentation: the raster cut again as if its pixels were that many times
    larger; list it once per zoom). See docs/training.md.
    """
    from rssr_cli.errors import DataError, OutputError
    from rssr_cli.train.archive import NoPatchesError, prepare_archive
    from rssr_cli.patches import save_cache

    options = build_prepare_options(kw)
    out = Path(output)
    if out.suffix != ".npz":
        raise click.BadParameter("the patch cache is a .npz file", param_hint="--output")
    report_path = out.with_name(out.stem + ".report.json")
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists; pass --overwrite to replace it")
    progress = None
    bar = None
    if _interactive(ctx):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       console=Console(stderr=True), transient=True)
        bar.start()
        task = bar.add_task("preparing", total=None)

        def progress(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=name[:40])
    try:
        result = prepare_archive(archive, options=options, progress=progress)
    except NoPatchesError as exc:
        if not exc.report.sources:
            raise
        # Nothing kept, but something was examined: the report says what and why (no patch cache is written).
        _write_report(report_path, {**exc.report.to_dict(), "cache": None, "cache_bytes": 0, "error": str(exc)})
        raise DataError(f"{exc}; report: {report_path}") from None
    finally:
        if bar is not None:
            bar.stop()
    save_cache(result.cache, out, overwrite=overwrite)
    report = result.report.to_dict()
    report["cache"] = str(out)
    report["cache_bytes"] = out.stat().st_size
    _write_report(report_path, report)
    if as_json:
        click.echo(json.dumps({k: report[k] for k in ("cache", "cache_bytes", "patches", "sources_kept",
                                                      "sources_rejected", "rejected_patches")}
                              | {"report": str(report_path)}))
    if not _quiet(ctx):
        for line in result.report.lines():
            click.echo(line, err=True)
        click.echo(f"wrote {out} ({report['cache_bytes'] / 1e6:.1f} MB) and {report_path}", err=True)


def _write_report(path: Path, report: dict[str, Any]) -> None:
    from rssr_cli.atomic import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(report, indent=1, default=str))


@click.command(short_help="Train the super-resolution model (CPU, one GPU, or torchrun for several).")
@click.argument("data", required=False)
@click.option("-c", "--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="TOML config ([train], [model], [prepare] tables); see examples/train.toml.")
@click.option("-o", "--out", help="Run folder: checkpoint.pt, metrics.jsonl, model.safetensors.")
@click.option("--steps", type=int, help="Optimiser steps in total.")
@click.option("--batch-size", type=int, help="Patches per step and per process.")
@click.option("--lr", "learning_rate", type=float, help="Peak learning rate (AdamW).")
@click.option("--synthetic-lr", is_flag=True, default=None,
              help="DATA is an HR-only archive (sets prepare.synthetic_lr).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any config value: lr=1e-4, model.preset=tiny, prepare.patch=24 (repeatable).")
@device_opt
@click.option("--resume", is_flag=True, help="Continue exactly where the run in --out stopped (model, optimiser, "
              "EMA, step, random state).")
@click.option("--resume-from", type=click.Path(exists=True, dir_okay=False), help="Continue from this checkpoint.")
@click.option("--init", "init_weights", type=click.Path(exists=True, dir_okay=False),
              help="Fine-tune: start from this weights file (its architecture and normalisation, a fresh optimiser; "
              "[model] may only set loss), e.g. the shipped model.")
@overwrite_opt
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.pass_context
def train(ctx: click.Context, data: str | None, config_path: str | None, out: str | None, steps: int | None,
          batch_size: int | None, learning_rate: float | None, synthetic_lr: bool | None, overrides: tuple[str, ...],
          device: str, resume: bool, resume_from: str | None, init_weights: str | None, overwrite: bool,
          as_json: bool) -> None:
    """Train on DATA: a patch cache from `rssr prepare` (.npz) or an archive (prepared on the fly).

    Several GPUs: torchrun --nproc-per-node N -m rssr_cli train ... (batch size is per process).
    """
    import os

    from rssr_cli.errors import UsageError
    from rssr_cli.train.config import load_config
    from rssr_cli.train.loop import train as run

    from rssr_cli.train.config import parse_value, split_override

    sets: dict[str, Any] = {}
    for text in overrides:
        key, value = split_override(text)
        sets[key] = parse_value(value)
    for key, value in (("data", data), ("out", out), ("steps", steps), ("batch_size", batch_size),
                       ("lr", learning_rate), ("init", init_weights)):
        if value is not None:
            sets[key] = value
    if device != "auto":
        sets["device"] = device
    if synthetic_lr:
        sets["prepare.synthetic_lr"] = True
    config = load_config(config_path, sets)
    if resume and resume_from:
        raise UsageError("--resume and --resume-from: pass one")
    main_rank = int(os.environ.get("RANK", "0")) == 0
    handler, bar = None, None
    if main_rank and _interactive(ctx):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        console = Console(stderr=True)
        bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                       TimeElapsedColumn(), TimeRemainingColumn(), console=console)
        bar.start()
        task = bar.add_task("", total=config.steps)

        def handler(event: dict[str, Any]) -> None:
            kind = event.get("kind")
            if kind == "train":
                bar.update(task, completed=event["step"], description=f"loss {event['loss']:.4f}")
            elif kind == "start":
                bar.update(task, completed=event["step"])
            elif kind == "val":
                console.print(f"step {event['step']}: val PSNR {event['val_psnr']:.2f} dB, bicubic "
                              f"{event['val_psnr_bicubic']:.2f} dB ({event['val_psnr_gain']:+.2f})")
    try:
        result = run(config, resume=resume_from or resume, overwrite=overwrite, progress=handler,
                     command=["rssr", *sys.argv[1:]])
    finally:
        if bar is not None:
            bar.stop()
    if not main_rank:
        return
    if as_json:
        click.echo(json.dumps({"weights": str(result.weights), "checkpoint": str(result.checkpoint),
                               "log": str(result.log), "steps": result.steps, "metrics": result.metrics}))
    elif not _quiet(ctx):
        m = result.metrics
        extra = (f"; val PSNR {m['val_psnr']:.2f} dB vs bicubic {m['val_psnr_bicubic']:.2f} dB"
                 if "val_psnr" in m else "")
        click.echo(f"wrote {result.weights} after {result.steps} steps{extra}", err=True)
