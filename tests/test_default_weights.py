"""The shipped default model (weights/rssr-s2-x12.5.safetensors) on real Sentinel-2 pixels.

The model learnt NIR detail from very little HR NIR (see weights/README.md), so these tests check that its NIR output
is sane on a real L2A crop (Boadella reservoir: water, forest, fields): finite, within a plausible reflectance range,
per-band means within 1.5 % of the LR's, faithful to the LR at 10 m, and spatially the same image as the bicubic NIR.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from rssr_cli.degrade import downsample, upsample
from rssr_cli.methods.diffusion import DiffusionUpsampler
from rssr_cli.weights import DEFAULT_WEIGHTS_NAME, default_weights_path, describe_weights, load_weights

DATA = Path(__file__).parent / "data"
BOADELLA = DATA / "boadella_l2a_4326.tif"  # 12 bands int16, DN = reflectance x 10000; -b 2,3,4,8
SCALE = Fraction(25, 2)


@pytest.fixture(scope="module")
def weights_path() -> Path:
    import os

    saved = os.environ.pop("RSSR_WEIGHTS", None)
    try:
        path = default_weights_path()
    finally:
        if saved is not None:
            os.environ["RSSR_WEIGHTS"] = saved
    assert path.name == DEFAULT_WEIGHTS_NAME
    assert path.is_file(), f"the default model {path} is not shipped"
    return path


@pytest.fixture(scope="module")
def lr() -> np.ndarray:
    """A 24 x 24 px (240 m) crop over the reservoir shore, 40 % water (NIR < 0.05), the rest forest and fields."""
    with rasterio.open(BOADELLA) as src:
        dn = src.read([2, 3, 4, 8], window=Window(12, 44, 24, 24)).astype(np.float32)
    assert (dn > 0).all()
    return (dn / 10000.0)[None]


@pytest.fixture(scope="module")
def sr(weights_path: Path, lr: np.ndarray) -> np.ndarray:
    up = DiffusionUpsampler(weights_path, device="cpu", seed=0)
    return up.upscale_tiles(lr, [(0, 0)]).mean


def test_shipped_file_is_small_and_self_describing(weights_path: Path) -> None:
    info = describe_weights(weights_path)
    assert info["size_bytes"] <= 20 * 1024 * 1024
    assert info["bands"] == ["B02", "B03", "B04", "B08"] and info["scale"] == 12.5
    prov = info["provenance"]
    assert prov.get("trained_by", "").startswith("rssr train") and prov.get("steps", 0) > 0
    assert "sampler_tuning" in prov
    loaded = load_weights(weights_path)
    assert loaded.config.sampler.consistency


def test_output_is_finite_and_in_reflectance_range(lr: np.ndarray, sr: np.ndarray) -> None:
    assert sr.shape == (1, 4, 300, 300) and sr.dtype == np.float32
    assert np.isfinite(sr).all()
    for b in range(4):
        lo, hi = float(lr[0, b].min()), float(lr[0, b].max())
        p_lo, p_hi = np.percentile(sr[0, b], [0.1, 99.9])
        # Detail may exceed the 10 m extremes a little, never by a physically absurd amount.
        assert p_lo >= lo - 0.05 and p_hi <= hi + 0.1, (b, lo, hi, p_lo, p_hi)
        assert sr[0, b].min() > -0.05 and sr[0, b].max() < 1.0


def test_band_means_match_the_lr(lr: np.ndarray, sr: np.ndarray) -> None:
    for b in range(4):
        m_lr, m_sr = float(lr[0, b].mean()), float(sr[0, b].mean())
        assert abs(m_sr / m_lr - 1) < 0.015, (b, m_lr, m_sr)


def test_consistent_with_the_lr(lr: np.ndarray, sr: np.ndarray) -> None:
    """Seen by the 10 m operator the output gives back the LR within its noise (the default sampler back-projects
    onto it): closer than bicubic, L1 <= 0.002 reflectance (issue 12's bar)."""
    back = downsample(torch.from_numpy(sr), SCALE).numpy()
    bicubic = downsample(upsample(torch.from_numpy(lr), SCALE), SCALE).numpy()
    misfit = np.abs(back - lr).mean()
    assert misfit <= 0.002 and misfit < np.abs(bicubic - lr).mean()


def test_added_detail_is_not_colour_speckle(lr: np.ndarray, sr: np.ndarray) -> None:
    """What the model adds to bicubic is mostly luminance, as real 0.8 m detail is: colour_ratio <= 0.25 (issue 12's
    bar on real scenes; the exact projection gave 0.5-1.4 here, independent colour noise gives ~6)."""
    from rssr_cli.metrics import colour_ratio

    bic = upsample(torch.from_numpy(lr), SCALE)
    assert colour_ratio(torch.from_numpy(sr), bic) <= 0.25


def test_nir_is_the_bicubic_nir_plus_detail(lr: np.ndarray, sr: np.ndarray) -> None:
    bic = upsample(torch.from_numpy(lr), SCALE).numpy()
    nir, nir_bic = sr[0, 3].ravel(), bic[0, 3].ravel()
    assert np.corrcoef(nir, nir_bic)[0, 1] > 0.9
    # Added NIR detail is bounded: its energy is a fraction of the NIR's own variation at 10 m.
    detail = sr[0, 3] - bic[0, 3]
    assert detail.std() < 0.5 * nir_bic.std()
    # Water stays dark in NIR and vegetation bright at 0.8 m: inside the footprints of 10 m water pixels (NIR < 0.05)
    # the output's NIR stays low, inside vegetated ones (NIR > 0.2) high.
    lr_nir = lr[0, 3]
    rows = (np.arange(300) / 12.5).astype(int)
    footprint = lambda mask: mask[rows][:, rows]  # noqa: E731 - the 10 m pixel under each 0.8 m pixel
    water, vegetation = footprint(lr_nir < 0.05), footprint(lr_nir > 0.2)
    assert water.mean() > 0.2 and vegetation.mean() > 0.2
    assert sr[0, 3][water].mean() < 0.06 and sr[0, 3][vegetation].mean() > 0.2
    assert (sr[0, 3][water] > 0.15).mean() < 0.05


def test_the_measured_context_is_enough(weights_path: Path) -> None:
    """The context stored with the shipped model (scripts/export.py measured it) keeps a tile's core within 1e-5
    reflectance of what the receptive-field bound gives, on real pixels this test owns (not those it was measured on)."""
    up = DiffusionUpsampler(weights_path, device="cpu", seed=0)
    measured = up.context
    bound = DiffusionUpsampler(weights_path, device="cpu", seed=0, steps=up.steps + 1).context
    assert measured < bound, "the shipped model should carry a measured context"
    core, row, col = 8, 36, 36  # LR px: the core's size and top-left in the crop
    cores = []
    for context in (measured, bound):
        with rasterio.open(BOADELLA) as src:
            window = Window(col - context, row - context, core + 2 * context, core + 2 * context)
            lr = (src.read([2, 3, 4, 8], window=window, boundless=True).astype(np.float32) / 10000.0)[None]
        out = up.upscale_tiles(lr, [(int((row - context) * SCALE), int((col - context) * SCALE))]).mean[0]
        h = int(context * SCALE)
        cores.append(out[:, h:h + int(core * SCALE), h:h + int(core * SCALE)])
    assert np.abs(cores[0] - cores[1]).max() <= 1e-5
