"""The read stage: each row of tiles as one LR strip, with its validity.

A row of tiles shares its rows and overlaps in columns, so the scene is read once per row of a column chunk: one
window covering the read windows of all its tiles. :meth:`rssr_cli.scene.Scene.read` returns validity (nodata,
masks, outside the scene) with the reflectance and the strip keeps both, so the output mask
(:mod:`rssr_cli.validity`) comes from pixels already read. Strips are read when asked for, so memory holds the strip
being worked on (and the next one while it is read), whatever the scene size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
from rasterio.windows import Window

from rssr_cli.scene import Scene
from rssr_cli.tiling import Chunk, Tile, TilePlan


@dataclass(frozen=True)
class LRStrip:
    """The LR pixels under one row of tiles: ``reflectance`` (C, h, w) and ``valid`` (h, w) over ``window``.

    ``window`` is in scene pixels and may reach beyond the scene (context, reflected, invalid).
    """

    row: int  # tile row index in the plan
    tiles: tuple[Tile, ...]  # the row's tiles in this column chunk, left to right
    window: Window
    reflectance: np.ndarray
    valid: np.ndarray

    def tile_pixels(self, tile: Tile) -> np.ndarray:
        """The reflectance under one tile's read window (a view into the strip)."""
        c0 = int(tile.read.col_off - self.window.col_off)
        return self.reflectance[:, :, c0:c0 + int(tile.read.width)]


def read_strips(scene: Scene, tiles: TilePlan, chunk: Chunk, first: int = 0,
                stop: int | None = None) -> Iterator[LRStrip]:
    """The strips of one column chunk, top to bottom from tile row ``first`` to ``stop`` (excluded; None: the last),
    each read when asked for."""
    for i in range(first, len(tiles.rows.starts) if stop is None else stop):
        row_tiles = tuple(tiles.tile(i, j) for j in chunk.cols)
        first, last = row_tiles[0].read, row_tiles[-1].read
        window = Window(first.col_off, first.row_off, last.col_off + last.width - first.col_off, first.height)
        reflectance, valid = scene.read(window)
        yield LRStrip(row=i, tiles=row_tiles, window=window, reflectance=reflectance, valid=valid)
