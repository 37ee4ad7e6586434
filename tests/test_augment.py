"""Radiometric augmentation: one affine map per sample for LR and HR, physically ordered haze, seeded draws, and the
training pipeline unchanged while it is off."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from rssr_cli.degrade import NOISE_STD, degrade, downsample
from rssr_cli.train.augment import (
    HAZE_WEIGHT_UNKNOWN,
    RadiometryRanges,
    draw_radiometry,
    haze_weights,
    random_crop,
    random_dihedral,
    random_radiometry,
)
from rssr_cli.train.config import TrainConfig, load_config
from rssr_cli.train.data import augment

SCALE = Fraction(25, 2)
BANDS = ("B02", "B03", "B04", "B08")


def _pair(n: int = 3, size: int = 100, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hr = 0.02 + 0.4 * torch.rand(n, len(BANDS), size, size, generator=g)
    return downsample(hr, SCALE), hr


def test_the_same_map_goes_to_lr_and_hr():
    lr, hr = _pair()
    lr2, hr2 = random_radiometry(lr, hr, torch.Generator().manual_seed(1), RadiometryRanges(), bands=BANDS)
    # D is linear and keeps constants, so one affine map on both keeps the pair consistent.
    assert torch.allclose(downsample(hr2, SCALE), lr2, atol=1e-5)
    assert (lr2 - lr).abs().amax() > 0.01
    # Per sample and band the map is affine: (x' - offset) / x is one gain over all pixels of LR and HR.
    gain, offset = draw_radiometry(3, BANDS, RadiometryRanges(), torch.Generator().manual_seed(1))
    assert torch.allclose(hr2, gain * hr + offset, atol=1e-6) and torch.allclose(lr2, gain * lr + offset, atol=1e-6)


def test_synthetic_pairs_are_degraded_from_the_mapped_hr():
    # A flat HR: the residual LR - D(HR') is then the sensor noise plus the degradation's per-band gain jitter.
    g = torch.Generator().manual_seed(0)
    hr = 0.1 + 0.002 * torch.rand(8, len(BANDS), 200, 200, generator=g)
    lr = downsample(hr, SCALE)
    config = load_config(None, {"radiometric": True, "brightness": [1.6, 1.6], "augment": False})
    lr2, hr2 = augment(lr, hr, synthetic=True, scale=SCALE, config=config, generator=torch.Generator().manual_seed(2))
    residual = lr2 - downsample(hr2, SCALE)
    assert residual.abs().amax() < 0.02 < (lr - downsample(hr2, SCALE)).abs().amax()
    # The noise keeps the sensor's level (mapping after the degradation would scale it by 1.6).
    noise = residual - residual.mean(dim=(-2, -1), keepdim=True)
    assert float(noise.std()) == pytest.approx(NOISE_STD, rel=0.1)
    # A real pair (the cached LR kept) gets the same map on both.
    lr3, hr3 = augment(lr, hr, synthetic=False, scale=SCALE, config=config, generator=torch.Generator().manual_seed(2))
    assert torch.equal(hr3, hr2) and torch.allclose(downsample(hr3, SCALE), lr3, atol=1e-5)


def test_haze_is_non_negative_and_strongest_in_blue():
    only_haze = RadiometryRanges(brightness=(1.0, 1.0), spectral_gain=0.0, haze=0.04, band_offset=0.0)
    gain, offset = draw_radiometry(500, BANDS, only_haze, torch.Generator().manual_seed(3))
    assert torch.equal(gain, torch.ones_like(gain))
    h = offset[..., 0, 0]
    assert (h >= 0).all() and (h[:, 0] <= 0.04).all()
    assert (h[:, 0] >= h[:, 1]).all() and (h[:, 1] >= h[:, 2]).all() and (h[:, 2] >= h[:, 3]).all()
    assert float(h[:, 0].min()) < 0.002 and float(h[:, 0].max()) > 0.038  # uniform over [0, haze]
    # The weights follow the band names, not the positions; unknown bands get the default.
    _, swapped = draw_radiometry(500, ("B08", "B02"), only_haze, torch.Generator().manual_seed(3))
    assert (swapped[:, 1] >= swapped[:, 0]).all() and (swapped[:, 1] > swapped[:, 0]).any()
    assert haze_weights(["b02", "B8A", "PAN"]) == (1.0, 0.3, HAZE_WEIGHT_UNKNOWN)


def test_draws_stay_within_the_ranges():
    ranges = RadiometryRanges()
    gain, offset = draw_radiometry(4000, BANDS, ranges, torch.Generator().manual_seed(4))
    assert 0.6 * 0.9 <= float(gain.min()) and float(gain.max()) <= 1.6 * 1.1
    assert -0.005 <= float(offset.min()) and float(offset.max()) <= 0.04 + 0.005
    # Brightness alone: one gain per sample for every band, log-uniform over [0.6, 1.6].
    flat = RadiometryRanges(spectral_gain=0.0, haze=0.0, band_offset=0.0)
    b, o = draw_radiometry(4000, BANDS, flat, torch.Generator().manual_seed(4))
    assert torch.equal(o, torch.zeros_like(o)) and torch.equal(b, b[:, :1].expand_as(b))
    logs = b[:, 0, 0, 0].log()
    assert float(logs.mean()) == pytest.approx((math.log(0.6) + math.log(1.6)) / 2, abs=0.02)
    assert float((logs < math.log(0.6) + 0.25 * math.log(1.6 / 0.6)).float().mean()) == pytest.approx(0.25, abs=0.03)


def test_draws_are_seeded_and_differ_between_samples():
    ranges = RadiometryRanges()
    a = draw_radiometry(4, BANDS, ranges, torch.Generator().manual_seed(5))
    b = draw_radiometry(4, BANDS, ranges, torch.Generator().manual_seed(5))
    c = draw_radiometry(4, BANDS, ranges, torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])
    gain, offset = a
    assert all(not torch.equal(gain[i], gain[j]) and not torch.equal(offset[i], offset[j])
               for i in range(4) for j in range(i + 1, 4))
    # How far the generator advances does not depend on the ranges (a changed range moves no other draw).
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    draw_radiometry(4, BANDS, ranges, g1)
    draw_radiometry(4, BANDS, RadiometryRanges(brightness=(1.0, 1.0), haze=0.0), g2)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_band_names_must_match_the_channels():
    lr, hr = _pair()
    with pytest.raises(ValueError, match="3 band names for 4"):
        random_radiometry(lr, hr, torch.Generator(), RadiometryRanges(), bands=BANDS[:3])


def test_off_by_default_and_the_pipeline_draws_as_before():
    lr, hr = _pair(n=4)
    config = load_config(None, {"crop": 4})
    assert config.radiometric is False
    out = augment(lr, hr, synthetic=True, scale=SCALE, config=config, generator=torch.Generator().manual_seed(8))
    # The pipeline before radiometry existed: fresh degradation, crop, dihedral, from the same generator.
    g = torch.Generator().manual_seed(8)
    ref = random_dihedral(*random_crop(degrade(hr, SCALE, generator=g), hr, 4, SCALE, g), g)
    assert all(torch.equal(x, y) for x, y in zip(out, ref))
    # The ranges do nothing while it is off; on, the batch changes.
    other = load_config(None, {"crop": 4, "brightness": [0.5, 2.0], "haze": 0.1})
    again = augment(lr, hr, synthetic=True, scale=SCALE, config=other, generator=torch.Generator().manual_seed(8))
    assert all(torch.equal(x, y) for x, y in zip(out, again))
    on = augment(lr, hr, synthetic=True, scale=SCALE, config=other.replace(radiometric=True),
                 generator=torch.Generator().manual_seed(8))
    assert not torch.equal(on[1], out[1])


def test_config_defaults_are_the_ranges_defaults():
    c = TrainConfig()
    assert RadiometryRanges(brightness=c.brightness, spectral_gain=c.spectral_gain, haze=c.haze,
                            band_offset=c.band_offset) == RadiometryRanges()
