"""Feathered blending of overlapping HR tiles in a rolling strip, so memory never scales with the scene height.

Tiles of one tile row are added with their weights into ``sum`` and ``weight`` buffers spanning the chunk's columns;
once the next tile row starts below a row, that row can receive no more contributions and is handed out normalised
(``sum / weight``) and dropped from the buffers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FinishedRows:
    """Blended output rows ``[row0, row0 + data.shape[1])`` over columns ``[col0, col0 + data.shape[2])``."""

    row0: int
    col0: int
    data: np.ndarray  # (C, rows, cols) float32
    std: np.ndarray | None


class StripBlender:
    """Accumulates weighted tiles over output columns ``[col0, col1)``, holding at most ``capacity`` rows.

    The buffers are allocated once (capacity = one tile's HR height) and rows handed out are shifted away in place, so
    memory is ``(2C + 1) x capacity x width`` floats however tall the scene.
    """

    def __init__(self, channels: int, col0: int, col1: int, capacity: int, *, with_std: bool = False) -> None:
        self.col0, self.col1 = col0, col1
        self.row0 = 0  # output row held in buffer row 0
        self.held = 0  # rows touched so far
        self.sum = np.zeros((channels, capacity, col1 - col0), dtype=np.float32)
        self.weight = np.zeros((capacity, col1 - col0), dtype=np.float32)
        # Uncertainty: variances blended with the same weights; exact inside tiles, a weighted mean across seams.
        self.var = np.zeros_like(self.sum) if with_std else None

    def add(self, tile: np.ndarray, weight: np.ndarray, top: int, left: int, std: np.ndarray | None = None) -> None:
        """Add ``tile`` (C, h, w) with ``weight`` (h, w) at output HR position (top, left); clipped to the columns."""
        h, w = weight.shape
        if top < self.row0 or top + h - self.row0 > self.weight.shape[0]:
            raise ValueError("tile outside the rows this blender holds; take() finished rows first")
        c0, c1 = max(left, self.col0), min(left + w, self.col1)
        if c1 <= c0:
            return
        rs = slice(top - self.row0, top - self.row0 + h)
        bs, ts = slice(c0 - self.col0, c1 - self.col0), slice(c0 - left, c1 - left)
        wt = weight[:, ts]
        self.sum[:, rs, bs] += tile[:, :, ts] * wt
        self.weight[rs, bs] += wt
        if self.var is not None and std is not None:
            self.var[:, rs, bs] += std[:, :, ts] ** 2 * wt
        self.held = max(self.held, top + h - self.row0)

    def take(self, upto: int, cols: tuple[int, int] | None = None) -> FinishedRows | None:
        """Hand out rows ``[row0, upto)`` normalised, restricted to output columns ``cols``, and drop them."""
        n = min(upto - self.row0, self.held)
        if n <= 0:
            return None
        c0, c1 = cols or (self.col0, self.col1)
        bs = slice(c0 - self.col0, c1 - self.col0)
        safe = np.where(self.weight[:n, bs] > 0, self.weight[:n, bs], np.float32(1))
        data = self.sum[:, :n, bs] / safe
        std = np.sqrt(self.var[:, :n, bs] / safe) if self.var is not None else None
        out = FinishedRows(self.row0, c0, data, std)
        for buf in (self.sum, self.weight[None], self.var):
            if buf is not None:
                rest = self.held - n
                buf[:, :rest] = buf[:, n:self.held]
                buf[:, rest:self.held] = 0
        self.held -= n
        self.row0 += n
        return out
