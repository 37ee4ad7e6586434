"""Experiment behind ``--texture``: which mix of the one-step estimate E and a sample S gives the most fine detail for
the least error, on the VALIDATION split.

    python scripts/experiment_texture.py WEIGHTS data-work/val.npz --steps 30 [--steps 100] [--json OUT]
    python scripts/experiment_texture.py WEIGHTS DATA --default     # the model's own sampler instead

For each ``--steps K`` (DDIM from pure noise, the sampler as ``rssr upscale`` runs it, back-projection on) it scores
plain interpolation ``E + a (S - E)`` and the high-pass transfer ``E + a HP_sigma(S - E)`` for several sigma (HR
pixels) and gains a, with PSNR, detail and speckle as ``rssr evaluate`` defines them. E and S are each back-projected
before they are mixed (``rssr upscale --texture`` mixes first and back-projects the mix: the same up to how the
Gaussian and the back-projection commute; the shipped option is scored with ``rssr evaluate --texture``).
With ``--default`` the sample is the weights' default sampler's, and a third mix is scored as well:
``S + (a - 1) HP_1(S - E)``, which keeps the sample's coarser part (and its colour) and scales only its finest texture;
and unsharp masking of the default output D, ``D + s HP_sigma(D - up(lr))``, which sharpens the structure it has
instead of adding a sample's texture (session 23: it lies on the texture gain's line of PSNR against detail).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from rssr_cli.degrade import upsample
from rssr_cli.filters import high_pass
from rssr_cli.memory import keep_big_blocks
from rssr_cli.methods.diffusion import patch_origins, sample_tiles
from rssr_cli.metrics import colour_sums, detail_and_colour, psnr
from rssr_cli.patches import load_cache
from rssr_cli.weights import load_weights

GAINS = (0.25, 0.35, 0.5, 0.7, 1.0, 1.3)
SIGMAS = (0.7, 1.0, 1.5, 2.0)
DEFAULT_GAINS = (1.5, 2.0, 2.5, 3.0, 4.0)
UNSHARP = ((0.25, 1.0), (0.5, 1.0), (1.0, 1.0), (1.5, 1.0), (0.5, 0.7), (1.0, 0.7), (1.5, 0.7))  # (gain, sigma)


def _scores(x: torch.Tensor, lr_up: torch.Tensor, hr: torch.Tensor, valid: torch.Tensor) -> dict:
    colour = detail_and_colour(colour_sums(x, hr, lr_up))
    return {"psnr": float(psnr(x, hr, valid).mean()), "detail": colour["detail"], "speckle": colour["speckle"]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("data")
    ap.add_argument("--steps", type=int, action="append", default=[])
    ap.add_argument("--default", action="store_true", help="also the weights' default sampler")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    keep_big_blocks()
    loaded = load_weights(args.weights, device=torch.device("cpu"))
    model = loaded.model.eval().to(memory_format=torch.channels_last)
    cache = load_cache(args.data)
    base = replace(loaded.config.sampler, init="bicubic", start=1.0, texture=None)
    samplers = {"estimate": replace(base, steps=1)} | {f"{k} steps": replace(base, steps=k) for k in args.steps}
    if args.default:
        samplers["default"] = loaded.config.sampler
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in samplers}
    lrs, hrs, valids = [], [], []
    for i in range(0, len(cache), 8):
        idx = np.arange(i, min(len(cache), i + 8))
        lr, hr, valid = (torch.from_numpy(a) for a in cache.batch(idx))
        for name, sampler in samplers.items():
            parts[name].append(sample_tiles(model, lr, patch_origins(idx, hr.shape[-1]), sampler, seed=0)[0])
        lrs.append(lr), hrs.append(hr), valids.append(valid.bool())
    lr, hr, valid = torch.cat(lrs), torch.cat(hrs), torch.cat(valids)
    lr_up = upsample(lr, cache.scale)
    out = {name: torch.cat(p) for name, p in parts.items()}
    estimate = out.pop("estimate")
    table = {"bicubic": _scores(lr_up, lr_up, hr, valid), "estimate": _scores(estimate, lr_up, hr, valid)}
    for name, sample in out.items():
        difference = sample - estimate
        if name == "default":
            table["default"] = _scores(sample, lr_up, hr, valid)
            for a in DEFAULT_GAINS:
                fine = high_pass(difference, 1.0)
                table[f"default, E + {a:g} HP_1(S - E)"] = _scores(estimate + a * fine, lr_up, hr, valid)
                table[f"default, S + {a - 1:g} HP_1(S - E)"] = _scores(sample + (a - 1) * fine, lr_up, hr, valid)
            for s, sigma in UNSHARP:
                sharpened = sample + s * high_pass(sample - lr_up, sigma)
                table[f"default, D + {s:g} HP_{sigma:g}(D - up)"] = _scores(sharpened, lr_up, hr, valid)
            continue
        for a in GAINS:
            table[f"{name}, E + {a:g} (S - E)"] = _scores(estimate + a * difference, lr_up, hr, valid)
        for sigma in SIGMAS:
            fine = high_pass(difference, sigma)
            for a in GAINS[2:]:
                table[f"{name}, E + {a:g} HP_{sigma:g}(S - E)"] = _scores(estimate + a * fine, lr_up, hr, valid)
    for name, row in table.items():
        speckle = "-" if row["speckle"] is None else f"{row['speckle']:.2f}"
        print(f"{name:36s} psnr {row['psnr']:.3f} detail {row['detail']:.3f} speckle {speckle}")
    result = {"data": args.data, "weights": loaded.name, "table": table}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
