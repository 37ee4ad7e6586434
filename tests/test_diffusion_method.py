"""DiffusionUpsampler as the pipeline sees it: the TileUpsampler contract, consistency, samples, seeds, tiling."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from rssr_cli.degrade import downsample, upsample
from rssr_cli.diffusion import lr_start_sample, tile_noise
from rssr_cli.devices import resolve_device
from rssr_cli.memory import keep_big_blocks
from rssr_cli.errors import UsageError, WeightsError
from rssr_cli.methods import TileResult, TileUpsampler, method_options
from rssr_cli.methods.diffusion import DiffusionOptions, DiffusionUpsampler
from rssr_cli.model import ModelConfig, build_model, receptive_field
from rssr_cli.weights import load_weights, save_weights


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _weights(directory: Path, seed: int = 0, **overrides: object) -> Path:
    """A tiny, randomly initialised (untrained) model on disk; every parameter random so that outputs depend on the
    noise and the input."""
    model = build_model(ModelConfig.tiny(**overrides))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    name = f"tiny-{seed}-{len(list(directory.iterdir()))}.safetensors"
    return save_weights(directory / name, model, model.config, {"note": "random, untrained"})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _weights(tmp_path_factory.mktemp("weights"))


def _lr(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.random((n, 4, 1, 1)) * 0.2 + 0.05
    return (base + 0.05 * rng.standard_normal((n, 4, h, w))).astype(np.float32)


@pytest.mark.parametrize("scale, size", [(Fraction(4), 5), (Fraction(10), 3), (Fraction(25, 2), 4)])
def test_contract_and_shapes(tmp_path: Path, scale: Fraction, size: int) -> None:
    up = method_options("diffusion", weights=str(_weights(tmp_path, scale=scale)), device="cpu", steps=None).build()
    assert isinstance(up, TileUpsampler)
    assert up.name == "diffusion" and up.scale == scale and up.bands == ("B02", "B03", "B04", "B08")
    assert up.context % scale.denominator == 0
    assert up.context * scale >= receptive_field(up.config)
    result = up.upscale_tiles(_lr(2, size * 2, size * 2), [(0, 0), (-40, 100)])
    assert isinstance(result, TileResult) and result.std is None
    hr = int(size * 2 * scale)
    assert result.mean.shape == (2, 4, hr, hr) and result.mean.dtype == np.float32
    assert np.isfinite(result.mean).all()


def test_consistency_projection_is_exact(tiny: Path) -> None:
    """downsample(output) == LR within 1e-4 reflectance with --consistency exact, not with none."""
    lr = _lr(2, 6, 8)
    on = DiffusionUpsampler(tiny, device="cpu", eta=1.0, consistency="exact")
    assert on.consistency == "exact"
    mean = on.upscale_tiles(lr, [(0, 0), (75, 0)]).mean
    assert np.abs(downsample(torch.from_numpy(mean), on.scale).numpy() - lr).max() < 1e-4
    off = DiffusionUpsampler(tiny, device="cpu", eta=1.0, consistency=False)
    raw = off.upscale_tiles(lr, [(0, 0), (75, 0)]).mean
    assert np.abs(downsample(torch.from_numpy(raw), off.scale).numpy() - lr).max() > 1e-3
    # The correction is smooth (PSF-blurred LR footprints): it replaces low frequencies and leaves the detail.
    correction = mean - raw
    assert np.abs(correction - _smooth(correction)).mean() < 0.1 * np.abs(correction).mean()


def _smooth(x: np.ndarray) -> np.ndarray:
    """A 5x5 box blur, borders replicated."""
    p = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)), mode="edge")
    h, w = x.shape[-2:]
    return sum(p[..., i:i + h, j:j + w] for i in range(5) for j in range(5)) / 25


def test_samples_give_mean_and_std(tiny: Path) -> None:
    """--samples N: the mean and the (n − 1) standard deviation of N draws, draw s using noise field 'sample s'."""
    lr = _lr(1, 4, 6)
    up = DiffusionUpsampler(tiny, device="cpu", samples=4, eta=1.0, consistency=False, seed=7)
    result = up.upscale_tiles(lr, [(30, -20)])
    assert result.std is not None and result.std.shape == result.mean.shape
    lr_up = upsample(torch.from_numpy(lr), up.scale)
    draws = []
    with torch.no_grad():
        def denoiser(x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            return up.model(x_t, t, cond, origins=[(30, -20)])

        for s in range(4):
            x0 = lr_start_sample(denoiser, up.schedule, lr_up, steps=up.steps, start=up.start, eta=1.0,
                                 noise=lambda k, s=s: tile_noise(7, k, [(30, -20)], (4, 50, 75), sample=s))
            draws.append(up.model.from_residual(x0, lr_up).numpy())
    np.testing.assert_allclose(result.mean, np.mean(draws, axis=0), atol=1e-6)
    np.testing.assert_allclose(result.std, np.std(draws, axis=0, ddof=1), atol=1e-5)
    assert result.std.mean() > 1e-4


def test_seeds_reproduce_and_differ(tiny: Path) -> None:
    lr = _lr(1, 6, 6)
    run = lambda seed: DiffusionUpsampler(tiny, device="cpu", seed=seed).upscale_tiles(lr, [(0, 0)]).mean  # noqa: E731
    a, b, c = run(3), run(3), run(4)
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 1e-5
    # The noise depends on where the tile is, not on the tile.
    moved = DiffusionUpsampler(tiny, device="cpu", seed=3).upscale_tiles(lr, [(250, 0)]).mean
    assert np.abs(a - moved).mean() > 1e-5


@pytest.mark.parametrize("scale, rows, offset", [(Fraction(4), 64, 16), (Fraction(25, 2), 18, 2)])
@pytest.mark.parametrize("consistency, texture, chroma", [("none", None, 0.0), ("exact", None, 0.0),
                                                          ("backproject", None, 0.0), ("backproject", 1.15, 2.0)])
def test_overlapping_tiles_agree(tmp_path: Path, consistency: str, texture: float | None, chroma: float,
                                 scale: Fraction, rows: int, offset: int) -> None:
    """Two overlapping tiles, each with the noise and the network's stride-2 grid at its global origin, render the
    shared pixels identically away from their borders: no seams to hide. At 12.5x the second tile starts 25 HR pixels
    lower, not a multiple of the network's downsampling, so this also checks the phase alignment. The consistency
    projection is per tile; (D Dᵀ)⁻¹ decays about 7x per 2 LR pixels, so 5 LR pixels from a tile edge the two
    projections still differ by ~1e-3 of the (here large, random-model) LR residual: agreement to 2e-3 reflectance,
    and much closer with the pipeline's 14 px of context. Back-projection is local (bicubic support): as close as
    no consistency step at all; so are the texture transfer and the chroma smoothing (their Gaussians reach 3 and
    6 HR pixels)."""
    up = DiffusionUpsampler(_weights(tmp_path, seed=5, scale=scale), device="cpu", eta=1.0, consistency=consistency,
                            steps=3, texture=texture, chroma_sigma=chroma)
    lr = _lr(1, rows + offset, 6, seed=2)
    hr_offset, hr_rows = int(offset * scale), int(rows * scale)
    a = up.upscale_tiles(lr[:, :, :rows], [(0, 0)]).mean                 # HR rows [0, hr_rows)
    b = up.upscale_tiles(lr[:, :, offset:], [(hr_offset, 0)]).mean       # HR rows [hr_offset, hr_offset + hr_rows)
    reach = receptive_field(up.config) + 2 * scale + (3 if texture is not None else 0) + 3 * chroma  # + the blurs
    assert up.context * scale >= reach  # the context the pipeline gives a tile covers it
    margin = int(reach)
    shared = slice(hr_offset + margin, hr_rows - margin)
    assert shared.stop - shared.start >= 40
    in_b = slice(shared.start - hr_offset, shared.stop - hr_offset)
    np.testing.assert_allclose(a[:, :, shared], b[:, :, in_b], atol=2e-3 if consistency == "exact" else 1e-5)
    # With a different seed the same region differs (the agreement is not because the noise does not matter).
    c = DiffusionUpsampler(up.loaded, device="cpu", eta=1.0, consistency=consistency, steps=3, seed=1,
                           texture=texture, chroma_sigma=chroma)
    other = c.upscale_tiles(lr[:, :, :rows], [(0, 0)]).mean
    assert np.abs(other[:, :, shared] - a[:, :, shared]).mean() > 1e-5


def test_back_projection_follows_the_lr_within_its_noise(tiny: Path) -> None:
    """--consistency backproject: band means follow the LR closely and D(output) moves towards the LR (not exactly onto
    it); the correction is the bicubic image of the LR misfit, never larger than the misfit itself, whereas the exact
    projection's deblurring inverse amplifies it."""
    lr = _lr(2, 6, 8)
    raw = DiffusionUpsampler(tiny, device="cpu", eta=1.0, consistency="none").upscale_tiles(lr, [(0, 0), (75, 0)]).mean
    bp = DiffusionUpsampler(tiny, device="cpu", eta=1.0, consistency="backproject")
    out = bp.upscale_tiles(lr, [(0, 0), (75, 0)]).mean
    misfit = lambda x: np.abs(downsample(torch.from_numpy(x), bp.scale).numpy() - lr).mean()  # noqa: E731
    assert misfit(out) < 0.75 * misfit(raw)
    means = lambda x: x.mean(axis=(2, 3))  # noqa: E731
    assert np.abs(means(out) - means(lr)).max() < 0.25 * np.abs(means(raw) - means(lr)).max()
    misfit_lr = lr - downsample(torch.from_numpy(raw), bp.scale).numpy()
    correction = out - raw
    np.testing.assert_allclose(correction, upsample(torch.from_numpy(misfit_lr), bp.scale).numpy(), atol=1e-5)
    assert np.abs(correction).max() <= 1.3 * np.abs(misfit_lr).max()
    exact = DiffusionUpsampler(tiny, device="cpu", eta=1.0, consistency="exact").upscale_tiles(lr, [(0, 0), (75, 0)])
    assert np.abs(exact.mean - raw).max() > 1.5 * np.abs(correction).max()


def test_estimate_start_adds_one_evaluation(tiny: Path) -> None:
    """--init estimate: the network's one-step estimate is noised to t0 (one more evaluation, recorded in the tags);
    deterministic for a seed and different from the bicubic start."""
    lr = _lr(1, 6, 8)
    calls = []
    est = DiffusionUpsampler(tiny, device="cpu", init="estimate", steps=2)
    forward = est.model.forward
    est.model.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    a = est.upscale_tiles(lr, [(0, 0)]).mean
    assert len(calls) == 3 and est.provenance()["RSSR_EVALUATIONS"] == "3"
    est.model.forward = forward
    b = DiffusionUpsampler(tiny, device="cpu", init="estimate", steps=2).upscale_tiles(lr, [(0, 0)]).mean
    c = DiffusionUpsampler(tiny, device="cpu", init="bicubic", steps=2).upscale_tiles(lr, [(0, 0)]).mean
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 1e-6


def test_texture_reuses_or_adds_the_estimate(tiny: Path) -> None:
    """--texture G: the one-step estimate plus G times the sample's finest texture. It costs one evaluation more
    than the sample alone with a bicubic start, none with an estimate start (the estimate is computed once); G = 0
    gives the same estimate whatever the sampler; the gain is recorded in the tags."""
    lr = _lr(1, 6, 8)

    def run(**options: object) -> tuple[np.ndarray, int, dict[str, str]]:
        calls = []
        up = DiffusionUpsampler(tiny, device="cpu", consistency="none", **options)
        forward = up.model.forward
        up.model.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
        return up.upscale_tiles(lr, [(0, 0)]).mean, len(calls), up.provenance()

    estimate, _, _ = run(steps=1, start=0.3, texture=0.0)
    plain, n_plain, tags_plain = run(steps=3, start=1.0)
    textured, n_textured, tags = run(steps=3, start=1.0, texture=0.8)
    _, n_reused, _ = run(steps=3, start=1.0, init="estimate", texture=0.8)
    assert (n_plain, n_textured, n_reused) == (3, 4, 4)
    assert tags["RSSR_TEXTURE"] == "0.8" and tags["RSSR_EVALUATIONS"] == "4" and "RSSR_TEXTURE" not in tags_plain
    assert np.abs(textured - plain).mean() > 1e-6 and np.abs(textured - estimate).mean() > 1e-6
    for init in ("bicubic", "estimate"):
        flat, _, _ = run(steps=3, start=0.5, init=init, texture=0.0)
        np.testing.assert_allclose(flat, estimate, atol=1e-6)


def test_chroma_smoothing_keeps_brightness(tiny: Path, tmp_path: Path) -> None:
    """--chroma-sigma PX: what the model adds over bicubic keeps its brightness (mean of B02-B04) and B08 exactly and
    loses most of its pixel-scale colour; the setting is recorded in the tags and widens the tile context; a model
    without two visible bands refuses it."""
    from rssr_cli.metrics import chroma, luminance

    lr = _lr(1, 6, 8)
    plain = DiffusionUpsampler(tiny, device="cpu", consistency="none", eta=1.0)
    smooth = DiffusionUpsampler(tiny, device="cpu", consistency="none", eta=1.0, chroma_sigma=2.0)
    a = torch.from_numpy(plain.upscale_tiles(lr, [(0, 0)]).mean)
    b = torch.from_numpy(smooth.upscale_tiles(lr, [(0, 0)]).mean)
    torch.testing.assert_close(luminance(b), luminance(a), atol=1e-6, rtol=0)
    torch.testing.assert_close(b[:, 3], a[:, 3])
    lr_up = upsample(torch.from_numpy(lr), plain.scale)
    assert chroma(b - lr_up).var() < 0.5 * chroma(a - lr_up).var()
    assert smooth.provenance()["RSSR_CHROMA_SIGMA"] == "2" and "RSSR_CHROMA_SIGMA" not in plain.provenance()
    assert smooth.context >= plain.context
    nir_red = _weights(tmp_path, bands=("B04", "B08"))
    with pytest.raises(UsageError, match="--chroma-sigma needs"):
        DiffusionUpsampler(nir_red, device="cpu", chroma_sigma=2.0)


def test_texture_none_overrides_the_model_default(tmp_path: Path) -> None:
    """Weights whose default sampler sets texture and chroma smoothing: ``texture="none"`` and ``chroma_sigma=0``
    give the plain sample, exactly what weights without those defaults give."""
    plain_weights = _weights(tmp_path, seed=4)
    loaded = load_weights(plain_weights)
    config = loaded.config.replace(sampler=replace(loaded.config.sampler, texture=2.0, chroma_sigma=2.0))
    model = build_model(config)
    model.load_state_dict(loaded.model.state_dict())
    textured_weights = save_weights(tmp_path / "textured.safetensors", model, config, {})
    lr = _lr(1, 6, 8)
    default = DiffusionUpsampler(textured_weights, device="cpu")
    assert (default.texture, default.chroma_sigma) == (2.0, 2.0)
    off = DiffusionUpsampler(textured_weights, device="cpu", texture="none", chroma_sigma=0.0)
    assert (off.texture, off.chroma_sigma) == (None, 0.0) and "RSSR_TEXTURE" not in off.provenance()
    reference = DiffusionUpsampler(plain_weights, device="cpu").upscale_tiles(lr, [(0, 0)]).mean
    np.testing.assert_array_equal(off.upscale_tiles(lr, [(0, 0)]).mean, reference)
    assert np.abs(default.upscale_tiles(lr, [(0, 0)]).mean - reference).mean() > 1e-6


def test_batches_do_not_change_results(tiny: Path) -> None:
    lr = _lr(3, 4, 4)
    origins = [(0, 0), (50, 0), (0, 50)]
    one = DiffusionUpsampler(tiny, device="cpu", batch_size=1).upscale_tiles(lr, origins).mean
    three = DiffusionUpsampler(tiny, device="cpu", batch_size=3).upscale_tiles(lr, origins).mean
    np.testing.assert_allclose(one, three, atol=1e-5)


def test_options_defaults_and_provenance(tiny: Path) -> None:
    up = DiffusionUpsampler(tiny, device="cpu")
    sampler = up.config.sampler
    assert (up.steps, up.start, up.eta, up.consistency, up.init) == (sampler.steps, sampler.start, sampler.eta,
                                                                      "backproject", "bicubic")
    tags = DiffusionUpsampler(tiny, device="cpu", steps=2, start=0.3, eta=0.5, seed=9, samples=2,
                              consistency=False).provenance()
    assert tags["RSSR_METHOD"] == "diffusion" and tags["RSSR_MODEL"].startswith(tiny.name + "@")
    assert (tags["RSSR_STEPS"], tags["RSSR_START"], tags["RSSR_ETA"], tags["RSSR_SEED"], tags["RSSR_SAMPLES"],
            tags["RSSR_CONSISTENCY"]) == ("2", "0.3", "0.5", "9", "2", "none")
    assert all(isinstance(v, str) for v in tags.values())


@pytest.mark.parametrize("options, match", [
    ({"steps": 0}, "--steps"),
    ({"steps": 40, "start": 0.5}, "at most 25"),
    ({"start": 0.0}, "--start"),
    ({"start": 1.5}, "--start"),
    ({"eta": -1.0}, "--eta"),
    ({"samples": 0}, "--samples"),
    ({"batch_size": 0}, "--batch-size"),
    ({"consistency": "strict"}, "--consistency strict"),
    ({"init": "noise"}, "--init noise"),
    ({"texture": -0.1}, "--texture"),
    ({"texture": 5.0}, "--texture"),
    ({"texture": "off"}, "--texture"),
    ({"chroma_sigma": -1.0}, "--chroma-sigma"),
    ({"chroma_sigma": 9.0}, "--chroma-sigma"),
])
def test_bad_options_are_usage_errors(tiny: Path, options: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        DiffusionUpsampler(tiny, device="cpu", **options)


def test_missing_weights_and_unknown_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSSR_WEIGHTS", str(tmp_path / "absent.safetensors"))
    with pytest.raises(WeightsError, match="--method bicubic"):
        DiffusionOptions(device="cpu").build()
    with pytest.raises(UsageError, match="unknown method 'nearest'"):
        method_options("nearest")


def test_device_resolution(caplog: pytest.LogCaptureFixture) -> None:
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(UsageError, match="--device"):
        resolve_device("tpu")
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
        return
    assert resolve_device("auto").type == "cpu"
    with caplog.at_level(logging.WARNING, logger="rssr_cli.devices"):
        assert resolve_device("cuda:1").type == "cpu"
    assert any("falling back to the CPU" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_roughly(tiny: Path) -> None:
    """bf16 autocast on CUDA: same noise field, close (not identical) results."""
    lr = _lr(2, 8, 8)
    cpu = DiffusionUpsampler(tiny, device="cpu").upscale_tiles(lr, [(0, 0), (100, 0)]).mean
    gpu = DiffusionUpsampler(tiny, device="cuda").upscale_tiles(lr, [(0, 0), (100, 0)]).mean
    assert np.abs(cpu - gpu).mean() < 0.01


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_cpu_allocator_setting_applies_on_linux() -> None:
    assert keep_big_blocks() is True


def test_cli_sampler_modes(tiny: Path, utm_scene: Path, tmp_path: Path) -> None:
    """--consistency MODE and --init reach the sampler; --no-consistency still means none; the CLI's choices are the
    sampler's (repeated there so that --help does not import torch)."""
    import rasterio
    from click.testing import CliRunner

    from rssr_cli.cli import main
    from rssr_cli.cli.options import CHROMA_SIGMA_RANGE, CONSISTENCY_CHOICES, INIT_CHOICES, TEXTURE_RANGE
    from rssr_cli.model.config import CONSISTENCY_MODES, MAX_CHROMA_SIGMA, MAX_TEXTURE, SAMPLER_INITS

    assert CONSISTENCY_CHOICES == CONSISTENCY_MODES and INIT_CHOICES == SAMPLER_INITS
    assert TEXTURE_RANGE == (0, MAX_TEXTURE) and CHROMA_SIGMA_RANGE == (0, MAX_CHROMA_SIGMA)
    box = ["--bbox", "500000,5199840,500160,5200000", "--bbox-crs", "scene", "--weights", str(tiny), "--device", "cpu"]
    for flags, mode, init, texture in ((["--no-consistency", "--texture", "none"], "none", "bicubic", None),
                                       (["--consistency", "exact", "--init", "estimate", "--texture", "1.5",
                                         "--chroma-sigma", "2"], "exact", "estimate", "1.5")):
        out = tmp_path / f"{mode}.tif"
        result = CliRunner().invoke(main, ["upscale", str(utm_scene), "-o", str(out), "-q", *box, *flags])
        assert result.exit_code == 0, result.output
        with rasterio.open(out) as ds:
            assert (ds.tags()["RSSR_CONSISTENCY"], ds.tags()["RSSR_INIT"]) == (mode, init)
            assert ds.tags().get("RSSR_TEXTURE") == texture
            assert ds.tags().get("RSSR_CHROMA_SIGMA") == ("2" if texture else None)
    for flag, bad in (("--texture", "9"), ("--texture", "off"), ("--chroma-sigma", "9")):
        result = CliRunner().invoke(main, ["upscale", str(utm_scene), "-o", str(tmp_path / "y.tif"), *box, flag, bad])
        assert result.exit_code == 2 and flag in result.output and not (tmp_path / "y.tif").exists()
    result = CliRunner().invoke(main, ["upscale", str(utm_scene), "-o", str(tmp_path / "x.tif"), *box,
                                       "--no-consistency", "--consistency", "exact"])
    assert result.exit_code == 2 and "contradicts" in result.output


def test_the_measured_context_applies_to_the_default_sampler_only(tmp_path: Path) -> None:
    """A context stored with the weights (scripts/export.py measures it) is used with exactly the sampler it was
    measured for; any other setting falls back to the receptive-field bound. It round-trips through the file, and a
    file without one keeps the old layout (no ``context`` key)."""
    from rssr_cli.model import SamplerConfig
    from rssr_cli.weights import load_weights

    plain = _weights(tmp_path)
    assert "context" not in load_weights(plain).config.to_dict()["sampler"]
    bound = DiffusionUpsampler(plain, device="cpu").context
    assert bound == DiffusionUpsampler(plain, device="cpu", steps=2).context > 2
    measured = _weights(tmp_path, sampler=SamplerConfig(steps=4, start=0.6, context=2))
    assert load_weights(measured).config.sampler.context == 2
    assert DiffusionUpsampler(measured, device="cpu").context == 2
    assert DiffusionUpsampler(measured, device="cpu", steps=4, consistency="backproject").context == 2  # the defaults
    assert DiffusionUpsampler(measured, device="cpu", steps=2).context == bound
    assert DiffusionUpsampler(measured, device="cpu", init="estimate").context == bound
    with pytest.raises(ValueError, match="context"):
        SamplerConfig(context=-1)
