"""Evaluation metrics (properties that pin each formula) and `evaluate` end to end on a tiny model."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from rssr_cli.degrade import project_consistent, upsample
from rssr_cli.errors import WeightsError
from rssr_cli.evaluate import evaluate
from rssr_cli.metrics import (
    detail_and_colour,
    gaussian_blur,
    correctness,
    consistency_l1,
    hf_ratio,
    histogram_match,
    psnr,
    score,
    spectral_angle,
    ssim,
)
from rssr_cli.train.archive import PrepareOptions, prepare_archive
from rssr_cli.patches import save_cache

DATA = Path(__file__).parent / "data"
SCALE = Fraction(25, 2)


@pytest.fixture(scope="module")
def triplet():
    """Real HR patches (SWISSIMAGE/Satellogic) with their S2-like LR."""
    prepared = prepare_archive(DATA / "train_hr", options=PrepareOptions(patch=8, synthetic_lr=True,
                                                                           missing_band="mask"))
    lr, hr, valid = prepared.cache.batch(np.arange(len(prepared.cache)))
    return torch.from_numpy(lr), torch.from_numpy(hr), torch.from_numpy(valid), prepared.cache


def test_psnr_and_ssim(triplet):
    lr, hr, valid, _ = triplet
    assert torch.all(psnr(hr, hr, valid) > 100)
    noisy = hr + 0.01 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(psnr(noisy, hr, valid), torch.full((len(hr),), 40.0), atol=0.2)  # MSE 1e-4
    assert torch.allclose(ssim(hr, hr, valid), torch.ones(len(hr)))
    assert torch.all(ssim(noisy, hr, valid) < 0.99)
    # A masked band does not count: wrecking it changes nothing.
    broken = hr.clone()
    broken[:, 3] += 1.0
    masked = valid.clone()
    masked[:, 3] = False
    assert torch.all(psnr(broken, hr, masked) > 100)


def test_ssim_values(triplet):
    """SSIM pinned three ways: the closed form on constant images, the ordering of degradations, and the values of
    the former hand-written implementation (float64 Gaussian window, valid convolution) on a fixed input."""
    # Constant images: no variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1) with L = 1 (the HR range is 0).
    a, b = torch.full((1, 2, 16, 16), 0.2), torch.full((1, 2, 16, 16), 0.1)
    assert float(ssim(a, b, torch.ones(1, 2, dtype=torch.bool))) == pytest.approx((0.04 + 1e-4) / (0.05 + 1e-4))
    _, hr, valid, _ = triplet
    g = torch.Generator().manual_seed(3)
    values = [ssim(hr + sigma * torch.randn(hr.shape, generator=g), hr, valid) for sigma in (0.002, 0.01, 0.05)]
    assert torch.all(values[0] > values[1]) and torch.all(values[1] > values[2])
    g = torch.Generator().manual_seed(42)
    hr = 0.05 + 0.3 * torch.rand(2, 3, 16, 16, generator=g)
    sr = hr + 0.02 * torch.randn(2, 3, 16, 16, generator=g)
    valid = torch.tensor([[True, True, True], [True, False, True]])
    assert ssim(sr, hr, valid).tolist() == pytest.approx([0.9732421636581421, 0.9717674851417542], abs=1e-6)


def test_consistency_of_projection(triplet):
    lr, hr, valid, _ = triplet
    sr = upsample(lr, SCALE) + 0.05 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(1))
    assert torch.all(consistency_l1(sr, lr, valid, SCALE) > 0.001)
    assert torch.all(consistency_l1(project_consistent(sr, lr, SCALE), lr, valid, SCALE) < 1e-5)


def test_spectral_angle_ignores_brightness(triplet):
    _, hr, valid, _ = triplet
    assert torch.all(spectral_angle(1.7 * hr, hr, valid) < 0.05)
    swapped = hr[:, [1, 0, 2, 3]]
    assert torch.all(spectral_angle(swapped, hr, valid) > 1.0)


def test_hf_ratio(triplet):
    lr, hr, valid, _ = triplet
    assert torch.allclose(hf_ratio(hr, hr, valid, SCALE), torch.ones(len(hr)))
    assert torch.all(hf_ratio(upsample(lr, SCALE), hr, valid, SCALE) < 0.2)


def test_histogram_match_takes_reference_values():
    src = torch.tensor([[[[3.0, 1.0], [2.0, 4.0]]]])
    ref = torch.tensor([[[[10.0, 40.0], [30.0, 20.0]]]])
    assert torch.equal(histogram_match(src, ref), torch.tensor([[[[30.0, 10.0], [20.0, 40.0]]]]))


def test_correctness_classifies_the_extremes(triplet):
    lr, hr, valid, _ = triplet
    # Without opensr-test's histogram matching (which stretches bicubic's contrast towards the HR's).
    bicubic = correctness(upsample(lr, SCALE), lr, hr, valid, SCALE, harmonize=False)
    assert float(bicubic["omission"].mean()) > 0.9
    assert float(correctness(upsample(lr, SCALE), lr, hr, valid, SCALE)["omission"].mean()) > 0.5
    truth = correctness(hr, lr, hr, valid, SCALE)
    assert float(truth["improvement"].mean()) > 0.9
    # Texture unrelated to the HR: far from both references -> hallucination dominates among the scored pixels.
    g = torch.Generator().manual_seed(2)
    fake = upsample(lr, SCALE) + 0.3 * hr.std() * torch.randn(hr.shape, generator=g)
    invented = correctness(fake, lr, hr, valid, SCALE, harmonize=False)
    assert float(invented["hallucination"].mean()) > float(invented["improvement"].mean())
    for shares in (bicubic, truth, invented):
        total = shares["improvement"] + shares["omission"] + shares["hallucination"]
        assert torch.allclose(total, torch.ones_like(total), atol=1e-5)


def test_score_mean_shift(triplet):
    lr, hr, valid, _ = triplet
    s = score(hr + 0.01, lr, hr, valid, SCALE)
    shift = s["_shift_sum"] / s["_shift_n"]
    assert torch.allclose(shift, torch.full((4,), 0.01), atol=1e-6)


def _colour_metrics(sr, lr, hr, valid):
    return detail_and_colour(score(sr, lr, hr, valid, SCALE))


def test_detail_and_colour_of_the_truth_and_of_bicubic(triplet):
    lr, hr, valid, _ = triplet
    truth = _colour_metrics(hr, lr, hr, valid)
    assert truth["detail"] == pytest.approx(1.0) and truth["chroma_excess"] == pytest.approx(1.0)
    assert truth["speckle"] == pytest.approx(1.0)
    assert 0.02 < truth["colour_ratio"] < 2  # colourless detail gives 0, independent colour noise 6
    bicubic = _colour_metrics(upsample(lr, SCALE), lr, hr, valid)
    assert bicubic["detail"] < 0.05 and bicubic["colour_ratio"] is None and bicubic["speckle"] is None


def test_colour_speckle_is_caught_and_grey_detail_is_not(triplet):
    """Colour noise at the 10 m scale (what the issue saw) raises speckle and chroma_excess far above 1; the same
    amount of grey (luminance-only) detail keeps the added detail colourless."""
    lr, hr, valid, _ = triplet
    g = torch.Generator().manual_seed(0)
    blobs = upsample(0.02 * torch.randn(lr.shape, generator=g), SCALE)  # one random value per 10 m pixel and band
    grey = blobs[:, :1].expand_as(blobs)
    speckled = _colour_metrics(hr + blobs, lr, hr, valid)
    assert speckled["speckle"] > 2.5 and speckled["chroma_excess"] > 2.5
    plain = _colour_metrics(hr + grey, lr, hr, valid)
    assert plain["speckle"] < 0.5 and plain["chroma_excess"] < 0.5


def test_gaussian_blur_keeps_constants_and_sigma_zero_is_identity():
    x = torch.rand(1, 2, 30, 30, dtype=torch.float64)
    assert torch.equal(gaussian_blur(x, 0.0), x)
    const = torch.full((1, 2, 30, 30), 0.3, dtype=torch.float64)
    assert torch.allclose(gaussian_blur(const, 6.0), const)
    assert gaussian_blur(x, 2.0).std() < x.std()


def test_evaluate_bicubic_without_weights(triplet, tmp_path, monkeypatch):
    cache = save_cache(triplet[3], tmp_path / "p.npz")
    result = evaluate(cache, methods=["bicubic"])
    r = result.methods["bicubic"]
    assert result.patches == len(triplet[3]) and 25 < r["psnr"] < 60 and r["omission"] > 0.5
    assert r["mean_shift"]["B08"] is not None
    table = result.table()
    assert "bicubic" in table and "improvement" in table and "speckle" in table
    # Model methods without --weights take the shipped model; when that is missing, the error says what to pass.
    monkeypatch.setenv("RSSR_WEIGHTS", str(tmp_path / "missing.safetensors"))
    with pytest.raises(WeightsError, match="--weights"):
        evaluate(cache, methods=["lr_start"])


@pytest.mark.slow
def test_evaluate_all_methods_on_a_trained_tiny_model(triplet, tmp_path):
    from rssr_cli.train.config import load_config
    from rssr_cli.train.loop import train

    cache = save_cache(triplet[3], tmp_path / "p.npz")
    cfg = load_config(None, {"data": str(cache), "out": str(tmp_path / "run"), "steps": 3, "batch_size": 2,
                             "model.preset": "tiny", "val_every": 3, "device": "cpu"})
    weights = train(cfg).weights
    result = evaluate(cache, weights, noise_steps=100, max_patches=4)
    assert set(result.methods) == {"lr_start", "pure_noise", "bicubic"}
    assert result.settings["noise_steps"] == 50  # the tiny model has T = 50
    for m in result.methods.values():
        assert all(m[k] is not None for k in ("psnr", "ssim", "consistency_l1", "sam_deg", "hf_ratio"))
    # The model's outputs are back-projected onto the LR (the sampler default of a new model): closer to the LR than
    # bicubic, within its noise rather than exactly.
    assert result.settings["consistency"] == "backproject"
    assert result.methods["lr_start"]["consistency_l1"] < result.methods["bicubic"]["consistency_l1"]
    json.dumps(result.to_dict())
    # The LR-start settings reach the sampler and are reported; the pure-noise reference stays plain DDIM.
    smooth = evaluate(cache, weights, methods=("lr_start", "pure_noise"), texture=1.5, chroma_sigma=2.0,
                      noise_steps=100, max_patches=4)
    assert (smooth.settings["texture"], smooth.settings["chroma_sigma"]) == (1.5, 2.0)
    assert smooth.methods["pure_noise"]["psnr"] == result.methods["pure_noise"]["psnr"]
