"""Interrupted runs (real processes, real signals): ``--resume`` continues to the same bytes, SIGINT/SIGTERM stop
cleanly, one writer per output, and stale or foreign partial work is handled.

Runs that are stopped part-way are first frozen with SIGSTOP once their journal lists a finished row of tiles, so the
signal lands mid-run however fast the machine is; the signal under test follows, then SIGCONT.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import write_raster
from rssr_cli.errors import Interrupted, OutputError, UsageError
from rssr_cli.lock import lock_path
from rssr_cli.methods import BicubicOptions, BicubicUpsampler
from rssr_cli.pipeline import UpscaleOptions, upscale

#: 32 x 64 LR px of real pixels (400 x 800 HR px) in tiles of 8 LR px: 11 rows of 5 tiles.
WINDOW = ["--bbox", "500000,5199080,500320,5199720", "--bbox-crs", "scene", "--tile-size", "8", "--overlap", "2"]
BICUBIC = ["--method", "bicubic", *WINDOW]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny work: one thread, and bitwise the same in every run


def rssr(*args: object) -> subprocess.Popen:
    """``rssr upscale ARGS`` in its own process (for the runs that get signals)."""
    return subprocess.Popen([sys.executable, "-m", "rssr_cli", "upscale", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def rssr_here(*args: object):
    """``rssr upscale ARGS`` in this process (no start-up time) for the runs that get none."""
    from click.testing import CliRunner

    from rssr_cli.cli import main

    return CliRunner().invoke(main, ["upscale", *map(str, args)])


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def journal(out: Path) -> Path:
    return out.with_name(f".{out.name}.rssr-journal")


def units_done(out: Path) -> int:
    try:
        return len(journal(out).read_text().splitlines()) - 1
    except OSError:
        return -1


def freeze_mid_run(proc: subprocess.Popen, out: Path) -> int:
    """Wait until the run has journaled a row of tiles, freeze it (SIGSTOP) and return how many rows it finished."""
    while units_done(out) < 1:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGSTOP)
    return units_done(out)


def total_units(out: Path) -> int:
    return json.loads(journal(out).read_text().splitlines()[0])["units"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import write_boadella_utm

    return write_boadella_utm(tmp_path_factory.mktemp("scene"))


@pytest.fixture(scope="module")
def reference(scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("ref") / "ref.tif"
    result = rssr_here(scene, "-o", out, *BICUBIC)
    assert result.exit_code == 0, result.output
    return out


def assert_same_output(a: Path, b: Path) -> None:
    with rasterio.open(a) as x, rasterio.open(b) as y:
        assert np.array_equal(x.read(), y.read())
        assert (x.transform, x.crs, x.tags()) == (y.transform, y.crs, y.tags())
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_stopped_run_resumes_to_the_same_bytes(scene, reference, tmp_path, sig):
    out = tmp_path / "o.tif"
    proc = rssr(scene, "-o", out, *BICUBIC)
    done = freeze_mid_run(proc, out)
    assert 1 <= done < total_units(out)  # mid-run
    os.kill(proc.pid, sig)
    os.kill(proc.pid, signal.SIGCONT)
    assert finish(proc)[0] == (-9 if sig == signal.SIGKILL else 143)
    kept = {p.name for p in tmp_path.iterdir()}
    assert "o.tif" not in kept and {".o.tif.rssr-journal", ".o.tif.rssr-partial"} <= kept
    assert units_done(out) >= done  # what was journaled stays journaled

    result = rssr_here(scene, "-o", out, *BICUBIC, "--resume", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["status"] == "ok" and record["reused_tiles"] >= 5 * done  # the finished rows were not redone
    assert_same_output(out, reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.tif"]  # journal, scratch and lock gone


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_stop_with_one_line_and_keep_the_work(scene, tmp_path, sig):
    out = tmp_path / "o.tif"
    proc = rssr(scene, "-o", out, *BICUBIC, "--json")
    freeze_mid_run(proc, out)
    os.kill(proc.pid, sig)
    os.kill(proc.pid, signal.SIGCONT)
    code, stdout, stderr = finish(proc)
    assert code == 128 + sig
    assert stderr.strip().splitlines() == [f"Interrupted by {signal.Signals(sig).name}: the finished work is kept "
                                           f"beside {out}; run the same command with --resume to continue"]
    assert json.loads(stdout)["status"] == "interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".o.tif.rssr-journal", ".o.tif.rssr-partial"]


@pytest.mark.usefixtures("one_torch_thread")
def test_the_diffusion_model_resumes_to_the_same_bytes(scene, tmp_path):
    """Position-keyed noise: a resumed diffusion run (a small random model) equals an uninterrupted one bit for bit."""
    from conftest import random_tiny_model
    from rssr_cli.weights import save_weights

    model = random_tiny_model(seed=1)
    weights = save_weights(tmp_path / "tiny.safetensors", model, model.config, {"note": "random"})
    args = ["--weights", weights, "--seed", "5", "--steps", "2", "--bbox", "500000,5199480,500240,5199720",
            "--bbox-crs", "scene", "--tile-size", "8", "--overlap", "2"]
    ref, out = tmp_path / "ref.tif", tmp_path / "o.tif"
    assert rssr_here(scene, "-o", ref, *args).exit_code == 0
    proc = rssr(scene, "-o", out, *args)
    assert 1 <= freeze_mid_run(proc, out) < total_units(out)
    os.kill(proc.pid, signal.SIGKILL)
    assert finish(proc)[0] == -9
    result = rssr_here(scene, "-o", out, *args, "--resume", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["reused_tiles"] > 0
    assert_same_output(out, ref)


def test_a_second_writer_is_refused_at_once(scene, reference, tmp_path):
    out = tmp_path / "o.tif"
    first = rssr(scene, "-o", out, *BICUBIC)
    freeze_mid_run(first, out)
    try:
        second = rssr_here(scene, "-o", out, *BICUBIC)
        assert second.exit_code == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"being written by another rssr run (pid {first.pid} on" in lines[0], lines
        with pytest.raises(OutputError, match=f"pid {first.pid}"):
            upscale(scene, out, UpscaleOptions(method=BicubicOptions(), resume=True))
    finally:
        os.kill(first.pid, signal.SIGCONT)
    code, _, err = finish(first)
    assert code == 0, err  # the refused runs did not disturb the first one
    assert_same_output(out, reference)


def test_a_lock_left_by_a_dead_process_is_taken_over(scene, tmp_path):
    out = tmp_path / "o.tif"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock_path(out).write_text(f"pid {dead.stdout.strip()} on {os.uname().nodename}\n")
    upscale(scene, out, UpscaleOptions(method=BicubicOptions(), bbox=(500000, 5199000, 500100, 5199100),
                                       bbox_crs="scene"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.tif"]


class Stopping(BicubicUpsampler):
    """Stands in for a signal at its ``stop_at``-th batch (the real signals are tested above)."""

    def __init__(self, stop_at: int = 8) -> None:
        super().__init__()
        self.calls, self.stop_at = 0, stop_at

    def upscale_tiles(self, lr, origins):
        self.calls += 1
        if self.calls == self.stop_at:
            raise Interrupted(signal.SIGTERM)
        return super().upscale_tiles(lr, origins)


def options(**kw) -> UpscaleOptions:
    kw = {"tile_size": 8, "overlap": 2, **kw}
    return UpscaleOptions(method=BicubicOptions(), bbox=(500000, 5199080, 500320, 5199720), bbox_crs="scene", **kw)


def test_resume_refuses_other_settings_naming_them(scene, tmp_path):
    scene = write_raster(tmp_path / "s.tif", rasterio.open(scene).read(), nodata=0,
                         descriptions=["B02", "B03", "B04", "B08"])
    out = tmp_path / "o.tif"
    with pytest.raises(Interrupted):
        upscale(scene, out, options(), upsampler=Stopping())
    with pytest.raises(UsageError, match=r"--resume: the unfinished run .* other settings \(tile_size 8 -> 12\)"):
        upscale(scene, out, options(resume=True, tile_size=12))
    with pytest.raises(UsageError, match="dtype uint16 -> float32"):
        upscale(scene, out, options(resume=True, dtype="float32"))
    scene.touch()  # the input changed (its time): the work is not the input's any more
    with pytest.raises(UsageError, match="input 1 "):
        upscale(scene, out, options(resume=True))
    assert {".o.tif.rssr-journal", ".o.tif.rssr-partial"} <= {p.name for p in tmp_path.iterdir()}
    assert not out.exists()


def test_without_resume_stale_work_is_replaced(scene, reference, tmp_path):
    out = tmp_path / "o.tif"
    with pytest.raises(Interrupted):
        upscale(scene, out, options(tile_size=12), upsampler=Stopping())
    (tmp_path / ".o.rssr-tmp-999999.tif").write_bytes(b"left by a killed commit")
    (tmp_path / ".o.tif.rssr-cog").mkdir()
    (tmp_path / ".o.tif.rssr-cog" / "tmpk1ll3d.tif").write_bytes(b"rio-cogeo's intermediate of a killed commit")
    result = upscale(scene, out, options())
    assert result.reused_tiles == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.tif"]
    with rasterio.open(out) as a, rasterio.open(reference) as b:
        assert np.array_equal(a.read(), b.read())


def test_resume_skips_a_finished_output_and_refuses_a_foreign_one(scene, tmp_path):
    out = tmp_path / "o.tif"
    upscale(scene, out, options())
    before = out.stat().st_mtime_ns
    assert upscale(scene, out, options(resume=True)).status == "skipped"
    assert out.stat().st_mtime_ns == before
    with pytest.raises(OutputError, match="--overwrite"):  # another setting: not this run's output
        upscale(scene, out, options(resume=True, overlap=4))
    other = tmp_path / "other.tif"
    other.write_bytes(b"someone's file")
    with pytest.raises(OutputError, match="--overwrite"):
        upscale(scene, other, options(resume=True))
    assert other.read_bytes() == b"someone's file"


def test_resume_with_nothing_to_resume_is_a_plain_run(scene, reference, tmp_path):
    out = tmp_path / "o.tif"
    result = upscale(scene, out, options(resume=True))
    assert result.status == "ok" and result.reused_tiles == 0
    with rasterio.open(out) as a, rasterio.open(reference) as b:
        assert np.array_equal(a.read(), b.read())


class WithStd(BicubicUpsampler):
    """Two samples: the run writes an ``_std`` companion, resumed from its own scratch raster."""

    samples = 2

    def upscale_tiles(self, lr, origins):
        from rssr_cli.methods import TileResult

        mean = super().upscale_tiles(lr, origins).mean
        spread = np.abs(np.gradient(mean, axis=-1)).astype(np.float32)  # varies across tiles and seams
        return TileResult(mean=mean, std=spread)


class StoppingWithStd(WithStd, Stopping):
    pass


def test_the_uncertainty_companion_resumes_too(scene, tmp_path):
    ref, out = tmp_path / "ref" / "o.tif", tmp_path / "o.tif"
    ref.parent.mkdir()
    upscale(scene, ref, options(), upsampler=WithStd())
    with pytest.raises(Interrupted):
        upscale(scene, out, options(), upsampler=StoppingWithStd())
    assert {".o.tif.rssr-partial", ".o_std.tif.rssr-partial"} <= {p.name for p in tmp_path.iterdir()}
    result = upscale(scene, out, options(resume=True), upsampler=WithStd())
    assert result.reused_tiles > 0 and result.uncertainty == str(tmp_path / "o_std.tif")
    for name in ("o.tif", "o_std.tif"):
        with rasterio.open(tmp_path / name) as a, rasterio.open(ref.parent / name) as b:
            assert np.array_equal(a.read(), b.read(), equal_nan=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.tif", "o_std.tif", "ref"]


def test_an_interruption_while_the_cog_is_written_resumes_without_recomputing(scene, reference, tmp_path,
                                                                               monkeypatch):
    import rssr_cli.sink

    def interrupted(*args, **kwargs):
        raise Interrupted(signal.SIGTERM)

    out = tmp_path / "o.tif"
    with monkeypatch.context() as patch:
        patch.setattr(rssr_cli.sink, "translate_to_cog", interrupted)
        with pytest.raises(Interrupted):
            upscale(scene, out, options())
    assert not out.exists() and units_done(out) == total_units(out)
    result = upscale(scene, out, options(resume=True))
    assert result.reused_tiles == result.plan.tiles
    with rasterio.open(out) as a, rasterio.open(reference) as b:
        assert np.array_equal(a.read(), b.read())
