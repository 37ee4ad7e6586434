"""``rssr upscale`` over several processes (2 CPU processes on gloo, real subprocesses): one scene shared by rows of
tiles is the single-process output pixel for pixel, a batch's inputs are each written once, a failure or a death on
one process fails every process with one line and leaves nothing behind, and ``--resume`` continues under torchrun.

The identity tests go through torchrun itself; the others start the two processes with the environment torchrun
gives them (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` ...), so that each process's exit code and output can be seen.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import write_raster
from rssr_cli.errors import Interrupted
from rssr_cli.methods import BicubicUpsampler
from rssr_cli.pipeline import UpscaleOptions, upscale
from rssr_cli.methods import BicubicOptions

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny work: one thread, and bitwise the same in every process
#: 28 x 24 LR px in tiles of 16 overlapping by 6: 3 rows of tiles, the last shifted back so that rows 0 and 1 both
#: reach into row 2, where the second process's band starts (its carry is rebuilt from two rows).
WINDOW = ["--bbox", "500000,5199440,500240,5199720", "--bbox-crs", "scene", "--tile-size", "16", "--overlap", "6"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import write_boadella_utm

    return write_boadella_utm(tmp_path_factory.mktemp("scene"))


def rssr_here(*args: object):
    from click.testing import CliRunner

    from rssr_cli.cli import main

    return CliRunner().invoke(main, ["upscale", *map(str, args)])


def torchrun(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "rssr_cli",
           "upscale", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=ENV, cwd=cwd)


def two_processes(*cmd: object, cwd: Path) -> list[tuple[int, str, str]]:
    """``cmd`` as ranks 0 and 1 of a world of 2, started as torchrun starts them; (exit code, stdout, stderr) each."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, *map(str, cmd)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=cwd,
                              env={**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
                                   "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2"})
             for rank in (0, 1)]
    try:
        outputs = [p.communicate(timeout=240) for p in procs]
        return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def assert_same_pixels(a: Path, b: Path) -> None:
    with rasterio.open(a) as x, rasterio.open(b) as y:
        assert np.array_equal(x.read(), y.read(), equal_nan=True)
        assert (x.transform, x.crs, x.tags(), x.descriptions) == (y.transform, y.crs, y.tags(), y.descriptions)


@pytest.mark.usefixtures("one_torch_thread")
def test_one_scene_over_two_processes_is_the_single_process_output(scene, tmp_path):
    """The diffusion model (a small random one) with two draws: the mean and the _std companion, pixel for pixel."""
    from conftest import random_tiny_model
    from rssr_cli.weights import save_weights

    model = random_tiny_model(seed=1)
    weights = save_weights(tmp_path / "tiny.safetensors", model, model.config, {"note": "random"})
    args = ["--weights", weights, "--seed", "5", "--steps", "2", "--samples", "2", "--device", "cpu", *WINDOW]
    (tmp_path / "ref").mkdir()
    (tmp_path / "run").mkdir()
    ref, out = tmp_path / "ref" / "o.tif", tmp_path / "run" / "o.tif"
    assert rssr_here(scene, "-o", ref, *args).exit_code == 0
    proc = torchrun(scene, "-o", out, *args, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [record] = records(proc.stdout)  # rank 0 speaks for the run
    assert record["status"] == "ok" and record["tiles"] == 6
    assert_same_pixels(out, ref)
    assert_same_pixels(out.with_name("o_std.tif"), ref.with_name("o_std.tif"))
    assert sorted(p.name for p in out.parent.iterdir()) == ["o.tif", "o_std.tif"]  # no scratch, journal nor lock


def test_a_batch_over_two_processes_writes_each_input_once(scene, tmp_path):
    """Four inputs and a broken fifth, round robin over two processes: one record and one output per input, and both
    processes end with the batch's exit code (3: some inputs failed)."""
    with rasterio.open(scene) as src:
        data = src.read(window=rasterio.windows.Window(0, 0, 40, 40))
    inputs = [write_raster(tmp_path / f"s{i}.tif", np.roll(data, 3 * i, axis=2), nodata=0,
                           descriptions=["B02", "B03", "B04", "B08"]) for i in range(4)]
    (tmp_path / "s4.tif").write_bytes(b"not a raster")
    out = tmp_path / "out"
    out.mkdir()
    args = ["-m", "rssr_cli", "upscale", *inputs, tmp_path / "s4.tif", "--output-dir", out, "--method", "bicubic",
            "--tile-size", "16", "--overlap", "4", "--json"]
    ranks = two_processes(*args, cwd=tmp_path)
    assert [code for code, _, _ in ranks] == [3, 3], [err[-2000:] for _, _, err in ranks]
    by_rank = [records(stdout) for _, stdout, _ in ranks]
    assert [[Path(r["input"]).name for r in rs] for rs in by_rank] == [["s0.tif", "s2.tif", "s4.tif"],
                                                                        ["s1.tif", "s3.tif"]]
    statuses = {Path(r["input"]).name: r["status"] for rs in by_rank for r in rs}
    assert statuses == {"s0.tif": "ok", "s1.tif": "ok", "s2.tif": "ok", "s3.tif": "ok", "s4.tif": "error"}
    assert sorted(p.name for p in out.iterdir()) == [f"s{i}_sr.tif" for i in range(4)]
    single = tmp_path / "single.tif"
    assert rssr_here(inputs[3], "-o", single, "--method", "bicubic", "--tile-size", "16", "--overlap", "4").exit_code == 0
    assert_same_pixels(out / "s3_sr.tif", single)


_FAIL_ON_RANK_1 = '''
import os, sys
import rssr_cli.scratch as scratch
from rssr_cli.errors import OutputError

real, calls = scratch.RawScratch.write, []
def write(self, data, row0, col0):
    calls.append(row0)
    if os.environ["RANK"] == "1" and len(calls) == 2:  # rank 1, its second block: a full disk, or a kill
        if sys.argv[1] == "killed":
            os._exit(9)
        raise OutputError(f"cannot write {self.path}: No space left on device")
    return real(self, data, row0, col0)
scratch.RawScratch.write = write

from rssr_cli.cli import main
main(["upscale", *sys.argv[2:]])
'''


@pytest.mark.parametrize("how", ["error", "killed"])
def test_a_failure_on_one_process_fails_every_process_with_one_line(scene, tmp_path, how):
    script = tmp_path / "fail.py"
    script.write_text(_FAIL_ON_RANK_1)
    (tmp_path / "run").mkdir()
    out = tmp_path / "run" / "o.tif"
    ranks = two_processes(script, how, scene, "-o", out, "--method", "bicubic", *WINDOW[:4], "--tile-size", "8",
                          "--overlap", "2", cwd=tmp_path)
    (code0, out0, err0), (code1, _, err1) = ranks
    assert code0 == 1 and code1 == (1 if how == "error" else 9), (err0[-2000:], err1[-2000:])
    if how == "error":
        assert err0.strip().splitlines() == [f"Error: rank 1: cannot write {out.parent}/.o.tif.rssr-partial: No "
                                             "space left on device"]
        assert err1.strip() == ""  # rank 0 speaks for the run
    else:
        [line] = err0.strip().splitlines()
        assert line.startswith("Error: rank 0 lost another process of the run, which ended without reporting"), line
    assert out0 == ""
    assert list(out.parent.iterdir()) == []  # no output, no scratch, journal nor lock


class Stopping(BicubicUpsampler):
    """Stands in for a signal at its ``stop_at``-th batch (tests/test_resume.py runs the real signals)."""

    def __init__(self, stop_at: int) -> None:
        super().__init__()
        self.calls, self.stop_at = 0, stop_at

    def upscale_tiles(self, lr, origins):
        self.calls += 1
        if self.calls == self.stop_at:
            raise Interrupted(signal.SIGTERM)
        return super().upscale_tiles(lr, origins)


def test_resume_under_torchrun_continues_a_single_process_run(scene, tmp_path):
    options = UpscaleOptions(method=BicubicOptions(), bbox=(500000, 5199080, 500320, 5199720), bbox_crs="scene",
                             tile_size=8, overlap=2)
    (tmp_path / "ref").mkdir()
    (tmp_path / "run").mkdir()
    ref, out = tmp_path / "ref" / "o.tif", tmp_path / "run" / "o.tif"
    upscale(scene, ref, options)
    with pytest.raises(Interrupted):
        upscale(scene, out, options, upsampler=Stopping(stop_at=10))  # 3 batches a row: stopped in row 3
    rows_done = len(out.with_name(".o.tif.rssr-journal").read_text().splitlines()) - 1
    assert 1 <= rows_done <= 3
    args = [scene, "-o", out, "--method", "bicubic", "--bbox", "500000,5199080,500320,5199720", "--bbox-crs",
            "scene", "--tile-size", "8", "--overlap", "2", "--resume", "--json"]
    proc = torchrun(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [record] = records(proc.stdout)
    assert record["status"] == "ok" and record["reused_tiles"] == 5 * rows_done  # rank 0's band (rows 0-5) began so
    assert_same_pixels(out, ref)
    assert sorted(p.name for p in out.parent.iterdir()) == ["o.tif"]
