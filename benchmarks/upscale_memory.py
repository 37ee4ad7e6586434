"""Wall time, CPU time and peak RSS of ``rssr upscale --method bicubic`` for a 1 km² and a 25 km² area of interest.

A synthetic 10 m UTM scene (6 x 6 km, 4 bands uint16 with texture) is written to a temporary folder; each AOI runs in a
fresh ``rssr`` process whose peak RSS and CPU time (user + system, all threads) are read from
``getrusage(RUSAGE_CHILDREN)`` of a dedicated parent process. CPU time hardly changes when other jobs share the
machine; wall time does.

    python benchmarks/upscale_memory.py            # prints a table and writes benchmarks/results/upscale_memory.json
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

HERE = Path(__file__).resolve().parent
AREAS_KM2 = (1, 25)


def make_scene(path: Path, size: int = 600) -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, (4, size // 4, size // 4)).repeat(4, 1).repeat(4, 2)
    data = (1500 + 600 * base + 200 * rng.normal(0, 1, (4, size, size))).clip(1, 10000).astype(np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=4, dtype="uint16",
                       crs="EPSG:32632", transform=Affine(10, 0, 500000, 0, -10, 5200000), nodata=0,
                       tiled=True, compress="deflate") as dst:
        dst.write(data)
        dst.descriptions = ("B02", "B03", "B04", "B08")


def measure_one(scene: Path, km2: int, out: Path) -> dict:
    """Runs in its own process: the CLI as a child; returns wall time and the child's peak RSS."""
    side = int(round(1000 * km2 ** 0.5))
    bbox = f"500000,{5200000 - side},{500000 + side},5200000"
    cmd = ["rssr", "-q", "upscale", str(scene), "-o", str(out), "--method", "bicubic", "--bbox", bbox,
           "--bbox-crs", "scene", "--json", "--overwrite"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - t0
    record = json.loads(proc.stdout)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"area_km2": km2, "shape": record["shape"], "wall_s": round(seconds, 2),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "command": " ".join(cmd)}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        print(json.dumps(measure_one(Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[2]).with_suffix(".sr.tif"))))
        return
    results = []
    load_before = os.getloadavg()[0]  # other jobs on the machine inflate wall times
    with tempfile.TemporaryDirectory() as tmp:
        scene = Path(tmp) / "synthetic_s2.tif"
        make_scene(scene)
        for km2 in AREAS_KM2:
            proc = subprocess.run([sys.executable, __file__, "--one", str(scene), str(km2)], capture_output=True,
                                  text=True, check=True)
            results.append(json.loads(proc.stdout))
    ratio = results[1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
    report = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
              "python": platform.python_version(), "results": results, "rss_ratio_25_to_1": round(ratio, 3),
              "load_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    for r in results:
        print(f"{r['area_km2']:>3} km²  {r['shape'][2]:>5} x {r['shape'][1]:<5} px  {r['wall_s']:>7.2f} s  "
              f"CPU {r['cpu_s']:>7.2f} s  peak RSS {r['peak_rss_mb']:>7.1f} MB")
    print(f"peak RSS ratio 25 km² / 1 km²: {ratio:.2f}")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "upscale_memory.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
