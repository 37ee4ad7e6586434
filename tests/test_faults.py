"""Faults during a run: a full disk, write errors, a read-only folder, and batches with bad members.

The disk-full and read-only cases run rssr in a real process on a small tmpfs mounted in a private mount namespace
(``unshare``); they are skipped where such mounts are not allowed. Every case ends with one line on stderr, exit 1,
no partial output and no temporary files.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window
from click.testing import CliRunner

from conftest import BOADELLA, NOCRS, write_raster
from rssr_cli.cli import main
from rssr_cli.errors import InputError, OutputError
from rssr_cli.methods import BicubicOptions
from rssr_cli.pipeline import UpscaleOptions, plan_upscale, upscale
from rssr_cli.scene import open_scene

#: 64 x 64 LR px (800 x 800 HR px, 5.1 MB as uint16): the run needs about 15 MB with its scratch.
WINDOW = ["--bbox", "500000,5199080,500640,5199720", "--bbox-crs", "scene", "--tile-size", "8", "--overlap", "2"]
BANDS = ["B02", "B03", "B04", "B08"]


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with rasterio.open(BOADELLA) as src:
        data = np.maximum(src.read([2, 3, 4, 8]), 1).astype(np.uint16)
    return write_raster(tmp_path_factory.mktemp("scene") / "utm.tif", data, nodata=0, descriptions=BANDS)


def _namespace_allowed() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=1m tmpfs /tmp"], capture_output=True)
    return probe.returncode == 0


NAMESPACE = pytest.mark.skipif(not _namespace_allowed(), reason="no private mount namespaces here (unshare)")


def in_tmpfs(folder: Path, script: str, mount: str) -> dict[str, str]:
    """Run ``script`` (sh) with a tmpfs (``mount`` options) on ``folder``, in a private mount namespace; ``$RSSR`` is
    the rssr command. Returns what the script reported as ``key=value`` lines and the rest as ``out``."""
    rssr = f"{sys.executable} -m rssr_cli"
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                           f"mount -t tmpfs -o {mount} tmpfs {folder} || exit 99\nRSSR='{rssr}'\n{script}"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    report["stderr"] = proc.stderr
    return report


@NAMESPACE
def test_a_disk_that_fills_during_the_run(scene, tmp_path):
    """The run starts with room (the preflight passes); a file written beside it fills the disk while it works."""
    disk = tmp_path / "disk"
    disk.mkdir()
    script = f"""
$RSSR upscale {scene} -o {disk}/o.tif --method bicubic {' '.join(WINDOW)} 2>{tmp_path}/err &
pid=$!
while [ ! -e {disk}/.o.tif.rssr-partial ] && kill -0 $pid 2>/dev/null; do sleep 0.005; done
dd if=/dev/zero of={disk}/filler bs=64k 2>/dev/null
wait $pid
echo "rc=$?"
rm -f {disk}/filler
echo "left=$(ls -A {disk} | tr '\\n' ' ')"
"""
    report = in_tmpfs(disk, script, "size=24m")
    assert report["rc"] == "1"
    line = one_line_error((tmp_path / "err").read_text())
    assert line.startswith(f"Error: cannot write {disk}/") and line.endswith("No space left on device"), line
    assert report["left"].strip() == ""  # no output, no scratch, no journal, no lock


@NAMESPACE
def test_a_disk_too_small_is_refused_before_any_work(scene, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    script = f"""
$RSSR upscale {scene} -o {disk}/o.tif --method bicubic {' '.join(WINDOW)} 2>{tmp_path}/err
echo "rc=$?"
echo "left=$(ls -A {disk} | tr '\\n' ' ')"
"""
    report = in_tmpfs(disk, script, "size=4m")
    assert report["rc"] == "1"
    line = one_line_error((tmp_path / "err").read_text())
    assert line == f"Error: not enough free space in {disk}: the run needs about 14.6 MiB (scratch 9.8 MiB + output " \
                   "4.9 MiB), 4.0 MiB is free; free some space or write elsewhere (-o/--output-dir)"
    assert report["left"].strip() == ""


@NAMESPACE
def test_a_read_only_folder(scene, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    script = f"""
$RSSR upscale {scene} -o {disk}/o.tif --method bicubic {' '.join(WINDOW)} 2>{tmp_path}/err
echo "rc=$?"
"""
    report = in_tmpfs(disk, script, "ro,size=4m")
    assert report["rc"] == "1"
    assert one_line_error((tmp_path / "err").read_text()) == f"Error: the output folder {disk} is not writable"


def test_a_preflight_with_little_free_space(scene, tmp_path, monkeypatch):
    """The estimate is checked against the free space in --dry-run and before a run (free space faked here; a real
    small disk above)."""
    import rssr_cli.diskspace

    real = shutil.disk_usage
    monkeypatch.setattr(rssr_cli.diskspace.shutil, "disk_usage",
                        lambda path: real(path)._replace(free=10_000_000))
    out = tmp_path / "o.tif"
    options = UpscaleOptions(method=BicubicOptions(), bbox=(500000, 5199080, 500640, 5199720), bbox_crs="scene")
    with pytest.raises(OutputError, match=r"needs about 14.6 MiB .* 9.5 MiB is free"):
        plan_upscale(scene, out, options)
    with pytest.raises(OutputError, match="not enough free space"):
        upscale(scene, out, options)
    dry = run("upscale", scene, "-o", out, "--method", "bicubic", *WINDOW, "--dry-run")
    assert dry.exit_code == 1 and "needs about 14.6 MiB" in one_line_error(dry.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    monkeypatch.setattr(rssr_cli.diskspace.shutil, "disk_usage", lambda path: real(path)._replace(free=20_000_000))
    plan = plan_upscale(scene, out, options)
    assert plan.free_bytes == 20_000_000 and plan.scratch_bytes + plan.output_bytes == 15_360_000


def test_an_io_error_while_writing(scene, tmp_path, monkeypatch):
    """EIO from the disk, mid-run: one line naming the file, exit 1, nothing left."""
    import rssr_cli.scratch

    calls = {"n": 0}
    pwrite = os.pwrite

    def failing(fd, data, offset):
        calls["n"] += 1
        if calls["n"] > 200:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return pwrite(fd, data, offset)

    monkeypatch.setattr(rssr_cli.scratch.os, "pwrite", failing)
    result = run("upscale", scene, "-o", tmp_path / "o.tif", "--method", "bicubic", *WINDOW)
    assert result.exit_code == 1
    assert one_line_error(result.stderr) == f"Error: cannot write {tmp_path}/.o.tif.rssr-partial: " \
                                            "Input/output error"
    assert list(tmp_path.iterdir()) == []


def test_a_write_error_while_making_the_cog(scene, tmp_path, monkeypatch):
    import rio_cogeo.cogeo

    def failing(*args, **kwargs):
        raise rasterio.errors.RasterioIOError("Write failed. See previous exception for details.") from \
            OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rio_cogeo.cogeo, "cog_translate", failing)
    result = run("upscale", scene, "-o", tmp_path / "o.tif", "--method", "bicubic", *WINDOW)
    assert result.exit_code == 1
    assert one_line_error(result.stderr) == f"Error: cannot write {tmp_path}/o.tif: No space left on device"
    assert list(tmp_path.iterdir()) == []


def _bad_members(folder: Path) -> dict[str, Path]:
    """One input of each kind a batch may meet, named after what is wrong with it."""
    rng = np.random.default_rng(0)
    good = rng.integers(500, 3000, (4, 24, 24), dtype=np.uint16)
    members = {"good1": write_raster(folder / "good1.tif", good, nodata=0, descriptions=BANDS)}
    cog = folder / "full.tif"
    with rasterio.open(cog, "w", driver="COG", width=24, height=24, count=4, dtype="uint16", crs="EPSG:32632",
                       transform=Affine(10, 0, 500000, 0, -10, 5200000), nodata=0, compress="deflate") as dst:
        dst.write(good)
    members["truncated"] = folder / "truncated.tif"  # header intact, pixel data cut: fails mid-run
    members["truncated"].write_bytes(cog.read_bytes()[:-200])
    cog.unlink()
    members["nocrs"] = folder / "nocrs.tif"
    members["nocrs"].write_bytes(NOCRS.read_bytes())
    members["two_bands"] = write_raster(folder / "two_bands.tif", good[:2], descriptions=BANDS[:2])
    members["all_nodata"] = write_raster(folder / "all_nodata.tif", np.zeros_like(good), nodata=0,
                                         descriptions=BANDS)
    members["garbage"] = folder / "garbage.tif"
    members["garbage"].write_bytes(b"II*\x00 this is not a raster")
    members["good2"] = write_raster(folder / "good2.tif", good[:, ::-1].copy(), nodata=0, descriptions=BANDS)
    return members


def test_bad_members_of_a_batch_cost_only_themselves(tmp_path):
    members = _bad_members(tmp_path)
    outdir = tmp_path / "out"
    outdir.mkdir()
    args = ["upscale", *members.values(), "--output-dir", outdir, "--method", "bicubic", "--json"]
    result = run(*args)
    assert result.exit_code == 3, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["input"]).stem for r in records] == list(members)  # exactly one record per input, in order
    status = {Path(r["input"]).stem: r["status"] for r in records}
    assert status == {"good1": "ok", "truncated": "error", "nocrs": "error", "two_bands": "error",
                      "all_nodata": "error", "garbage": "error", "good2": "ok"}
    errors = {Path(r["input"]).stem: r["error"] for r in records if r["error"]}
    assert "not georeferenced" in errors["nocrs"] and "rssr needs 4" in errors["two_bands"]
    assert "cannot read" in errors["truncated"] and "truncated or damaged" in errors["truncated"]
    assert "previous exception" not in errors["truncated"]  # GDAL's own words, not rasterio's wrapper
    assert "cannot open" in errors["garbage"]
    assert sorted(p.name for p in outdir.iterdir()) == ["good1_sr.tif", "good2_sr.tif"]  # nothing else, hidden or not
    for name in ("good1", "good2"):
        with rasterio.open(outdir / f"{name}_sr.tif") as dst:
            assert dst.shape == (300, 300) and dst.read(1).min() > 0

    # --resume: the finished outputs are kept as they are, the bad members fail again.
    mtimes = {p.name: p.stat().st_mtime_ns for p in outdir.iterdir()}
    again = run(*args, "--resume")
    assert again.exit_code == 3, again.output
    assert [json.loads(line)["status"] for line in again.stdout.splitlines()] == \
        ["skipped", "error", "error", "error", "error", "error", "skipped"]
    assert {p.name: p.stat().st_mtime_ns for p in outdir.iterdir()} == mtimes


def test_an_all_nodata_input_writes_nothing_and_computes_nothing(tmp_path):
    path = write_raster(tmp_path / "empty.tif", np.zeros((4, 16, 16), np.uint16), nodata=0, descriptions=BANDS)
    upsampler = BicubicOptions().build()
    computed = []
    original = upsampler.upscale_tiles
    upsampler.upscale_tiles = lambda *a, **k: computed.append(1) or original(*a, **k)
    with pytest.raises(InputError, match="every input pixel in the window is nodata"):
        upscale(path, tmp_path / "o.tif", UpscaleOptions(method=BicubicOptions()), upsampler=upsampler)
    assert computed == []  # refused before the first tile, not after all of them
    with pytest.raises(InputError, match="nodata"):  # --dry-run says so too
        plan_upscale(path, tmp_path / "o.tif", UpscaleOptions(method=BicubicOptions()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.tif"]


def test_a_window_valid_only_in_its_last_row_is_taken(tmp_path):
    data = np.zeros((4, 16, 16), np.uint16)
    data[:, 15, 3] = 1200
    path = write_raster(tmp_path / "corner.tif", data, nodata=0, descriptions=BANDS)
    with open_scene((str(path),), bidx=None, bands=tuple(BANDS), nodata=None, offset=None) as scene:
        assert scene.any_valid(Window(0, 0, 16, 16), pixels_per_read=16)  # 16 strips of one row: the last one counts
        assert not scene.any_valid(Window(0, 0, 16, 15), pixels_per_read=16)
        assert scene.any_valid(Window(-4, 10, 12, 12), pixels_per_read=16)  # a window reaching outside the scene


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_member(tmp_path):
    members = _bad_members(tmp_path)
    locked = members["good2"].with_name("locked.tif")
    shutil.copy(members["good2"], locked)
    locked.chmod(0)
    outdir = tmp_path / "out"
    outdir.mkdir()
    result = run("upscale", members["good1"], locked, "--output-dir", outdir, "--method", "bicubic", "--json")
    assert result.exit_code == 3, result.output
    assert [json.loads(line)["status"] for line in result.stdout.splitlines()] == ["ok", "error"]
    assert sorted(p.name for p in outdir.iterdir()) == ["good1_sr.tif"]
