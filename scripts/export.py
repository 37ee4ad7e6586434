"""Write a weights file from a training run, with the sampler defaults chosen on the validation split.

    python scripts/export.py RUN_OUTPUT OUT.safetensors [--steps K --start S --eta E --consistency MODE --init INIT
                             --texture G|none --chroma-sigma PX]
                             [--note key=value ...]

RUN_OUTPUT is ``model.safetensors`` of a finished ``rssr train`` run, or a ``checkpoint.pt`` of a running one (its
EMA weights are exported). The network, its normalisation and the provenance recorded by ``rssr train`` are kept;
only ``config.sampler`` changes, and the provenance gains ``sampler_tuning`` (what was chosen, on which data).

``--context auto`` (the default) measures how much context a tile needs with the chosen sampler settings: tiles of
real Sentinel-2 (the shipped example scene) are run with 2, 4, ... LR pixels of context and compared with the
receptive-field bound; the smallest context from which every larger one keeps the tile's core within
``CONTEXT_TOLERANCE`` of the bound's result is stored as ``sampler.context`` (``rssr upscale`` then computes far less
overlap). ``--context bound`` stores none (the bound is used), ``--context N`` stores N.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch
from rasterio.windows import Window

from rssr_cli.methods.diffusion import DiffusionOptions
from rssr_cli.model import ModelConfig, build_model
from rssr_cli.scene import open_scene
from rssr_cli.weights import load_weights, save_weights

#: How far (reflectance) a tile's core may move when its context is cut from the bound: a tenth of a DN.
CONTEXT_TOLERANCE = 1e-5
#: Real Sentinel-2 windows (LR px: column, row of the core's top-left) of the shipped scene where context is measured:
#: the village, the reservoir shore, forest.
CONTEXT_SCENE = Path(__file__).resolve().parent.parent / "examples" / "boadella_2021-07-16_l2a.tif"
CONTEXT_CORES = ((40, 40), (110, 60), (60, 120))
CONTEXT_CORE_SIZE = 24


def _from_checkpoint(path: Path):
    state = torch.load(path, map_location="cpu", weights_only=False)
    config = ModelConfig.from_dict(state["model_config"])
    model = build_model(config)
    target = model.state_dict()
    model.load_state_dict({k: state["ema"]["shadow"][k].to(target[k].dtype) for k in target})
    provenance = {"trained_by": "rssr train (exported from a checkpoint)", "checkpoint": str(path),
                  "steps": int(state["step"]), "train_config": state["train_config"], "metrics": state.get("metrics"),
                  "weights": "EMA", "torch": torch.__version__}
    return model, config, provenance


def measure_context(weights: Path) -> tuple[int, dict[int, float]]:
    """The smallest context (LR px) from which every larger one keeps each core within CONTEXT_TOLERANCE of the
    receptive-field bound's result, with the weights' default sampler; and the largest deviation at each context."""
    upsampler = DiffusionOptions(weights=str(weights), device="cpu", seed=0).build()
    bound, step = upsampler.context, upsampler.scale.denominator
    n, core_hr = CONTEXT_CORE_SIZE, int(CONTEXT_CORE_SIZE * upsampler.scale)
    deviation: dict[int, float] = {}
    with open_scene([str(CONTEXT_SCENE)], bidx=(2, 3, 4, 8), bands=upsampler.bands) as scene:
        for col, row in CONTEXT_CORES:
            results = {}
            for context in range(step, bound + 1, step):
                lr, _ = scene.read(Window(col - context, row - context, n + 2 * context, n + 2 * context))
                origin = int((row - context) * upsampler.scale), int((col - context) * upsampler.scale)
                out = upsampler.upscale_tiles(lr[None], [origin]).mean[0]
                h = int(context * upsampler.scale)
                results[context] = out[:, h:h + core_hr, h:h + core_hr]
            for context, core in results.items():
                deviation[context] = max(deviation.get(context, 0.0), float(abs(core - results[bound]).max()))
    ok = [c for c in sorted(deviation) if all(deviation[d] <= CONTEXT_TOLERANCE for d in deviation if d >= c)]
    return ok[0], deviation


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source")
    ap.add_argument("out")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--start", type=float)
    ap.add_argument("--eta", type=float)
    ap.add_argument("--consistency", choices=("backproject", "exact", "none"))
    ap.add_argument("--init", choices=("bicubic", "estimate"))
    ap.add_argument("--texture", help="texture gain (SamplerConfig.texture), or 'none' for the sample as drawn")
    ap.add_argument("--chroma-sigma", type=float, help="SamplerConfig.chroma_sigma (HR px; 0 = off)")
    ap.add_argument("--context", default="auto", help="auto (measure), bound (store none) or LR pixels")
    ap.add_argument("--note", action="append", default=[], metavar="KEY=VALUE",
                    help="extra provenance entries (JSON values allowed)")
    args = ap.parse_args(argv)
    src = Path(args.source)
    if src.suffix == ".pt":
        model, config, provenance = _from_checkpoint(src)
    else:
        loaded = load_weights(src)
        model, config, provenance = loaded.model, loaded.config, dict(loaded.provenance)
    changes = {k: getattr(args, k) for k in ("steps", "start", "eta", "consistency", "init", "chroma_sigma")}
    changes = {k: v for k, v in changes.items() if v is not None}
    if args.texture is not None:
        changes["texture"] = None if args.texture == "none" else float(args.texture)
    # A context measured before belongs to the sampler it was measured with: start from the receptive-field bound.
    sampler = dataclasses.replace(config.sampler, context=None, **changes)
    config = config.replace(sampler=sampler)
    fresh = build_model(config)
    fresh.load_state_dict(model.state_dict())
    notes = {}
    for item in args.note:
        key, _, value = item.partition("=")
        try:
            notes[key] = json.loads(value)
        except ValueError:
            notes[key] = value
    provenance["sampler_tuning"] = {"sampler": dataclasses.asdict(sampler), **notes}
    out = save_weights(args.out, fresh, config, provenance)
    if args.context != "bound":
        if args.context == "auto":
            context, deviation = measure_context(out)
            print("context (LR px): largest deviation of a tile's core from the bound's result (reflectance): "
                  + ", ".join(f"{c}: {d:.1e}" for c, d in sorted(deviation.items())), file=sys.stderr)
            provenance["sampler_tuning"]["context_deviation"] = {str(c): d for c, d in sorted(deviation.items())}
        else:
            context = int(args.context)
        sampler = dataclasses.replace(sampler, context=context)
        config = config.replace(sampler=sampler)
        provenance["sampler_tuning"]["sampler"] = dataclasses.asdict(sampler)
        measured = build_model(config)
        measured.load_state_dict(fresh.state_dict())
        out = save_weights(args.out, measured, config, provenance)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB), sampler {sampler}", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
