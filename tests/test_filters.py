"""rssr_cli.filters: the chroma smoothing the sampler applies to what the model adds (--chroma-sigma)."""

from __future__ import annotations

import torch

from rssr_cli.filters import blur_chroma, gaussian_blur
from rssr_cli.metrics import chroma, luminance


def _image() -> torch.Tensor:
    return torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_blur_chroma_keeps_brightness_and_other_bands() -> None:
    """Each pixel's mean over the chroma channels is kept exactly, the other channels are untouched, and the colour
    (deviation from that mean) is the Gaussian blur of the input's."""
    x = _image()
    out = blur_chroma(x, 2.0, (0, 1, 2))
    torch.testing.assert_close(luminance(out), luminance(x))
    torch.testing.assert_close(out[:, 3], x[:, 3])
    mean = x[:, :3].mean(dim=1, keepdim=True)
    torch.testing.assert_close(out[:, :3] - mean, gaussian_blur(x[:, :3] - mean, 2.0))
    assert chroma(out).var() < 0.2 * chroma(x).var()  # pixel-scale colour noise mostly gone


def test_blur_chroma_leaves_smooth_colour_and_does_nothing_when_off() -> None:
    """A colour that varies slowly (a constant tint, a gentle ramp) passes almost unchanged; sigma 0, or fewer than
    two chroma channels, is the identity."""
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    tint = torch.stack([0.02 + 0.001 * xx, 0.05 + 0 * xx, 0.03 + 0.001 * yy, 0.2 + 0 * xx]).expand(2, 4, 32, 32)
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))  # away from the reflected borders
    torch.testing.assert_close(blur_chroma(tint, 2.0, (0, 1, 2))[inner], tint[inner])
    x = _image()
    assert torch.equal(blur_chroma(x, 0.0, (0, 1, 2)), x)
    assert torch.equal(blur_chroma(x, 2.0, (1,)), x)
    torch.testing.assert_close(blur_chroma(x, 2.0, (2, 1))[:, [0, 3]], x[:, [0, 3]])
