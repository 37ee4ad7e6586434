"""`rssr prepare` explains what it rejects: the one-line error names the measured misregistration and the
--max-shift that would accept it, and the JSON report is written whenever something was examined, kept or not."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from rssr_cli.cli import main
from rssr_cli.errors import DataError
from rssr_cli.train.archive import NoPatchesError, PrepareOptions, prepare_archive
from rssr_cli.train.registration import misregistration_hint

DATA = Path(__file__).parent / "data"
LR = DATA / "train_pairs" / "lr" / "s2like.tif"
HR = DATA / "train_hr" / "swiss_crop.tif"
LR_SHIFT = (0.3, -0.4)  # built into s2like.tif (tests/test_archive.py)
MOVE = (2, -3)  # LR pixels (rows, cols) the shifted copy's content is moved by


def _run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def shifted_pair(tmp_path_factory) -> Path:
    """The test pair with the LR's georeferencing moved by MOVE LR pixels: a misregistration of ~4 LR px, as between
    a real Sentinel-2 scene and an orthophoto whose georeferencing is off."""
    folder = tmp_path_factory.mktemp("shifted")
    with rasterio.open(LR) as src:
        profile, data, descriptions = src.profile, src.read(), src.descriptions
    profile["transform"] = src.transform * Affine.translation(MOVE[1], MOVE[0])
    with rasterio.open(folder / "lr.tif", "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = descriptions
    manifest = folder / "manifest.csv"
    manifest.write_text(f"lr,hr\nlr.tif,{HR.resolve()}\n")
    return manifest


def _measured(message: str) -> tuple[float, float]:
    match = re.search(r"measured shift \(dy, dx\) = \((-?[\d.]+), (-?[\d.]+)\) LR px", message)
    assert match, message
    return float(match.group(1)), float(match.group(2))


def test_a_misregistered_pair_names_the_shift_and_the_option_and_still_writes_the_report(shifted_pair, tmp_path):
    cache = tmp_path / "p.npz"
    report_path = tmp_path / "p.report.json"
    r = _run("prepare", str(shifted_pair), "-o", str(cache), "--patch", "8", "--missing-band", "mask")
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1, r.output
    message = lines[0]
    # The HR seen through the moved LR grid is displaced by -(MOVE + LR_SHIFT).
    dy, dx = _measured(message)
    assert dy == pytest.approx(-(MOVE[0] + LR_SHIFT[0]), abs=0.25)
    assert dx == pytest.approx(-(MOVE[1] + LR_SHIFT[1]), abs=0.25)
    accept = int(re.search(r"pass --max-shift (\d+) to accept and correct it", message).group(1))
    assert accept > (dy**2 + dx**2) ** 0.5 and "> --max-shift 1;" in message and str(report_path) in message
    # No patch cache; the report says what was examined and what it measured.
    assert not cache.exists()
    report = json.loads(report_path.read_text())
    assert report["patches"] == 0 and report["cache"] is None and report["sources_rejected"] == 1
    assert report["error"] in message
    source = report["sources"][0]
    assert source["status"] == "rejected" and source["rejected_patches"] == {"chunk: misregistered": 1}
    chunk = source["chunks"][0]
    assert chunk["rejection"] == "misregistered" and chunk["shift_lr_px"] == pytest.approx([dy, dx], abs=0.05)
    assert f"--max-shift {accept}" in source["hints"][0]

    # The option it names accepts the pair and corrects the shift.
    r = _run("prepare", str(shifted_pair), "-o", str(cache), "--patch", "8", "--missing-band", "mask",
             "--max-shift", str(accept), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["patches"] > 0 and cache.is_file()
    kept = json.loads(report_path.read_text())["sources"][0]["chunks"][0]
    assert kept["status"] == "kept" and max(abs(v) for v in kept["residual_lr_px"]) < 0.2


def test_the_report_is_written_for_any_rejection(tmp_path):
    cache = tmp_path / "p.npz"
    r = _run("prepare", str(DATA / "train_pairs" / "manifest.csv"), "-o", str(cache), "--patch", "8",
             "--missing-band", "mask", "--min-r2", "0.9999")
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1 and "radiometric fit" in r.output
    report = json.loads((tmp_path / "p.report.json").read_text())
    assert report["sources"][0]["status"] == "rejected" and "fit" in report["sources"][0]["chunks"][0]
    assert not cache.exists()


def test_the_library_error_carries_the_report(shifted_pair):
    with pytest.raises(NoPatchesError, match=r"pass --max-shift \d+ to accept") as caught:
        prepare_archive(shifted_pair, options=PrepareOptions(patch=8, missing_band="mask"))
    assert isinstance(caught.value, DataError)
    assert caught.value.report.sources[0].chunks[0]["rejection"] == "misregistered"


def test_the_hint_summarises_several_chunks():
    chunks = [{"rejection": "misregistered", "shift_lr_px": [-5.8, -2.2]},
              {"rejection": "misregistered", "shift_lr_px": [-5.6, -2.0]},
              {"rejection": "no common structure", "shift_lr_px": [9.0, 9.0]},
              {"status": "kept", "shift_lr_px": [0.1, 0.0]}]
    hint = misregistration_hint(chunks, 2)
    assert hint == ("measured shifts of 5.95-6.20 LR px in 2 chunks (median (dy, dx) = (-5.7, -2.1)) > --max-shift 2; "
                    "pass --max-shift 7 to accept and correct it")
    assert misregistration_hint(chunks[2:], 2) is None
