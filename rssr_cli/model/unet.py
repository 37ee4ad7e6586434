"""The conditional UNet denoiser on the HR grid.

Input: the noisy normalised residual x_t and the normalised upsampled LR, concatenated and pixel-unshuffled by
u = ``arch.unshuffle`` (so the first level already runs at 1/u resolution: the cost per HR pixel is 1/u² of a
full-resolution first level at the same width, and the HR grid's finest detail still reaches the output through the
unshuffle/shuffle pair, as u² channels per band). Levels halve the resolution; each block is modulated by the timestep
embedding and by the prior features of its level. The output is pixel-shuffled back to the HR grid by u.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rssr_cli.model.config import ArchConfig
from rssr_cli.model.layers import ChannelNorm, ResBlock, timestep_embedding

__all__ = ["ConditionalUNet"]


class ConditionalUNet(nn.Module):
    """eps/x0/v predictor: (x_t, t, lr_up, priors) -> (N, C, H, W). H and W must be multiples of
    ``arch.downsampling``."""

    def __init__(self, channels: int, arch: ArchConfig) -> None:
        super().__init__()
        w, p = arch.widths, arch.prior_widths
        levels = len(w)
        self.unshuffle = arch.unshuffle
        cells = arch.unshuffle ** 2  # HR pixels per level-0 cell
        self.time_dim = arch.time_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(arch.time_dim, arch.time_dim), nn.SiLU(), nn.Linear(arch.time_dim, arch.time_dim)
        )
        self.stem = nn.Conv2d(2 * channels * cells, w[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            nn.ModuleList(ResBlock(w[k], w[k], time_dim=arch.time_dim, prior_dim=p[k]) for _ in range(arch.blocks[k]))
            for k in range(levels)
        )
        self.downsample = nn.ModuleList(
            nn.Conv2d(w[k], w[k + 1], 3, stride=2, padding=1) for k in range(levels - 1)
        )
        self.upsample = nn.ModuleList(nn.Conv2d(w[k + 1], w[k], 3, padding=1) for k in range(levels - 1))
        self.up_blocks = nn.ModuleList(
            nn.ModuleList(
                ResBlock(2 * w[k] if i == 0 else w[k], w[k], time_dim=arch.time_dim, prior_dim=p[k])
                for i in range(arch.blocks[k])
            )
            for k in range(levels)
        )
        self.out_norm = ChannelNorm(w[0])
        self.out = nn.Conv2d(w[0], channels * cells, 3, padding=1)
        # A zero output at initialisation: for x0-prediction that is "the upsampled LR", a sensible first guess.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, lr_up: torch.Tensor,
                priors: list[torch.Tensor]) -> torch.Tensor:
        t_emb = self.time_mlp(timestep_embedding(t, self.time_dim))
        h = self.stem(F.pixel_unshuffle(torch.cat([x_t, lr_up], dim=1), self.unshuffle))
        skips = []
        for k, blocks in enumerate(self.down_blocks):
            if k > 0:
                h = self.downsample[k - 1](h)
            for block in blocks:
                h = block(h, t_emb, priors[k])
            skips.append(h)
        for k in reversed(range(len(self.up_blocks))):
            if k < len(self.up_blocks) - 1:
                h = self.upsample[k](F.interpolate(h, scale_factor=2.0, mode="nearest"))
            h = torch.cat([h, skips[k]], dim=1)
            for block in self.up_blocks[k]:
                h = block(h, t_emb, priors[k])
        return F.pixel_shuffle(self.out(F.silu(self.out_norm(h))), self.unshuffle)
