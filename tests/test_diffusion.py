"""Diffusion numerics: schedule algebra, samplers (call counts, exactness with an oracle, seeding), positional noise,
the training loss, and a tiny model overfitting a real image."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from rssr_cli.degrade import degrade, upsample
from rssr_cli.diffusion import (
    NoiseSchedule,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    diffusion_loss,
    draw_timesteps,
    lr_start_sample,
    lr_start_timesteps,
    positional_noise,
    tile_noise,
    transfer_texture,
)
from rssr_cli.model import ModelConfig, Normalization, ScheduleConfig, build_model


from conftest import random_tiny_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


DATA = Path(__file__).parent / "data"


class CountingModel(nn.Module):
    """Wraps a denoiser and counts network evaluations."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, lr_up: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x_t, t, lr_up)


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return NoiseSchedule.from_config(ScheduleConfig(timesteps=50))


# --- schedule --------------------------------------------------------------------------------------------------------

def test_cosine_schedule_golden_values() -> None:
    s = NoiseSchedule.from_config(ScheduleConfig())
    assert s.timesteps == 1000
    torch.testing.assert_close(s.betas[[0, 499, 999]],
                               torch.tensor([4.128422e-05, 3.145886e-03, 0.999], dtype=torch.float64), rtol=1e-5,
                               atol=0)
    torch.testing.assert_close(s.alphas_cumprod[[0, 499]], torch.tensor([0.99995872, 0.49384359],
                                                                        dtype=torch.float64))
    assert (s.alphas_cumprod.diff() < 0).all() and s.alphas_cumprod[-1] < 1e-8


def test_schedule_algebra(schedule: NoiseSchedule) -> None:
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0, 17, 49])
    x_t = schedule.q_sample(x0, t, eps)
    torch.testing.assert_close(schedule.predict_start_from_noise(x_t, t, eps), x0, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(schedule.predict_noise_from_start(x_t[:2], t[:2], x0[:2]), eps[:2], atol=1e-4,
                               rtol=1e-4)
    v = schedule.velocity(x0, t, eps)
    torch.testing.assert_close(schedule.predict_start_from_v(x_t, t, v), x0, atol=1e-5, rtol=1e-5)
    # q(x_{t-1} | x_t, x0) at t = 0 is a point mass at x0; elsewhere its variance is β̃_t.
    mean, var = schedule.q_posterior(x0, x_t, t)
    torch.testing.assert_close(mean[0], x0[0], atol=1e-6, rtol=0)
    assert var[0].item() == 0
    b, a, a_prev = schedule.betas[17], schedule.alphas_cumprod[17], schedule.alphas_cumprod[16]
    assert var[1].item() == pytest.approx(float(b * (1 - a_prev) / (1 - a)), rel=1e-6)


def test_start_index_and_timesteps(schedule: NoiseSchedule) -> None:
    assert schedule.start_index(1.0) == 49
    assert schedule.start_index(0.5) == 24
    assert schedule.start_index(0.001) == 0
    with pytest.raises(ValueError):
        schedule.start_index(0.0)
    steps = ddim_timesteps(24, 5)
    assert steps == [24, 18, 12, 6, 0]
    assert ddim_timesteps(24, 1) == [24]
    assert ddim_timesteps(3, 4) == [3, 2, 1, 0]
    with pytest.raises(ValueError, match="at most 4"):
        ddim_timesteps(3, 5)


# --- samplers --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [1, 3, 7])
def test_network_evaluation_counts(schedule: NoiseSchedule, steps: int) -> None:
    model = CountingModel(random_tiny_model())
    lr_up = 0.1 + 0.05 * torch.rand(1, 4, 16, 16)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ddim_sample(model, schedule, lr_up, steps=steps, noise=g)
        assert model.calls == steps
        model.calls = 0
        lr_start_sample(model, schedule, lr_up, steps=steps, start=0.4, eta=1.0, noise=g)
        assert model.calls == steps
        if steps == 1:
            model.calls = 0
            ddpm_sample(model, schedule, lr_up, noise=g)
            assert model.calls == schedule.timesteps


@pytest.mark.parametrize("prediction", ["x0", "v", "eps"])
def test_samplers_recover_x0_from_an_oracle(schedule: NoiseSchedule, prediction: str) -> None:
    """A perfect denoiser (it knows x0) makes every sampler return x0, whatever the parameterisation: this pins the
    DDPM posterior, the DDIM update and the conversions between x0, ε and v."""
    target = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def oracle(x_t: torch.Tensor, t: torch.Tensor, lr_up: torch.Tensor) -> torch.Tensor:
        if prediction == "x0":
            return target
        eps = schedule.predict_noise_from_start(x_t, t, target)
        return eps if prediction == "eps" else schedule.velocity(target, t, eps)

    g = torch.Generator().manual_seed(0)
    lr_up = torch.zeros_like(target)
    results = [
        ddpm_sample(oracle, schedule, lr_up, noise=g, prediction=prediction),
        ddim_sample(oracle, schedule, lr_up, steps=6, eta=0.5, noise=g, prediction=prediction),
        lr_start_sample(oracle, schedule, lr_up, steps=4, start=0.6, eta=0.0, noise=g, prediction=prediction),
    ]
    for result in results:
        torch.testing.assert_close(result, target, atol=1e-6, rtol=1e-6)


def test_lr_start_begins_at_the_noised_lr(schedule: NoiseSchedule) -> None:
    """The first network input is q_sample(residual 0, t0, noise(0)) = sqrt(1 − ᾱ_t0) · noise(0), at step t0."""
    seen: list[tuple[torch.Tensor, int]] = []

    def spy(x_t: torch.Tensor, t: torch.Tensor, lr_up: torch.Tensor) -> torch.Tensor:
        seen.append((x_t.clone(), int(t[0])))
        return torch.zeros_like(x_t)

    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(9))
    lr_start_sample(spy, schedule, torch.zeros(1, 4, 8, 8), steps=3, start=0.3, noise=lambda k: z0 * (k == 0))
    t0 = schedule.start_index(0.3)
    assert [t for _, t in seen] == ddim_timesteps(t0, 3)
    torch.testing.assert_close(seen[0][0], (1 - schedule.alphas_cumprod[t0]).sqrt().float() * z0)


@pytest.mark.parametrize("init, steps, start", [("estimate", 1, 0.3), ("estimate", 4, 0.5), ("bicubic", 2, 0.6)])
def test_lr_start_timesteps_are_the_steps_the_shipped_sampler_evaluates(init: str, steps: int, start: float) -> None:
    """What fine-tuning focuses on (train.sampler_focus) is where ``rssr upscale``'s sampling calls the network."""
    from rssr_cli.methods.diffusion import sample_tiles
    from rssr_cli.model import SamplerConfig

    model = random_tiny_model(seed=3)
    seen: list[int] = []
    model.register_forward_pre_hook(lambda _module, args: seen.append(int(args[1][0])))
    sampler = SamplerConfig(steps=steps, start=start, init=init, consistency="none")
    lr = 0.1 + 0.02 * torch.rand(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    sample_tiles(model, lr, [(0, 0)], sampler, seed=0, amp=False)
    schedule = NoiseSchedule.from_config(model.config.schedule)
    assert seen == lr_start_timesteps(schedule, steps=steps, start=start, estimate=init == "estimate")
    assert len(seen) == sampler.evaluations


def test_transfer_texture_keeps_the_estimate_and_the_sample_s_finest_texture() -> None:
    """E + g HP(S - E): g = 0 is the estimate; a difference that varies slowly (a ramp, a constant) is dropped, a
    pixel-scale one (a checkerboard) is kept almost whole, and the kept part scales with the gain."""
    g = torch.Generator().manual_seed(0)
    estimate = torch.randn(2, 4, 24, 24, generator=g)
    yy, xx = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
    ramp = (0.3 + 0.01 * (xx + yy)).expand(2, 4, 24, 24)
    checker = 0.1 * (-1.0) ** (xx + yy)
    torch.testing.assert_close(transfer_texture(estimate, estimate + ramp + checker, 0.0), estimate)
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))  # away from the reflected borders
    coarse = transfer_texture(estimate, estimate + ramp, 1.0) - estimate
    assert coarse[inner].abs().max() < 1e-5
    fine = transfer_texture(estimate, estimate + ramp + checker, 1.0) - estimate
    assert torch.allclose(fine[inner], checker.expand(2, 4, 24, 24)[inner], rtol=0.1)
    half = transfer_texture(estimate, estimate + ramp + checker, 0.5) - estimate
    torch.testing.assert_close(half, 0.5 * fine)


def test_draw_timesteps_mixes_uniform_and_focus_steps(schedule: NoiseSchedule) -> None:
    uniform = draw_timesteps(64, schedule, torch.Generator().manual_seed(5))
    # focus 0 is the plain uniform draw, so runs without a focus train exactly as before
    torch.testing.assert_close(uniform, torch.randint(0, 50, (64,), generator=torch.Generator().manual_seed(5)))
    only = draw_timesteps(500, schedule, torch.Generator().manual_seed(5), focus=1.0, focus_steps=[49, 14])
    assert set(only.tolist()) == {49, 14}
    half = draw_timesteps(4000, schedule, torch.Generator().manual_seed(5), focus=0.5, focus_steps=[49, 14])
    share = float(((half == 49) | (half == 14)).float().mean())
    assert 0.45 < share < 0.6  # 0.5 focused plus the uniform draws that land there by chance (2/50 of the rest)
    assert len(set(half.tolist())) > 40  # and the other steps stay trained


def test_same_seed_same_output_different_seed_different(schedule: NoiseSchedule) -> None:
    model = random_tiny_model(seed=4)
    lr_up = 0.1 + 0.05 * torch.rand(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))

    def run(seed: int) -> torch.Tensor:
        with torch.no_grad():
            return lr_start_sample(model, schedule, lr_up, steps=3, start=0.7, eta=1.0,
                                   noise=lambda k: tile_noise(seed, k, [(0, 0)], (4, 16, 16)))

    assert torch.equal(run(1), run(1))
    assert (run(1) - run(2)).abs().mean() > 1e-3
    with torch.no_grad():
        a = ddim_sample(model, schedule, lr_up, steps=3, noise=torch.Generator().manual_seed(7))
        b = ddim_sample(model, schedule, lr_up, steps=3, noise=torch.Generator().manual_seed(7))
        c = ddim_sample(model, schedule, lr_up, steps=3, noise=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


# --- positional noise ------------------------------------------------------------------------------------------------

def test_positional_noise_is_independent_of_the_tiling() -> None:
    """Two tilings of the same HR grid (tile sizes 40 and 64, overlapping, negative origins included) see the same
    noise at every pixel as the whole field."""
    whole = positional_noise(11, 3, 160, 140, 4, row0=-20, col0=-10, sample=2)
    for tile in (40, 64):
        overlap = tile // 4
        for r in range(-20, 140, tile - overlap):
            for c in range(-10, 130, tile - overlap):
                part = positional_noise(11, 3, tile, tile, 4, row0=r, col0=c, sample=2)
                ref = whole[:, r + 20:r + 20 + tile, c + 10:c + 10 + tile]
                assert torch.equal(part[:, :ref.shape[1], :ref.shape[2]], ref)


def test_positional_noise_statistics_and_keys() -> None:
    z = positional_noise(0, 0, 256, 256, 4)
    assert z.dtype == torch.float32 and z.shape == (4, 256, 256)
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01
    assert abs((z[..., 1:] * z[..., :-1]).mean().item()) < 0.01  # no correlation between neighbours
    assert abs((z[1:] * z[:-1]).mean().item()) < 0.01  # nor between channels
    kurtosis = (z ** 4).mean().item()
    assert abs(kurtosis - 3) < 0.1  # Gaussian tails
    base = positional_noise(0, 0, 16, 16, 4)
    assert torch.equal(positional_noise(0, 0, 16, 16, 3), base[:3])  # odd channel counts: the same first channels
    for other in (positional_noise(1, 0, 16, 16, 4), positional_noise(0, 1, 16, 16, 4),
                  positional_noise(0, 0, 16, 16, 4, sample=1), positional_noise(1 << 40, 0, 16, 16, 4)):
        assert abs(torch.corrcoef(torch.stack([base.flatten(), other.flatten()]))[0, 1].item()) < 0.1


def test_positional_noise_golden_values() -> None:
    """Pinned: changing the hash silently would change every user's seeded outputs."""
    got = positional_noise(0, 0, 1, 4, 1)[0, 0]
    torch.testing.assert_close(got, torch.tensor([-2.1655841, -0.10948711, -0.0219921, -0.88625747]))
    got = positional_noise(42, 3, 1, 3, 2, row0=-7, col0=100000, sample=1)[:, 0]
    torch.testing.assert_close(got, torch.tensor([[1.0705264, -1.4373099, 0.63531584],
                                                  [-0.7612726, -0.03526082, -1.4557149]]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_positional_noise_same_on_cuda() -> None:
    cpu = positional_noise(5, 2, 64, 64, 4, row0=-3, col0=9)
    gpu = positional_noise(5, 2, 64, 64, 4, row0=-3, col0=9, device="cuda").cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-6, rtol=0)


# --- loss ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction, loss", [("x0", "l1"), ("v", "l2"), ("eps", "l2")])
def test_diffusion_loss_is_a_differentiable_scalar(prediction: str, loss: str) -> None:
    model = build_model(ModelConfig.tiny(prediction=prediction, loss=loss))
    schedule = NoiseSchedule.from_config(model.config.schedule)
    hr = 0.1 + 0.05 * torch.rand(2, 4, 24, 24)
    lr_up = upsample(degrade(hr, 4, generator=torch.Generator().manual_seed(0)), 4)
    value = diffusion_loss(model, schedule, hr, lr_up, torch.Generator().manual_seed(1))
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert model.unet.out.weight.grad.abs().sum() > 0
    if prediction == "x0":
        # The output starts at zero, so the initial x0 loss is the mean |normalised residual|.
        expected = ((hr - lr_up) / model.residual_std).abs().mean()
        assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def test_diffusion_loss_mask_ignores_nodata() -> None:
    model = random_tiny_model(seed=6)
    schedule = NoiseSchedule.from_config(model.config.schedule)
    hr = 0.1 + 0.05 * torch.rand(1, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    lr_up = hr + 0.01
    mask = torch.ones(1, 1, 32, 32)
    mask[..., :, 24:] = 0
    broken = hr.clone()
    broken[..., :, 28:] = 5.0  # garbage far enough from the valid part that the receptive field barely matters
    a = diffusion_loss(model, schedule, hr, lr_up, torch.Generator().manual_seed(1), mask=mask)
    b = diffusion_loss(model, schedule, broken, lr_up, torch.Generator().manual_seed(1), mask=mask)
    full = diffusion_loss(model, schedule, broken, lr_up, torch.Generator().manual_seed(1))
    assert b.item() == pytest.approx(a.item(), rel=0.05)
    assert full.item() > 2 * b.item()


@pytest.mark.slow
def test_tiny_model_overfits_a_real_pair() -> None:
    """A tiny model learns a real 1 m image's residual over its S2-like ×4 LR: the loss (same draws of t and ε before
    and after) halves within 60 s on a 2-core CPU. This shows the loss, network and gradients work together; it says
    nothing about quality on unseen imagery."""
    with rasterio.open(DATA / "model_satellogic_96.tif") as src:
        hr = torch.from_numpy(src.read().astype(np.float32) / 10000)[None, :, 24:72, 24:72]  # 48 x 48 m, 4 bands
    scale = Fraction(4)
    torch.manual_seed(0)  # nn.Module initialisation only
    lr_up = upsample(degrade(hr, scale, generator=torch.Generator().manual_seed(0)), scale)
    residual = hr - lr_up
    norm = Normalization(mean=tuple(hr.mean((0, 2, 3)).tolist()), std=tuple(hr.std((0, 2, 3)).tolist()),
                         residual_std=tuple(residual.std((0, 2, 3)).tolist()))
    model = build_model(ModelConfig.tiny(scale=scale, normalization=norm))
    schedule = NoiseSchedule.from_config(model.config.schedule)

    def evaluate() -> float:
        g = torch.Generator().manual_seed(123)
        with torch.no_grad():
            return float(np.mean([diffusion_loss(model, schedule, hr, lr_up, g).item() for _ in range(16)]))

    initial = evaluate()
    optimizer = torch.optim.Adam(model.parameters(), lr=6e-3)
    g = torch.Generator().manual_seed(1)
    started, best, steps = time.monotonic(), initial, 0
    while time.monotonic() - started < 60 and best > initial / 2:
        loss = diffusion_loss(model, schedule, hr, lr_up, g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
        if steps % 25 == 0:  # ~225 steps, 2 s on one thread of the development machine
            best = min(best, evaluate())
    assert best <= initial / 2, (initial, best, steps, time.monotonic() - started)


def test_diffusion_loss_accepts_a_data_parallel_wrapper() -> None:
    """Training wraps the model (DDP); the loss must read config and normalisation through the wrapper."""
    model = random_tiny_model(seed=8)
    schedule = NoiseSchedule.from_config(model.config.schedule)
    hr = 0.1 + 0.05 * torch.rand(1, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    plain = diffusion_loss(model, schedule, hr, hr + 0.01, torch.Generator().manual_seed(2))
    wrapped = diffusion_loss(nn.DataParallel(model), schedule, hr, hr + 0.01, torch.Generator().manual_seed(2))
    assert wrapped.item() == pytest.approx(plain.item(), rel=1e-6)
