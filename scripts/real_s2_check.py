"""The model on real Sentinel-2 (no HR exists): colour of the added detail, band means, and crops to look at.

    python scripts/real_s2_check.py [--weights W] [--steps K --start S --init I --consistency C] \
        [--scene examples/boadella_2021-07-16_l2a.tif ...] [--png-dir weights/results/real_s2] [--json OUT]

For each scene and each named crop (32 x 32 LR px = 320 m: a village, a shore, forest, fields of the Boadella scene),
runs ``rssr upscale`` (Python API, float32 reflectance) with the model and with bicubic, and reports:

- ``colour_ratio``: colour over luminance energy of what the model adds to bicubic (rssr_cli.metrics; real 0.8 m
  imagery's detail: well below 1, colour noise: ~6);
- ``mean_shift_pct``: per band, mean(model) / mean(bicubic) - 1 in %: does the model keep the scene's radiometry
  (run it with ``--consistency none`` to see the network's own colour prior);
- ``detail_energy``: luminance energy (0-2 px band) of the model output over bicubic's.

With ``--png-dir``, writes for each crop of the first scene a PNG of bicubic | model at full 0.8 m resolution (the
central 200 x 200 px), stretched identically, to look at by eye.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import torch

from rssr_cli.methods import BicubicOptions, DiffusionOptions
from rssr_cli.metrics import FINE_BAND, band_energy, colour_ratio, luminance
from rssr_cli.pipeline import UpscaleOptions, upscale
from rssr_cli.preview import write_png

#: Crops of the Boadella scenes as (col, row) of the top-left LR pixel; 32 x 32 LR px each.
CROPS = {"village": (300, 28), "shore": (190, 100), "forest": (20, 200), "fields": (300, 320)}
SIZE = 32
BIDX = (2, 3, 4, 8)


def _bbox(scene: str, col: int, row: int) -> tuple[float, float, float, float]:
    with rasterio.open(scene) as ds:
        t = ds.transform
    x0, y0 = t * (col, row)
    x1, y1 = t * (col + SIZE, row + SIZE)
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _run(scene: str, bbox, upsampler, folder: Path, name: str) -> np.ndarray:
    out = folder / f"{name}.tif"
    upscale(scene, out, UpscaleOptions(bidx=BIDX, bbox=bbox, bbox_crs="scene", dtype="float32", overwrite=True),
            upsampler=upsampler)
    with rasterio.open(out) as ds:
        return ds.read().astype(np.float32)


def _png(bicubic: np.ndarray, model: np.ndarray, path: Path) -> None:
    h, w = bicubic.shape[1:]
    crop = (slice(None), slice(h // 2 - 100, h // 2 + 100), slice(w // 2 - 100, w // 2 + 100))
    pair = [x[[2, 1, 0]][crop] for x in (bicubic, model)]
    lo, hi = np.percentile(pair[0], 1), np.percentile(pair[0], 99.5)
    rgb = [(np.clip((x - lo) / (hi - lo), 0, 1) ** (1 / 1.5) * 255).astype(np.uint8) for x in pair]
    gap = np.full((3, 200, 4), 255, np.uint8)
    image = np.concatenate([rgb[0], gap, rgb[1]], axis=2)
    write_png(image, path)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--start", type=float)
    ap.add_argument("--init")
    ap.add_argument("--consistency")
    ap.add_argument("--texture", type=lambda v: v if v == "none" else float(v), help="gain, or 'none'")
    ap.add_argument("--chroma-sigma", type=float)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scene", nargs="*", default=["examples/boadella_2021-07-16_l2a.tif"])
    ap.add_argument("--png-dir")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = DiffusionOptions(weights=args.weights, device="cpu", steps=args.steps, start=args.start, init=args.init,
                             consistency=args.consistency, texture=args.texture, chroma_sigma=args.chroma_sigma,
                             seed=args.seed).build()
    bicubic = BicubicOptions().build()
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, scene in enumerate(args.scene):
            for crop, (col, row) in CROPS.items():
                bbox = _bbox(scene, col, row)
                bic = _run(scene, bbox, bicubic, Path(tmp), "bicubic")
                sr = _run(scene, bbox, model, Path(tmp), "model")
                sr_t, bic_t = torch.from_numpy(sr[None]), torch.from_numpy(bic[None])
                shift = (sr.reshape(4, -1).mean(1) / bic.reshape(4, -1).mean(1) - 1) * 100
                row_out = {
                    "colour_ratio": colour_ratio(sr_t, bic_t),
                    "mean_shift_pct": dict(zip(("B02", "B03", "B04", "B08"), np.round(shift, 3).tolist())),
                    "detail_energy": float(band_energy(luminance(sr_t), FINE_BAND)
                                           / band_energy(luminance(bic_t), FINE_BAND)),
                }
                results[f"{Path(scene).stem}:{crop}"] = row_out
                print(f"{Path(scene).stem} {crop:8s} colour_ratio {row_out['colour_ratio']:.3f} detail x"
                      f"{row_out['detail_energy']:.2f} mean shift % {row_out['mean_shift_pct']}", flush=True)
                if args.png_dir and k == 0:
                    Path(args.png_dir).mkdir(parents=True, exist_ok=True)
                    _png(bic, sr, Path(args.png_dir) / f"{crop}_bicubic_vs_model.png")
    summary = {"weights": model.loaded.name, "sampler": model.provenance(), "crops": results}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
