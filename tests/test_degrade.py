"""Properties of the S2-like degradation operator (rssr_cli.degrade)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from rssr_cli.degrade import MTF_NYQUIST, degrade, downsample, project_consistent, psf_sigma, upsample
from rssr_cli.methods import BicubicUpsampler

SCALES = [Fraction(4), Fraction(10), Fraction(25, 2)]


def _hr(scale: Fraction, lr_size: int = 6, seed: int = 0) -> torch.Tensor:
    n = int(lr_size * scale)
    g = torch.Generator().manual_seed(seed)
    return torch.rand((2, 4, n, n + int(2 * scale)), generator=g) * 0.4


@pytest.mark.parametrize("scale", SCALES)
def test_downsample_shape_and_constants(scale: Fraction) -> None:
    hr = _hr(scale)
    lr = downsample(hr, scale)
    assert lr.shape == (2, 4, 6, 8)
    flat = torch.full((1, 1, int(4 * scale), int(2 * scale)), 0.123)
    assert torch.allclose(downsample(flat, scale), torch.full((1, 1, 4, 2), 0.123), atol=1e-6)


@pytest.mark.parametrize("scale", [Fraction(2), Fraction(4), Fraction(10), Fraction(25, 2)])
def test_mtf_at_nyquist(scale: Fraction) -> None:
    """A cosine at the LR Nyquist frequency, peaking at LR pixel centres, keeps ~MTF_NYQUIST of its amplitude."""
    n = int(24 * scale)
    x = (torch.arange(n, dtype=torch.float64) + 0.5) / float(scale)  # HR pixel centres in LR pixel units
    wave = torch.cos(math.pi * (x - 0.5))
    hr = wave.expand(1, 1, int(2 * scale), n).contiguous()
    lr = downsample(hr, scale)[0, 0, 0, 6:18]  # away from the reflected borders
    amplitude = lr.abs().mean().item()
    assert abs(amplitude - MTF_NYQUIST) < 0.04, amplitude
    assert psf_sigma(Fraction(25, 2)) == pytest.approx(4.88, abs=0.01)


def test_downsample_rejects_partial_lr_pixels() -> None:
    with pytest.raises(ValueError, match="multiple of 25"):
        downsample(torch.zeros(1, 1, 30, 25), 12.5)


@pytest.mark.parametrize("scale", SCALES)
def test_project_consistent_is_exact(scale: Fraction) -> None:
    hr = _hr(scale)
    g = torch.Generator().manual_seed(1)
    lr = downsample(hr, scale) + 0.05 * torch.randn((2, 4, 6, 8), generator=g)
    sr = hr + 0.1 * torch.randn(hr.shape, generator=g)
    out = project_consistent(sr, lr, scale)
    assert out.dtype == sr.dtype
    assert (downsample(out, scale) - lr).abs().max().item() < 1e-4
    # The correction only touches what D sees: the residual after projection has no LR-visible part left, and an
    # already consistent image is left as it is.
    again = project_consistent(out, lr, scale)
    assert (again - out).abs().max().item() < 1e-5


def test_damped_projection_trades_consistency_for_less_noise_amplification() -> None:
    """λ > 0: the correction of a noisy LR is smaller (noise is not pushed through the inverse of the blur), D(out)
    moves towards the LR but not all the way; λ = 0 is the exact projection."""
    scale = Fraction(25, 2)
    hr = _hr(scale)
    g = torch.Generator().manual_seed(2)
    lr = downsample(hr, scale) + 0.002 * torch.randn((2, 4, 6, 8), generator=g)
    exact = project_consistent(hr, lr, scale)
    assert torch.equal(project_consistent(hr, lr, scale, damping=0.0), exact)
    before = (downsample(hr, scale) - lr).abs().mean()
    sizes, misfits = [], []
    for lam in (0.01, 0.1):
        out = project_consistent(hr, lr, scale, damping=lam)
        sizes.append((out - hr).pow(2).mean().item())
        misfits.append((downsample(out, scale) - lr).abs().mean().item())
        assert misfits[-1] < before
    assert sizes[0] > sizes[1] and (exact - hr).pow(2).mean().item() > sizes[0]
    assert misfits[0] < misfits[1]


def test_project_consistent_keeps_high_frequencies() -> None:
    """A pattern D cannot see (period two HR pixels) passes through the projection untouched."""
    scale = Fraction(4)
    checker = 0.01 * ((torch.arange(48)[:, None] + torch.arange(48)[None, :]) % 2 * 2 - 1).double()
    base = torch.full((1, 1, 48, 48), 0.2, dtype=torch.float64)
    lr = torch.full((1, 1, 12, 12), 0.3, dtype=torch.float64)
    out = project_consistent(base + checker, lr, scale)
    hf = out - project_consistent(base, lr, scale)
    assert torch.allclose(hf, checker.expand_as(hf), atol=2e-3)


@pytest.mark.parametrize("scale", SCALES)
def test_upsample_matches_bicubic_method(scale: Fraction) -> None:
    lr = np.random.default_rng(0).random((1, 4, 8, 6), dtype=np.float32)
    ours = upsample(torch.from_numpy(lr), scale)
    theirs = BicubicUpsampler(scale=scale).upscale_tiles(lr, [(0, 0)]).mean
    assert ours.shape == (1, 4, int(8 * scale), int(6 * scale))
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-6)


def test_degrade_is_seeded_noisy_and_unbiased() -> None:
    scale = Fraction(25, 2)
    hr = _hr(scale, lr_size=8)
    a = degrade(hr, scale, generator=torch.Generator().manual_seed(3))
    b = degrade(hr, scale, generator=torch.Generator().manual_seed(3))
    c = degrade(hr, scale, generator=torch.Generator().manual_seed(4))
    clean = downsample(hr, scale)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    diff = a - clean
    assert 0.001 < diff.std().item() < 0.02
    quiet = degrade(hr, scale, generator=torch.Generator().manual_seed(3), noise_std=0.0, jitter=0.0)
    assert torch.allclose(quiet, clean)
