"""The COG sink on its own: blocks in, a described COG (and its companion) out, or nothing at all."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rio_cogeo.cogeo import cog_validate

from rssr_cli.blend import FinishedRows
from rssr_cli.cog import CogOptions
from rssr_cli.encoding import OutputEncoding
from rssr_cli.scene import Grid, Radiometry
from rssr_cli.sink import CogSink

GRID = Grid(40, 30, Affine(0.8, 0, 500000, 0, -0.8, 5200000), CRS.from_epsg(32632))
BANDS = ("B02", "B03")
OFFSET = Radiometry(1e-4, -0.1, "metadata")
ENCODING = OutputEncoding("uint16", 0.0, (OFFSET, OFFSET), declares_radiometry=True)


def _blocks() -> list[tuple[FinishedRows, np.ndarray]]:
    """Two blocks side by side covering the grid; reflectance 0.05 (DN 1500 with the offset), one invalid pixel."""
    out = []
    for col0, width in ((0, 25), (25, 15)):
        data = np.full((2, 30, width), 0.05, np.float32)
        valid = np.ones((30, width), bool)
        valid[3, 4] = False
        out.append((FinishedRows(0, col0, data, np.full_like(data, 0.01)), valid))
    return out


def test_blocks_become_a_described_cog_with_its_companion(tmp_path: Path) -> None:
    out, std = tmp_path / "o.tif", tmp_path / "o_std.tif"
    with CogSink(out, GRID, ENCODING, bands=BANDS, tags={"RSSR_METHOD": "test"}, cog=CogOptions(blocksize=16),
                 std_output=std) as sink:
        assert sink.with_std
        for block, valid in _blocks():
            sink.write(block, valid)
        sink.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.tif", "o_std.tif"]  # no scratch left
    with rasterio.open(out) as dst, rasterio.open(std) as spread:
        dn = dst.read()
        assert dn[:, 3, 4].tolist() == [0, 0] and dn[:, 3, 29].tolist() == [0, 0]
        assert (np.delete(dn.reshape(2, -1), [3 * 40 + 4, 3 * 40 + 29], axis=1) == 1500).all()
        assert dst.descriptions == BANDS and dst.tags()["RSSR_METHOD"] == "test"
        assert dst.scales == (1e-4, 1e-4) and dst.offsets == (-0.1, -0.1) and dst.nodata == 0
        assert spread.descriptions == ("B02 std", "B03 std") and "RSSR_LAYER" in spread.tags()
        assert np.isnan(spread.read(1)[3, 4]) and spread.read(1)[0, 0] == pytest.approx(0.01)
    assert cog_validate(str(out))[0] and cog_validate(str(std))[0]


def test_leaving_without_commit_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with CogSink(tmp_path / "o.tif", GRID, ENCODING, bands=BANDS, tags={}, cog=CogOptions(),
                     std_output=tmp_path / "o_std.tif") as sink:
            block, valid = _blocks()[0]
            sink.write(block, valid)
            raise RuntimeError("upstream failure")
    assert list(tmp_path.iterdir()) == []


def test_a_write_error_on_the_writer_thread_reaches_the_caller(tmp_path: Path) -> None:
    wrong = FinishedRows(0, 30, np.zeros((2, 30, 20), np.float32), None)  # 10 columns past the grid's edge
    with pytest.raises(ValueError, match="does not fit"):
        with CogSink(tmp_path / "o.tif", GRID, ENCODING, bands=BANDS, tags={}, cog=CogOptions()) as sink:
            sink.write(wrong, np.ones((30, 20), bool))
            sink.commit()
    assert list(tmp_path.iterdir()) == []
