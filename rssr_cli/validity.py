"""Which output pixels are valid, derived from the LR validity the read stage already holds.

An output pixel is valid when the LR pixel under its centre is valid (nearest) and, for a polygon AOI, its centre lies
inside the polygon. The LR validity comes from the strip of the tile row that finished the block: the blender only
finishes rows of the tile row being added (the overlap it carries down belongs to the next row's core), and every
output row of a core lies over an LR row of that core. So no validity is kept beyond the current strip and the scene
is never read again for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from rasterio.features import geometry_mask
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from rssr_cli.blend import FinishedRows
from rssr_cli.scene import Grid
from rssr_cli.strips import LRStrip


@dataclass(frozen=True)
class OutputMask:
    """Which output pixels are valid: the LR pixel under their centre is valid and, for a polygon AOI, their centre
    lies inside it.

    ``window``: the output's LR window in scene pixels; ``hr_grid``: the output grid; ``polygon``: the AOI in the scene
    CRS when pixels outside it are to be masked, else None.
    """

    window: Window
    hr_grid: Grid
    scale: Fraction
    polygon: BaseGeometry | None = None

    def valid(self, block: FinishedRows, strip: LRStrip) -> np.ndarray:
        """Validity (h, w) of a finished block, from the strip of the tile row that finished it."""
        h, w = block.data.shape[1:]
        rows = self._lr_pixels(block.row0, h, int(self.window.height)) + int(self.window.row_off - strip.window.row_off)
        cols = self._lr_pixels(block.col0, w, int(self.window.width)) + int(self.window.col_off - strip.window.col_off)
        if rows[0] < 0 or rows[-1] >= strip.valid.shape[0] or cols[0] < 0 or cols[-1] >= strip.valid.shape[1]:
            raise RuntimeError(f"internal: the output block at row {block.row0}, column {block.col0} is not under "
                               f"LR strip {strip.row}")
        valid = strip.valid[np.ix_(rows, cols)]
        if self.polygon is not None:
            sub = self.hr_grid.window(Window(block.col0, block.row0, w, h))
            valid &= geometry_mask([self.polygon], out_shape=(h, w), transform=sub.transform, invert=True)
        return valid

    def _lr_pixels(self, hr_start: int, count: int, lr_length: int) -> np.ndarray:
        """The LR pixel (relative to the window) under the centres of ``count`` HR pixels from ``hr_start``; the last
        HR pixel of an odd-sized window may overhang it by half a pixel and takes the window's last LR pixel."""
        lr = np.floor((np.arange(hr_start, hr_start + count) + 0.5) / float(self.scale)).astype(int)
        return np.minimum(lr, lr_length - 1)
