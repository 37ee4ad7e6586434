"""Diffusion numerics: the noise schedule (pure tables), the training loss, samplers and position-based noise.

Public names: :class:`NoiseSchedule`, :func:`diffusion_loss`, :func:`draw_timesteps`, :func:`ddpm_sample`,
:func:`ddim_sample`, :func:`lr_start_sample`, :func:`ddim_timesteps`, :func:`lr_start_timesteps`,
:func:`positional_noise`, :func:`tile_noise`.
"""

from __future__ import annotations

from rssr_cli.diffusion.loss import diffusion_loss, draw_timesteps
from rssr_cli.diffusion.noise import positional_noise, tile_noise
from rssr_cli.diffusion.samplers import (ddim_sample, ddim_timesteps, ddpm_sample, lr_start_sample,
                                       lr_start_timesteps, transfer_texture)
from rssr_cli.diffusion.schedule import NoiseSchedule

__all__ = [
    "NoiseSchedule",
    "ddim_sample",
    "ddim_timesteps",
    "ddpm_sample",
    "diffusion_loss",
    "draw_timesteps",
    "lr_start_sample",
    "lr_start_timesteps",
    "positional_noise",
    "tile_noise",
    "transfer_texture",
]
