"""Held-out patches at full 0.8 m resolution, to look at: HR | bicubic | model (| model with other sampler settings).

    python scripts/heldout_crops.py data-work/test.npz:12 data-work/test-banepa_south.npz:3 ... \
        --out weights/results/v2/heldout_hr_bicubic_model.png [--also "steps=8,start=0.5,init=estimate"]

Each PATCH is CACHE:INDEX of a patch cache from ``rssr prepare`` (the test splits: never trained or tuned on). The
model runs through the same sampler as ``rssr upscale`` (seed 0, patch i at HR origin (0, i * width)). Every row is
stretched identically in all columns (2nd-98th percentile of the HR's true-colour bands), so differences in colour and
contrast are the methods', not the display's.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from rssr_cli.methods import BicubicOptions
from rssr_cli.methods.diffusion import DiffusionOptions, patch_origins
from rssr_cli.patches import load_cache
from rssr_cli.preview import write_png
from rssr_cli.weights import default_weights_path, load_weights

GAP = 4  # white pixels between panels


def _settings(text: str) -> dict:
    """``steps=30,start=1,texture=1.15,chroma_sigma=2,init=bicubic`` -> DiffusionOptions fields (``texture=none``:
    the sample as drawn)."""
    casts = {"steps": int, "start": float, "eta": float, "init": str, "consistency": str, "chroma_sigma": float,
             "texture": lambda v: v if v == "none" else float(v)}
    pairs = (item.split("=", 1) for item in text.split(",") if item)
    return {k: casts[k](v) for k, v in pairs}


def _rgb(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(C, H, W) reflectance, bands B02 B03 B04 first -> (H, W, 3) uint8 with the given per-band stretch."""
    rgb = np.stack([x[2], x[1], x[0]], axis=-1)
    return (np.clip((rgb - low) / (high - low), 0, 1) * 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("patches", nargs="+", metavar="CACHE:INDEX")
    parser.add_argument("--out", required=True)
    parser.add_argument("--weights", help="default: the shipped model")
    parser.add_argument("--also", action="append", default=[], metavar="K=V,...",
                        help="one more model column with these sampler settings (repeatable)")
    args = parser.parse_args()

    loaded = load_weights(args.weights or default_weights_path(), device="cpu")
    base = DiffusionOptions(weights=loaded, device="cpu", seed=0)
    models = [base.build()] + [replace(base, **_settings(s)).build() for s in args.also]
    rows = []
    for spec in args.patches:
        path, index = spec.rsplit(":", 1)
        cache = load_cache(path)
        idx = np.array([int(index)])
        lr, hr, _ = cache.batch(idx)
        origins = patch_origins(idx, hr.shape[-1])
        bicubic = BicubicOptions(scale=cache.scale, bands=cache.bands).build().upscale_tiles(lr, origins).mean[0]
        outputs = [hr[0], bicubic] + [m.upscale_tiles(lr, origins).mean[0] for m in models]
        rgb_hr = np.stack([hr[0, 2], hr[0, 1], hr[0, 0]], axis=-1)
        low, high = np.percentile(rgb_hr, 2, axis=(0, 1)), np.percentile(rgb_hr, 98, axis=(0, 1))
        panels = [_rgb(o, low, high) for o in outputs]
        gap = np.full((panels[0].shape[0], GAP, 3), 255, np.uint8)
        rows.append(np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1))
    gap = np.full((GAP, rows[0].shape[1], 3), 255, np.uint8)
    sheet = np.concatenate([r for row in rows for r in (row, gap)][:-1], axis=0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_png(sheet.transpose(2, 0, 1), args.out)
    print(f"wrote {args.out} ({sheet.shape[1]} x {sheet.shape[0]} px): HR | bicubic | model"
          + "".join(f" | {s}" for s in args.also))


if __name__ == "__main__":
    main()
