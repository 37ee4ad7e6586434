"""Compare the synthetic LR of the training cache with real Sentinel-2 L2A (value ranges, noise, texture).

    python scripts/lr_statistics.py data-work/train.npz ../shared/data/s2/boadella-l2a > weights/results/lr_statistics.md

Per band, over 16 x 16 px (160 m) patches: mean, standard deviation, 1/50/99th percentiles (reflectance), gradient
energy (mean |difference| of neighbouring 10 m pixels: texture) and a noise estimate (1.4826 x MAD of the
4-neighbour Laplacian / sqrt(20), which is sigma for white noise; texture inflates it, so it is an upper bound).
Synthetic LR: one draw of the S2-like degradation stored in the cache (training draws a fresh one every step).
"""

from __future__ import annotations

import glob
import sys
import warnings

import numpy as np
import rasterio

from rssr_cli.patches import load_cache

BANDS = ("B02", "B03", "B04", "B08")


def tiles(a: np.ndarray, p: int = 16) -> np.ndarray:
    c, h, w = a.shape
    h, w = h // p * p, w // p * p
    return a[:, :h, :w].reshape(c, h // p, p, w // p, p).transpose(1, 3, 0, 2, 4).reshape(-1, c, p, p)


def rows(x: np.ndarray) -> list[str]:
    out = []
    for b, band in enumerate(BANDS):
        v = x[:, b]
        grad = (np.abs(np.diff(v, axis=-1)).mean() + np.abs(np.diff(v, axis=-2)).mean()) / 2
        lap = 4 * v[:, 1:-1, 1:-1] - v[:, :-2, 1:-1] - v[:, 2:, 1:-1] - v[:, 1:-1, :-2] - v[:, 1:-1, 2:]
        noise = 1.4826 * np.median(np.abs(lap)) / np.sqrt(20)
        p1, p50, p99 = np.percentile(v, [1, 50, 99])
        out.append(f"{band} | {v.mean():.4f} | {v.std():.4f} | {p1:.3f} / {p50:.3f} / {p99:.3f} | {grad:.4f} | "
                   f"{noise:.4f}")
    return out


def main() -> None:
    cache_path, s2_dir = sys.argv[1], sys.argv[2]
    cache = load_cache(cache_path)
    lr, _, valid = cache.batch(np.arange(len(cache)))
    swiss = ~valid[:, 3]
    warnings.simplefilter("ignore")
    real = []
    for f in sorted(glob.glob(f"{s2_dir}/*.tif")):
        with rasterio.open(f) as ds:
            real.append(tiles(ds.read([2, 3, 4, 8]).astype(np.float32) / 1e4))
    real_all = np.concatenate(real)
    print("| data | band | mean | std | p1 / p50 / p99 | gradient | noise |")
    print("|---|---|---|---|---|---|---|")
    for name, x in ((f"synthetic LR, SWISSIMAGE train ({int(swiss.sum())} patches; B08 = stand-in)", lr[swiss]),
                    (f"synthetic LR, Satellogic train ({int((~swiss).sum())} patches)", lr[~swiss]),
                    (f"real S2 L2A Boadella, 10 dates ({len(real_all)} patches)", real_all)):
        for r in rows(x):
            print(f"| {name} | {r} |")


if __name__ == "__main__":
    main()
