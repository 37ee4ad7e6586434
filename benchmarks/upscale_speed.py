"""Wall time of ``rssr upscale`` on about 1 km² of the shipped example scene, for each method (CPU or CUDA).

``pipeline_s`` is the time inside ``rssr_cli.upscale`` (the JSON record's ``seconds``), ``wall_s`` adds the process
start and imports, ``cpu_s`` is the process's CPU time (user + system, all threads; hardly changed by other jobs on the
machine, unlike the wall times).

    python benchmarks/upscale_speed.py      # prints a table and writes benchmarks/results/upscale_speed.json
    python benchmarks/upscale_speed.py --compare "--weights old.safetensors --tile-size 64"   # and another setup

The AOI is a 1 km x 1 km box in the scene's UTM zone (31N) around the reservoir; output 1250 x 1250-ish px at 0.8 m.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCENE = HERE.parent / "examples" / "boadella_2021-07-16_l2a.tif"
BBOX = "2.812,42.343,2.824,42.352"  # about 1.0 km x 1.0 km (lon/lat)


def run(method: str, out: Path, extra: str = "") -> dict:
    cmd = ["rssr", "-q", "upscale", str(SCENE), "-b", "2,3,4,8", "--bbox", BBOX, "--method", method, "-o", str(out),
           "--json", "--overwrite"] + shlex.split(extra)
    cpu0, t0 = _children_cpu(), time.perf_counter()
    record = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    _, h, w = record["shape"]
    name = f"{method} {extra}" if extra else method
    return {"method": name, "shape": record["shape"], "pipeline_s": record["seconds"], "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2), "mpx_per_s": round(h * w / 1e6 / record["seconds"], 3), "command": " ".join(cmd)}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", action="append", default=[], metavar="ARGS",
                        help="also time the diffusion method with these extra rssr upscale arguments (repeatable), "
                             "e.g. a previous model with its tile size")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]  # other jobs on the machine inflate wall times
    with tempfile.TemporaryDirectory() as tmp:
        results = [run(m, Path(tmp) / f"{m}.tif") for m in ("bicubic", "diffusion")]
        results += [run("diffusion", Path(tmp) / f"c{i}.tif", extra) for i, extra in enumerate(args.compare)]
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    report = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, {device}",
              "torch_threads": torch.get_num_threads(), "results": results,
              "load_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    for r in results:
        print(f"{r['method']:<60} {r['shape'][2]} x {r['shape'][1]} px  pipeline {r['pipeline_s']:6.2f} s  "
              f"wall {r['wall_s']:6.2f} s  CPU {r['cpu_s']:6.2f} s  {r['mpx_per_s']:.3f} Mpx/s")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "upscale_speed.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
