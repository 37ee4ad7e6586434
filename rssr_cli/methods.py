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
  several samples, ``std`` of the same shape (else None).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, Protocol, Sequence, runtime_checkable

import numpy as np

#: The default input bands (Sentinel-2 10 m bands), in the order every method receives them.
DEFAULT_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B08")

#: 10 m -> 0.8 m.
DEFAULT_SCALE = Fraction(25, 2)

Method = Literal["diffusion", "bicubic"]
METHODS: tuple[str, ...] = ("diffusion", "bicubic")


@dataclass(frozen=True)
class TileResult:
    """What a method returns for a batch of tiles: the (mean) estimate and, for several samples, their spread."""

    mean: np.ndarray
    std: np.ndarray | None = None


@runtime_checkable
class TileUpsampler(Protocol):
    """A super-resolution method as the pipeline sees it."""

    name: str
    scale: Fraction
    bands: tuple[str, ...]

    def upscale_tiles(self, lr: np.ndarray, origins: Sequence[tuple[int, int]]) -> TileResult: ...

    def provenance(self) -> dict[str, str]:
        """Tags written into the output (method, model, steps, seed, ...)."""
        ...

    @property
    def context(self) -> int:
        """LR pixels of context the method wants on each side of a tile (its receptive field, roughly)."""
        ...


def hr_size(lr_size: int, scale: Fraction) -> int:
    """HR pixels covering ``lr_size`` LR pixels; rounded up so that scene edges are never cropped."""
    return int(np.ceil(lr_size * scale))


class BicubicUpsampler:
    """Bicubic interpolation onto the HR grid: the baseline and a stand-in for the model in tests.

    Pixel centres are aligned as GDAL does (``align_corners=False``), so a tile whose LR offset is a multiple of
    ``scale.denominator`` lands on exactly the HR pixels the whole image would.
    """

    name = "bicubic"

    def __init__(self, scale: Fraction = DEFAULT_SCALE, bands: tuple[str, ...] = DEFAULT_BANDS) -> None:
        self.scale = Fraction(scale)
        self.bands = tuple(bands)

    @property
    def context(self) -> int:
        return 2 * self.scale.denominator  # bicubic reads 2 LR pixels beyond each output pixel

    def upscale_tiles(self, lr: np.ndarray, origins: Sequence[tuple[int, int]]) -> TileResult:
        import torch
        import torch.nn.functional as F

        n, c, h, w = lr.shape
        size = (int(h * self.scale), int(w * self.scale))
        with torch.no_grad():
            hr = F.interpolate(torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32)), size=size,
                               mode="bicubic", align_corners=False)
        return TileResult(mean=hr.numpy())

    def provenance(self) -> dict[str, str]:
        return {"RSSR_METHOD": "bicubic"}


def create_upsampler(
    method: str,
    *,
    scale: Fraction | None = None,
    bands: tuple[str, ...] | None = None,
    weights: str | None = None,
    device: str = "auto",
    steps: int | None = None,
    start: float | None = None,
    eta: float | None = None,
    seed: int = 0,
    samples: int = 1,
    consistency: bool | None = None,
    batch_size: int | None = None,
) -> TileUpsampler:
    """Build the method named ``method``. Options that do not apply to it are ignored (None means its default).

    For ``diffusion`` the scale and bands come from the weights file; asking for others is an error.
    """
    from rssr_cli.errors import UsageError

    if method == "bicubic":
        return BicubicUpsampler(scale=scale or DEFAULT_SCALE, bands=bands or DEFAULT_BANDS)
    if method == "diffusion":
        from rssr_cli.diffusion_method import DiffusionUpsampler

        upsampler = DiffusionUpsampler(weights, device=device, steps=steps, start=start, eta=eta, seed=seed,
                                       samples=samples, consistency=consistency, batch_size=batch_size)
        if scale is not None and Fraction(scale) != upsampler.scale:
            raise UsageError(f"--scale {float(scale):g} does not match the model's scale {float(upsampler.scale):g}; "
                             "the diffusion model works at the scale it was trained for")
        return upsampler
    raise UsageError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
