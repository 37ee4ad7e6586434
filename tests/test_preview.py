"""Quick-look PNGs (rssr_cli.preview): the --preview of an output and the PNG writer the scripts share."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

from rssr_cli.preview import write_png, write_preview


def _read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return ds.read()


@pytest.mark.parametrize("bands", [3, 4])
def test_write_png_keeps_the_pixels_and_leaves_nothing_beside(tmp_path, bands):
    image = np.random.default_rng(0).integers(0, 256, (bands, 7, 5), dtype=np.uint8)
    path = write_png(image, tmp_path / "x.png")
    assert path == tmp_path / "x.png" and np.array_equal(_read(path), image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


def test_preview_is_true_colour_with_nodata_transparent(tmp_path):
    data = np.zeros((4, 20, 30), dtype=np.float32)
    data[0], data[1], data[2] = 0.1, 0.2, 0.3  # B02 B03 B04
    data[:3, :, 15:] += 0.1
    data[:, :5, :5] = np.nan
    cog = tmp_path / "sr.tif"
    with rasterio.open(cog, "w", driver="GTiff", width=30, height=20, count=4, dtype="float32", nodata=np.nan,
                       crs="EPSG:32631", transform=from_origin(0, 0, 0.8, 0.8)) as ds:
        ds.write(data)
        ds.descriptions = ("B02", "B03", "B04", "B08")
    png = _read(write_preview(cog))
    assert png.shape == (4, 20, 30)
    assert (png[3, :5, :5] == 0).all() and (png[3, 5:, 5:] == 255).all()  # nodata is transparent
    # Each band is stretched on its own: the brighter right half stays brighter in every channel.
    assert (png[:3, 10, 20] > png[:3, 10, 10]).all()
