"""Golden outputs: ``rssr upscale`` with the shipped model and a fixed seed gives the same pixels as when the golden
file was made. Refactors must not change what users get; a deliberate change to the model or the sampler regenerates
the file (``python tests/test_golden.py``) and says so in its commit.

The golden file keeps every third pixel of each output (a 50 x 100 x 4 sample of the 150 x 300 x 4 output) and the
per-band means of all pixels, so that it stays small; a shift of any tile, the noise field, the blend or the encoding
changes both. The tolerance (1 DN, 1e-5 reflectance of spread) absorbs CPU kernel differences between machines, not
changes of method.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))  # conftest helpers when run as a script

from conftest import BOADELLA, write_raster  # noqa: E402

GOLDEN = Path(__file__).parent / "data" / "golden_upscale.npz"
STRIDE = 3
#: A 24 x 12 LR px window (300 x 150 HR px) of real Boadella pixels (water, shore, forest) in tiles of 12 LR px
#: overlapping by 4, so tiling, context, blending and position-keyed noise all take part.
WINDOW = ["--bbox", "500040,5199640,500280,5199760", "--bbox-crs", "scene", "--tile-size", "12", "--overlap", "4"]
CASES: dict[str, list[str]] = {
    "diffusion": ["--seed", "11", "--samples", "2"],
    "bicubic": ["--method", "bicubic"],
}


def _scene(folder: Path) -> Path:
    with rasterio.open(BOADELLA) as src:
        data = np.maximum(src.read([2, 3, 4, 8]), 1).astype(np.uint16)
    return write_raster(folder / "scene.tif", data, descriptions=["B02", "B03", "B04", "B08"], nodata=0)


def run_case(name: str, folder: Path) -> dict[str, np.ndarray]:
    from rssr_cli.cli import main

    scene = _scene(folder)
    out = folder / f"{name}.tif"
    result = CliRunner().invoke(main, ["upscale", str(scene), "-o", str(out), "-q", *WINDOW, *CASES[name]])
    assert result.exit_code == 0, result.output
    arrays: dict[str, np.ndarray] = {}
    with rasterio.open(out) as ds:
        data = ds.read()
        arrays[f"{name}_sample"] = data[:, ::STRIDE, ::STRIDE]
        arrays[f"{name}_means"] = data.reshape(data.shape[0], -1).mean(axis=1)
    std_path = out.with_name(f"{out.stem}_std.tif")
    if std_path.exists():
        with rasterio.open(std_path) as ds:
            std = ds.read()
            arrays[f"{name}_std_sample"] = std[:, ::STRIDE, ::STRIDE]
    return arrays


@pytest.mark.parametrize("name", list(CASES))
def test_upscale_unchanged(name: str, tmp_path: Path) -> None:
    golden = np.load(GOLDEN)
    arrays = run_case(name, tmp_path)
    for key, value in arrays.items():
        expected = golden[key]
        assert value.shape == expected.shape, key
        if key.endswith("_std_sample"):
            np.testing.assert_allclose(value, expected, atol=1e-5, err_msg=key)
        else:
            diff = np.abs(value.astype(np.float64) - expected.astype(np.float64))
            assert diff.max() <= 1.0, f"{key}: max difference {diff.max():g} DN"
    if name == "diffusion":
        assert f"{name}_std_sample" in arrays


if __name__ == "__main__":  # regenerate the golden file from the current code
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        everything: dict[str, np.ndarray] = {}
        for case in CASES:
            everything.update(run_case(case, Path(tmp)))
    np.savez_compressed(GOLDEN, **everything)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")
