"""``rssr evaluate``: thin click layer over :func:`rssr_cli.evaluate.evaluate`."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from rssr_cli.cli.options import (chroma_sigma_opt, consistency_value, device_opt, sampler_mode_options,
                                  texture_opt)
from rssr_cli.cli.train import build_prepare_options, prepare_opts


@click.command(short_help="Score a weights file against bicubic on LR/HR pairs.")
@click.argument("data", type=click.Path(exists=True))
@click.option("--weights", type=click.Path(dir_okay=False), help="Model weights (.safetensors). Default: the "
              "shipped model.")
@click.option("-m", "--method", "methods", multiple=True, type=click.Choice(("lr_start", "pure_noise", "bicubic")),
              help="Methods to score (repeatable). Default: all three.")
@click.option("--steps", type=int, help="LR-start sampler steps (default: the model's).")
@click.option("--start", type=float, help="LR-start noise level t0/T (default: the model's).")
@click.option("--eta", type=click.FloatRange(min=0), help="LR-start sampler stochasticity (0 = deterministic DDIM; "
              "default: the model's).")
@texture_opt
@chroma_sigma_opt
@click.option("--noise-steps", type=int, default=100, show_default=True,
              help="DDIM steps of the pure-noise sampler (at most the model's T).")
@sampler_mode_options
@click.option("--sample-seed", type=int, default=0, show_default=True, help="Seed of the diffusion noise.")
@click.option("--max-patches", type=int, help="Score at most this many patches.")
@device_opt
@prepare_opts
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@click.pass_context
def evaluate(ctx: click.Context, data: str, weights: str | None, methods: tuple[str, ...], steps: int | None,
             start: float | None, eta: float | None, texture: float | str | None, chroma_sigma: float | None,
             noise_steps: int, consistency: str | None, init: str | None, sample_seed: int, max_patches: int | None,
             device: str, as_json: bool, **kw: Any) -> None:
    """Score the model (LR-start and pure-noise samplers) and bicubic on DATA: a patch cache (.npz) or an archive
    (real pairs, or HR only with --synthetic-lr), prepared with the same options as `rssr prepare`.

    Metrics: PSNR, SSIM, LR consistency (L1 of degraded SR vs LR), spectral angle, high-frequency energy ratio,
    per-band mean shift, and opensr-test's improvement / omission / hallucination (see docs/training.md).
    """
    from rssr_cli.evaluate import CANDIDATES, evaluate as run

    chosen = methods or (CANDIDATES if weights is not None or _default_weights_exist() else ("bicubic",))
    verbosity = ctx.obj.get("verbosity", 0) if ctx.obj else 0
    bar = progress = None
    if verbosity >= 0 and sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       console=Console(stderr=True), transient=True)
        bar.start()
        task = bar.add_task("evaluating", total=None)

        def progress(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=name)
    try:
        result = run(_patches(data, kw), weights, methods=chosen, steps=steps, start=start, eta=eta,
                     texture=texture, chroma_sigma=chroma_sigma, noise_steps=noise_steps,
                     consistency=consistency_value(ctx, consistency), init=init,
                     seed=sample_seed, device=device, max_patches=max_patches, name=data, progress=progress)
    finally:
        if bar is not None:
            bar.stop()
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    else:
        click.echo(result.table())


def _patches(data: str, prepare_kw: dict[str, Any]):
    """A patch cache as is, or an archive prepared like `rssr prepare` would (in memory)."""
    from pathlib import Path

    if Path(data).suffix == ".npz":
        from rssr_cli.patches import load_cache

        return load_cache(data)
    from rssr_cli.train.archive import prepare_archive

    return prepare_archive(data, options=build_prepare_options(prepare_kw)).cache


def _default_weights_exist() -> bool:
    from rssr_cli.weights import default_weights_path

    return default_weights_path().is_file()
