"""`rssr prepare`, `rssr train`, `rssr evaluate`: thin commands, JSON on stdout, one-line errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from rssr_cli.cli import main

DATA = Path(__file__).parent / "data"


def _run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.slow
def test_prepare_train_evaluate_end_to_end(tmp_path):
    cache = tmp_path / "p.npz"
    r = _run("prepare", str(DATA / "train_pairs" / "manifest.csv"), "-o", str(cache), "--patch", "8",
             "--missing-band", "mask", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["patches"] == 6 and info["sources_kept"] == 1 and cache.is_file()
    report = json.loads(Path(info["report"]).read_text())
    assert report["sources"][0]["chunks"][0]["status"] == "kept"

    # Refuses to overwrite; exit 1 with one line.
    r = _run("prepare", str(DATA / "train_pairs" / "manifest.csv"), "-o", str(cache), "--patch", "8")
    assert r.exit_code == 1 and "--overwrite" in r.output and len(r.output.strip().splitlines()) == 1

    run = tmp_path / "run"
    r = _run("train", str(cache), "-o", str(run), "--steps", "2", "--batch-size", "2", "--device", "cpu",
             "--set", "model.preset=tiny", "--set", "val_every=2", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert Path(out["weights"]).is_file() and out["steps"] == 2

    r = _run("evaluate", str(cache), "--weights", out["weights"], "-m", "lr_start", "-m", "bicubic", "--json")
    assert r.exit_code == 0, r.output
    ev = json.loads(r.stdout)
    assert set(ev["methods"]) == {"lr_start", "bicubic"} and ev["patches"] == 6

    r = _run("evaluate", str(cache), "-m", "bicubic")
    assert r.exit_code == 0 and "omission" in r.stdout and "bicubic" in r.stdout

    # Training from a cache needs no rasterio (a lent GPU machine has torch but not the geospatial stack).
    code = ("import sys; sys.modules['rasterio'] = None; from rssr_cli.cli import main; "
            f"main(['train', {str(cache)!r}, '-o', {str(tmp_path / 'bare')!r}, '--steps', '1', '--batch-size', '2', "
            "'--device', 'cpu', '--set', 'model.preset=tiny'])")
    bare = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert bare.returncode == 0, bare.stderr
    assert (tmp_path / "bare" / "model.safetensors").is_file()


def test_train_usage_errors_exit_2(tmp_path):
    r = _run("train", str(tmp_path / "x.npz"), "--set", "stpes=3")
    assert r.exit_code == 2 and "unknown training option" in r.output
    r = _run("prepare", str(DATA / "train_hr"), "-o", str(tmp_path / "p.npz"), "--synthetic-lr", "--patch", "7")
    assert r.exit_code == 2 and "multiple of 2" in r.output


def test_data_errors_exit_1(tmp_path):
    r = _run("prepare", str(DATA / "train_hr"), "-o", str(tmp_path / "p.npz"))
    assert r.exit_code == 1 and "--synthetic-lr" in r.output
    r = _run("prepare", str(DATA / "train_hr"), "-o", str(tmp_path / "p.npz"), "--synthetic-lr")
    assert r.exit_code == 1 and "--missing-band mask" in r.output
    r = _run("train", str(tmp_path / "missing.npz"), "-o", str(tmp_path / "run"))
    assert r.exit_code == 1 and "no such patch cache" in r.output


@pytest.mark.slow
def test_train_directly_on_an_archive(tmp_path):
    run = tmp_path / "run"
    r = _run("train", str(DATA / "train_hr"), "--synthetic-lr", "-o", str(run), "--steps", "1", "--batch-size", "2",
             "--device", "cpu", "--set", "model.preset=tiny", "--set", "prepare.patch=8",
             "--set", "prepare.missing_band=mask", "--set", 'prepare.hr_bands="B04=1,B03=2,B02=3"', "--json")
    assert r.exit_code == 0, r.output
    assert (run / "patches.npz").is_file()
    from rssr_cli.patches import load_cache

    cache = load_cache(run / "patches.npz")
    assert cache.synthetic and cache.meta["report"]["options"]["hr_bands"] == {"B04": 1, "B03": 2, "B02": 3}
