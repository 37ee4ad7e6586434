"""Building blocks shared by the prior feature extractor and the UNet.

Normalisation is per pixel over channels (:class:`ChannelNorm`), never over space: GroupNorm/BatchNorm statistics
depend on the tile's extent, so two overlapping tiles would render the same ground differently and the seams would
show. With per-pixel norms the network is a translation-equivariant function of its inputs up to the tile borders.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ChannelNorm", "ResBlock", "timestep_embedding"]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps t (N,) -> (N, dim), as in DDPM/Transformers."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of each pixel (N, C, H, W); independent of the tile's extent."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # layer_norm over the last axis of the NHWC view: one fused kernel (a view, no copy, for channels_last input).
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class ResBlock(nn.Module):
    """norm -> SiLU -> conv3x3 -> modulate(time, prior) -> SiLU -> conv3x3, plus a (1x1 when widths differ) skip.

    Modulation: ``h = norm(h) · (1 + γ_t + γ_p) + (β_t + β_p)``, where (γ_t, β_t) come from the timestep embedding
    (one value per channel) and (γ_p, β_p) from the prior features through a 1x1 conv (one value per channel and pixel,
    a spatial feature transform). ``time_dim`` or ``prior_dim`` of 0 leaves that input out.
    """

    def __init__(self, in_ch: int, out_ch: int, *, time_dim: int = 0, prior_dim: int = 0) -> None:
        super().__init__()
        self.norm1 = ChannelNorm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = ChannelNorm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.time = nn.Linear(time_dim, 2 * out_ch) if time_dim else None
        self.prior = nn.Conv2d(prior_dim, 2 * out_ch, 1) if prior_dim else None
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        # Start as a near-identity block: the modulation begins neutral and the residual branch small, which keeps a
        # deep stack trainable from the first step.
        for layer in (self.time, self.prior):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor | None = None,
                prior: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        gamma = torch.zeros((), device=h.device, dtype=h.dtype)
        beta = torch.zeros((), device=h.device, dtype=h.dtype)
        if self.time is not None and t_emb is not None:
            g, b = self.time(t_emb).to(h.dtype)[:, :, None, None].chunk(2, dim=1)
            gamma, beta = gamma + g, beta + b
        if self.prior is not None and prior is not None:
            g, b = self.prior(prior).chunk(2, dim=1)
            gamma, beta = gamma + g, beta + b
        h = h * (1 + gamma) + beta
        h = self.conv2(F.silu(h))
        return h + self.skip(x)
