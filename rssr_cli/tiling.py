"""Plan the tiles of an upscale: pure arithmetic over the LR window, no I/O.

Vocabulary, per axis, in LR pixels relative to the output window:

- a tile's **core** is ``[start, start + size)``; neighbouring cores overlap by at least ``overlap`` pixels, and the
  last core is shifted back to end at the window's edge (rounded up to the step) instead of hanging over it;
- the model reads ``context`` more pixels on each side of the core (real scene pixels where they exist, so the edges
  of an AOI get the same quality as its interior; reflected pixels beyond the scene) and that margin is cropped from
  its output: context removes edge effects, overlap is what gets blended;
- starts, sizes, overlap and context are multiples of ``step`` (the scale's denominator: 2 for 12.5x), so every tile
  lands on whole HR pixels of the one output grid.

Blending weights are separable cosine ramps across each overlap: the left tile falls as cos², the right one rises as
sin² over exactly the same HR pixels, so the weights of the two sum to one and a tile boundary leaves no step.
Where a core has no neighbour (the window's edge) its weight stays 1, so borders are neither cropped nor darkened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import numpy as np
from rasterio.windows import Window

from rssr_cli.errors import UsageError

#: Defaults in LR pixels: 128 px cores (1600 HR px at 12.5x) overlapping by 8 px (100 HR px of cosine ramp). Each tile
#: also computes its context (10 LR px each side with the default model), so larger tiles waste less: 64 px tiles did
#: 2.0x the output's work, 128 px tiles 1.4x, for about 0.6 GB more memory (benchmarks/upscale_speed.py).
DEFAULT_TILE_SIZE = 128
DEFAULT_OVERLAP = 8

#: Widest HR chunk blended at once (26 km at 0.8 m). Wider scenes are processed in column chunks whose boundary tiles
#: are computed twice (about 2 % more work on a full Sentinel-2 tile), which bounds the blending carry (about 5 floats x
#: this width x the overlap) whatever the scene size.
DEFAULT_CHUNK_WIDTH = 32768


@dataclass(frozen=True)
class AxisPlan:
    """Core starts and the core size along one axis, all in LR pixels relative to the window."""

    starts: tuple[int, ...]
    size: int
    length: int  # window length in LR pixels

    def overlap_before(self, i: int) -> int:
        return 0 if i == 0 else self.starts[i - 1] + self.size - self.starts[i]

    def overlap_after(self, i: int) -> int:
        return 0 if i == len(self.starts) - 1 else self.starts[i] + self.size - self.starts[i + 1]


def plan_axis(length: int, tile: int, overlap: int, step: int) -> AxisPlan:
    padded = math.ceil(length / step) * step
    size = min(tile, padded)  # a small AOI gets one small tile, not a mostly-padding one
    if padded <= size:
        return AxisPlan((0,), size, length)
    stride = size - overlap
    count = math.ceil((padded - size) / stride) + 1
    starts = tuple(min(k * stride, padded - size) for k in range(count))
    return AxisPlan(starts, size, length)


def ramp_weights(n_hr: int, before_hr: int, after_hr: int) -> np.ndarray:
    """1-D weights over a core of ``n_hr`` HR pixels: sin² up over ``before_hr``, cos² down over ``after_hr``."""
    w = np.ones(n_hr, dtype=np.float32)
    if before_hr:
        u = (np.arange(before_hr, dtype=np.float64) + 0.5) / before_hr
        w[:before_hr] *= np.sin(0.5 * np.pi * u) ** 2
    if after_hr:
        u = (np.arange(after_hr, dtype=np.float64) + 0.5) / after_hr
        w[n_hr - after_hr:] *= np.cos(0.5 * np.pi * u) ** 2
    return w


@dataclass(frozen=True)
class Tile:
    """One tile: where the model reads (scene LR window) and where its core lands (output HR pixels)."""

    row: int
    col: int
    read: Window  # LR window in scene pixel coordinates, context included (may extend beyond the scene)
    hr_origin: tuple[int, int]  # (row, col) of the read window's first HR pixel in the output grid
    hr_core: tuple[int, int, int, int]  # (row0, row1, col0, col1) of the core in output HR pixels


@dataclass(frozen=True)
class TilePlan:
    window: Window  # the LR output window in scene pixels
    scale: Fraction
    rows: AxisPlan
    cols: AxisPlan
    context: int

    @property
    def step(self) -> int:
        return self.scale.denominator

    @property
    def hr_shape(self) -> tuple[int, int]:
        return (math.ceil(self.rows.length * self.scale), math.ceil(self.cols.length * self.scale))

    @property
    def count(self) -> int:
        return len(self.rows.starts) * len(self.cols.starts)

    def hr(self, lr: int) -> int:
        value = lr * self.scale
        assert value.denominator == 1, "LR offsets must be multiples of the scale's denominator"
        return int(value)

    def tile(self, i: int, j: int) -> Tile:
        r0, c0 = self.rows.starts[i], self.cols.starts[j]
        ctx = self.context
        read = Window(int(self.window.col_off) + c0 - ctx, int(self.window.row_off) + r0 - ctx,
                      self.cols.size + 2 * ctx, self.rows.size + 2 * ctx)
        return Tile(row=i, col=j, read=read, hr_origin=(self.hr(r0 - ctx), self.hr(c0 - ctx)),
                    hr_core=(self.hr(r0), self.hr(r0 + self.rows.size), self.hr(c0), self.hr(c0 + self.cols.size)))

    def weights(self, i: int, j: int) -> np.ndarray:
        """2-D blending weights (HR core shape) of tile (i, j)."""
        wr = ramp_weights(self.hr(self.rows.size), self.hr(self.rows.overlap_before(i)),
                          self.hr(self.rows.overlap_after(i)))
        wc = ramp_weights(self.hr(self.cols.size), self.hr(self.cols.overlap_before(j)),
                          self.hr(self.cols.overlap_after(j)))
        return np.outer(wr, wc)

    def column_chunks(self, max_width_hr: int = DEFAULT_CHUNK_WIDTH) -> Iterator["Chunk"]:
        """Split the tile columns into chunks no wider than ``max_width_hr`` HR pixels of output.

        Chunk k writes output columns ``[write0, write1)``; it computes every tile whose core touches them, so the tile
        straddling a chunk boundary is computed by both chunks (same noise, same result) and memory stays bounded.
        """
        ncols = len(self.cols.starts)
        stride_hr = self.hr(self.cols.size) if ncols == 1 else self.hr(self.cols.starts[1] - self.cols.starts[0])
        per_chunk = max(1, max_width_hr // max(stride_hr, 1))
        width_hr = self.hr_shape[1]
        firsts = list(range(0, ncols, per_chunk))
        for k, first in enumerate(firsts):
            last = min(first + per_chunk, ncols)  # exclusive
            write0 = 0 if k == 0 else self.hr(self.cols.starts[first])
            write1 = width_hr if last == ncols else self.hr(self.cols.starts[last])
            cols = [j for j in range(ncols)
                    if self.hr(self.cols.starts[j]) < write1
                    and self.hr(self.cols.starts[j] + self.cols.size) > write0]
            yield Chunk(cols=tuple(cols), write=(write0, write1),
                        buffer=(self.hr(self.cols.starts[cols[0]]),
                                self.hr(self.cols.starts[cols[-1]] + self.cols.size)))


@dataclass(frozen=True)
class Chunk:
    cols: tuple[int, ...]  # tile columns computed in this chunk
    write: tuple[int, int]  # output HR columns this chunk writes
    buffer: tuple[int, int]  # output HR columns its accumulators span


def plan_tiles(window: Window, scale: Fraction, *, tile_size: int = DEFAULT_TILE_SIZE,
               overlap: int = DEFAULT_OVERLAP, context: int = 0) -> TilePlan:
    """Plan tiles over ``window`` (LR pixels, offsets multiples of the step). Sizes are checked, not silently fixed."""
    scale = Fraction(scale)
    step = scale.denominator
    for name, value in (("--tile-size", tile_size), ("--overlap", overlap)):
        if value % step:
            raise UsageError(f"{name} {value} must be a multiple of {step} LR pixels at scale {float(scale):g} "
                             f"({step} LR px = {int(step * scale)} HR px), so tiles land on whole HR pixels")
    if tile_size < 2 * step or overlap < 0 or 2 * overlap > tile_size:
        raise UsageError(f"--overlap {overlap} must be between 0 and half of --tile-size {tile_size}")
    if int(window.col_off) % step or int(window.row_off) % step:
        raise UsageError("internal: the window offsets must be multiples of the scale's denominator")
    context = math.ceil(context / step) * step
    return TilePlan(window=window, scale=scale,
                    rows=plan_axis(int(window.height), tile_size, overlap, step),
                    cols=plan_axis(int(window.width), tile_size, overlap, step), context=context)
