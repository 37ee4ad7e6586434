"""Check the default model's bars on held-out imagery; prints a Markdown table for weights/README.md.

    rssr evaluate data-work/test.npz --weights weights/rssr-s2-x12.5.safetensors --json > weights/results/test.json
    python scripts/check_bars.py weights/results/test.json data-work/test.npz weights/rssr-s2-x12.5.safetensors

The evaluation JSON gives PSNR, consistency and the high-frequency energy ratio of the three methods. The per-band
means are compared with the LR's here (``rssr evaluate`` reports the bias against the HR), by running the model as
``rssr upscale`` and ``rssr evaluate`` do (:class:`~rssr_cli.methods.diffusion.DiffusionUpsampler`, position-keyed
noise at :func:`~rssr_cli.methods.diffusion.patch_origins`, the weights' sampler defaults) on the same patches.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from rssr_cli.degrade import upsample
from rssr_cli.methods.diffusion import DiffusionUpsampler, patch_origins
from rssr_cli.metrics import hf_ratio, psnr
from rssr_cli.patches import load_cache


def band_means(cache_path: str, weights: str, max_patches: int | None) -> dict[str, dict[str, float]]:
    cache = load_cache(cache_path)
    n = len(cache) if max_patches is None else min(len(cache), max_patches)
    up = DiffusionUpsampler(weights, device="cpu")
    ratios: dict[str, list[np.ndarray]] = {"lr_start": [], "bicubic": []}
    for i in range(0, n, 8):
        idx = np.arange(i, min(n, i + 8))
        lr, hr, _ = cache.batch(idx)
        sr = up.upscale_tiles(lr, patch_origins(idx, hr.shape[-1])).mean
        bic = upsample(torch.from_numpy(lr), cache.scale).numpy()
        m_lr = lr.mean(axis=(2, 3))
        ratios["lr_start"].append(sr.mean(axis=(2, 3)) / m_lr - 1)
        ratios["bicubic"].append(bic.mean(axis=(2, 3)) / m_lr - 1)
    out = {}
    for method, parts in ratios.items():
        r = np.concatenate(parts)
        out[method] = {band: {"mean_abs_pct": float(100 * np.abs(r[:, b]).mean()),
                              "max_abs_pct": float(100 * np.abs(r[:, b]).max()),
                              "overall_pct": float(100 * r[:, b].mean())}
                       for b, band in enumerate(cache.bands)}
    return out


def per_band(cache_path: str, weights: str) -> dict[str, dict[str, dict[str, float]]]:
    """PSNR and high-frequency energy ratio per band (model as ``rssr upscale`` runs it, and bicubic), over the
    patches where the band is valid: on the Satellogic test patches this is the only HR NIR check there is."""
    cache = load_cache(cache_path)
    lr, hr, valid = cache.batch(np.arange(len(cache)))
    up = DiffusionUpsampler(weights, device="cpu")
    sr = torch.from_numpy(up.upscale_tiles(lr, patch_origins(range(len(cache)), hr.shape[-1])).mean)
    bic = upsample(torch.from_numpy(lr), cache.scale)
    hr_t, v = torch.from_numpy(hr), torch.from_numpy(valid)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, x in (("lr_start", sr), ("bicubic", bic)):
        out[name] = {}
        for b, band in enumerate(cache.bands):
            ok = v[:, b]
            if not ok.any():
                continue
            one = torch.ones(int(ok.sum()), 1, dtype=torch.bool)
            sl = slice(b, b + 1)
            out[name][band] = {"psnr": float(psnr(x[ok][:, sl], hr_t[ok][:, sl], one).mean()),
                               "hf_ratio": float(hf_ratio(x[ok][:, sl], hr_t[ok][:, sl], one, cache.scale).mean())}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("evaluation", help="rssr evaluate --json output with lr_start, pure_noise, bicubic")
    ap.add_argument("cache")
    ap.add_argument("weights")
    ap.add_argument("--max-patches", type=int)
    ap.add_argument("--out")
    ap.add_argument("--per-band", metavar="CACHE", help="also print per-band PSNR / HF ratio on this cache")
    args = ap.parse_args(argv)
    ev = json.loads(Path(args.evaluation).read_text())
    m = ev["methods"]
    means = band_means(args.cache, args.weights, args.max_patches)
    ls, pn, bc = m["lr_start"], m.get("pure_noise"), m["bicubic"]
    worst = max(v["max_abs_pct"] for v in means["lr_start"].values())
    bars = [
        ("PSNR >= bicubic", f"{ls['psnr']:.3f} vs {bc['psnr']:.3f} dB", ls["psnr"] >= bc["psnr"],
         f"{ls['psnr'] - bc['psnr']:+.3f} dB"),
        ("HF energy closer to HR's (1.0) than bicubic's", f"{ls['hf_ratio']:.3f} vs {bc['hf_ratio']:.3f}",
         abs(ls["hf_ratio"] - 1) < abs(bc["hf_ratio"] - 1), f"|1-x| {abs(1 - ls['hf_ratio']):.3f} vs "
                                                            f"{abs(1 - bc['hf_ratio']):.3f}"),
        ("per-band means within 1 % of the LR's (every patch)", f"worst patch/band {worst:.3f} %", worst <= 1.0,
         ", ".join(f"{b} {v['max_abs_pct']:.2f} %" for b, v in means["lr_start"].items())),
        ("consistency with the LR <= bicubic's", f"{ls['consistency_l1']:.2e} vs {bc['consistency_l1']:.2e}",
         ls["consistency_l1"] <= bc["consistency_l1"], "L1 reflectance"),
    ]
    if pn is not None:
        bars.append(("LR-start PSNR >= pure-noise 100 steps", f"{ls['psnr']:.3f} vs {pn['psnr']:.3f} dB",
                     ls["psnr"] >= pn["psnr"], f"{ls['psnr'] - pn['psnr']:+.3f} dB"))
        bars.append(("LR-start consistency <= pure-noise's", f"{ls['consistency_l1']:.2e} vs "
                     f"{pn['consistency_l1']:.2e}", ls["consistency_l1"] <= pn["consistency_l1"] * 1.0001 + 1e-7,
                     "L1 reflectance (float rounding level when both are projected)"))
    lines = ["| bar | measured | met | margin |", "|---|---|---|---|"]
    lines += [f"| {name} | {value} | {'yes' if ok else '**no**'} | {margin} |" for name, value, ok, margin in bars]
    print("\n".join(lines))
    bands_table = per_band(args.per_band, args.weights) if args.per_band else None
    if bands_table:
        print(f"\nper band on {args.per_band}:\n\n| band | PSNR model | PSNR bicubic | HF ratio model | HF ratio bicubic |")
        print("|---|---|---|---|---|")
        for band, r in bands_table["lr_start"].items():
            b = bands_table["bicubic"][band]
            print(f"| {band} | {r['psnr']:.2f} | {b['psnr']:.2f} | {r['hf_ratio']:.3f} | {b['hf_ratio']:.3f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"bars": [{"bar": b[0], "value": b[1], "met": bool(b[2]),
                                                        "margin": b[3]} for b in bars], "band_means": means,
                                              "per_band": bands_table}, indent=1))


if __name__ == "__main__":
    main()
