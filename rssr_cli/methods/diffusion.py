"""The diffusion model as a method: :func:`sample_tiles`, the one way rssr samples the model, and the
:class:`DiffusionUpsampler` that ``rssr upscale`` runs.

:func:`sample_tiles` is used by ``rssr upscale`` (through :class:`DiffusionUpsampler`), ``rssr evaluate`` and the
validation inside ``rssr train``, so that what is scored is exactly what ships. For a batch of LR tiles: bicubic onto
the HR grid (:func:`rssr_cli.degrade.upsample`), prior features once, then for each of ``samples`` draws the LR-start
sampler (K network evaluations, plus one for the one-step estimate of an ``estimate`` start or a ``texture``
gain) with position-keyed noise, the optional texture transfer, the residual turned back into reflectance, the
optional chroma smoothing of what the model adds, and the consistency step (back-projection, exact projection or
none). It returns the mean of the draws and, for several draws, their per-pixel standard deviation (the uncertainty
the pipeline writes as a companion COG).

Noise comes from :func:`rssr_cli.diffusion.noise.tile_noise` at each tile's global HR origin: overlapping tiles draw
identical noise for the pixels they share, and the same seed gives the same noise field whatever the tile size.
Only the network runs under autocast (bf16 on CUDA); sampler arithmetic and the projection stay in float32/float64.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import ClassVar, Sequence

import numpy as np
import torch

from rssr_cli.degrade import back_project, project_consistent, upsample
from rssr_cli.devices import resolve_device
from rssr_cli.diffusion.noise import tile_noise
from rssr_cli.diffusion.samplers import ddim_timesteps, lr_start_sample, transfer_texture
from rssr_cli.diffusion.schedule import NoiseSchedule
from rssr_cli.errors import UsageError
from rssr_cli.filters import blur_chroma
from rssr_cli.memory import keep_big_blocks
from rssr_cli.methods.base import TileResult
from rssr_cli.model import SRModel, receptive_field
from rssr_cli.model.config import (CONSISTENCY_MODES, MAX_CHROMA_SIGMA, MAX_TEXTURE, SAMPLER_INITS, TEXTURE_SIGMA,
                                   SamplerConfig)
from rssr_cli.weights import LoadedModel, load_weights

logger = logging.getLogger(__name__)

__all__ = ["NO_TEXTURE", "DiffusionOptions", "DiffusionUpsampler", "apply_consistency", "patch_origins", "sample_tiles"]

Origins = Sequence[tuple[int, int]]

#: Share of the free device memory a fitted batch may take (the rest: the allocator's slack, other processes, the
#: host-side copies), and the largest fitted batch (beyond it a GPU gains nothing but latency).
FREE_MEMORY_SHARE = 0.7
MAX_FITTED_BATCH = 32

#: Noise keys of the ``estimate`` start's evaluation, apart from the sampler's own (0, 1, 2 ...): the two phases of
#: one draw never share noise.
ESTIMATE_NOISE_STEP = 1 << 20


def patch_origins(indices: Sequence[int] | np.ndarray, hr_width: int) -> list[tuple[int, int]]:
    """Origins for scoring the patches of a cache as tiles: patch i sits at column ``i * hr_width`` of one row, so
    every patch gets its own noise field, keyed to its index and not to the batch it is scored in."""
    return [(0, int(i) * int(hr_width)) for i in indices]


@torch.no_grad()
def sample_tiles(model: SRModel, lr: torch.Tensor, origins: Origins, sampler: SamplerConfig, *, seed: int,
                 samples: int = 1, schedule: NoiseSchedule | None = None,
                 amp: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Super-resolve a batch of LR tiles (N, C, h, w) reflectance on the model's device.

    ``origins``: each tile's top-left pixel in a global HR grid; the noise and the network's stride grid are keyed to
    it, so a tile's result does not depend on the batch it is in (up to float rounding: kernels may differ with
    the batch size, which is why it is part of a run's fingerprint). ``sampler``: steps, start, eta, consistency, init,
    texture, chroma_sigma (:class:`~rssr_cli.model.config.SamplerConfig`).
    ``amp``: bf16 autocast for the network on CUDA. Returns the mean over ``samples`` draws (float32) and their
    unbiased standard deviation (None for one draw).
    """
    schedule = schedule or NoiseSchedule.from_config(model.config.schedule)
    device = lr.device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")
    lr_up = upsample(lr, model.config.scale).contiguous(memory_format=torch.channels_last)
    shape = tuple(lr_up.shape[1:])
    with autocast:
        priors = model.prior(lr_up, origins)

    def denoiser(x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        with autocast:
            return model(x_t, t, cond, priors=priors, origins=origins).float()

    total = torch.zeros(lr_up.shape, dtype=torch.float64, device=device)
    total_sq = torch.zeros_like(total)
    for s in range(samples):
        def noise(k: int, s: int = s) -> torch.Tensor:
            return tile_noise(seed, k, list(origins), shape, sample=s, device=device)

        estimate = None
        if sampler.uses_estimate:  # the network's one-step estimate from pure noise
            estimate = lr_start_sample(denoiser, schedule, lr_up, steps=1, start=1.0,
                                       noise=lambda k: noise(ESTIMATE_NOISE_STEP + k),
                                       prediction=model.config.prediction)
        # CCDF: start from the network's own estimate, not from residual 0.
        x_init = estimate if sampler.init == "estimate" else None
        x0 = lr_start_sample(denoiser, schedule, lr_up, steps=sampler.steps, start=sampler.start, eta=sampler.eta,
                             noise=noise, prediction=model.config.prediction, x_init=x_init)
        if sampler.texture is not None:
            x0 = transfer_texture(estimate, x0, sampler.texture)
        sr = model.from_residual(x0, lr_up)
        if sampler.chroma_sigma > 0:  # in reflectance: the residual's per-band scaling would skew the colour
            sr = lr_up + blur_chroma(sr - lr_up, sampler.chroma_sigma, model.config.chroma_channels)
        sr = apply_consistency(sr, lr, model.config.scale, sampler.consistency)
        total += sr.double()
        total_sq += sr.double() ** 2
    mean = total / samples
    if samples == 1:
        return mean.float(), None
    # Unbiased (n − 1) variance of the draws, clamped at 0 against rounding.
    var = ((total_sq - samples * mean ** 2) / (samples - 1)).clamp_min(0)
    return mean.float(), var.sqrt().float()


def _joined(parts: list[torch.Tensor]) -> np.ndarray:
    """Host tensors as one array (no copy for one part: the usual case, one batch a call)."""
    return parts[0].numpy() if len(parts) == 1 else np.concatenate([p.numpy() for p in parts])


def apply_consistency(sr: torch.Tensor, lr: torch.Tensor, scale: Fraction, mode: str) -> torch.Tensor:
    """The sampler's ``consistency`` step (see :class:`~rssr_cli.model.config.SamplerConfig`)."""
    if mode == "backproject":
        return back_project(sr, lr, scale)
    if mode == "exact":
        return project_consistent(sr, lr, scale)
    return sr


#: ``texture`` value that turns the texture transfer off whatever the model's default.
NO_TEXTURE = "none"


@dataclass(frozen=True)
class DiffusionOptions:
    """``--method diffusion``: the model in ``weights`` (None: the shipped one) and how to sample it.

    ``steps``/``start``/``eta``/``consistency``/``init``/``texture``/``chroma_sigma``: None takes the model's
    defaults (``config.sampler``; ``consistency`` is a mode, ``backproject``, ``exact`` or ``none``; True/False mean
    exact/none; ``texture`` ``"none"`` returns the sample as drawn whatever the model's default; ``chroma_sigma`` 0
    turns the smoothing off). ``seed`` and ``samples``: the draws; the same seed on the same device gives the same
    output. ``batch_size``: tiles per network call (default: on CUDA as many as the free device memory takes,
    :meth:`DiffusionUpsampler.fit_batch_size`; 1 on the CPU). ``compile``: ``torch.compile`` the network (CUDA
    only; ignored with a warning on the CPU).
    """

    method: ClassVar[str] = "diffusion"
    weights: str | os.PathLike[str] | LoadedModel | None = None
    device: str = "auto"
    steps: int | None = None
    start: float | None = None
    eta: float | None = None
    seed: int = 0
    samples: int = 1
    consistency: str | bool | None = None
    init: str | None = None
    texture: float | str | None = None
    chroma_sigma: float | None = None
    batch_size: int | None = None
    compile: bool = False

    def build(self) -> "DiffusionUpsampler":
        return DiffusionUpsampler(self.weights, device=self.device, steps=self.steps, start=self.start,
                                  eta=self.eta, seed=self.seed, samples=self.samples, consistency=self.consistency,
                                  init=self.init, texture=self.texture, chroma_sigma=self.chroma_sigma,
                                  batch_size=self.batch_size, compile=self.compile)


class DiffusionUpsampler:
    """The default method: the diffusion model from a weights file, sampled by :func:`sample_tiles`.

    ``weights``: a path, an already loaded :class:`~rssr_cli.weights.LoadedModel`, or None for the shipped default.
    The other options are :class:`DiffusionOptions`'.
    """

    name = "diffusion"

    def __init__(
        self,
        weights: str | os.PathLike[str] | LoadedModel | None = None,
        *,
        device: str = "auto",
        steps: int | None = None,
        start: float | None = None,
        eta: float | None = None,
        seed: int = 0,
        samples: int = 1,
        consistency: str | bool | None = None,
        init: str | None = None,
        texture: float | str | None = None,
        chroma_sigma: float | None = None,
        batch_size: int | None = None,
        compile: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        self.loaded = weights if isinstance(weights, LoadedModel) else load_weights(weights, device=self.device)
        self.config = self.loaded.config
        self.schedule = NoiseSchedule.from_config(self.config.schedule)
        self.seed = int(seed)
        self.samples = int(samples)
        self.batch_size = int(batch_size) if batch_size is not None else (8 if self.device.type == "cuda" else 1)
        self._fit_batch = batch_size is None and self.device.type == "cuda"  # see fit_batch_size
        self._fitted: dict[tuple[int, int], int] = {}
        self._check_options(steps=steps, start=start, eta=eta, consistency=consistency, init=init, texture=texture,
                            chroma_sigma=chroma_sigma)
        overrides = {"steps": steps, "start": start, "eta": eta, "consistency": consistency, "init": init,
                     "texture": texture, "chroma_sigma": chroma_sigma}
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if texture == NO_TEXTURE:
            overrides["texture"] = None
        self.sampler: SamplerConfig = replace(self.config.sampler, **overrides)
        self.t0 = self.schedule.start_index(self.sampler.start)
        self.scale: Fraction = self.config.scale
        self.bands: tuple[str, ...] = self.config.bands
        # channels_last (NHWC) suits cuDNN's bf16 kernels and oneDNN's CPU convolutions alike (~25 % faster on CPU).
        self.model = self.loaded.model.to(self.device).eval().to(memory_format=torch.channels_last)
        self.net: SRModel = self.model  # what samples: the model, or its compiled forward
        self.compiled = bool(compile) and self.device.type == "cuda"
        if compile and not self.compiled:
            logger.warning("--compile applies to CUDA devices; running the network uncompiled on the %s",
                           self.device.type)
        if self.compiled:
            # The compiled module forwards everything else (prior, config, from_residual) to the model itself.
            self.net = torch.compile(self.model)  # type: ignore[assignment]
        if self.device.type == "cpu":
            keep_big_blocks()  # see rssr_cli.memory: page faults cost a third of CPU time otherwise

    def _check_options(self, *, steps: int | None, start: float | None, eta: float | None,
                       consistency: str | bool | None, init: str | None, texture: float | str | None,
                       chroma_sigma: float | None) -> None:
        """Each option checked with a message naming its flag (SamplerConfig's own checks do not name flags)."""
        defaults = self.config.sampler
        steps = defaults.steps if steps is None else int(steps)
        start = defaults.start if start is None else float(start)
        if steps < 1:
            raise UsageError(f"--steps must be at least 1, got {steps}")
        if not 0.0 < start <= 1.0:
            raise UsageError(f"--start must be in (0, 1] (a fraction of the {self.schedule.timesteps} diffusion "
                             f"steps), got {start:g}")
        try:
            ddim_timesteps(self.schedule.start_index(start), steps)
        except ValueError as exc:
            raise UsageError(f"--steps {steps} with --start {start:g}: {exc}") from exc
        if eta is not None and eta < 0:
            raise UsageError(f"--eta must be non-negative, got {eta:g}")
        if self.samples < 1:
            raise UsageError(f"--samples must be at least 1, got {self.samples}")
        if isinstance(consistency, str) and consistency not in CONSISTENCY_MODES:
            raise UsageError(f"--consistency {consistency}: choose one of {', '.join(CONSISTENCY_MODES)}")
        if init is not None and init not in SAMPLER_INITS:
            raise UsageError(f"--init {init}: choose one of {', '.join(SAMPLER_INITS)}")
        if isinstance(texture, str) and texture != NO_TEXTURE:
            raise UsageError(f"--texture must be a gain in [0, {MAX_TEXTURE:g}] or {NO_TEXTURE!r}, got {texture!r}")
        if isinstance(texture, (int, float)) and not 0 <= texture <= MAX_TEXTURE:
            raise UsageError(f"--texture must be in [0, {MAX_TEXTURE:g}], got {texture:g}")
        if chroma_sigma is not None and not 0 <= chroma_sigma <= MAX_CHROMA_SIGMA:
            raise UsageError(f"--chroma-sigma must be in [0, {MAX_CHROMA_SIGMA:g}], got {chroma_sigma:g}")
        if chroma_sigma and not self.config.chroma_channels:
            raise UsageError(f"--chroma-sigma needs at least two of B02, B03, B04; this model has "
                             f"{', '.join(self.config.bands)}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")

    # The effective sampler settings, by name (provenance, tests, notebooks).
    @property
    def steps(self) -> int:
        return self.sampler.steps

    @property
    def start(self) -> float:
        return self.sampler.start

    @property
    def eta(self) -> float:
        return self.sampler.eta

    @property
    def consistency(self) -> str:
        return self.sampler.consistency

    @property
    def init(self) -> str:
        return self.sampler.init

    @property
    def texture(self) -> float | None:
        return self.sampler.texture

    @property
    def chroma_sigma(self) -> float:
        return self.sampler.chroma_sigma

    @property
    def context(self) -> int:
        """LR pixels of context each tile gets, rounded up to a multiple of the scale's denominator so tile offsets
        stay aligned. With the model's default sampler settings, the context measured for them when the weights were
        exported (``sampler.context``: a tile's core then matches a whole-image run to within 1e-5 reflectance);
        otherwise the bound: the network's receptive field on the HR grid (and the texture transfer's and the
        chroma smoothing's Gaussians) plus bicubic's 2 LR pixels."""
        measured = self.config.sampler.context
        if measured is not None and self.sampler == self.config.sampler:
            lr_pixels = measured
        else:
            hr_pixels = receptive_field(self.config)
            if self.sampler.texture is not None:
                hr_pixels += math.ceil(3 * TEXTURE_SIGMA)  # how far the texture's Gaussian blur reaches
            hr_pixels += math.ceil(3 * self.sampler.chroma_sigma)  # and the chroma smoothing's
            lr_pixels = math.ceil(hr_pixels / self.scale) + 2
        d = self.scale.denominator
        return -(-lr_pixels // d) * d

    def upscale_tiles(self, lr: np.ndarray, origins: Sequence[tuple[int, int]]) -> TileResult:
        if lr.ndim != 4 or lr.shape[1] != len(self.bands):
            raise ValueError(f"expected LR tiles (N, {len(self.bands)}, h, w), got shape {lr.shape}")
        if len(origins) != lr.shape[0]:
            raise ValueError(f"{lr.shape[0]} tiles but {len(origins)} origins")
        means, stds = [], []
        for i in range(0, lr.shape[0], self.batch_size):
            mean, std = sample_tiles(self.net, self._to_device(lr[i:i + self.batch_size]),
                                     origins[i:i + self.batch_size], self.sampler, seed=self.seed,
                                     samples=self.samples, schedule=self.schedule)
            means.append(self._to_host(mean))
            if std is not None:
                stds.append(self._to_host(std))
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # the copies into host memory have landed
        return TileResult(mean=_joined(means), std=_joined(stds) if stds else None)

    def _to_device(self, lr: np.ndarray) -> torch.Tensor:
        """LR tiles onto the device; on CUDA through pinned (page-locked) memory, asynchronously."""
        tiles = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32))
        if self.device.type != "cuda":
            return tiles.to(self.device)
        return tiles.pin_memory().to(self.device, non_blocking=True)

    def _to_host(self, result: torch.Tensor) -> torch.Tensor:
        """A result into host memory; on CUDA into pinned memory without waiting (the caller synchronises once)."""
        if self.device.type != "cuda":
            return result.cpu()
        host = torch.empty(result.shape, dtype=result.dtype, pin_memory=True)
        host.copy_(result, non_blocking=True)
        return host

    def fit_batch_size(self, lr_shape: tuple[int, int]) -> int | None:
        """Tiles per network call for LR tiles of ``lr_shape`` (h, w): as many as ``FREE_MEMORY_SHARE`` of the
        device's free memory takes, from the peak memory one tile is measured to need, rounded down to a power of two
        (the same choice run after run on one kind of GPU; it is part of the run's fingerprint) and at most
        ``MAX_FITTED_BATCH``. None (the batch size stays as it is) on the CPU or when ``batch_size`` was given.
        """
        if not self._fit_batch:
            return None
        if lr_shape not in self._fitted:
            per_tile = self._tile_bytes(lr_shape)
            free, _ = torch.cuda.mem_get_info(self.device)
            cached = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
            fits = int(FREE_MEMORY_SHARE * (free + cached) // per_tile)
            fits = max(1, min(MAX_FITTED_BATCH, fits))
            self._fitted[lr_shape] = 1 << (fits.bit_length() - 1)
            logger.info("batch size %d: %.0f MB a tile of %s LR px, %.1f GB free on %s", self._fitted[lr_shape],
                        per_tile / 1e6, lr_shape, (free + cached) / 1e9, self.device)
        return self._fitted[lr_shape]

    def _tile_bytes(self, lr_shape: tuple[int, int]) -> int:
        """Peak device memory of sampling one tile of ``lr_shape`` LR px (the uncompiled model: no compilation for a
        probe), fixed costs included, so a batch of n needs at most n times this."""
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        lr = torch.zeros((1, len(self.bands), *lr_shape), device=self.device)
        sample_tiles(self.model, lr, [(0, 0)], self.sampler, seed=self.seed, samples=1, schedule=self.schedule)
        torch.cuda.synchronize(self.device)
        return max(torch.cuda.max_memory_allocated(self.device) - base, 1)

    def provenance(self) -> dict[str, str]:
        tags = {
            "RSSR_METHOD": "diffusion",
            "RSSR_MODEL": self.loaded.name,
            "RSSR_SAMPLER": "lr-start-ddim",
            "RSSR_STEPS": str(self.sampler.steps),
            "RSSR_START": f"{self.sampler.start:g}",
            "RSSR_T0": str(self.t0),
            "RSSR_ETA": f"{self.sampler.eta:g}",
            "RSSR_SEED": str(self.seed),
            "RSSR_SAMPLES": str(self.samples),
            "RSSR_CONSISTENCY": self.sampler.consistency,
            "RSSR_INIT": self.sampler.init,
            "RSSR_EVALUATIONS": str(self.sampler.evaluations),
            "RSSR_DEVICE": self.device.type,
        }
        if self.sampler.texture is not None:
            tags["RSSR_TEXTURE"] = f"{self.sampler.texture:g}"
        if self.sampler.chroma_sigma > 0:
            tags["RSSR_CHROMA_SIGMA"] = f"{self.sampler.chroma_sigma:g}"
        if self.compiled:
            tags["RSSR_COMPILED"] = "torch.compile"
        return tags
