"""The network: shapes at any scale, cost budget, config round-trip, receptive field, tile independence."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from rssr_cli.degrade import upsample
from rssr_cli.methods.diffusion import DiffusionUpsampler
from rssr_cli.model import ArchConfig, ModelConfig, build_model, flops_per_pixel, receptive_field
from rssr_cli.model.config import SamplerConfig
from rssr_cli.weights import load_weights, read_config, save_weights


from conftest import random_model, random_tiny_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: The tiny network with a ×4 space-to-depth: level 0 at 1/4 of the HR grid, downsampling 8.
TINY_U4 = ArchConfig(widths=(8, 16), blocks=(1, 1), prior_widths=(4, 8), prior_blocks=(1, 1), time_dim=16, unshuffle=4)


@pytest.mark.parametrize("unshuffle", [2, 4])
@pytest.mark.parametrize("scale, lr_size", [(Fraction(4), (5, 7)), (Fraction(10), (3, 4)),
                                            (Fraction(25, 2), (6, 4))])
def test_shapes_for_scales(scale: Fraction, lr_size: tuple[int, int], unshuffle: int) -> None:
    """The same network runs on the HR grid of any scale, for sizes that are not multiples of its downsampling."""
    model = random_tiny_model(scale=scale, **({"arch": TINY_U4} if unshuffle == 4 else {}))
    lr = torch.rand(2, 4, *lr_size) * 0.3
    lr_up = upsample(lr, scale)
    assert lr_up.shape[-2:] == (int(lr_size[0] * scale), int(lr_size[1] * scale))
    x_t = torch.randn_like(lr_up)
    with torch.no_grad():
        out = model(x_t, torch.tensor([3, 40]), lr_up)
    assert out.shape == lr_up.shape
    assert torch.isfinite(out).all()


def test_default_cost_budget() -> None:
    """The issue's budget: <= 500 kFLOP per output pixel per evaluation (we aim at <= 250) and <= 20 MB of weights."""
    config = ModelConfig()
    flops = flops_per_pixel(config, size=64)
    params = sum(p.numel() for p in build_model(config).parameters())
    step = flops_per_pixel(config, size=64, include_prior=False)
    assert 100e3 <= flops <= 250e3, flops
    assert params * 4 <= 20e6, params
    # Documented in docs/model.md and rssr_cli/model/__init__.py; a change of architecture must update them.
    assert round(flops / 1e3) == 136
    assert round(step / 1e3) == 125
    assert params == 2_292_800


def test_v2_candidate_budget() -> None:
    """weights/train-v2.toml's [model]: within issue 12's budgets (<= 150 kFLOP per output pixel per sampler step,
    <= 20 MB of float32 weights), with the figures docs/model.md gives."""
    from rssr_cli.train.config import load_config, model_config

    config = model_config(load_config(Path(__file__).parents[1] / "weights" / "train-v2.toml").model,
                          ("B02", "B03", "B04", "B08"), Fraction(25, 2))
    assert config.arch.unshuffle == 4 and config.arch.downsampling == 16
    step = flops_per_pixel(config, include_prior=False)
    params = sum(p.numel() for p in build_model(config).parameters())
    assert step <= 150e3 and params * 4 <= 20e6, (step, params)
    assert (round(step / 1e3), round(flops_per_pixel(config) / 1e3)) == (137, 146)
    assert params == 4_981_440
    assert receptive_field(config) == 214


def test_unshuffle_buys_parameters_not_flops() -> None:
    """Doubling the unshuffle and the widths together keeps the FLOPs per HR pixel (the 3x3 convs exactly; the stem
    and output convs, linear in the width, grow a little) and multiplies the parameters by about 4."""
    u2 = ModelConfig()
    u4 = ModelConfig(arch=ArchConfig(widths=(64, 128, 256), prior_widths=(32, 64, 128), unshuffle=4))
    flops = [flops_per_pixel(c, size=32, include_prior=False) for c in (u2, u4)]
    params = [sum(p.numel() for p in build_model(c).parameters()) for c in (u2, u4)]
    assert 1.0 <= flops[1] / flops[0] <= 1.1, flops
    assert 3.7 <= params[1] / params[0] <= 4.0, params


def test_config_round_trip_and_validation() -> None:
    config = ModelConfig(scale=Fraction(10), prediction="v")
    d = json.loads(json.dumps(config.to_dict()))
    assert d["scale"] == "10"
    assert ModelConfig.from_dict(d) == config
    assert ModelConfig.from_dict(ModelConfig().to_dict()).scale == Fraction(25, 2)
    with pytest.raises(ValueError, match="unknown field"):
        ModelConfig.from_dict({**d, "colour": "red"})
    with pytest.raises(ValueError, match="prediction"):
        ModelConfig.from_dict({**d, "prediction": "noise"})
    with pytest.raises(ValueError, match="bands"):
        ModelConfig.from_dict({**d, "bands": ["B02", "B03"]})
    with pytest.raises(ValueError, match="one entry per level"):
        ArchConfig(widths=(8, 16), blocks=(1,))


def test_sampler_texture_config() -> None:
    """sampler.texture: left out of the JSON when unset (older rssr reads such files), round-trips when set, checked,
    and counted with the estimate it needs (once, also with an estimate start)."""
    assert "texture" not in ModelConfig().to_dict()["sampler"]
    config = ModelConfig(sampler=SamplerConfig(steps=4, texture=0.9))
    d = json.loads(json.dumps(config.to_dict()))
    assert d["sampler"]["texture"] == 0.9 and ModelConfig.from_dict(d) == config
    assert config.sampler.evaluations == 5
    assert SamplerConfig(steps=4, init="estimate", texture=0.9).evaluations == 5
    for bad in (-0.5, 4.5):
        with pytest.raises(ValueError, match="texture"):
            SamplerConfig(texture=bad)


def test_sampler_chroma_config() -> None:
    """sampler.chroma_sigma: off (0) by default and then left out of the JSON, round-trips when set, checked; it acts
    on the visible bands the model has (two at least)."""
    assert "chroma_sigma" not in ModelConfig().to_dict()["sampler"]
    config = ModelConfig(sampler=SamplerConfig(steps=4, chroma_sigma=2.0))
    d = json.loads(json.dumps(config.to_dict()))
    assert d["sampler"]["chroma_sigma"] == 2.0 and ModelConfig.from_dict(d) == config
    for bad in (-1.0, 9.0):
        with pytest.raises(ValueError, match="chroma_sigma"):
            SamplerConfig(chroma_sigma=bad)
    assert ModelConfig().chroma_channels == (0, 1, 2)
    assert ModelConfig.tiny(bands=("B08", "B04", "B03")).chroma_channels == (2, 1)
    assert ModelConfig.tiny(bands=("B04", "B08")).chroma_channels == ()


def test_unshuffle_config() -> None:
    """arch.unshuffle: 2 is the layout of every file written before the field existed, so it is left out of the
    JSON (older rssr still reads such files); any other factor is written, and older readers refuse it as an unknown
    field rather than building the wrong network."""
    assert ModelConfig().arch.unshuffle == 2 and ModelConfig().arch.downsampling == 8
    assert "unshuffle" not in ModelConfig().to_dict()["arch"]
    config = ModelConfig.tiny(arch=TINY_U4)
    d = json.loads(json.dumps(config.to_dict()))
    assert d["arch"]["unshuffle"] == 4
    assert ModelConfig.from_dict(d) == config
    assert ArchConfig(widths=(8, 16, 32), blocks=(1, 1, 1), prior_widths=(4, 8, 8), prior_blocks=(1, 1, 1),
                      unshuffle=4).downsampling == 16
    for bad in (0, 1, 3, 6, True, 4.0, "4"):
        with pytest.raises(ValueError, match="unshuffle must be a power of two"):
            ModelConfig.from_dict({**d, "arch": {**d["arch"], "unshuffle": bad}})
    with pytest.raises(ValueError, match="unknown field"):
        ModelConfig.from_dict({**d, "arch": {**d["arch"], "space_to_depth": 4}})


def test_unshuffle_weights_round_trip(tmp_path: Path) -> None:
    model = random_tiny_model(seed=6, arch=TINY_U4)
    assert model.unet.stem.in_channels == 2 * 4 * 16 and model.unet.out.out_channels == 4 * 16
    path = save_weights(tmp_path / "u4.safetensors", model, model.config, {"note": "random"})
    assert read_config(path)["arch"]["unshuffle"] == 4
    loaded = load_weights(path)
    assert loaded.config == model.config
    x = torch.randn(1, 4, 30, 26)
    lr_up = 0.1 + 0.05 * torch.rand(1, 4, 30, 26)
    with torch.no_grad():
        assert torch.equal(loaded.model(x, torch.tensor([7]), lr_up), model(x, torch.tensor([7]), lr_up))


#: Outputs of random networks, pinned before ArchConfig.unshuffle existed: (sum, out[0, :, 10, 20], out[1, :, 30, 3])
#: without and with origins. The default factor must keep giving today's network, so that every weights file written
#: before the field existed loads and renders as it did.
GOLDEN_OUTPUTS = {
    ("tiny", False): (-172.0858983299695, [0.4178678095340729, 0.7477682828903198, 0.6971859931945801,
                                           -0.43012383580207825],
                      [-0.684453010559082, -0.19358684122562408, -0.8224259614944458, -0.6524602770805359]),
    ("tiny", True): (-284.074313392397, [-1.1751477718353271, 0.25273793935775757, 0.024941906332969666,
                                         0.6015283465385437],
                     [-0.32007524371147156, -0.025523483753204346, -0.12820318341255188, 0.25595343112945557]),
    ("default", False): (3369.1173637825996, [0.8177964091300964, -0.6601487398147583, 1.1409246921539307,
                                              -1.3114720582962036],
                         [-1.5922489166259766, -0.6563523411750793, 1.9342739582061768, -0.9923475980758667]),
    ("default", True): (3597.1401325757615, [-1.4877815246582031, 1.5605199337005615, 1.5459041595458984,
                                             1.6842992305755615],
                        [0.043190620839595795, -1.7569596767425537, 0.49132344126701355, -0.008760809898376465]),
}


@pytest.mark.parametrize("preset, with_origins", list(GOLDEN_OUTPUTS))
def test_golden_outputs(preset: str, with_origins: bool) -> None:
    model = random_tiny_model(seed=4) if preset == "tiny" else random_model(ModelConfig(), 4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 37, 45, generator=g)
    lr_up = 0.1 + 0.05 * torch.randn(2, 4, 37, 45, generator=g)
    with torch.no_grad():
        out = model(x, torch.tensor([3, 17]), lr_up, origins=[(5, -3), (25, 11)] if with_origins else None)
    total, a, b = GOLDEN_OUTPUTS[preset, with_origins]
    assert out.double().sum().item() == pytest.approx(total, rel=1e-5)
    torch.testing.assert_close(out[0, :, 10, 20], torch.tensor(a), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, :, 30, 3], torch.tensor(b), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", ["tiny", "tiny-u4", "tiny-u4-3-levels", "default"])
def test_receptive_field_bounds_the_gradient_support(preset: str) -> None:
    """No input pixel farther than receptive_field() from an output pixel can change it; and the bound is tight
    (within 20 %), so the context the method asks for is not wasted."""
    three_levels = ArchConfig(widths=(8, 16, 16), blocks=(1, 1, 1), prior_widths=(4, 8, 8), prior_blocks=(1, 1, 1),
                              time_dim=16, unshuffle=4)
    model = {"tiny": lambda: random_tiny_model(seed=1),
             "tiny-u4": lambda: random_tiny_model(seed=1, arch=TINY_U4),
             "tiny-u4-3-levels": lambda: random_tiny_model(seed=1, arch=three_levels),
             "default": lambda: random_model(ModelConfig(), 1)}[preset]()
    rf = receptive_field(model.config)
    size = 2 * rf + 24
    x = torch.randn(1, 4, size, size, requires_grad=True)
    lr_up = (0.1 + 0.05 * torch.randn(1, 4, size, size)).requires_grad_(True)
    c = size // 2
    model(x, torch.tensor([10]), lr_up)[0, :, c, c].sum().backward()
    for grad in (x.grad, lr_up.grad):
        support = grad.abs().sum(dim=(0, 1)).nonzero()
        reach = (support - c).abs().max().item()
        assert reach <= rf, (reach, rf)
    assert reach >= 0.8 * rf, (reach, rf)


@pytest.mark.parametrize("unshuffle, shift", [(2, 3), (2, 16), (4, 2), (4, 6), (4, 16)])
def test_output_is_independent_of_the_tile_extent(unshuffle: int, shift: int) -> None:
    """Per-pixel norms only, and padding aligned to the global grid through ``origins``: a tile and a larger tile
    containing it agree away from their borders whatever the offset (seams come only from borders, not from tile
    statistics or the unshuffle and stride-2 phases)."""
    model = random_tiny_model(seed=2, **({"arch": TINY_U4} if unshuffle == 4 else {}))
    rf = receptive_field(model.config)
    size = 2 * rf + 40
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, size, size, generator=g)
    lr_up = 0.1 + 0.05 * torch.randn(1, 4, size, size, generator=g)
    t = torch.tensor([20])
    with torch.no_grad():
        big = model(x, t, lr_up, origins=[(-8, 8)])
        small = model(x[..., shift:, shift:], t, lr_up[..., shift:, shift:], origins=[(-8 + shift, 8 + shift)])
        unaligned = model(x[..., shift:, shift:], t, lr_up[..., shift:, shift:])
    inner = slice(shift + rf, size - rf)
    inner_small = slice(rf, size - shift - rf)
    torch.testing.assert_close(big[..., inner, inner], small[..., inner_small, inner_small], atol=1e-4, rtol=1e-4)
    # Without origins only offsets that are multiples of the downsampling (4 or 8 here) keep the phase.
    phase_kept = shift % model.config.arch.downsampling == 0
    assert torch.allclose(big[..., inner, inner], unaligned[..., inner_small, inner_small], atol=1e-4) == phase_kept


@pytest.mark.parametrize("consistency", ["none", "backproject"])
def test_overlapping_tiles_agree_with_unshuffle_4(tmp_path: Path, consistency: str) -> None:
    """tests/test_diffusion_method.py's tiling check for a ×4 space-to-depth network: at 12.5× two tiles 2 LR pixels
    (25 HR pixels: a multiple of neither the unshuffle nor the downsampling) apart render their shared pixels
    identically away from their borders, through the whole sampler (position-keyed noise, 3 steps, η = 1)."""
    scale = Fraction(25, 2)
    model = random_tiny_model(seed=5, scale=scale, arch=TINY_U4)
    path = save_weights(tmp_path / "u4.safetensors", model, model.config, {"note": "random"})
    up = DiffusionUpsampler(path, device="cpu", eta=1.0, consistency=consistency, steps=3)
    rows, offset = 24, 2
    rng = np.random.default_rng(2)
    lr = (0.1 + 0.05 * rng.standard_normal((1, 4, rows + offset, 6))).astype(np.float32)
    hr_offset, hr_rows = int(offset * scale), int(rows * scale)
    a = up.upscale_tiles(lr[:, :, :rows], [(0, 0)]).mean
    b = up.upscale_tiles(lr[:, :, offset:], [(hr_offset, 0)]).mean
    margin = receptive_field(up.config) + 2 * int(scale)  # network field + bicubic support
    shared = slice(hr_offset + margin, hr_rows - margin)
    assert shared.stop - shared.start >= 40
    np.testing.assert_allclose(a[:, :, shared], b[:, :, shared.start - hr_offset:shared.stop - hr_offset], atol=1e-5)
    # Not trivially equal: without the origins the second tile's cells sit on another phase.
    unaligned = up.upscale_tiles(lr[:, :, offset:], [(0, 0)]).mean
    assert np.abs(unaligned[:, :, shared.start - hr_offset:shared.stop - hr_offset] - a[:, :, shared]).max() > 1e-3


def test_origins_batch_with_mixed_phases() -> None:
    """Tiles of one batch may have different phases; each is padded and cropped on its own."""
    model = random_tiny_model(seed=3)
    x = torch.randn(3, 4, 18, 22)
    lr_up = 0.1 + 0.05 * torch.randn(3, 4, 18, 22)
    origins = [(0, 0), (1, 2), (-3, 7)]
    with torch.no_grad():
        batch = model(x, torch.tensor([4, 4, 4]), lr_up, origins=origins)
        for i in range(3):
            one = model(x[i:i + 1], torch.tensor([4]), lr_up[i:i + 1], origins=origins[i:i + 1])
            torch.testing.assert_close(batch[i:i + 1], one, atol=1e-5, rtol=1e-5)


def test_prior_features_condition_the_output() -> None:
    model = random_tiny_model(seed=3)
    x = torch.randn(1, 4, 32, 32)
    lr_up = 0.1 + 0.05 * torch.randn(1, 4, 32, 32)
    with torch.no_grad():
        priors = model.prior(lr_up)
        assert [p.shape[-1] for p in priors] == [16, 8]
        with_prior = model(x, torch.tensor([5]), lr_up, priors=priors)
        zero_prior = model(x, torch.tensor([5]), lr_up, priors=[torch.zeros_like(p) for p in priors])
        assert torch.equal(with_prior, model(x, torch.tensor([5]), lr_up))
    assert (with_prior - zero_prior).abs().mean() > 1e-3


def test_fresh_model_predicts_zero_residual() -> None:
    """Initialisation: a zero x0 head, i.e. 'the upsampled LR', the safest untrained output."""
    model = build_model(ModelConfig.tiny())
    x = torch.randn(1, 4, 16, 16)
    with torch.no_grad():
        assert torch.count_nonzero(model(x, torch.tensor([5]), x)) == 0


def test_bands_are_configurable() -> None:
    """Three bands (RGB) instead of four: every layer that touches bands follows the config."""
    config = ModelConfig.tiny(bands=("B04", "B03", "B02"))
    model = build_model(config)
    assert model.band_mean.shape == (3, 1, 1)
    x = torch.randn(1, 3, 20, 20)
    with torch.no_grad():
        assert model(x, torch.tensor([1]), x).shape == (1, 3, 20, 20)
    with pytest.raises(ValueError, match="normalization has 4 bands"):
        ModelConfig(bands=("B04", "B03", "B02"))
