"""``rssr info``: what rssr will read from a scene, and what a weights file holds."""

from __future__ import annotations

import json

import click

from rssr_cli.cli.options import IntList, flatten_bidx, json_opt, weights_opt


@click.command(short_help="Show bands, scale/offset, nodata, CRS and output size, or a weights file's config.")
@click.argument("inputs", nargs=-1, metavar="[INPUT...]")
@click.option("-b", "--bidx", multiple=True, type=IntList(), help="Input bands in model order, e.g. -b 2,3,4,8.")
@click.option("--nodata", type=float, help="Input nodata value (overrides the file's).")
@click.option("--offset", type=float, help="Sentinel-2 additive offset in DN; replaces what the metadata or the STAC "
              "item declare.")
@weights_opt
@json_opt
def info(inputs, bidx, nodata, offset, weights, as_json):
    """Show what rssr reads from INPUT (one raster, one file per band, a STAC Item file or URL, '-' for an Item on
    stdin, or a SAFE product) and the output it would write: band by band, where each scale/offset comes from.

    With --weights PATH (and no INPUT), show the model's configuration instead.
    """
    from rssr_cli.scene_info import scene_info

    if not inputs and not weights:
        raise click.UsageError("give an INPUT raster or --weights PATH")
    if weights and not inputs:
        from rssr_cli.weights import describe_weights

        record = describe_weights(weights)
        click.echo(json.dumps(record, indent=None if as_json else 2, default=str))
        return
    source = list(inputs)
    if source == ["-"]:  # a STAC Item on stdin (rssr upscale reads a list of inputs there, or an Item)
        import sys

        from rssr_cli.stac import parse_item

        source = parse_item(sys.stdin.read())
    record = scene_info(source, bidx=flatten_bidx(bidx), nodata=nodata, offset=offset, weights=weights)
    if as_json:
        click.echo(json.dumps(record))
        return
    width = max(len(k) for k in record)
    for key, value in record.items():
        if key == "bands":
            for b in value:
                asset = f"asset {b['asset']!r}, " if b.get("asset") else ""
                click.echo(f"{b['name']:<{width}}  {asset}{b['file']} band {b['bidx']} "
                           f"({b['description'] or 'no description'}); reflectance = DN * {b['scale']:g} "
                           f"+ {b['offset']:g} [{b['radiometry']}]")
        else:
            click.echo(f"{key:<{width}}  {value}")
