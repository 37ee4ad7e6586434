"""The ``rssr`` command line: a thin layer of click commands over the library.

Each command lives in its own module and is imported only when it runs, so ``rssr --help`` stays instant (torch and
rasterio are not imported for it). Library errors (:class:`rssr_cli.errors.RssrError`) become one line on stderr and
the error's exit code; nothing else prints a traceback unless ``-v -v`` is given. A run stopped by SIGINT or SIGTERM
(:class:`rssr_cli.errors.Interrupted`) prints one line and exits with 130 or 143.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

#: command name -> "module:function", imported lazily.
COMMANDS: dict[str, str] = {
    "upscale": "rssr_cli.cli.upscale:upscale",
    "info": "rssr_cli.cli.info:info",
    "prepare": "rssr_cli.cli.train:prepare",
    "train": "rssr_cli.cli.train:train",
    "evaluate": "rssr_cli.cli.evaluate:evaluate",
}

HELP = {
    "upscale": "Super-resolve Sentinel-2 scenes to 0.8 m Cloud-Optimized GeoTIFFs.",
    "info": "Show what rssr reads from a scene (bands, scale/offset, nodata, CRS) or a weights file.",
    "prepare": "Cut aligned LR/HR patch pairs from an archive into a compact cache.",
    "train": "Train the super-resolution model (CPU, one GPU, or torchrun for several).",
    "evaluate": "Score a weights file against bicubic on LR/HR pairs.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return None
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help without importing every command module.
        rows = [(name, HELP.get(name, "")) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        from rssr_cli.errors import Interrupted, RssrError

        try:
            return super().invoke(ctx)
        except RssrError as exc:
            if ctx.obj and ctx.obj.get("verbosity", 0) >= 2:
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except Interrupted as exc:  # a command that installed rssr_cli.interrupt's handlers, stopped outside its loop
            click.echo(f"Interrupted by {exc.signal_name}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More messages on stderr (-v -v: debug, tracebacks).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.version_option(package_name="rssr", prog_name="rssr")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """rssr: diffusion super-resolution of Sentinel-2 imagery (10 m -> 0.8 m) to Cloud-Optimized GeoTIFFs."""
    from rssr_cli.memory import return_big_blocks

    return_big_blocks()  # RSS follows live memory in the tile loop (rssr_cli.memory)
    verbosity = -1 if quiet else verbose
    ctx.obj = {"verbosity": verbosity}
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)
    # GDAL chatter (e.g. TIFF tag warnings on some Sentinel Hub exports) only with -v -v.
    logging.getLogger("rasterio").setLevel(logging.DEBUG if verbose >= 2 else logging.ERROR)
