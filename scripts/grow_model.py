"""Grow a trained model by residual blocks that start as the identity, so fine-tuning adds capacity without first
losing what the model has learnt (Net2Net's function-preserving idea, in its simplest form).

    python scripts/grow_model.py WEIGHTS OUT --blocks 2 2 2

``--blocks`` gives the new number of UNet blocks per level (each at least the current one). New blocks are appended
after a level's existing blocks, on the way down and on the way up, with the project's residual-block initialisation:
their last convolution and their time and prior modulation start at zero, so each new block returns its input and
the grown network computes exactly the function of the one it grew from (checked here on random input before
writing). The deepest level is the cheap place to grow: at ×4 unshuffle and 3 levels it runs at 1/16 of the HR grid
per side, so a block of width 192 there costs about 5.5 kFLOP per output pixel; a block at level 0 (1/4 per side,
width 64) costs about 10 (measured: 2,2,1 → 3,2,1 adds 19.5 per sampler step).

Fine-tune the grown file with ``[train] init = OUT`` (weights/train-v2.10.toml). Issue 12, session 23.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from rssr_cli.model import build_model, flops_per_pixel
from rssr_cli.weights import load_weights, save_weights


def grow(weights: str, out: str, blocks: tuple[int, ...]) -> None:
    loaded = load_weights(weights)
    old = loaded.config
    if len(blocks) != len(old.arch.blocks) or any(b < a for a, b in zip(old.arch.blocks, blocks)):
        raise SystemExit(f"--blocks needs {len(old.arch.blocks)} counts, each >= the current {old.arch.blocks}")
    config = old.replace(arch=dataclasses.replace(old.arch, blocks=blocks))
    grown = build_model(config).eval()
    state = grown.state_dict()
    for name, tensor in loaded.model.state_dict().items():
        if state[name].shape != tensor.shape:  # same names, same shapes: new blocks only add keys
            raise SystemExit(f"{name}: shape {tuple(tensor.shape)} cannot grow into {tuple(state[name].shape)}")
        state[name] = tensor
    grown.load_state_dict(state, strict=True)

    torch.manual_seed(0)
    size = 2 * config.arch.downsampling
    x, lr_up = torch.randn(2, config.channels, size, size), torch.randn(2, config.channels, size, size)
    t = torch.tensor([700.0, 999.0])
    with torch.no_grad():
        gap = (grown(x, t, lr_up) - loaded.model(x, t, lr_up)).abs().max().item()
    if gap > 1e-5:
        raise SystemExit(f"the grown network differs from the original by {gap:.2e}: the new blocks are not identities")

    params = sum(p.numel() for p in grown.parameters())
    step = flops_per_pixel(config, include_prior=False) / 1e3
    provenance = {"grown_from": loaded.name, "blocks": list(blocks), "previous_blocks": list(old.arch.blocks),
                  "previous_provenance": loaded.provenance}
    save_weights(out, grown, config, provenance)
    print(f"{out}: blocks {old.arch.blocks} -> {blocks}, {params:,} parameters, {step:.1f} kFLOP/px per sampler step, "
          f"{flops_per_pixel(config) / 1e3:.1f} with the prior; max output difference {gap:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights")
    parser.add_argument("out")
    parser.add_argument("--blocks", type=int, nargs="+", required=True, help="new UNet blocks per level")
    args = parser.parse_args()
    grow(args.weights, args.out, tuple(args.blocks))


if __name__ == "__main__":
    main()
