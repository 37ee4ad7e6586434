"""The training loss the ``rssr train`` command minimises."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from rssr_cli.diffusion.schedule import NoiseSchedule
from rssr_cli.model import SRModel

__all__ = ["diffusion_loss", "draw_timesteps"]


def draw_timesteps(n: int, schedule: NoiseSchedule, generator: torch.Generator, *, focus: float = 0.0,
                   focus_steps: Sequence[int] = ()) -> torch.Tensor:
    """n training steps t: each one of ``focus_steps`` (uniformly) with probability ``focus``, else uniform over
    {0, …, T−1}. ``focus`` > 0 spends more of training on the steps a sampler actually evaluates (the shipped
    sampler evaluates 2 of the T); the uniform part keeps every other step trained."""
    device = generator.device
    t = torch.randint(0, schedule.timesteps, (n,), generator=generator, device=device)
    if focus <= 0 or not focus_steps:
        return t
    steps = torch.as_tensor(list(focus_steps), device=device, dtype=t.dtype)
    pick = torch.randint(0, len(steps), (n,), generator=generator, device=device)
    focused = torch.rand((n,), generator=generator, device=device) < focus
    return torch.where(focused, steps[pick], t)


def diffusion_loss(
    model: SRModel | nn.Module,
    schedule: NoiseSchedule,
    hr: torch.Tensor,
    lr_up: torch.Tensor,
    generator: torch.Generator,
    *,
    mask: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
) -> torch.Tensor:
    """The denoising loss for one batch of pairs, a scalar.

    ``hr``: (N, C, H, W) HR reflectance; ``lr_up``: its LR (e.g. ``degrade(hr)``) upsampled onto the HR grid
    (``rssr_cli.degrade.upsample``), reflectance. ``generator`` lives on their device and draws t ~ U{0, …, T−1} and
    ε ~ N(0, I); ``t``, (N,) step indices, replaces the uniform draw (see :func:`draw_timesteps`). ``mask``
    (N, 1 or C, H, W), 1 for valid pixels, leaves nodata out of the mean.

    x0 = the normalised residual, x_t = q_sample(x0, t, ε), and the target is what ``model.config.prediction`` names
    (x0, v or ε); the distance is ``model.config.loss`` (L1 or L2), averaged over valid pixels.

    ``model`` may be wrapped in DistributedDataParallel/DataParallel: the forward pass goes through the wrapper (so
    gradients are synchronised), the config and normalisation come from the wrapped module.
    """
    core = model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model
    config = core.config
    x0 = core.to_residual(hr, lr_up)
    n = hr.shape[0]
    if t is None:
        t = draw_timesteps(n, schedule, generator)
    noise = torch.randn(x0.shape, generator=generator, device=hr.device, dtype=x0.dtype)
    x_t = schedule.q_sample(x0, t, noise)
    output = model(x_t, t, lr_up).float()
    if config.prediction == "x0":
        target = x0
    elif config.prediction == "v":
        target = schedule.velocity(x0, t, noise)
    else:
        target = noise
    error = (output - target).abs() if config.loss == "l1" else (output - target).pow(2)
    if mask is None:
        return error.mean()
    weights = mask.to(error.dtype).expand_as(error)
    return (error * weights).sum() / weights.sum().clamp_min(1.0)
