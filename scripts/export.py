"""Write a weights file from a training run, with the sampler defaults chosen on the validation split.

    python scripts/export.py RUN_OUTPUT OUT.safetensors [--steps K --start S --eta E --consistency MODE --init INIT]
                             [--note key=value ...]

RUN_OUTPUT is ``model.safetensors`` of a finished ``rssr train`` run, or a ``checkpoint.pt`` of a running one (its
EMA weights are exported). The network, its normalisation and the provenance recorded by ``rssr train`` are kept;
only ``config.sampler`` changes, and the provenance gains ``sampler_tuning`` (what was chosen, on which data).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from rssr_cli.model import ModelConfig, build_model
from rssr_cli.weights import load_weights, save_weights


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


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source")
    ap.add_argument("out")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--start", type=float)
    ap.add_argument("--eta", type=float)
    ap.add_argument("--consistency", choices=("backproject", "exact", "none"))
    ap.add_argument("--init", choices=("bicubic", "estimate"))
    ap.add_argument("--note", action="append", default=[], metavar="KEY=VALUE",
                    help="extra provenance entries (JSON values allowed)")
    args = ap.parse_args(argv)
    src = Path(args.source)
    if src.suffix == ".pt":
        model, config, provenance = _from_checkpoint(src)
    else:
        loaded = load_weights(src)
        model, config, provenance = loaded.model, loaded.config, dict(loaded.provenance)
    changes = {k: getattr(args, k) for k in ("steps", "start", "eta", "consistency", "init")}
    sampler = dataclasses.replace(config.sampler, **{k: v for k, v in changes.items() if v is not None})
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
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB), sampler {sampler}", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
