"""What ``--resume`` saves: an uninterrupted ``rssr upscale`` against one killed (SIGKILL) once 60 % of its tiles were
finished and then resumed, with the shipped diffusion model.

The scene is real Sentinel-2 pixels: a 96 px wide column of the example scene stacked with its mirror image into a
96 x 754 LR px strip (0.96 x 7.5 km), 14 rows of 2 tiles at the default tile size. A resumed run recomputes, without
writing, the last finished row of tiles of each column chunk (its overlap with the next row is the blending carry):
1 row in 14 here, 1 in 196 on a full Sentinel-2 tile. The outputs of the uninterrupted and the resumed run must be
byte-identical; the script checks it.

    python benchmarks/upscale_resume.py    # prints a table and writes benchmarks/results/upscale_resume.json

``wall_s`` includes the process start; ``cpu_s`` is user + system time of all threads (hardly changed by other jobs on
a shared machine, unlike wall times).
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "boadella_2021-07-16_l2a.tif"
KILL_AT = 0.6  # fraction of the tiles finished when the run is killed


def make_scene(path: Path) -> None:
    with rasterio.open(EXAMPLE) as src:
        column = src.read([2, 3, 4, 8])[:, :, 140:236]
    data = np.maximum(np.concatenate([column, column[:, ::-1]], axis=1), 1).astype(np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=4, dtype="uint16",
                       crs="EPSG:32631", transform=Affine(10, 0, 490000, 0, -10, 4690000), nodata=0) as dst:
        dst.write(data)
        dst.descriptions = ("B02", "B03", "B04", "B08")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str]) -> dict:
    cpu0, t0 = _cpu(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    record = json.loads(proc.stdout)
    return {"wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(_cpu() - cpu0, 2),
            "pipeline_s": record["seconds"], "tiles": record["tiles"], "reused_tiles": record["reused_tiles"]}


def killed(cmd: list[str], out: Path) -> dict:
    """Run ``cmd`` and SIGKILL it once the journal lists KILL_AT of its rows of tiles."""
    journal = out.with_name(f".{out.name}.rssr-journal")
    cpu0, t0 = _cpu(), time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    units = done = 0
    while proc.poll() is None:
        if journal.exists():
            lines = journal.read_text().splitlines()
            units, done = json.loads(lines[0])["units"], len(lines) - 1
            if done >= math.ceil(KILL_AT * units):
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -9 and not out.exists(), "the run finished before it could be killed"
    return {"wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(_cpu() - cpu0, 2),
            "rows_done": done, "rows": units}


def main() -> None:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        scene, full, out = Path(tmp) / "strip.tif", Path(tmp) / "full.tif", Path(tmp) / "resumed.tif"
        make_scene(scene)
        base = ["rssr", "-q", "upscale", str(scene), "--json"]
        uninterrupted = timed([*base, "-o", str(full)])
        kill = killed([*base, "-o", str(out)], out)
        resumed = timed([*base, "-o", str(out), "--resume"])
        identical = full.read_bytes() == out.read_bytes()
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    report = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, {device}",
              "command": "rssr -q upscale STRIP.tif --json -o OUT.tif [--resume]",
              "uninterrupted": uninterrupted, "killed": kill, "resumed": resumed,
              "resumed_over_uninterrupted_wall": round(resumed["wall_s"] / uninterrupted["wall_s"], 2),
              "resumed_over_uninterrupted_cpu": round(resumed["cpu_s"] / uninterrupted["cpu_s"], 2),
              "byte_identical": identical,
              "load_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    print(f"uninterrupted  wall {uninterrupted['wall_s']:7.1f} s  CPU {uninterrupted['cpu_s']:7.1f} s")
    print(f"killed after {kill['rows_done']}/{kill['rows']} rows of tiles: wall {kill['wall_s']:7.1f} s")
    print(f"resumed        wall {resumed['wall_s']:7.1f} s  CPU {resumed['cpu_s']:7.1f} s  "
          f"({resumed['reused_tiles']}/{resumed['tiles']} tiles reused; byte-identical: {identical})")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "upscale_resume.json").write_text(json.dumps(report, indent=2) + "\n")
    if not identical:
        raise SystemExit("the resumed output differs from the uninterrupted one")


if __name__ == "__main__":
    main()
