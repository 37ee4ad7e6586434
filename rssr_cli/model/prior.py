"""The prior feature extraction module: what the LR image says about the HR image, at every UNet level.

Miao et al. (JSTARS 2025) extract "rich prior information" from the LR image to guide the denoiser; SRDiff does the
same with a frozen RRDB. Ours is a small convolutional pyramid over the upsampled LR (so it works at any scale):
the UNet's pixel-unshuffle (by ``arch.unshuffle``), then one stage per UNet level, each stage halving the resolution.
Stage k's output has the resolution of UNet level k and is injected there.

Injection is by *modulation* (a spatial feature transform inside every UNet block, see
:class:`~rssr_cli.model.layers.ResBlock`), not addition or concatenation, because:

- the prior should decide *how* the denoiser renders a place (sharpen this edge, add texture to that field), which is a
  multiplicative gate on the denoiser's features; an added bias cannot switch features on or off;
- concatenation widens the input of every conv it feeds, which costs FLOPs at every network evaluation, whereas a 1x1
  conv to (γ, β) is nearly free;
- the prior does not depend on the timestep, so its features can be computed once per tile and reused for all K
  sampler steps (:meth:`SRModel.prior <rssr_cli.model.SRModel.prior>`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rssr_cli.model.layers import ResBlock

__all__ = ["PriorExtractor"]


class PriorExtractor(nn.Module):
    """(N, C, H, W) normalised upsampled LR -> list of features, level k at (H/(u·2^k), W/(u·2^k)), u = ``unshuffle``.

    H and W must be multiples of u·2^(levels − 1) (:class:`~rssr_cli.model.SRModel` pads before calling it).
    """

    def __init__(self, channels: int, widths: tuple[int, ...], blocks: tuple[int, ...], *, unshuffle: int = 2) -> None:
        super().__init__()
        self.unshuffle = unshuffle
        self.stem = nn.Conv2d(channels * unshuffle ** 2, widths[0], 3, padding=1)
        self.down = nn.ModuleList(
            nn.Conv2d(widths[k - 1], widths[k], 3, stride=2, padding=1) for k in range(1, len(widths))
        )
        self.stages = nn.ModuleList(
            nn.ModuleList(ResBlock(w, w) for _ in range(n)) for w, n in zip(widths, blocks)
        )

    def forward(self, lr_up: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(F.pixel_unshuffle(lr_up, self.unshuffle))
        features = []
        for k, stage in enumerate(self.stages):
            if k > 0:
                h = self.down[k - 1](h)
            for block in stage:
                h = block(h)
            features.append(h)
        return features
