"""The forward (noising) process as plain tables, and the algebra between x_t, x0, ε and v.

Notation (Ho et al. 2020; Nichol & Dhariwal 2021): steps are indexed t = 0 … T−1 (index t is the paper's step t+1);
β_t the variance added at step t, α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s. The forward marginal is
q(x_t | x0) = N(sqrt(ᾱ_t) x0, (1 − ᾱ_t) I). Tables are float64 on the CPU; every method gathers what it needs for the
given t and returns it on the input's device and dtype, so one schedule serves any device without being moved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rssr_cli.model.config import ScheduleConfig

__all__ = ["NoiseSchedule", "cosine_betas", "linear_betas"]


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule: ᾱ(t) = cos²((t/T + s)/(1 + s) · π/2) / ᾱ(0), β clipped at ``max_beta``."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    return (1 - alphas_cumprod[1:] / alphas_cumprod[:-1]).clamp(0, max_beta)


def linear_betas(timesteps: int) -> torch.Tensor:
    """Ho et al.'s linear schedule, rescaled so that T steps add the same total noise as 1000 steps would."""
    scale = 1000 / timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)


@dataclass(frozen=True)
class NoiseSchedule:
    """Tables of one noise schedule. Build with :meth:`from_config`; all tables have shape (T,)."""

    betas: torch.Tensor                      # β_t
    alphas_cumprod: torch.Tensor             # ᾱ_t
    alphas_cumprod_prev: torch.Tensor        # ᾱ_{t−1}, with ᾱ_{−1} = 1
    posterior_variance: torch.Tensor         # β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t), variance of q(x_{t−1} | x_t, x0)
    posterior_log_variance: torch.Tensor     # log β̃_t, clipped at t = 0 where β̃_0 = 0
    posterior_mean_coef_x0: torch.Tensor     # β_t sqrt(ᾱ_{t−1}) / (1 − ᾱ_t): weight of x0 in the posterior mean
    posterior_mean_coef_xt: torch.Tensor     # (1 − ᾱ_{t−1}) sqrt(α_t) / (1 − ᾱ_t): weight of x_t

    @classmethod
    def from_betas(cls, betas: torch.Tensor) -> NoiseSchedule:
        betas = betas.double()
        alphas = 1 - betas
        ac = torch.cumprod(alphas, 0)
        ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
        post_var = betas * (1 - ac_prev) / (1 - ac)
        return cls(
            betas=betas,
            alphas_cumprod=ac,
            alphas_cumprod_prev=ac_prev,
            posterior_variance=post_var,
            posterior_log_variance=torch.log(torch.cat([post_var[1:2], post_var[1:]])),
            posterior_mean_coef_x0=betas * ac_prev.sqrt() / (1 - ac),
            posterior_mean_coef_xt=(1 - ac_prev) * alphas.sqrt() / (1 - ac),
        )

    @classmethod
    def from_config(cls, config: ScheduleConfig) -> NoiseSchedule:
        betas = cosine_betas(config.timesteps) if config.kind == "cosine" else linear_betas(config.timesteps)
        return cls.from_betas(betas)

    @property
    def timesteps(self) -> int:
        return int(self.betas.shape[0])

    @staticmethod
    def _at(table: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """table[t] shaped to broadcast against ``like`` (N, ...), on its device and dtype."""
        t = torch.as_tensor(t).long().cpu()
        values = table[t].to(device=like.device, dtype=like.dtype)
        return values.reshape(-1, *([1] * (like.ndim - 1))) if values.ndim else values

    # --- q: the forward process ---------------------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor) -> torch.Tensor:
        """A draw of x_t ~ q(x_t | x0) = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε."""
        ac = self._at(self.alphas_cumprod, t, x0)
        return ac.sqrt() * x0 + (1 - ac).sqrt() * noise

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor,
                    t: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t−1} | x_t, x0) (Ho et al. eq. 6–7)."""
        mean = self._at(self.posterior_mean_coef_x0, t, x_t) * x0 + self._at(self.posterior_mean_coef_xt, t, x_t) * x_t
        return mean, self._at(self.posterior_variance, t, x_t)

    # --- conversions between parameterisations ------------------------------------------------------------------
    def predict_start_from_noise(self, x_t: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor) -> torch.Tensor:
        """x0 = (x_t − sqrt(1 − ᾱ_t) ε) / sqrt(ᾱ_t)."""
        ac = self._at(self.alphas_cumprod, t, x_t)
        return (x_t - (1 - ac).sqrt() * eps) / ac.sqrt()

    def predict_noise_from_start(self, x_t: torch.Tensor, t: torch.Tensor | int, x0: torch.Tensor) -> torch.Tensor:
        """ε = (x_t − sqrt(ᾱ_t) x0) / sqrt(1 − ᾱ_t)."""
        ac = self._at(self.alphas_cumprod, t, x_t)
        return (x_t - ac.sqrt() * x0) / (1 - ac).sqrt()

    def predict_start_from_v(self, x_t: torch.Tensor, t: torch.Tensor | int, v: torch.Tensor) -> torch.Tensor:
        """x0 = sqrt(ᾱ_t) x_t − sqrt(1 − ᾱ_t) v, with v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x0 (Salimans & Ho 2022)."""
        ac = self._at(self.alphas_cumprod, t, x_t)
        return ac.sqrt() * x_t - (1 - ac).sqrt() * v

    def velocity(self, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor) -> torch.Tensor:
        """v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x0: the v-prediction target."""
        ac = self._at(self.alphas_cumprod, t, x0)
        return ac.sqrt() * noise - (1 - ac).sqrt() * x0

    def start_from_output(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int,
                          prediction: str) -> torch.Tensor:
        """The network's estimate of x0 whatever it predicts (``"x0"``, ``"v"`` or ``"eps"``)."""
        if prediction == "x0":
            return output
        if prediction == "v":
            return self.predict_start_from_v(x_t, t, output)
        if prediction == "eps":
            return self.predict_start_from_noise(x_t, t, output)
        raise ValueError(f"unknown prediction {prediction!r}")

    def start_index(self, start: float) -> int:
        """t0 for a start given as a fraction of T: ``ceil(start · T) − 1``, so start = 1 is the last step T−1."""
        if not 0.0 < start <= 1.0:
            raise ValueError(f"start must be in (0, 1], got {start:g}")
        return max(0, math.ceil(start * self.timesteps - 1e-9) - 1)
