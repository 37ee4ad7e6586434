"""Small image filters on (N, C, H, W) tensors, shared by the metrics and the sampler's texture transfer and chroma
smoothing."""

from __future__ import annotations

import math

import torch

__all__ = ["blur_chroma", "gaussian_blur", "high_pass"]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) over ±3 sigma with reflected borders; sigma 0 is the identity."""
    if sigma <= 0:
        return x
    radius = min(int(math.ceil(3 * sigma)), min(x.shape[-2:]) - 1)
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    out = torch.nn.functional.pad(x, (radius, radius, radius, radius), mode="reflect")
    out = torch.nn.functional.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return torch.nn.functional.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def high_pass(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``x`` less its Gaussian blur of ``sigma`` pixels: what varies faster than about ``sigma`` pixels."""
    return x - gaussian_blur(x, sigma)


def blur_chroma(x: torch.Tensor, sigma: float, channels: tuple[int, ...]) -> torch.Tensor:
    """``x`` with the colour of ``channels`` blurred and their brightness kept: over those channels, each pixel's mean
    (the brightness) is left as it is and the deviations from it (the colour) get a Gaussian blur of ``sigma``
    pixels. Other channels are returned unchanged; sigma 0 is the identity."""
    if sigma <= 0 or len(channels) < 2:
        return x
    index = list(channels)
    colour = x[:, index]
    brightness = colour.mean(dim=1, keepdim=True)
    out = x.clone()
    out[:, index] = brightness + gaussian_blur(colour - brightness, sigma)
    return out
