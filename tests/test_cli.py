"""The command line as people and pipelines use it: one-line errors, exit codes, JSON, no partial output."""

import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from conftest import AWS_BANDS, BOADELLA, NOCRS, write_raster
from rssr_cli.cli import main

SMALL = ["--method", "bicubic", "--bbox", "500000,5199000,500200,5199200", "--bbox-crs", "scene"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, code, match):
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error"), result.stderr
    assert match in lines[0]
    assert "Traceback" not in result.output


def test_upscale_json_record(utm_scene, tmp_path):
    out = tmp_path / "o.tif"
    result = run("upscale", utm_scene, "-o", out, "--json", *SMALL)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["status"] == "ok" and record["error"] is None
    assert record["crs"] == "EPSG:32632" and record["shape"] == [4, 250, 250]
    assert set(record) >= {"input", "output", "crs", "bounds", "shape", "tiles", "seconds", "status", "error"}
    assert out.exists()


@pytest.mark.parametrize("make,code,match", [
    (lambda tmp: NOCRS, 1, "not georeferenced"),
    (lambda tmp: write_raster(tmp / "two.tif", np.ones((2, 8, 8), np.uint16)), 1, "rssr needs 4"),
    (lambda tmp: ((tmp / "bad.tif").write_bytes(b"not a tiff"), tmp / "bad.tif")[1], 1, "cannot open"),
    (lambda tmp: BOADELLA, 1, "-b/--bidx"),
])
def test_bad_inputs_fail_cleanly(tmp_path, make, code, match):
    out = tmp_path / "never.tif"
    result = run("upscale", make(tmp_path), "-o", out, "--method", "bicubic")
    assert_one_line_error(result, code, match)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_aoi_that_misses_the_scene(utm_scene, tmp_path):
    out = tmp_path / "o.tif"
    result = run("upscale", utm_scene, "-o", out, "--method", "bicubic", "--bbox", "-10,10,-9,11")
    assert_one_line_error(result, 1, "does not intersect")
    assert not out.exists()


def test_usage_errors_exit_2(utm_scene, tmp_path):
    result = run("upscale", utm_scene, "-o", tmp_path / "o.tif", "--method", "bicubic", "--bbox", "1,2,3")
    assert_one_line_error(result, 2, "--bbox")
    result = run("upscale", utm_scene, "-o", tmp_path / "o.tif", "--method", "bicubic", "--tile-size", "33")
    assert_one_line_error(result, 2, "--tile-size")
    assert run("upscale", utm_scene, "--method", "lanczos").exit_code == 2


def test_existing_output_needs_overwrite(utm_scene, tmp_path):
    out = tmp_path / "o.tif"
    out.write_text("keep me")
    result = run("upscale", utm_scene, "-o", out, *SMALL)
    assert_one_line_error(result, 1, "--overwrite")
    assert out.read_text() == "keep me"
    assert run("upscale", utm_scene, "-o", out, "--overwrite", *SMALL).exit_code == 0


def test_batch_with_a_failure_exits_3(utm_scene, tmp_path):
    outdir = tmp_path / "out"
    outdir.mkdir()
    other = tmp_path / "second.tif"
    other.write_bytes(utm_scene.read_bytes())
    result = run("upscale", utm_scene, NOCRS, other, "--output-dir", outdir, "--json", *SMALL)
    assert result.exit_code == 3, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in records] == ["ok", "error", "ok"]
    assert "not georeferenced" in records[1]["error"]
    assert sorted(p.name for p in outdir.iterdir()) == ["second_sr.tif", "utm_sr.tif"]


def test_per_band_files_are_one_scene(aws_bands, tmp_path):
    out = tmp_path / "aws.tif"
    result = run("upscale", *aws_bands, "-o", out, "--method", "bicubic", "--bbox",
                 "241000,2749000,243000,2751000", "--bbox-crs", "EPSG:32629", "--json")
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as dst, rasterio.open(AWS_BANDS[0]) as src:
        assert dst.crs == src.crs and dst.res == (8.0, 8.0)  # decimated 100 m input / 12.5
        assert dst.count == 4 and dst.dtypes[0] == "uint16"


def test_dry_run_writes_nothing(utm_scene, tmp_path):
    out = tmp_path / "o.tif"
    result = run("upscale", utm_scene, "-o", out, "--dry-run", "--method", "bicubic")
    assert result.exit_code == 0
    assert "1600 x 1600 px" in result.stdout and "scratch disk" in result.stdout
    assert not out.exists()
    record = json.loads(run("upscale", utm_scene, "-o", out, "--dry-run", "--json", "--method",
                            "bicubic").stdout)
    assert record["status"] == "planned" and record["output_bytes"] == 1600 * 1600 * 4 * 2


def test_info(utm_scene):
    result = run("info", utm_scene, "--json")
    assert result.exit_code == 0
    record = json.loads(result.stdout)
    assert record["crs"] == "EPSG:32632" and record["bands"][0]["name"] == "B02"
    assert "1600 x 1600 px" in record["output"]
    assert_one_line_error(run("info", NOCRS), 1, "not georeferenced")


def test_inputs_from_stdin_in_a_real_process(utm_scene, tmp_path):
    outdir = tmp_path / "o"
    outdir.mkdir()
    proc = subprocess.run([sys.executable, "-m", "rssr_cli", "-q", "upscale", "-", "--output-dir", str(outdir),
                           "--json", *SMALL], input=f"{utm_scene}\n", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "ok"
    assert (outdir / "utm_sr.tif").exists()
    assert proc.stderr == ""


def test_creation_options_and_float_input(tmp_path):
    data = np.random.default_rng(0).uniform(0.02, 0.4, (4, 24, 24)).astype(np.float32)
    path = write_raster(tmp_path / "refl.tif", data, descriptions=["B02", "B03", "B04", "B08"])
    out = tmp_path / "refl_sr.tif"
    result = run("upscale", path, "-o", out, "--method", "bicubic", "--co", "COMPRESS=LZW", "--blocksize", "256")
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as dst:
        assert dst.compression.name == "lzw" and dst.block_shapes[0] == (256, 256)
        assert dst.dtypes[0] == "float32"
        assert abs(float(dst.read(1).mean()) - float(data[0].mean())) < 0.01
