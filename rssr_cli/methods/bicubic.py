"""Bicubic interpolation onto the HR grid: the baseline every model is compared with, and a fast stand-in in tests."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, Sequence

import numpy as np

from rssr_cli.methods.base import DEFAULT_BANDS, DEFAULT_SCALE, TileResult


@dataclass(frozen=True)
class BicubicOptions:
    """``--method bicubic``: any scale (``--scale``), the default Sentinel-2 10 m bands."""

    method: ClassVar[str] = "bicubic"
    scale: Fraction = DEFAULT_SCALE
    bands: tuple[str, ...] = DEFAULT_BANDS

    def build(self) -> "BicubicUpsampler":
        return BicubicUpsampler(scale=self.scale, bands=self.bands)


class BicubicUpsampler:
    """Bicubic interpolation (:func:`rssr_cli.degrade.upsample`, the same operator the model starts from).

    Pixel centres are aligned as GDAL does (``align_corners=False``), so a tile whose LR offset is a multiple of
    ``scale.denominator`` lands on exactly the HR pixels the whole image would.
    """

    name = "bicubic"
    samples = 1
    batch_size = 2

    def __init__(self, scale: Fraction = DEFAULT_SCALE, bands: tuple[str, ...] = DEFAULT_BANDS) -> None:
        self.scale = Fraction(scale)
        self.bands = tuple(bands)

    @property
    def context(self) -> int:
        return 2 * self.scale.denominator  # bicubic reads 2 LR pixels beyond each output pixel

    def upscale_tiles(self, lr: np.ndarray, origins: Sequence[tuple[int, int]]) -> TileResult:
        import torch

        from rssr_cli.degrade import upsample  # torch: imported on first use, so the CLI starts fast

        with torch.no_grad():
            hr = upsample(torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32)), self.scale)
        return TileResult(mean=hr.numpy())

    def provenance(self) -> dict[str, str]:
        return {"RSSR_METHOD": "bicubic"}
