"""Network and end-to-end throughput of the shipped model on the current device (made for a lent H100/H200).

    python benchmarks/gpu_throughput.py [--quick]       # writes benchmarks/results/throughput_<device>.json

1. Network: output Mpx/s of one sampler step (the UNet with cached priors) for tile batches of 1000² HR px, eager
   and with ``torch.compile``, in bf16 autocast + channels_last on CUDA (as ``DiffusionUpsampler`` runs it).
2. End to end: ``rssr upscale`` with the default sampler on a synthetic 10 m UTM scene (4 km² on CUDA), Mpx/s of
   written 0.8 m output including reading, blending and the COG.

``--quick`` shrinks everything so the script can be checked on a CPU first. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def network_throughput(device: torch.device, size: int, batches: tuple[int, ...], compile_: bool, repeats: int):
    from rssr_cli.weights import load_weights

    loaded = load_weights(None, device=device)
    model = loaded.model.to(device).eval().to(memory_format=torch.channels_last)
    rows = []
    for batch in batches:
        lr_up = torch.rand(batch, len(loaded.config.bands), size, size, device=device)
        lr_up = lr_up.contiguous(memory_format=torch.channels_last)
        x_t = torch.randn_like(lr_up)
        t = torch.full((batch,), 500, device=device)
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                    else torch.autocast("cpu", enabled=False))
        with torch.no_grad(), autocast:
            priors = model.prior(lr_up)
            step = (torch.compile(lambda x: model(x, t, lr_up, priors=priors)) if compile_
                    else (lambda x: model(x, t, lr_up, priors=priors)))
            for _ in range(2):  # warm-up (and compilation)
                step(x_t)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(repeats):
                step(x_t)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = (time.perf_counter() - t0) / repeats
        rows.append({"batch": batch, "tile_px": size, "compiled": compile_,
                     "mpx_per_s_per_step": round(batch * size * size / seconds / 1e6, 2)})
        print(f"network  batch {batch:3d}  {size}²  compiled={compile_!s:5}  "
              f"{rows[-1]['mpx_per_s_per_step']:9.2f} Mpx/s per step", flush=True)
    return rows


def end_to_end(size_lr: int, device: str) -> dict:
    from upscale_memory import make_scene

    with tempfile.TemporaryDirectory() as tmp:
        scene = Path(tmp) / "scene.tif"
        make_scene(scene, size=size_lr)
        out = Path(tmp) / "sr.tif"
        cmd = ["rssr", "-q", "upscale", str(scene), "-o", str(out), "--device", device, "--json"]
        t0 = time.perf_counter()
        record = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        wall = time.perf_counter() - t0
    _, h, w = record["shape"]
    result = {"command": " ".join(cmd[:-1]), "shape": record["shape"], "pipeline_s": record["seconds"],
              "wall_s": round(wall, 2), "mpx_per_s": round(h * w / 1e6 / record["seconds"], 2)}
    print(f"end to end {w} x {h} px: {record['seconds']:.1f} s, {result['mpx_per_s']} Mpx/s", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check the script on a CPU")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu"
    size, batches, repeats = (256, (1, 2), 2) if args.quick else (1000, (1, 4, 8, 16), 10)
    report = {"device": name, "torch": torch.__version__, "network": [], "end_to_end": None}
    report["network"] += network_throughput(device, size, batches, False, repeats)
    if device.type == "cuda" and not args.quick:
        report["network"] += network_throughput(device, size, batches, True, repeats)
    report["end_to_end"] = end_to_end(40 if args.quick else 200, "cuda" if device.type == "cuda" else "cpu")
    (HERE / "results").mkdir(exist_ok=True)
    tag = "cuda" if device.type == "cuda" else "cpu_quick" if args.quick else "cpu"
    (HERE / "results" / f"throughput_{tag}.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
