"""Inputs the model was not made for are refused before any work, with one line that says what was found and what
the model expects; --allow-unusual-input (UpscaleOptions.allow_unusual_input) lets them through; bicubic is
interpolation and takes anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from conftest import BOADELLA, write_raster
from rssr_cli.cli import main
from rssr_cli.errors import InputError, UsageError
from rssr_cli.input_checks import (DIFFUSION_INPUT, ExpectedInput, UnusualInputError, check_input, expected_input,
                                   ground_pixel_size)
from rssr_cli.scene import open_scene

BANDS = ["B02", "B03", "B04", "B08"]


@pytest.fixture(scope="module")
def dn() -> np.ndarray:
    """Real Sentinel-2 L2A DNs (Boadella: B02, B03, B04, B08), a 32 x 32 crop."""
    with rasterio.open(BOADELLA) as src:
        return np.maximum(src.read([2, 3, 4, 8])[:, :32, :32], 1).astype(np.uint16)


def _utm(path: Path, data: np.ndarray, pixel: float = 10.0, **kw) -> Path:
    return write_raster(path, data, transform=Affine(pixel, 0, 500000.0, 0, -pixel, 5200000.0), descriptions=BANDS,
                        **kw)


def _check(path: Path, expected: ExpectedInput | None = DIFFUSION_INPUT) -> None:
    with open_scene(path) as scene:
        check_input(scene, expected)


def test_a_20_m_stack_is_refused_in_one_line_with_exit_2_and_no_output(dn, tmp_path):
    """As a new user would: a real process, the default model, a 20 m stack (B05/B06-style pixels)."""
    stack = _utm(tmp_path / "b05_b06_like.tif", dn, pixel=20.0, nodata=0)
    out = tmp_path / "sr.tif"
    result = subprocess.run([sys.executable, "-m", "rssr_cli", "upscale", str(stack), "-o", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.stderr, result.stderr
    assert "pixels are 20 x 20 m" in lines[0] and "expects 8-12.5 m" in lines[0]
    assert "--allow-unusual-input" in lines[0]
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["b05_b06_like.tif"]


def test_the_override_lets_them_through(dn, tmp_path):
    inputs = [_utm(tmp_path / "s20.tif", dn, pixel=20.0, nodata=0), _utm(tmp_path / "f.tif", dn.astype(np.float32)),
              _utm(tmp_path / "u8.tif", np.clip(dn / 3000 * 255, 0, 255).astype(np.uint8))]
    r = CliRunner().invoke(main, ["upscale", *map(str, inputs), "--output-dir", str(tmp_path), "--dry-run",
                                  "--json", "--allow-unusual-input"])
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [rec["status"] for rec in records] == ["planned"] * 3
    assert records[0]["resolution"] == pytest.approx([1.6, 1.6])  # what the user asked for, knowingly
    # Interpolation takes any pixel size and values without the override.
    r = CliRunner().invoke(main, ["upscale", str(inputs[0]), "-o", str(tmp_path / "bic.tif"), "--method", "bicubic",
                                  "--scale", "2"])
    assert r.exit_code == 0, r.output


def test_the_library_option_and_error(dn, tmp_path):
    from rssr_cli.methods import BicubicUpsampler
    from rssr_cli.pipeline import UpscaleOptions, plan_upscale

    stack = _utm(tmp_path / "s20.tif", dn, pixel=20.0)

    class Model(BicubicUpsampler):
        name = "diffusion"  # the pipeline sees a model; bicubic arithmetic keeps the test fast

    with pytest.raises(UnusualInputError, match="20 x 20 m") as caught:
        plan_upscale(stack, tmp_path / "o.tif", upsampler=Model())
    assert isinstance(caught.value, UsageError) and isinstance(caught.value, InputError)
    assert caught.value.exit_code == 2
    plan = plan_upscale(stack, tmp_path / "o.tif", UpscaleOptions(allow_unusual_input=True), upsampler=Model())
    assert plan.hr_grid.res == pytest.approx((1.6, 1.6))


def test_ten_metres_in_a_geographic_crs_pass_and_twenty_are_measured_in_metres(dn, tmp_path):
    with open_scene(BOADELLA, bidx=[2, 3, 4, 8]) as scene:  # EPSG:4326, 1.2e-4 x 9.0e-5 degrees at 42.3 N
        x, y = ground_pixel_size(scene.grid)
        assert x == pytest.approx(9.96, abs=0.05) and y == pytest.approx(10.01, abs=0.05)
        check_input(scene)
    coarse = write_raster(tmp_path / "g20.tif", dn, crs="EPSG:4326", descriptions=BANDS,
                          transform=Affine(2.4207e-4, 0, 2.8, 0, -1.8033e-4, 42.35))
    with pytest.raises(UnusualInputError, match=r"pixels are 19.9 x 20 m .*degrees at latitude 42.3"):
        _check(coarse)


def test_web_mercator_is_measured_on_the_ground(dn, tmp_path):
    # At 60 N a Web Mercator "metre" is half a metre on the ground: 20 map units are a 10 m pixel.
    y60 = 8399737.89
    ok = write_raster(tmp_path / "m.tif", dn, crs="EPSG:3857", descriptions=BANDS,
                      transform=Affine(20.0, 0, 1000000.0, 0, -20.0, y60))
    _check(ok)
    with open_scene(ok) as scene:
        assert ground_pixel_size(scene.grid) == pytest.approx((10.0, 10.0), abs=0.05)


@pytest.mark.parametrize("make,match", [
    (lambda dn: dn.astype(np.float32), r"median reflectance is [\d.]+ \(float32"),  # reflectance x 10000 as float
    (lambda dn: np.clip(dn / 3000 * 255, 0, 255).astype(np.uint8), r"at most 255 \(uint8"),  # a rendering
    (lambda dn: np.clip(dn / 3000 * 255, 1, 255).astype(np.uint16), "8-bit display values"),  # the same as uint16
])
def test_implausible_values_are_refused(dn, tmp_path, make, match):
    path = _utm(tmp_path / "v.tif", make(dn))
    with pytest.raises(UnusualInputError, match=match) as caught:
        _check(path)
    message = str(caught.value)
    assert "\n" not in message and "expects reflectance" in message and "--allow-unusual-input" in message
    _check(path, None)  # nothing expected, nothing refused


def test_plausible_values_pass(dn, tmp_path):
    _check(_utm(tmp_path / "dn.tif", dn))  # DN / 10000
    _check(_utm(tmp_path / "refl.tif", (dn / 10000).astype(np.float32)))  # float reflectance
    _check(_utm(tmp_path / "offset.tif", dn + 1000, offsets=[-0.1] * 4, scales=[1e-4] * 4))  # baseline 04.00
    # 8-bit data that its metadata scales to reflectance is a quantised reflectance product, not a rendering.
    _check(_utm(tmp_path / "q8.tif", np.clip(dn / 40, 0, 254).astype(np.uint8), scales=[0.004] * 4))
    # Dark water: low reflectance, but DNs above 255 somewhere.
    water = np.full((4, 32, 32), 150, np.uint16)
    water[0, 4:8, 4:8] = 400
    _check(_utm(tmp_path / "water.tif", water))
    # No valid pixel in the sample: nothing to judge on values.
    _check(_utm(tmp_path / "empty.tif", np.zeros((4, 32, 32), np.uint16)))


def test_what_each_method_expects():
    from rssr_cli.methods import BicubicUpsampler

    assert expected_input(BicubicUpsampler()) is None
    assert expected_input(type("M", (), {"name": "diffusion"})()) == DIFFUSION_INPUT
    assert expected_input(type("M", (), {"name": "sr3"})()).what == "the sr3 method"
    declared = ExpectedInput(what="a 20 m model", pixel_m=20.0, pixel_range_m=(16.0, 25.0))
    assert expected_input(type("M", (), {"name": "x", "expected_input": declared})()) is declared
    assert expected_input(type("M", (), {"name": "x", "expected_input": None})()) is None


def test_info_says_whether_the_model_would_take_the_input(dn, tmp_path):
    good, coarse = _utm(tmp_path / "s10.tif", dn), _utm(tmp_path / "s20.tif", dn, pixel=20.0)
    r = CliRunner().invoke(main, ["info", str(good), "--json"])
    record = json.loads(r.stdout)
    assert record["ground pixel"] == "10 x 10 m" and record["model input"].startswith("ok")
    record = json.loads(CliRunner().invoke(main, ["info", str(coarse), "--json"]).stdout)
    assert record["model input"].startswith("refused by the diffusion model: the input's pixels are 20 x 20 m")
