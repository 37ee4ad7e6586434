"""The diffusion SR network: prior feature extractor + conditional UNet, on the LR upsampled to the HR grid.

Public names: :class:`ModelConfig` (and its sections), :func:`build_model`, :class:`SRModel`,
:class:`PriorExtractor`, :class:`ConditionalUNet`, :func:`receptive_field`, :func:`flops_per_pixel`.

What the network predicts (``config.prediction``, default ``"x0"``): the diffusion variable is the *normalised
residual* x0 = (HR − upsample(LR)) / residual_std (SRDiff's formulation: the network only has to add what bicubic
lacks, and "residual 0" is exactly the upsampled LR, which the LR-start sampler noises). The network predicts x0
itself rather than the noise ε because:

- the LR-start sampler runs few (4–15) steps from an intermediate t0; each step's estimate of x0 *is* the SR result, and
  an x0 head gives it directly, without the 1/sqrt(ᾱ_t) amplification of ε errors that makes ε-prediction unstable at
  high noise and short schedules;
- the training loss is then an L1 reconstruction loss on the residual in (normalised) reflectance, which is what users
  judge, and L1 keeps edges sharper than L2;
- the consistency projection acts on an x0 estimate, so the two compose without conversions.

``"v"`` (Salimans & Ho 2022) and ``"eps"`` are supported through the same schedule helpers for experiments.

Measured cost of the default config (UNet widths 32/64/128, prior 16/32/64): 136 kFLOP per output pixel per full
network evaluation (``flops_per_pixel(ModelConfig())``, torch.utils.flop_counter), of which 12 are the prior
extractor, computed once per tile, so each sampler step costs 125 kFLOP/px; 2,292,800 parameters (9.2 MB as
float32). tests/test_model.py pins these; docs/model.md has the details and CPU throughput.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rssr_cli.model.config import (
    ARCHITECTURE,
    ArchConfig,
    ModelConfig,
    Normalization,
    Prediction,
    SamplerConfig,
    ScheduleConfig,
)
from rssr_cli.model.prior import PriorExtractor
from rssr_cli.model.unet import ConditionalUNet

__all__ = [
    "ARCHITECTURE",
    "ArchConfig",
    "ConditionalUNet",
    "ModelConfig",
    "Normalization",
    "Prediction",
    "PriorExtractor",
    "SRModel",
    "SamplerConfig",
    "ScheduleConfig",
    "build_model",
    "flops_per_pixel",
    "receptive_field",
]


class SRModel(nn.Module):
    """The network of one model: ``forward(x_t, t, lr_up) -> prediction`` (N, C, H, W), any H and W.

    - ``x_t``: the noisy normalised residual at diffusion step ``t`` (see :meth:`to_residual`).
    - ``t``: (N,) timestep indices in [0, T) (integer or float), or a scalar for the whole batch.
    - ``lr_up``: the LR upsampled onto the HR grid, in **reflectance** (normalised inside, so callers never do it).
    - ``priors``: optional output of :meth:`prior` for this ``lr_up``; the sampler computes it once per tile because it
      does not depend on t.
    - ``origins``: optional (row, col) of each tile's top-left pixel in a global HR grid (see below).

    Sizes are padded (edge replication) to a multiple of ``m = config.arch.downsampling`` and the output cropped back.
    The network is translation-equivariant only for shifts that are multiples of m (its unshuffle and stride-2 stages
    sample a fixed phase). With ``origins``, each tile is padded at the top/left by ``origin mod m`` so that its cells
    lie on the *global* grid: two overlapping tiles then compute the same features for the same ground, wherever the
    pipeline placed them, and their outputs agree away from their borders.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        norm = config.normalization
        # Not persistent: they live in the config, and a state dict holds learnt tensors only.
        self.register_buffer("band_mean", torch.tensor(norm.mean, dtype=torch.float32)[:, None, None], False)
        self.register_buffer("band_std", torch.tensor(norm.std, dtype=torch.float32)[:, None, None], False)
        self.register_buffer("residual_std", torch.tensor(norm.residual_std, dtype=torch.float32)[:, None, None],
                             False)
        self.prior_extractor = PriorExtractor(config.channels, config.arch.prior_widths, config.arch.prior_blocks,
                                              unshuffle=config.arch.unshuffle)
        self.unet = ConditionalUNet(config.channels, config.arch)

    # --- spaces -----------------------------------------------------------------------------------------------------
    def normalize(self, reflectance: torch.Tensor) -> torch.Tensor:
        """Reflectance -> the conditioning space ``(x − mean) / std``."""
        return (reflectance - self.band_mean) / self.band_std

    def to_residual(self, hr: torch.Tensor, lr_up: torch.Tensor) -> torch.Tensor:
        """The diffusion variable x0 for a training pair: ``(hr − lr_up) / residual_std``."""
        return (hr - lr_up) / self.residual_std

    def from_residual(self, x0: torch.Tensor, lr_up: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_residual`: the HR reflectance estimate."""
        return lr_up + x0 * self.residual_std

    # --- network ----------------------------------------------------------------------------------------------------
    def _pad(self, x: torch.Tensor, origins: Sequence[tuple[int, int]] | None) -> tuple[torch.Tensor, list[int],
                                                                                     list[int]]:
        """Pad to a multiple of m; with origins, aligned to the global grid. Returns the per-tile top/left pads.

        With origins every tile is padded to the same size, roundup(size + m − 1), whatever its phase, so a tile's
        result depends on its own origin only, never on which other tiles share its batch.
        """
        m = self.config.arch.downsampling
        n, _, h, w = x.shape
        if origins is None:
            tops, lefts = [0] * n, [0] * n
            height, width = -(-h // m) * m, -(-w // m) * m
        else:
            if len(origins) != n:
                raise ValueError(f"{n} tiles but {len(origins)} origins")
            tops, lefts = [int(r) % m for r, _ in origins], [int(c) % m for _, c in origins]
            height, width = -(-(h + m - 1) // m) * m, -(-(w + m - 1) // m) * m
        if height == h and width == w:
            return x, tops, lefts
        padded = [F.pad(x[i:i + 1], (lefts[i], width - w - lefts[i], tops[i], height - h - tops[i]), mode="replicate")
                  for i in range(n)] if len(set(zip(tops, lefts))) > 1 else \
            [F.pad(x, (lefts[0], width - w - lefts[0], tops[0], height - h - tops[0]), mode="replicate")]
        return torch.cat(padded), tops, lefts

    def prior(self, lr_up: torch.Tensor, origins: Sequence[tuple[int, int]] | None = None) -> list[torch.Tensor]:
        """Prior features of the (padded) upsampled LR, one tensor per UNet level; pass the same ``origins`` to
        :meth:`forward`."""
        return self.prior_extractor(self._pad(self.normalize(lr_up), origins)[0])

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | int | float, lr_up: torch.Tensor,
                priors: list[torch.Tensor] | None = None,
                origins: Sequence[tuple[int, int]] | None = None) -> torch.Tensor:
        n, _, h, w = x_t.shape
        if x_t.shape != lr_up.shape:
            raise ValueError(f"x_t {tuple(x_t.shape)} and lr_up {tuple(lr_up.shape)} must have the same shape")
        t = torch.as_tensor(t, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(n)
        cond, tops, lefts = self._pad(self.normalize(lr_up), origins)
        if priors is None:
            priors = self.prior_extractor(cond)
        out = self.unet(self._pad(x_t, origins)[0], t, cond, priors)
        if len(set(zip(tops, lefts))) == 1:
            return out[:, :, tops[0]:tops[0] + h, lefts[0]:lefts[0] + w]
        return torch.cat([out[i:i + 1, :, tops[i]:tops[i] + h, lefts[i]:lefts[i] + w] for i in range(n)])


def build_model(config: ModelConfig) -> SRModel:
    """A freshly initialised network for ``config`` (weights come from :func:`rssr_cli.weights.load_weights`)."""
    return SRModel(config)


def receptive_field(config: ModelConfig) -> int:
    """An upper bound on how far (HR pixels, each side) an input pixel can influence an output pixel.

    A level's pixel is ``f[k] = u·2^k`` HR pixels wide (u = ``arch.unshuffle``): a 3x3 conv whose input is at level k
    reaches f[k] HR pixels further, and reaches add up along a path. The unshuffle and the final shuffle each add
    u − 1 (the other HR pixels of the input's and of the output's level-0 cell). Two kinds of path: through the UNet (stem, down to the deepest level, up, out: ``unet``), and through
    the prior features of level k, which enter the UNet at the first down block of that level and then follow the
    rest of the UNet's path (``prior[k] + unet − before[k]``). The bound is the longest. Tiles need about this much
    context to be rendered as in the whole image; the effective field (where the weights are not negligible) is
    smaller.
    """
    arch = config.arch
    u = arch.unshuffle
    f = [u * 2 ** k for k in range(len(arch.widths))]
    levels = len(f)
    unet = (u - 1) + f[0] + f[0] + (u - 1)  # unshuffle, stem, out conv, shuffle
    for k in range(levels):
        unet += 2 * 2 * arch.blocks[k] * f[k]  # down and up blocks, two convs each
        if k < levels - 1:
            unet += f[k] + f[k] + f[k + 1] // 2  # stride-2 conv, upsample conv, nearest upsampling
    longest = unet
    prior = (u - 1) + f[0]  # unshuffle, stem
    before = (u - 1) + f[0]  # UNet reach up to the first down block of level k
    for k in range(levels):
        if k > 0:
            prior += f[k - 1]  # the prior's stride-2 conv into level k
            before += 2 * arch.blocks[k - 1] * f[k - 1] + f[k - 1]
        prior += 2 * arch.prior_blocks[k] * f[k]
        injected_after = before + f[k]  # the modulation acts after conv1 of the level's first block
        longest = max(longest, prior + unet - injected_after)
    return longest


def flops_per_pixel(config: ModelConfig, size: int = 128, *, include_prior: bool = True) -> float:
    """FLOPs per output HR pixel of one network evaluation, counted by torch.utils.flop_counter on a
    (1, C, size, size) input, ``size`` rounded up to a multiple of ``arch.downsampling`` so that no padding is counted.
    Convolutions and matmuls only (what the counter counts); elementwise ops add a few %.

    ``include_prior=False`` counts the UNet alone: the cost of each sampler step, since the samplers compute the prior
    features once per tile and reuse them.
    """
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(config).eval()
    c = config.channels
    m = config.arch.downsampling
    size = -(-size // m) * m
    x = torch.zeros(1, c, size, size)
    with torch.no_grad():
        priors = None if include_prior else model.prior(x)
        counter = FlopCounterMode(display=False)
        with counter:
            model(x, torch.zeros(1), x, priors=priors)
    return counter.get_total_flops() / (size * size)
