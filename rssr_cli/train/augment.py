"""Random crops, flips and rotations that keep LR and HR aligned.

The 8 symmetries of the square (4 rotations x optional flip) map the HR grid onto itself and the LR grid onto itself
with their pixel edges still coinciding, because HR patches cover whole LR pixels: the pair stays exactly aligned.
Crops start at multiples of the scale's denominator for the same reason. Satellite imagery has no preferred
orientation at this scale except shadows, whose direction varies with latitude and season anyway.
"""

from __future__ import annotations

from fractions import Fraction

import torch


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
