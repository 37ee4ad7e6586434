"""Reusable click options and parameter types (rio's ``options.py`` pattern).

Index: ``KeyValue`` (``--co NAME=VALUE``), ``IntList`` (``-b 2,3,4,8``), ``TextureGain``, ``output_opt``,
``overwrite_opt``, ``json_opt``, ``device_opt``, ``weights_opt``, ``texture_opt``, ``chroma_sigma_opt``,
``sampler_mode_options`` (``--consistency``, ``--no-consistency``, ``--init``).
"""

from __future__ import annotations

import click


class KeyValue(click.ParamType):
    """``NAME=VALUE`` -> (NAME, VALUE)."""

    name = "NAME=VALUE"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        if "=" not in value:
            self.fail(f"{value!r} is not NAME=VALUE", param, ctx)
        key, _, val = value.partition("=")
        return key.strip(), val.strip()


class IntList(click.ParamType):
    """``2,3,4,8`` (or ``-b 2 -b 3 ...`` collected by click) -> tuple of ints."""

    name = "N[,N...]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(int(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of band numbers", param, ctx)


def flatten_bidx(values) -> tuple[int, ...] | None:
    out = tuple(i for group in values for i in group)
    return out or None


overwrite_opt = click.option("--overwrite", is_flag=True, help="Replace existing output files.")
json_opt = click.option("--json", "as_json", is_flag=True, help="Print one JSON object per input on stdout.")
device_opt = click.option("--device", default="auto", show_default=True,
                          help="auto, cpu, cuda or cuda:N (auto takes CUDA when present; CPU fallback with a notice).")
weights_opt = click.option("--weights", type=click.Path(dir_okay=False),
                           help="Model weights file (.safetensors). Default: the model shipped in weights/.")
#: ``--texture``'s and ``--chroma-sigma``'s ranges (rssr_cli.model.config.MAX_TEXTURE, MAX_CHROMA_SIGMA, repeated so
#: that ``--help`` does not import torch; tests/test_diffusion_method.py checks they agree).
TEXTURE_RANGE = (0, 4.0)
CHROMA_SIGMA_RANGE = (0, 8.0)


class TextureGain(click.ParamType):
    """``--texture``: a gain in :data:`TEXTURE_RANGE`, or ``none`` (the sample as drawn)."""

    name = "gain"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        if isinstance(value, float) or value == "none":
            return value
        try:
            gain = float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'none'", param, ctx)
        low, high = TEXTURE_RANGE
        if not low <= gain <= high:
            self.fail(f"{gain:g} is not in the range {low}<=x<={high:g}", param, ctx)
        return gain


texture_opt = click.option("--texture", type=TextureGain(), metavar="GAIN|none",
                           help="The network's one-step estimate (its least-error prediction) plus GAIN times the "
                           "sample's finest texture (what the sample adds at the 1-2 pixel scale); 0 = the estimate, "
                           "none = the sample as drawn. Default: the model's (shipped model: 2). One more "
                           "evaluation unless --init estimate. Sharper setting: --steps 30 --start 1 --texture 1.1 "
                           "(31 evaluations; weights/README.md).")
chroma_sigma_opt = click.option("--chroma-sigma", type=click.FloatRange(*CHROMA_SIGMA_RANGE), metavar="PX",
                                help="Blur the colour (not the brightness) of the detail the model adds over "
                                "bicubic in B02-B04 by a Gaussian of PX output pixels: colour speckle removed, fine "
                                "detail kept. 0 = off. Default: the model's (shipped model: 2).")


#: The sampler's modes (rssr_cli.model.config.CONSISTENCY_MODES / SAMPLER_INITS, repeated here so that ``--help``
#: does not import torch; tests/test_diffusion_method.py checks they agree).
CONSISTENCY_CHOICES = ("backproject", "exact", "none")
INIT_CHOICES = ("bicubic", "estimate")


def sampler_mode_options(command):
    """``--consistency MODE`` (``--no-consistency`` = ``none``, as before the modes existed) and ``--init``; the
    command receives ``consistency`` (a mode or None) and ``init``."""

    def no_consistency(ctx: click.Context, param, value):
        if value:
            ctx.ensure_object(dict)["no_consistency"] = True
        return value

    command = click.option("--init", type=click.Choice(INIT_CHOICES), help="Sampler start: bicubic (residual 0) or "
                           "estimate (the network's one-step estimate, noised to --start; one more evaluation). "
                           "Default: the model's.")(command)
    command = click.option("--no-consistency", is_flag=True, expose_value=False, callback=no_consistency,
                           help="Same as --consistency none.")(command)
    command = click.option("--consistency", type=click.Choice(CONSISTENCY_CHOICES),
                           help="How the result is tied to the input: backproject (one step x + U(lr - D x): band "
                           "means and 10 m content follow the input within its noise), exact (D x == input; "
                           "amplifies the input's noise), none. Default: the model's.")(command)
    return command


def consistency_value(ctx: click.Context, consistency: str | None) -> str | None:
    """``--consistency`` as given, or ``none`` for ``--no-consistency``."""
    if ctx.obj and ctx.obj.get("no_consistency"):
        if consistency not in (None, "none"):
            raise click.UsageError(f"--no-consistency contradicts --consistency {consistency}")
        return "none"
    return consistency


def verbosity_options(command):
    """``-v``/``-q`` after the subcommand too (``rssr upscale -q ...``), as people type them; adds to the group's."""

    def apply(ctx: click.Context, param, value):
        if not value:
            return value
        import logging

        obj = ctx.ensure_object(dict)
        level = obj.get("verbosity", 0)
        level = -1 if param.name == "quiet" else max(level, 0) + value
        obj["verbosity"] = level
        logging.getLogger().setLevel(logging.ERROR if level < 0 else
                                     (logging.WARNING, logging.INFO, logging.DEBUG)[min(level, 2)])
        return value

    command = click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=apply,
                           help="Only errors on stderr.")(command)
    command = click.option("-v", "--verbose", count=True, expose_value=False, callback=apply,
                           help="More messages on stderr.")(command)
    return command
