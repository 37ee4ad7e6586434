"""Feathered blending of overlapping HR tiles with memory bounded by the overlap, not by the scene or the tile row.

Tiles arrive one tile row at a time, left to right. Within a row, the columns left of the next tile's start can get
no more contributions, so they are finished as soon as that tile is added; within those columns, the rows above the
next tile row's start are final and are handed out at once, and the rows in the overlap with the next tile row are
carried (weighted sums and weights) until that row adds its share. What is held at any time is one tile's worth of
columns for the current row plus ``overlap x width`` rows of carry: no full-size (nor full-row) accumulator exists.

Weights are the tile plan's cosine ramps (:mod:`rssr_cli.tiling`); the output is ``sum(w * tile) / sum(w)``. With
several samples, standard deviations are blended as ``sqrt(sum(w * std²) / sum(w))``: exact inside a tile, a weighted
mean of variances across seams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from rssr_cli.infer import HRTile
from rssr_cli.tiling import TilePlan


@dataclass
class FinishedRows:
    """A finished block of output: rows ``[row0, row0 + h)`` over columns ``[col0, col0 + w)``."""

    row0: int
    col0: int
    data: np.ndarray  # (C, h, w) float32
    std: np.ndarray | None


class RowBlender:
    """Blends tile rows over output columns ``[col0, col1)`` of an output ``height`` rows tall.

    ``add`` and ``finish_row`` return the blocks they finish, without the rows from ``height`` on (the last tile row
    may reach past the output's edge).
    """

    def __init__(self, channels: int, col0: int, col1: int, *, height: int, with_std: bool = False) -> None:
        self.channels = channels
        self.col0, self.col1 = col0, col1
        self.output_height = height
        self.with_std = with_std
        # Channel layout of the accumulators: C weighted means, C weighted variances (with std), then the weight.
        self.depth = channels * (2 if with_std else 1) + 1
        self.carry = np.zeros((self.depth, 0, col1 - col0), dtype=np.float32)
        self.carry_top = 0
        self.top = self.height = self.next_top = 0
        self.work: np.ndarray | None = None
        self.work_c0 = self.work_c1 = col0  # columns held in ``work``: [work_c0, work_c1)
        self._buffer: np.ndarray | None = None  # tile x weight products (see add)

    def start_row(self, top: int, height: int, next_top: int) -> None:
        """Begin a tile row covering output rows ``[top, top + height)``; the next one starts at ``next_top``."""
        if self.carry.shape[1] and self.carry_top != top:
            raise ValueError("tile rows must follow each other: the carried overlap does not start at this row")
        self.top, self.height, self.next_top = top, height, min(next_top, top + height)
        self.new_carry = np.zeros((self.depth, top + height - self.next_top, self.col1 - self.col0), np.float32)
        self.work = None
        self.work_c0 = self.work_c1 = self.col0

    def add(self, tile: np.ndarray, weight: np.ndarray, left: int,
            std: np.ndarray | None = None) -> list[FinishedRows]:
        """Add a tile (C, height, w) with weights (height, w) whose first column is output column ``left``.

        Tiles of a row must come in increasing ``left``; everything left of ``left`` is finished now and returned.
        """
        h, w = weight.shape
        if h != self.height:
            raise ValueError("tile height differs from the row's")
        c0, c1 = max(left, self.col0), min(left + w, self.col1)
        if c1 <= c0:
            return []
        if self.work is None:
            self.work = np.zeros((self.depth, h, w), np.float32)  # a row's tiles share one width: enough
            self.work_c0 = self.work_c1 = c0
        elif c0 < self.work_c0:
            raise ValueError("tiles of a row must come left to right")
        finished = self._finish(self.work_c0, c0)
        if c1 - self.work_c0 > self.work.shape[2]:
            grown = np.zeros((self.depth, h, c1 - self.work_c0), np.float32)
            grown[:, :, :self.work.shape[2]] = self.work
            self.work = grown
        self.work_c1 = max(self.work_c1, c1)
        ts = slice(c0 - left, c1 - left)
        bs = slice(c0 - self.work_c0, c1 - self.work_c0)
        wt = weight[:, ts]
        c = self.channels
        # The products go through one buffer kept between tiles: a fresh temporary of this size is a fresh mmap, and
        # its page faults cost more than the arithmetic (rssr_cli.memory).
        product = self._product((c, h, c1 - c0))
        self.work[:c, :, bs] += np.multiply(tile[:, :, ts], wt, out=product)
        if self.with_std and std is not None:
            np.square(std[:, :, ts], out=product)
            self.work[c:2 * c, :, bs] += np.multiply(product, wt, out=product)
        self.work[-1, :, bs] += wt
        return finished

    def _product(self, shape: tuple[int, int, int]) -> np.ndarray:
        size = shape[0] * shape[1] * shape[2]
        if self._buffer is None or self._buffer.size < size:
            self._buffer = np.empty(size, np.float32)
        return self._buffer[:size].reshape(shape)

    def finish_row(self) -> list[FinishedRows]:
        """Finish the remaining columns of the row and return them; the overlap with the next row becomes the carry."""
        finished = self._finish(self.work_c0, self.work_c1)
        self.carry, self.carry_top = self.new_carry, self.next_top
        return finished

    def _finish(self, a: int, b: int) -> list[FinishedRows]:
        """Columns ``[a, b)`` of the current row are complete: return its final rows, carry the overlap rows."""
        if b <= a or self.work is None:
            return []
        block = self.work[:, :, a - self.work_c0:b - self.work_c0]
        cs = slice(a - self.col0, b - self.col0)
        n_carry = self.carry.shape[1]
        block[:, :n_carry] += self.carry[:, :, cs]
        final = self.next_top - self.top
        self.new_carry[:, :, cs] = block[:, final:]
        rows = min(final, self.output_height - self.top)
        finished = [self._normalise(block[:, :rows], self.top, a)] if rows > 0 else []
        # Drop the finished columns from the work buffer (in place, band by band to avoid a full-size temporary).
        shift, held = b - self.work_c0, self.work_c1 - self.work_c0
        for band in self.work:
            band[:, :held - shift] = band[:, shift:held]
            band[:, held - shift:held] = 0
        self.work_c0 = b
        return finished

    def _normalise(self, block: np.ndarray, row0: int, col0: int) -> FinishedRows:
        weight = block[-1]
        safe = np.where(weight > 0, weight, np.float32(1))
        c = self.channels
        data = block[:c] / safe
        std = np.sqrt(block[c:2 * c] / safe) if self.with_std else None
        return FinishedRows(row0, col0, data, std)


def start_tile_row(blender: RowBlender, tiles: TilePlan, row: int) -> None:
    """Begin tile row ``row`` of the plan in ``blender``."""
    starts, size = tiles.rows.starts, tiles.rows.size
    top, bottom = tiles.hr(starts[row]), tiles.hr(starts[row] + size)
    next_top = tiles.hr(starts[row + 1]) if row + 1 < len(starts) else bottom
    blender.start_row(top, bottom - top, next_top)


def add_tile(blender: RowBlender, tiles: TilePlan, hr: HRTile) -> list[FinishedRows]:
    """Add one HR core of the current tile row (left to right) with the plan's weights; returns what it finishes."""
    return blender.add(hr.mean, tiles.weights(hr.tile.row, hr.tile.col), hr.tile.hr_core[2], std=hr.std)


def blend_row(blender: RowBlender, tiles: TilePlan, row: int, hr_tiles: Iterable[HRTile]) -> Iterator[FinishedRows]:
    """Blend tile row ``row`` (its HR cores, left to right) with the plan's weights; yields the blocks it finishes."""
    start_tile_row(blender, tiles, row)
    for hr in hr_tiles:
        yield from add_tile(blender, tiles, hr)
    yield from blender.finish_row()


def carry_start(tiles: TilePlan, row: int) -> int:
    """The first tile row whose core reaches into tile row ``row``'s: blending from there (without writing) rebuilds
    the carry that ``row`` needs, as a run that started at the top would hold it.

    Usually ``row - 1``; further up when the last row, shifted back to end at the window's edge, overlaps more than
    its neighbour (then a row two above still reaches it). A resumed run, and each process of a sharded one, starts
    its rows of tiles here.
    """
    starts, size = tiles.rows.starts, tiles.rows.size
    first = row
    while first > 0 and starts[first - 1] + size > starts[row]:
        first -= 1
    return first
