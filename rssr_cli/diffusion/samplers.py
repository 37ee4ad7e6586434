"""Reverse-process samplers: ancestral DDPM, DDIM from pure noise, and the LR-start sampler.

All samplers work on the normalised residual x (see :mod:`rssr_cli.model`) and return the final estimate of x0.
``model`` is any callable ``model(x_t, t, lr_up) -> output`` (an :class:`~rssr_cli.model.SRModel`, or a wrapper that
passes cached prior features); ``prediction`` says what its output is (``"x0"``, ``"v"`` or ``"eps"``).

Randomness is explicit: ``noise`` is a ``torch.Generator`` (draws in order) or a function ``noise(k) -> Tensor``
returning the noise for use k — k = 0 is the starting noise, k = i + 1 the noise injected after the i-th network
evaluation. :func:`rssr_cli.diffusion.noise.tile_noise` provides position-based noise of that form so that tiles agree.

A sampler with K steps evaluates the network exactly K times (DDPM: T times).
"""

from __future__ import annotations

from typing import Callable, Union

import torch

from rssr_cli.diffusion.schedule import NoiseSchedule
from rssr_cli.filters import high_pass
from rssr_cli.model.config import TEXTURE_SIGMA

__all__ = ["Denoiser", "NoiseSource", "ddim_sample", "ddim_timesteps", "ddpm_sample", "lr_start_sample",
           "lr_start_timesteps", "transfer_texture"]

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
NoiseSource = Union[torch.Generator, Callable[[int], torch.Tensor]]


def _noise_fn(noise: NoiseSource, like: torch.Tensor) -> Callable[[int], torch.Tensor]:
    if isinstance(noise, torch.Generator):
        return lambda k: torch.randn(like.shape, generator=noise, device=like.device, dtype=like.dtype)
    return lambda k: noise(k).to(device=like.device, dtype=like.dtype)


def _predict_start(model: Denoiser, schedule: NoiseSchedule, x: torch.Tensor, t: int, lr_up: torch.Tensor,
                   prediction: str) -> torch.Tensor:
    """One network evaluation at step t, turned into an estimate of x0."""
    t_vec = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    output = model(x, t_vec, lr_up).to(x.dtype)
    return schedule.start_from_output(output, x, t, prediction)


def ddim_timesteps(t0: int, steps: int) -> list[int]:
    """K evenly spaced, strictly decreasing step indices from t0 down to 0 (K = 1: just t0)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if steps > t0 + 1:
        raise ValueError(f"{steps} steps do not fit between step {t0} and 0; use at most {t0 + 1}")
    if steps == 1:
        return [t0]
    return [round(t0 - i * t0 / (steps - 1)) for i in range(steps)]


def lr_start_timesteps(schedule: NoiseSchedule, *, steps: int, start: float, estimate: bool) -> list[int]:
    """Every step index at which :func:`lr_start_sample` evaluates the network, in order: T−1 first when the start
    is the network's own estimate (``init = "estimate"``, one step from noise), then the ``steps`` DDIM steps from
    t0 down to 0. What fine-tuning for a sampler (``[train] sampler_focus``) trains on."""
    first = [schedule.timesteps - 1] if estimate else []
    return first + ddim_timesteps(schedule.start_index(start), steps)


def _ddim_step(schedule: NoiseSchedule, x: torch.Tensor, x0: torch.Tensor, t: int, t_prev: int, eta: float,
               z: torch.Tensor | None) -> torch.Tensor:
    """x_t -> x_{t_prev} (Song et al. 2021, eq. 12): sqrt(ᾱ') x0 + sqrt(1 − ᾱ' − σ²) ε̂ + σ z, with
    σ = η sqrt((1 − ᾱ')/(1 − ᾱ)) sqrt(1 − ᾱ/ᾱ'); t_prev = −1 means ᾱ' = 1, i.e. return x0."""
    if t_prev < 0:
        return x0
    a = float(schedule.alphas_cumprod[t])
    a_prev = float(schedule.alphas_cumprod[t_prev])
    eps = (x - a ** 0.5 * x0) / (1 - a) ** 0.5
    sigma = eta * ((1 - a_prev) / (1 - a)) ** 0.5 * (1 - a / a_prev) ** 0.5
    x_prev = a_prev ** 0.5 * x0 + max(1 - a_prev - sigma ** 2, 0.0) ** 0.5 * eps
    return x_prev + sigma * z if z is not None and sigma > 0 else x_prev


def _ddim_loop(model: Denoiser, schedule: NoiseSchedule, lr_up: torch.Tensor, x: torch.Tensor,
               timesteps: list[int], eta: float, draw: Callable[[int], torch.Tensor], prediction: str) -> torch.Tensor:
    for i, t in enumerate(timesteps):
        x0 = _predict_start(model, schedule, x, t, lr_up, prediction)
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        z = draw(i + 1) if eta > 0 and t_prev >= 0 else None
        x = _ddim_step(schedule, x, x0, t, t_prev, eta, z)
    return x


def ddpm_sample(model: Denoiser, schedule: NoiseSchedule, lr_up: torch.Tensor, *, noise: NoiseSource,
                prediction: str = "x0") -> torch.Tensor:
    """Ancestral sampling from x_{T−1} ~ N(0, I) through every step (Ho et al. 2020, Algorithm 2): T evaluations.
    The reference the faster samplers are compared with."""
    draw = _noise_fn(noise, lr_up)
    x = draw(0)
    for i, t in enumerate(reversed(range(schedule.timesteps))):
        x0 = _predict_start(model, schedule, x, t, lr_up, prediction)
        mean, variance = schedule.q_posterior(x0, x, t)
        x = mean + variance.sqrt() * draw(i + 1) if t > 0 else mean
    return x


def ddim_sample(model: Denoiser, schedule: NoiseSchedule, lr_up: torch.Tensor, *, steps: int, eta: float = 0.0,
                noise: NoiseSource, prediction: str = "x0") -> torch.Tensor:
    """DDIM from pure noise at step T−1 in ``steps`` evaluations (η = 0 deterministic, η = 1 ≈ ancestral)."""
    draw = _noise_fn(noise, lr_up)
    timesteps = ddim_timesteps(schedule.timesteps - 1, steps)
    return _ddim_loop(model, schedule, lr_up, draw(0), timesteps, eta, draw, prediction)


def lr_start_sample(model: Denoiser, schedule: NoiseSchedule, lr_up: torch.Tensor, *, steps: int, start: float,
                    eta: float = 0.0, noise: NoiseSource, prediction: str = "x0",
                    x_init: torch.Tensor | None = None) -> torch.Tensor:
    """The seed paper's efficient sampler (and CCDF's): start from the LR, not from pure noise.

    The upsampled LR is residual 0 (or ``x_init``, another first estimate); forward-diffuse it to
    t0 = ceil(start · T) − 1 with q(x_t0 | x0) and run ``steps`` DDIM steps from t0 down to 0. Smaller ``start``
    keeps more of the LR (fidelity, fewer steps needed), larger adds more freedom for detail (Diff-SR's trade-off).
    """
    draw = _noise_fn(noise, lr_up)
    t0 = schedule.start_index(start)
    timesteps = ddim_timesteps(t0, steps)
    x0_init = torch.zeros_like(lr_up) if x_init is None else x_init
    x = schedule.q_sample(x0_init, t0, draw(0))
    return _ddim_loop(model, schedule, lr_up, x, timesteps, eta, draw, prediction)


def transfer_texture(estimate: torch.Tensor, sample: torch.Tensor, gain: float,
                     sigma: float = TEXTURE_SIGMA) -> torch.Tensor:
    """The estimate plus ``gain`` times the sample's finest texture: ``E + g · HP_σ(S − E)``.

    ``estimate`` is the network's one-step prediction from pure noise (close to the posterior mean: the least error,
    little detail); ``sample`` a draw with detail (many DDIM steps). Interpolating between the minimum-error estimate
    and a sample is how every point of the distortion-perception trade-off is reached (Freirich, Michaeli and Meir,
    NeurIPS 2021); keeping only what the sample adds above ``sigma`` pixels spends the error budget where the detail
    is, as the coarser part of a sample's difference from the estimate costs error and adds little detail
    (docs/model.md).
    """
    return estimate + gain * high_pass(sample - estimate, sigma)
