"""Experiment (not the shipped sampler): exact vs Tikhonov-damped consistency projection on the validation split.

    python scripts/experiment_soft_consistency.py WEIGHTS data-work/val.npz [--steps 1 --start 1.0]

Runs the model as ``rssr upscale`` does but without its projection (1-step posterior mean by default), then scores:
no projection, the exact projection (``project_consistent``) and the damped one (``damping`` λ) for a few λ, with
the metrics ``rssr evaluate`` reports.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from rssr_cli.degrade import project_consistent, upsample
from rssr_cli.methods.diffusion import DiffusionUpsampler, patch_origins
from rssr_cli.metrics import score
from rssr_cli.patches import load_cache

DAMPINGS = (0.01, 0.03, 0.1, 0.3)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("data")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--start", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cache = load_cache(args.data)
    lr, hr, valid = cache.batch(np.arange(len(cache)))
    model = DiffusionUpsampler(args.weights, device="cpu", steps=args.steps, start=args.start, consistency=False,
                               seed=args.seed, batch_size=8)
    raw = torch.from_numpy(model.upscale_tiles(lr, patch_origins(range(len(cache)), hr.shape[-1])).mean)
    lr_t, hr_t, valid_t = map(torch.from_numpy, (lr, hr, valid))
    candidates = [("bicubic", upsample(lr_t, cache.scale)), ("model raw", raw),
                  ("model exact", project_consistent(raw, lr_t, cache.scale))]
    candidates += [(f"model damped {lam:g}", project_consistent(raw, lr_t, cache.scale, damping=lam))
                   for lam in DAMPINGS]
    for name, sr in candidates:
        s = score(sr, lr_t, hr_t, valid_t, cache.scale)
        print(name, {k: round(float(s[k].mean()), 5) for k in ("psnr", "ssim", "hf_ratio", "consistency_l1")})


if __name__ == "__main__":
    main()
