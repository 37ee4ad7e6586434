"""The per-tile interface between the geospatial pipeline and a super-resolution method.

The pipeline (:mod:`rssr_cli.pipeline`) cuts the scene into overlapping LR tiles, converts them to reflectance, fills
nodata, and hands batches of tiles to a :class:`TileUpsampler`. The upsampler returns each tile on the HR grid. The
pipeline never looks inside the method, so bicubic and the diffusion model are interchangeable.

Contract for ``TileUpsampler.upscale_tiles(lr, origins)``:

- ``lr``: float32 array (N, C, h, w) of reflectance (about 0..1, may exceed 1 or be slightly negative), no NaN. ``h`` and
  ``w`` are multiples of ``scale.denominator`` so that ``h * scale`` and ``w * scale`` are whole pixels.
- ``origins``: for each tile, ``(row, col)`` of its top-left HR pixel in the output HR grid. These can be negative
  (context read beyond the output window). A stochastic method must draw its noise as a function of the seed and these
  global pixel positions, never of the tile, so that overlapping tiles see the same noise field.
- returns a :class:`TileResult` with ``mean`` (N, C, h*scale, w*scale) float32 reflectance and, when the method draws
  several samples (``samples > 1``), ``std`` of the same shape (else None).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

#: The default input bands (Sentinel-2 10 m bands), in the order every method receives them.
DEFAULT_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B08")

#: 10 m -> 0.8 m.
DEFAULT_SCALE = Fraction(25, 2)


@dataclass(frozen=True)
class TileResult:
    """What a method returns for a batch of tiles: the (mean) estimate and, for several samples, their spread."""

    mean: np.ndarray
    std: np.ndarray | None = None


@runtime_checkable
class TileUpsampler(Protocol):
    """A super-resolution method as the pipeline sees it.

    ``batch_size``: how many tiles the pipeline hands over per call. ``samples``: draws per pixel; above 1 the result
    carries ``std`` and the pipeline writes it as a companion COG.
    """

    name: str
    scale: Fraction
    bands: tuple[str, ...]
    batch_size: int
    samples: int

    def upscale_tiles(self, lr: np.ndarray, origins: Sequence[tuple[int, int]]) -> TileResult: ...

    def provenance(self) -> dict[str, str]:
        """Tags written into the output (method, model, steps, seed, ...)."""
        ...

    @property
    def context(self) -> int:
        """LR pixels of context the method wants on each side of a tile (its receptive field, roughly)."""
        ...


@runtime_checkable
class MethodOptions(Protocol):
    """The options of one method, as a frozen dataclass that builds the method (see :mod:`rssr_cli.methods`)."""

    method: str

    def build(self) -> TileUpsampler: ...

