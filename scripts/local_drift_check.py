"""Band drift without consistency on dark vegetation: a small window as a scene of its own vs inside its context.

    python scripts/local_drift_check.py SCENE [--weights W] [--bidx 2 3 4 8] [--windows 16] [--json OUT]

Why: ``scripts/forest_series_check.py`` upscales 6 x 6 px scenes (the TreeSatAI series has no more), whose tiles are
mostly reflected padding; its dates that move a dark band by more than 1 % could be an effect of that small input.
This takes the darkest-red vegetated windows of a real scene (NIR > 0.2, so not water), on a 6 px grid, and runs the
model with ``--consistency none`` and bicubic twice: on the 6 x 6 window alone, and on the window with 15 px of real
scene around it, scoring only the window's own output pixels. Reported per band: ``mean(model) / mean(bicubic) - 1``
in % over the window, both ways.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import Affine

from rssr_cli.methods import BicubicOptions, DiffusionOptions
from rssr_cli.pipeline import UpscaleOptions, upscale

BANDS = ("B02", "B03", "B04", "B08")
SIZE = 6  # LR px: the forest series' windows
CONTEXT = 15  # LR px of real scene around a window in the second run (more than the model's 10 px tile context)
SCALE = 12.5


def _upscale(lr: np.ndarray, transform: Affine, crs, method, work: Path) -> np.ndarray:
    src, out = work / "lr.tif", work / "out.tif"
    with rasterio.open(src, "w", driver="GTiff", width=lr.shape[2], height=lr.shape[1], count=lr.shape[0],
                       dtype="uint16", crs=crs, transform=transform) as dst:
        dst.write(lr)
    upscale(src, out, UpscaleOptions(dtype="float32", overwrite=True), upsampler=method)
    with rasterio.open(out) as ds:
        return ds.read().astype(np.float64)


def _shift(model: np.ndarray, bicubic: np.ndarray) -> np.ndarray:
    """Per band, % by which the model's mean differs from bicubic's."""
    return (model.reshape(len(model), -1).mean(1) / bicubic.reshape(len(bicubic), -1).mean(1) - 1) * 100


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scene")
    ap.add_argument("--weights")
    ap.add_argument("--bidx", type=int, nargs=4, default=[2, 3, 4, 8], help="bands B02 B03 B04 B08 of SCENE")
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    free = DiffusionOptions(weights=args.weights, device="cpu", consistency="none").build()
    bicubic = BicubicOptions().build()
    with rasterio.open(args.scene) as ds:
        dn, transform, crs = ds.read(args.bidx), ds.transform, ds.crs
    _, height, width = dn.shape
    # Dense vegetation with the darkest red: NIR above 0.2 (DN 2000, L2A before 2022) keeps water out.
    candidates = sorted((float(dn[2, r:r + SIZE, c:c + SIZE].mean()), r, c)
                        for r in range(CONTEXT, height - CONTEXT - SIZE, SIZE)
                        for c in range(CONTEXT, width - CONTEXT - SIZE, SIZE)
                        if dn[3, r:r + SIZE, c:c + SIZE].mean() > 2000)[:args.windows]
    inner = slice(int(CONTEXT * SCALE), int((CONTEXT + SIZE) * SCALE))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for red, r, c in candidates:
            alone = dn[:, r:r + SIZE, c:c + SIZE]
            at = transform * Affine.translation(c, r)
            shift_alone = _shift(_upscale(alone, at, crs, free, work), _upscale(alone, at, crs, bicubic, work))
            around = dn[:, r - CONTEXT:r + SIZE + CONTEXT, c - CONTEXT:c + SIZE + CONTEXT]
            at = transform * Affine.translation(c - CONTEXT, r - CONTEXT)
            model = _upscale(around, at, crs, free, work)[:, inner, inner]
            shift_context = _shift(model, _upscale(around, at, crs, bicubic, work)[:, inner, inner])
            rows.append({"row": r, "col": c, "red": round(red / 10000, 4),
                         "shift_pct_alone": np.round(shift_alone, 3).tolist(),
                         "shift_pct_in_context": np.round(shift_context, 3).tolist()})
            print(f"red {red / 10000:.3f}  alone {np.round(shift_alone, 2)}  in context {np.round(shift_context, 2)}",
                  flush=True)
    alone = np.abs([row["shift_pct_alone"] for row in rows])
    context = np.abs([row["shift_pct_in_context"] for row in rows])
    summary = {
        "scene": args.scene, "weights": free.loaded.name, "bands": BANDS, "windows": len(rows),
        "median_abs_shift_pct": {"alone": np.round(np.median(alone, 0), 3).tolist(),
                                 "in_context": np.round(np.median(context, 0), 3).tolist()},
        "max_abs_shift_pct": {"alone": np.round(alone.max(0), 3).tolist(),
                              "in_context": np.round(context.max(0), 3).tolist()},
        "windows_over_1pct": {"alone": int((alone.max(1) > 1).sum()), "in_context": int((context.max(1) > 1).sum())},
        "rows": rows,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
