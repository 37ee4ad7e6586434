"""Experiment: does a geometric self-ensemble (EDSR's "+": average the model over flips and rotations of its input)
raise PSNR over bicubic?

    python scripts/experiment_self_ensemble.py WEIGHTS DATA [DATA ...] [--symmetries 1 2 4 8] [--json OUT]

Two variants, each scored with ``rssr evaluate``'s metrics (the weights' own default sampler, seed 0):

- ``estimate``: the sampler's one-step estimate E (close to the posterior mean, where PSNR comes from) is averaged
  over K symmetries g of the LR, ``E = mean_g g⁻¹ E(g · lr)``; the DDIM step, texture transfer, chroma smoothing and
  back-projection then run as shipped. Costs K + 1 network evaluations instead of 2.
- ``output``: the whole output is averaged over K symmetries (2 K evaluations), as EDSR+ does.

The ``estimate`` variant repeats the shipped sampler's steps (``rssr_cli.methods.diffusion.sample_tiles``) around
the averaged estimate; with K = 1 it reproduces ``rssr evaluate`` exactly (NAIP: +0.4707 dB both ways), which is
the check that the copy still matches. The patches must be square (the caches of ``rssr prepare`` are). Measured on
v2.8 in session 22: see the model card (*What remains*).
"""

from __future__ import annotations

import argparse
import json
from typing import Callable

import torch

import rssr_cli.methods.diffusion as diffusion
from rssr_cli.degrade import upsample
from rssr_cli.diffusion.noise import tile_noise
from rssr_cli.diffusion.samplers import lr_start_sample, transfer_texture
from rssr_cli.diffusion.schedule import NoiseSchedule
from rssr_cli.evaluate import evaluate
from rssr_cli.filters import blur_chroma

#: The dihedral group of the square as (quarter turns, mirrored), ordered so that the first 2 and 4 are spread out.
SYMMETRIES = [(0, False), (2, True), (1, False), (3, True), (2, False), (0, True), (3, False), (1, True)]


def _apply(x: torch.Tensor, g: tuple[int, bool]) -> torch.Tensor:
    turns, mirrored = g
    return torch.rot90(x.flip(-1) if mirrored else x, turns, dims=(-2, -1))


def _undo(x: torch.Tensor, g: tuple[int, bool]) -> torch.Tensor:
    turns, mirrored = g
    x = torch.rot90(x, -turns, dims=(-2, -1))
    return x.flip(-1) if mirrored else x


def ensembled_sampler(k: int, mode: str, shipped: Callable) -> Callable:
    """A drop-in for :func:`rssr_cli.methods.diffusion.sample_tiles` (one draw) with a K-symmetry self-ensemble."""
    group = SYMMETRIES[:k]

    @torch.no_grad()
    def sample(model, lr, origins, sampler, *, seed, samples=1, schedule=None, amp=True):
        if mode == "output":
            outs = [_undo(shipped(model, _apply(lr, g).contiguous(), origins, sampler, seed=seed,
                                  schedule=schedule, amp=amp)[0], g) for g in group]
            return torch.stack(outs).mean(0), None
        schedule = schedule or NoiseSchedule.from_config(model.config.schedule)
        shape = tuple(upsample(lr, model.config.scale).shape[1:])

        def noise(step: int) -> torch.Tensor:
            return tile_noise(seed, step, list(origins), shape, sample=0, device=lr.device)

        def denoiser_for(lr_g: torch.Tensor):
            lr_up = upsample(lr_g, model.config.scale).contiguous(memory_format=torch.channels_last)
            priors = model.prior(lr_up, origins)
            return lr_up, lambda x, t, cond: model(x, t, cond, priors=priors, origins=origins).float()

        estimates = []
        for g in group:
            lr_up_g, denoiser_g = denoiser_for(_apply(lr, g).contiguous())
            e = lr_start_sample(denoiser_g, schedule, lr_up_g, steps=1, start=1.0,
                                noise=lambda s: noise(diffusion.ESTIMATE_NOISE_STEP + s),
                                prediction=model.config.prediction)
            estimates.append(_undo(e, g))
        estimate = torch.stack(estimates).mean(0)
        lr_up, denoiser = denoiser_for(lr)
        x0 = lr_start_sample(denoiser, schedule, lr_up, steps=sampler.steps, start=sampler.start, eta=sampler.eta,
                             noise=noise, prediction=model.config.prediction, x_init=estimate)
        if sampler.texture is not None:
            x0 = transfer_texture(estimate, x0, sampler.texture)
        sr = model.from_residual(x0, lr_up)
        if sampler.chroma_sigma > 0:
            sr = lr_up + blur_chroma(sr - lr_up, sampler.chroma_sigma, model.config.chroma_channels)
        return diffusion.apply_consistency(sr, lr, model.config.scale, sampler.consistency), None

    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights")
    parser.add_argument("data", nargs="+")
    parser.add_argument("--symmetries", type=int, nargs="+", default=[1, 2, 4, 8], choices=[1, 2, 4, 8])
    parser.add_argument("--json")
    args = parser.parse_args()

    shipped = diffusion.sample_tiles
    rows = []
    for data in args.data:
        for mode in ("estimate", "output"):
            for k in args.symmetries:
                if mode == "output" and k == 1:
                    continue  # the same as estimate with K = 1: the shipped sampler
                diffusion.sample_tiles = ensembled_sampler(k, mode, shipped)
                try:
                    ev = evaluate(data, args.weights, methods=["lr_start", "bicubic"], device="cpu")
                finally:
                    diffusion.sample_tiles = shipped
                m, b = ev.methods["lr_start"], ev.methods["bicubic"]
                row = {"data": data, "mode": mode, "symmetries": k, "psnr_gain": round(m["psnr"] - b["psnr"], 4),
                       "ssim": round(m["ssim"], 4), "detail": round(m["detail"], 4),
                       "speckle": round(m["speckle"], 3), "seconds": round(m["seconds"], 1)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"weights": args.weights, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
