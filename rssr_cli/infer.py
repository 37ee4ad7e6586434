"""The infer stage: a strip's tiles through the method in batches, each tile's HR core out.

The method sees each tile with its context (:attr:`rssr_cli.tiling.Tile.read`) and returns it on the HR grid; the
context margin only keeps the method's edge effects out of the output, so it is cropped here and the blender gets
the core alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from rssr_cli.methods import TileUpsampler
from rssr_cli.strips import LRStrip
from rssr_cli.tiling import Tile


@dataclass(frozen=True)
class HRTile:
    """One tile's core on the HR grid: the method's estimate (C, h, w) and, with several samples, their spread."""

    tile: Tile
    mean: np.ndarray
    std: np.ndarray | None


def infer_strip(upsampler: TileUpsampler, strip: LRStrip,
                on_batch: Callable[[int], None] | None = None) -> Iterator[HRTile]:
    """The HR cores of a strip's tiles, left to right, computed ``upsampler.batch_size`` tiles per call.

    ``on_batch(n)`` is told after the ``n`` tiles of each batch have been taken by the consumer (progress).
    """
    for batch in infer_batches(upsampler, strip):
        yield from batch
        if on_batch is not None:
            on_batch(len(batch))


def infer_batches(upsampler: TileUpsampler, strip: LRStrip) -> Iterator[list[HRTile]]:
    """The HR cores of a strip's tiles, one list per call of the method (``upsampler.batch_size`` tiles)."""
    batch = upsampler.batch_size
    for b in range(0, len(strip.tiles), batch):
        group = strip.tiles[b:b + batch]
        lr = np.stack([strip.tile_pixels(t) for t in group])
        result = upsampler.upscale_tiles(lr, [t.hr_origin for t in group])
        cores = [_core(tile) for tile in group]
        yield [HRTile(tile, result.mean[k][core], result.std[k][core] if result.std is not None else None)
               for k, (tile, core) in enumerate(zip(group, cores))]


def _core(tile: Tile) -> tuple[slice, slice, slice]:
    """Where the core sits in the method's output for the tile (which starts at ``hr_origin``, context included)."""
    r0, r1, c0, c1 = tile.hr_core
    top, left = r0 - tile.hr_origin[0], c0 - tile.hr_origin[1]
    return slice(None), slice(top, top + r1 - r0), slice(left, left + c1 - c0)
