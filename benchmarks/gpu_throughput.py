"""Throughput of the shipped model on one device and across processes (made for a lent H100/H200; ``--quick`` on CPUs).

    python benchmarks/gpu_throughput.py                  # one GPU: writes benchmarks/results/throughput_cuda.json
    python benchmarks/gpu_throughput.py --quick          # a small check on the CPU: throughput_cpu_quick.json
    python benchmarks/gpu_throughput.py --out "$OUT"     # results (and a log) into another folder

It reports, for the default tiles (``--tile-size`` 128 LR px plus the model's context):

1. ``network``: Mpx/s of one network evaluation (the UNet with cached priors: what a sampler step costs), input
   pixels of the tiles per second, in bf16 autocast + channels_last on CUDA as ``DiffusionUpsampler`` runs it, for a
   few batch sizes (and compiled, with ``--compile``);
2. ``model_only``: the sampler as the pipeline runs it (prior, the steps, consistency) over the tiles of the AOI, at the
   batch size the pipeline fits to the free device memory, without reading, blending or writing: output Mpx/s;
3. ``end_to_end``: ``rssr_cli.upscale`` on a synthetic 10 m UTM scene for a 10 km x 10 km AOI (12 500 x 12 500 px of
   4-band 0.8 m output; 0.32 x 1.52 km in tiles of 32 LR px with ``--quick``), warm (model loaded, kernels chosen), split into the
   stream (read, infer, blend, write the raw scratch) and the COG (rio-cogeo); Mpx/s of output and the ratio to 2.;
   a full 10 980 x 10 980 px Sentinel-2 tile (137 250 px square at 0.8 m) extrapolated from it;
4. ``scaling``: the same AOI with ``torchrun --nproc-per-node N`` for each N of ``--nproc`` (default 1 and the number
   of GPUs, or 1 and 2 without any; processes beyond the GPUs share them), wall time, the pipeline time rank 0
   reports, speed-up over N = 1, and whether the COGs are pixel-identical (they must be: a fixed ``--batch-size``).

Targets on an H100/H200: end to end >= 25 Mpx/s (the 10 km AOI in <= 6.5 s), >= 60 % of model-only throughput, a full
tile to a COG in <= 15 min. Nothing is downloaded; the scene is synthetic (textured noise around reflectance 0.15).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

FULL_TILE_LR = 10980  # a Sentinel-2 tile at 10 m
MARGIN_LR = 64  # scene pixels around the AOI: the tiles at its edge read real context


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"host": platform.node(), "cpu": cpu, "cpus": os.cpu_count(), "gpus": gpus or "none",
            "torch": torch.__version__, "load_1min": round(os.getloadavg()[0], 2)}


def sig(x: float, digits: int = 3) -> float:
    """``x`` to ``digits`` significant digits (CPU figures are small, GPU ones large)."""
    return float(f"{x:.{digits}g}")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def network(upsampler, tile_hr: int, batches: tuple[int, ...], repeats: int, compile_: bool) -> list[dict]:
    """Mpx/s of one network evaluation on tiles of ``tile_hr``² HR px."""
    model, device = upsampler.model, upsampler.device
    net = torch.compile(model) if compile_ else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    rows = []
    for batch in batches:
        lr_up = torch.rand(batch, len(upsampler.bands), tile_hr, tile_hr, device=device)
        lr_up = lr_up.contiguous(memory_format=torch.channels_last)
        x_t, t = torch.randn_like(lr_up), torch.full((batch,), 500, device=device)
        origins = [(0, i * tile_hr) for i in range(batch)]
        with torch.no_grad(), autocast:
            priors = model.prior(lr_up, origins)
            for _ in range(2):  # warm-up (and compilation)
                net(x_t, t, lr_up, priors=priors, origins=origins)
            _synchronize(device)
            t0 = time.perf_counter()
            for _ in range(repeats):
                net(x_t, t, lr_up, priors=priors, origins=origins)
            _synchronize(device)
            seconds = (time.perf_counter() - t0) / repeats
        rows.append({"batch": batch, "tile_px": tile_hr, "compiled": compile_,
                     "mpx_per_s_per_evaluation": sig(batch * tile_hr ** 2 / seconds / 1e6)})
        print(f"network     batch {batch:3d}  {tile_hr}² px  compiled={compile_!s:5}  "
              f"{rows[-1]['mpx_per_s_per_evaluation']:9.2f} Mpx/s per evaluation", flush=True)
        del lr_up, x_t, priors
    return rows


def model_only(upsampler, plan, tile_lr: tuple[int, int], repeats: int) -> dict:
    """The sampler over the AOI's tiles, as the pipeline batches them, without I/O: output Mpx/s."""
    from rssr_cli.methods.diffusion import sample_tiles

    tiles = plan.tiles
    batch = upsampler.batch_size
    lr = torch.rand(batch, len(upsampler.bands), *tile_lr, device=upsampler.device) * 0.3
    origins = [(0, i * 4096) for i in range(batch)]
    sample = lambda: sample_tiles(upsampler.net, lr, origins, upsampler.sampler, seed=0,  # noqa: E731
                                  samples=upsampler.samples, schedule=upsampler.schedule)
    sample()
    _synchronize(upsampler.device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        sample()
    _synchronize(upsampler.device)
    per_tile = (time.perf_counter() - t0) / repeats / batch
    mpx = plan.hr_grid.width * plan.hr_grid.height / 1e6
    result = {"batch": batch, "tile_lr_px": list(tile_lr), "tiles": tiles, "evaluations": upsampler.sampler.evaluations,
              "seconds_per_tile": sig(per_tile), "seconds": sig(per_tile * tiles),
              "mpx_per_s": sig(mpx / (per_tile * tiles))}
    print(f"model only  {tiles} tiles of {tile_lr} LR px, batch {batch}: {result['seconds']} s, "
          f"{result['mpx_per_s']} Mpx/s of output", flush=True)
    return result


def end_to_end(upsampler, scene: Path, bbox: str, tile_size: int, folder: Path) -> dict:
    """``rssr_cli.upscale`` warm (a small run first), its time split into the stream and the COG."""
    import rssr_cli
    import rssr_cli.sink as sink
    from rssr_cli.methods import DiffusionOptions

    options = rssr_cli.UpscaleOptions(method=DiffusionOptions(), bbox=tuple(map(float, bbox.split(","))),
                                      bbox_crs="scene", overwrite=True, tile_size=tile_size)
    x0, y0, _, y1 = options.bbox
    warm = dataclasses.replace(options, bbox=(x0, y1 - 1500, x0 + 1500, y1))
    rssr_cli.upscale(scene, folder / "warm.tif", warm, upsampler=upsampler)
    marks: dict[str, float] = {}
    real_commit = sink.CogSink.commit

    def timed_commit(self) -> None:
        marks["cog0"] = time.perf_counter()
        real_commit(self)
        marks["cog1"] = time.perf_counter()

    sink.CogSink.commit = timed_commit
    try:
        t0 = time.perf_counter()
        result = rssr_cli.upscale(scene, folder / "e2e.tif", options, upsampler=upsampler)
    finally:
        sink.CogSink.commit = real_commit
    _, h, w = result.to_dict()["shape"]
    mpx = h * w / 1e6
    out = {"shape": [4, h, w], "tiles": result.plan.tiles, "batch": upsampler.batch_size,
           "seconds": sig(result.seconds), "stream_s": sig(marks["cog0"] - t0),
           "cog_s": sig(marks["cog1"] - marks["cog0"]), "mpx_per_s": sig(mpx / result.seconds),
           "stream_mpx_per_s": sig(mpx / (marks["cog0"] - t0))}
    print(f"end to end  {w} x {h} px: {out['seconds']} s ({out['stream_s']} s stream + {out['cog_s']} s COG), "
          f"{out['mpx_per_s']} Mpx/s", flush=True)
    return out


def scaling(scene: Path, bbox: str, tile_size: int, nprocs: list[int], batch: int, folder: Path,
            cpu: bool) -> list[dict]:
    """The AOI through ``torchrun --nproc-per-node N -m rssr_cli upscale`` for each N; outputs compared to N = 1.

    On CPUs every process runs one thread (``OMP_NUM_THREADS=1``, N = 1 too): oneDNN's results depend on the thread
    count, so only then are the outputs comparable bit for bit; the speed-up is then that of processes of one core."""
    import rasterio

    rows, first = [], None
    for n in nprocs:
        out = folder / f"nproc{n}.tif"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n), "-m",
               "rssr_cli", "-q", "upscale", str(scene), "-o", str(out), "--bbox", bbox, "--bbox-crs", "scene",
               "--tile-size", str(tile_size), "--batch-size", str(batch), "--json", "--overwrite"]
        env = {**os.environ, **({"OMP_NUM_THREADS": "1"} if cpu else {})}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(f"torchrun with {n} processes failed:\n{proc.stderr[-3000:]}")
        record = next(json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{"))
        with rasterio.open(out) as ds:
            pixels = ds.read()
        first = pixels if first is None else first
        rows.append({"nproc": n, "wall_s": round(wall, 2), "pipeline_s": record["seconds"],
                     "pixel_identical_to_nproc1": bool(np.array_equal(pixels, first))})
        print(f"torchrun    {n} process(es): wall {wall:.1f} s, pipeline {record['seconds']:.1f} s, "
              f"identical to 1: {rows[-1]['pixel_identical_to_nproc1']}", flush=True)
    for row in rows:
        row["speedup_pipeline"] = round(rows[0]["pipeline_s"] / row["pipeline_s"], 2)
        row["speedup_wall"] = round(rows[0]["wall_s"] / row["wall_s"], 2)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a CPU")
    ap.add_argument("--compile", action="store_true", help="also time the network under torch.compile (CUDA)")
    ap.add_argument("--nproc", default=None, help="process counts for the torchrun scaling, e.g. 1,2,4,8")
    ap.add_argument("--tile-size", type=int, default=None, help="tile core in LR px (default: rssr's; 32 with --quick)")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="folder for the results JSON")
    args = ap.parse_args()
    from rssr_cli.methods.diffusion import DiffusionUpsampler
    from upscale_memory import make_scene

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)  # as each process of the scaling runs: comparable figures, no OpenMP contention
    from rssr_cli.tiling import DEFAULT_TILE_SIZE

    # 10 km x 10 km at 10 m; quick: 0.32 x 1.52 km, one column of 6 rows of tiles of 32 (so 2 processes share rows).
    aoi_w, aoi_h = (32, 152) if args.quick else (1000, 1000)
    tile_size = args.tile_size or (32 if args.quick else DEFAULT_TILE_SIZE)
    gpus = torch.cuda.device_count()
    nprocs = [int(n) for n in args.nproc.split(",")] if args.nproc else sorted({1, max(gpus, 2)})
    report: dict = {"machine": machine(), "device": str(device), "torch_threads": torch.get_num_threads(),
                    "quick": args.quick, "tile_size": tile_size,
                    "command": " ".join([Path(sys.executable).name, *sys.argv])}
    upsampler = DiffusionUpsampler(device=str(device))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scene = folder / "scene.tif"
        make_scene(scene, size=max(aoi_w, aoi_h) + 2 * MARGIN_LR)
        m = MARGIN_LR * 10
        bbox = f"{500000 + m},{5200000 - m - aoi_h * 10},{500000 + m + aoi_w * 10},{5200000 - m}"
        import rssr_cli

        plan = rssr_cli.plan_upscale(scene, folder / "plan.tif", rssr_cli.UpscaleOptions(
            bbox=tuple(map(float, bbox.split(","))), bbox_crs="scene", tile_size=tile_size), upsampler=upsampler)
        tile_lr = (min(tile_size, aoi_h) + 2 * upsampler.context, min(tile_size, aoi_w) + 2 * upsampler.context)
        fitted = upsampler.fit_batch_size(tile_lr)
        if fitted:
            upsampler.batch_size = fitted
        tile_hr = int(tile_lr[0] * upsampler.scale)
        batches = (1, 2) if args.quick else tuple(sorted({1, 4, 8, upsampler.batch_size}))
        report["network"] = network(upsampler, tile_hr, batches, 2 if args.quick else 10, False)
        if args.compile and device.type == "cuda":  # one batch size: one compilation (a minute or two)
            report["network"] += network(upsampler, tile_hr, (upsampler.batch_size,), 10, True)
        report["model_only"] = model_only(upsampler, plan, tile_lr, 1 if args.quick else 3)
        report["end_to_end"] = e2e = end_to_end(upsampler, scene, bbox, tile_size, folder)
        # Both over the same output pixels: the ratio of the times, model-only over end to end.
        report["end_to_end_over_model_only"] = sig(report["model_only"]["seconds"] / e2e["seconds"])
        full_mpx = (FULL_TILE_LR * upsampler.scale) ** 2 / 1e6
        report["full_tile_estimate_min"] = sig(full_mpx / e2e["mpx_per_s"] / 60)
        print(f"ratio end to end / model only: {report['end_to_end_over_model_only']:.2f}; a full tile at this "
              f"rate: {report['full_tile_estimate_min']} min", flush=True)
        # Processes sharing a GPU share its memory: each gets a part of the batch this process fitted (the same batch
        # for every N, so that the outputs can be compared bit for bit), and this process lets go of its cache.
        per_gpu = -(-max(nprocs) // max(gpus, 1)) if device.type == "cuda" else 1
        report["scaling_batch"] = max(1, upsampler.batch_size // per_gpu)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        report["scaling"] = scaling(scene, bbox, tile_size, nprocs, report["scaling_batch"], folder,
                                    device.type == "cpu")
    report["machine"]["load_1min_after"] = round(os.getloadavg()[0], 2)
    args.out.mkdir(parents=True, exist_ok=True)
    tag = "cuda" if device.type == "cuda" else "cpu_quick" if args.quick else "cpu"
    path = args.out / f"throughput_{tag}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
