"""Score rssr with the real opensr-test benchmark (Aybar et al. 2024) on a patch cache from ``rssr prepare``.

opensr-test needs an integer scale, so SR and HR (0.8 m, x12.5) are area-resampled to 1.0 m (x10 of the 10 m LR)
before they reach it; the figures are then the benchmark's own: consistency with the LR (reflectance L1, spectral
angle, spatial misalignment), synthesis (L1 of the high frequencies added), and the correctness split into
improvement / omission / hallucination (``nd`` distance, the benchmark's defaults otherwise).

opensr-test is an optional extra (``pip install -e '.[opensr]'``). It imports torchvision, which must be built for the
installed torch: with the CPU wheel of torch 2.13 this project pins for CI, PyPI's torchvision fails to import, so
use a separate environment, e.g. (x86_64, pip on Python 3.11; several GB)::

    python -m venv .venv-opensr
    .venv-opensr/bin/pip install torch==2.14.1 torchvision==0.29.1 -e '.[opensr]'
    .venv-opensr/bin/python scripts/opensr_benchmark.py data-work/test.npz --max-patches 90

Only distance metrics that need no downloaded network are used (no LPIPS/CLIP), so it runs offline.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rssr_cli.methods import BicubicOptions
from rssr_cli.methods.diffusion import DiffusionOptions, patch_origins
from rssr_cli.patches import load_cache
from rssr_cli.weights import default_weights_path, load_weights

#: The benchmark's figures, named as in its results table.
FIELDS = ("reflectance", "spectral", "spatial", "synthesis", "im_metric", "om_metric", "ha_metric")


def to_metres(x: np.ndarray, size: int) -> torch.Tensor:
    """(C, H, W) at 0.8 m -> (C, size, size) by area averaging (adaptive pooling: the exact box filter of 1.25 px)."""
    return F.adaptive_avg_pool2d(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None], size)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="patch cache (.npz) from rssr prepare")
    parser.add_argument("--weights", help="model weights (default: the shipped model)")
    parser.add_argument("--max-patches", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="sampler steps (default: the model's)")
    parser.add_argument("--start", type=float, help="sampler start (default: the model's)")
    parser.add_argument("--init", choices=("bicubic", "estimate"), help="sampler init (default: the model's)")
    parser.add_argument("--texture", type=lambda v: v if v == "none" else float(v),
                        help="texture gain, or 'none' (default: the model's)")
    parser.add_argument("--chroma-sigma", type=float, help="chroma smoothing, HR px (default: the model's)")
    parser.add_argument("--json", dest="json_out", help="also write the results here")
    args = parser.parse_args()

    import opensr_test

    cache = load_cache(args.data)
    n = len(cache) if args.max_patches is None else min(len(cache), args.max_patches)
    loaded = load_weights(args.weights or default_weights_path(), device=torch.device("cpu"))
    model = DiffusionOptions(weights=loaded, device="cpu", seed=args.seed)
    overrides = {"steps": args.steps, "start": args.start, "init": args.init, "texture": args.texture,
                 "chroma_sigma": args.chroma_sigma}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    model = replace(model, **overrides)
    methods = {"model": model.build(), "bicubic": BicubicOptions(scale=cache.scale, bands=cache.bands).build()}
    # rgb_bands: red, green, blue among (B02, B03, B04, ...), for the spatial alignment and the correctness.
    # border_mask: one LR pixel (the benchmark crops LR and HR borders alike, so a multiple of the scale, 10).
    metrics = opensr_test.Metrics(device="cpu", rgb_bands=[2, 1, 0], border_mask=10)
    scores: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    t0 = time.perf_counter()
    for i in range(n):
        lr, hr, valid = cache.batch(np.array([i]))
        bands = np.flatnonzero(valid[0])  # the benchmark has no nodata mask: the bands the patch has
        if not {0, 1, 2} <= set(bands.tolist()):
            continue
        size = lr.shape[-1] * 10
        origins = patch_origins(np.array([i]), hr.shape[-1])
        for name, upsampler in methods.items():
            sr = upsampler.upscale_tiles(lr, origins).mean[0]
            result = metrics.compute(lr=torch.from_numpy(lr[0, bands]), sr=to_metres(sr[bands], size),
                                     hr=to_metres(hr[0, bands], size))
            scores[name].append({k: float(result[k]) for k in FIELDS})
    summary = {name: {k: float(np.nanmean([s[k] for s in rows])) for k in FIELDS} | {"patches": len(rows)}
               for name, rows in scores.items()}
    report = {"data": str(args.data), "weights": loaded.name, "sampler": loaded.config.sampler.__dict__ | overrides,
              "opensr_test": opensr_test.__version__, "seconds": round(time.perf_counter() - t0, 1),
              "results": summary}
    print(json.dumps(report, indent=1, default=str))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
