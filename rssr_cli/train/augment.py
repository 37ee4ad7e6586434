"""Random crops, flips, rotations and radiometry that keep LR and HR aligned.

The 8 symmetries of the square (4 rotations x optional flip) map the HR grid onto itself and the LR grid onto itself
with their pixel edges still coinciding, because HR patches cover whole LR pixels: the pair stays exactly aligned.
Crops start at multiples of the scale's denominator for the same reason. Satellite imagery has no preferred
orientation at this scale except shadows, whose direction varies with latitude and season anyway.

The radiometric augmentation (:func:`random_radiometry`) maps LR and HR of a sample through the same per-band affine
map, so the pair stays consistent while its absolute colour and brightness vary: a network trained on one HR source
otherwise learns that source's colours (a colour prior) and shifts the band means of a Sentinel-2 scene towards them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import torch

#: Relative strength of the haze (atmospheric path radiance) per band, 1 in blue. Scattering by air molecules and
#: fine aerosol falls with wavelength roughly as (490 nm / λ)²: B02 1, B03 0.7, B04 0.5, B08 0.3; SWIR bands see
#: almost none.
HAZE_WEIGHTS: dict[str, float] = {
    "B01": 1.2, "B02": 1.0, "B03": 0.7, "B04": 0.5, "B05": 0.45, "B06": 0.4, "B07": 0.35, "B08": 0.3, "B8A": 0.3,
    "B09": 0.3, "B10": 0.1, "B11": 0.1, "B12": 0.05,
}

#: Haze weight of a band :data:`HAZE_WEIGHTS` does not name: the red band's, the middle of the visible-NIR range.
HAZE_WEIGHT_UNKNOWN = 0.5


def haze_weights(bands: Sequence[str]) -> tuple[float, ...]:
    """The haze weight of each band (by Sentinel-2 name, case-insensitive; unknown names get
    :data:`HAZE_WEIGHT_UNKNOWN`)."""
    return tuple(HAZE_WEIGHTS.get(b.upper(), HAZE_WEIGHT_UNKNOWN) for b in bands)


@dataclass(frozen=True)
class RadiometryRanges:
    """How far :func:`random_radiometry` moves a sample's radiometry (reflectance units for the additive terms).

    - ``brightness``: (low, high) of an overall gain drawn log-uniformly (illumination, season, sensor level);
    - ``spectral_gain``: half-width of a per-band gain 1 ± s (spectral response, cross-sensor calibration);
    - ``haze``: the largest path radiance added in a band of haze weight 1 (blue), drawn uniformly from 0;
    - ``band_offset``: half-width of a small per-band additive offset (calibration, atmospheric correction).
    """

    brightness: tuple[float, float] = (0.6, 1.6)
    spectral_gain: float = 0.1
    haze: float = 0.04
    band_offset: float = 0.005


def draw_radiometry(n: int, bands: Sequence[str], ranges: RadiometryRanges, generator: torch.Generator,
                    device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-band ``(gain, offset)``, each (n, C, 1, 1) float32: ``gain = b · g_c`` and
    ``offset = h · w_c + o_c`` with b the brightness, g_c the spectral gain, h the haze, w_c the band's haze weight
    and o_c the band offset.

    One ``torch.rand`` call of a size that depends on (n, C) only, so the generator advances the same way whatever
    the ranges; ``generator`` must live on ``device``.
    """
    c = len(bands)
    u = torch.rand((n, 2 + 2 * c), generator=generator, device=device)
    lo, hi = (math.log(v) for v in ranges.brightness)
    brightness = torch.exp(lo + (hi - lo) * u[:, :1])
    spectral = 1.0 + ranges.spectral_gain * (2.0 * u[:, 2: 2 + c] - 1.0)
    weights = torch.tensor(haze_weights(bands), dtype=u.dtype, device=u.device)
    haze = ranges.haze * u[:, 1:2] * weights
    offset = ranges.band_offset * (2.0 * u[:, 2 + c:] - 1.0)
    return (brightness * spectral)[..., None, None], (haze + offset)[..., None, None]


def random_radiometry(lr: torch.Tensor, hr: torch.Tensor, generator: torch.Generator, ranges: RadiometryRanges, *,
                      bands: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random affine map ``x' = gain_c · x + offset_c`` on a sample's LR and HR (see :func:`draw_radiometry`).

    Because the degradation D is linear and keeps constants, ``D(gain · hr + offset) = gain · D(hr) + offset``: the
    pair stays consistent. For synthetic pairs map the HR *before* degrading it, so the sensor noise keeps its level.
    Masked bands are mapped too (their values are ignored by the loss).
    """
    if lr.shape[1] != len(bands) or hr.shape[1] != len(bands):
        raise ValueError(f"radiometric augmentation: {len(bands)} band names for {lr.shape[1]} LR / {hr.shape[1]} "
                         "HR bands")
    gain, offset = draw_radiometry(lr.shape[0], bands, ranges, generator, lr.device)
    return lr * gain.to(lr.dtype) + offset.to(lr.dtype), hr * gain.to(hr.dtype) + offset.to(hr.dtype)


def random_crop(lr: torch.Tensor, hr: torch.Tensor, size: int, scale: Fraction,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random ``size`` x ``size`` LR crop (and its HR) per sample, offsets on multiples of the denominator."""
    h, w = lr.shape[-2:]
    den = scale.denominator
    if size % den or size > min(h, w):
        raise ValueError(f"crop {size} must be a multiple of {den} and at most the patch size {min(h, w)}")
    if size == h == w:
        return lr, hr
    hs = int(size * scale)
    lrs, hrs = [], []
    for i in range(lr.shape[0]):
        r = den * int(torch.randint(0, (h - size) // den + 1, (1,), generator=generator))
        c = den * int(torch.randint(0, (w - size) // den + 1, (1,), generator=generator))
        lrs.append(lr[i, :, r: r + size, c: c + size])
        hrs.append(hr[i, :, int(r * scale): int(r * scale) + hs, int(c * scale): int(c * scale) + hs])
    return torch.stack(lrs), torch.stack(hrs)


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 symmetries of the square (k in 0..7) on the last two axes."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def random_dihedral(lr: torch.Tensor, hr: torch.Tensor,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """An independent random symmetry per sample, the same for its LR and HR. Needs square patches."""
    ks = torch.randint(0, 8, (lr.shape[0],), generator=generator).tolist()
    return (torch.stack([dihedral(x, k) for x, k in zip(lr, ks)]),
            torch.stack([dihedral(x, k) for x, k in zip(hr, ks)]))
