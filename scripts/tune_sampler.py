"""Choose the default LR-start sampler settings on the VALIDATION split (never the test set).

    python scripts/tune_sampler.py WEIGHTS data-work/val.npz [--out weights/results/sampler_tuning.json]

Scores a grid of (consistency mode, init, steps, start, texture gain, chroma sigma) with
:func:`rssr_cli.evaluate.evaluate` (the same code as ``rssr evaluate`` and ``rssr upscale``: LR-start DDIM, eta 0 unless
``--eta``) plus bicubic, and prints one line per setting. The rule that picks the default is ``RULE`` below (see
weights/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rssr_cli.evaluate import evaluate

GRID_STEPS = (1, 2, 4, 8)
GRID_START = (0.1, 0.2, 0.3, 0.6, 1.0)
MAX_SPECKLE = 1.5
#: How much of the best score (psnr_gain + 10 * ssim_gain, dB-like) the rule gives up for detail: invisible in the
#: image, while a deterministic few-step sampler otherwise always prefers the blurriest, posterior-mean-like setting.
SCORE_TOLERANCE = 0.1
#: The most network evaluations a default may take: v2.1's default (issue 12: no slower than before, aim for half).
MAX_EVALUATIONS = 3
RULE = ("a consistency step on (without one the model shifted band means by up to 11 % on real Sentinel-2, see "
        "weights/README.md), an LR start (start < 1: t0 < T, issue 12; from noise is scored for comparison) and at "
        f"most {MAX_EVALUATIONS} network evaluations (the cost of the previous default); "
        "among settings with validation PSNR >= bicubic's, consistency L1 <= bicubic's, "
        f"speckle <= {MAX_SPECKLE} and detail above bicubic's: the one with the most detail among those whose "
        f"psnr_gain + 10 * ssim_gain is within {SCORE_TOLERANCE} of the best, ties to fewer network evaluations, then "
        "to less speckle; if none qualifies, the best PSNR")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("data")
    ap.add_argument("--out")
    ap.add_argument("--steps", type=int, nargs="*", default=list(GRID_STEPS))
    ap.add_argument("--start", type=float, nargs="*", default=list(GRID_START))
    ap.add_argument("--max-patches", type=int)
    ap.add_argument("--consistency", nargs="*", default=["backproject"], choices=("backproject", "exact", "none"),
                    help="modes to score; 'none' only documents what the consistency step does (the rule needs one)")
    ap.add_argument("--init", nargs="*", default=["bicubic"], choices=("bicubic", "estimate"))
    ap.add_argument("--eta", type=float, nargs="*", default=[0.0], help="sampler stochasticity values to score")
    ap.add_argument("--texture", nargs="*", default=["none"],
                    help="texture gains to score ('none': the sample as drawn; see SamplerConfig.texture)")
    ap.add_argument("--chroma-sigma", type=float, nargs="*", default=[0.0],
                    help="chroma smoothing sigmas to score (HR px; 0 = off; see SamplerConfig.chroma_sigma)")
    args = ap.parse_args(argv)
    textures = [t if t == "none" else float(t) for t in args.texture]
    base = evaluate(args.data, None, methods=("bicubic",), max_patches=args.max_patches).methods["bicubic"]
    rows = []
    print(f"bicubic: psnr {base['psnr']:.3f} ssim {base['ssim']:.4f} detail {base['detail']:.4f} cons "
          f"{base['consistency_l1']:.6f}", file=sys.stderr)
    grid = [(c, i, k, s, e, g, cs) for c in args.consistency for i in args.init for k in args.steps for s in args.start
            for e in args.eta for g in textures for cs in args.chroma_sigma]
    for consistency, init, steps, start, eta, texture, chroma_sigma in grid:
        t = time.perf_counter()
        r = evaluate(args.data, args.weights, methods=("lr_start",), steps=steps, start=start, eta=eta, device="cpu",
                     consistency=consistency, init=init, texture=texture, chroma_sigma=chroma_sigma,
                     max_patches=args.max_patches).methods["lr_start"]
        row = {"consistency": consistency, "init": init, "steps": steps, "start": start, "eta": eta,
               "texture": None if texture == "none" else texture, "chroma_sigma": chroma_sigma,
               "evaluations": steps + (init == "estimate" or texture != "none"),
               **{k: r[k] for k in ("psnr", "ssim", "hf_ratio", "detail", "speckle", "chroma_excess",
                                    "consistency_l1")},
               "psnr_gain": r["psnr"] - base["psnr"], "ssim_gain": r["ssim"] - base["ssim"],
               "seconds": time.perf_counter() - t}
        rows.append(row)
        print(f"{consistency:11s} {init:8s} steps {steps:2d} start {start:.2f} eta {eta:.1f} texture "
              f"{'-' if texture == 'none' else f'{texture:g}':>4s} chroma {chroma_sigma:g}: psnr {r['psnr']:.3f} "
              f"({row['psnr_gain']:+.3f}) ssim {r['ssim']:.4f} ({row['ssim_gain']:+.4f}) detail {r['detail']:.4f} "
              f"speckle {r['speckle'] or float('nan'):.2f} cons {r['consistency_l1']:.6f} [{row['seconds']:.0f} s]",
              file=sys.stderr)
    ok = [r for r in rows if r["consistency"] != "none" and r["start"] < 1.0 and r["evaluations"] <= MAX_EVALUATIONS
          and r["psnr_gain"] >= 0
          and r["consistency_l1"] <= base["consistency_l1"] and (r["speckle"] or 0) <= MAX_SPECKLE
          and r["detail"] > base["detail"]]
    pick = _choose(ok) if ok else max(rows, key=lambda r: r["psnr_gain"])
    result = {"data": args.data, "weights": args.weights,
              "bicubic": {k: base[k] for k in ("psnr", "ssim", "hf_ratio", "detail", "consistency_l1")},
              "rule": RULE, "grid": rows,
              "chosen": {k: pick[k] for k in ("steps", "start", "eta", "consistency", "init", "texture",
                                             "chroma_sigma")},
              "rule_met": bool(ok)}
    print(f"chosen: {result['chosen']}", file=sys.stderr)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


def _choose(rows: list[dict]) -> dict:
    """The rule's pick among the qualifying settings: the most detail within SCORE_TOLERANCE of the best score (ties:
    fewer evaluations, then less speckle)."""
    def score(r: dict) -> float:
        return r["psnr_gain"] + 10 * r["ssim_gain"]

    best = max(score(r) for r in rows)
    near = [r for r in rows if score(r) >= best - SCORE_TOLERANCE]
    return max(near, key=lambda r: (round(r["detail"], 3), -r["evaluations"], -round(r["speckle"] or 0, 2)))


if __name__ == "__main__":
    main()
