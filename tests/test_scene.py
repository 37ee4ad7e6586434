import math
from fractions import Fraction

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from conftest import AWS_BANDS, BOADELLA, NOCRS, write_raster
from rssr_cli.bands import identify_band
from rssr_cli.errors import InputError
from rssr_cli.scene import Grid, open_scene
from rssr_cli.train.bands import resolve_band_map


def test_multiband_needs_bidx_without_descriptions():
    with pytest.raises(InputError, match="-b/--bidx"):
        open_scene(BOADELLA)
    with open_scene(BOADELLA, bidx=[2, 3, 4, 8]) as scene:
        assert [b.bidx for b in scene.bands] == [2, 3, 4, 8]
        assert scene.dtype == "int16"
        assert scene.grid.crs.to_epsg() == 4326


def test_bands_identified_from_descriptions(tmp_path):
    data = np.arange(5 * 4 * 4, dtype=np.uint16).reshape(5, 4, 4) + 1
    path = write_raster(tmp_path / "d.tif", data, descriptions=["B08", "B04", "B03", "B02", "B11"])
    with open_scene(path) as scene:
        assert [(b.name, b.bidx) for b in scene.bands] == [("B02", 4), ("B03", 3), ("B04", 2), ("B08", 1)]


def test_per_band_files_identified_by_name():
    with open_scene(list(reversed(AWS_BANDS))) as scene:
        assert [scene.paths[b.file].split("/")[-1] for b in scene.bands] == ["B02.tif", "B03.tif", "B04.tif",
                                                                             "B08.tif"]
        assert scene.nodata == 0 and scene.nodata_source == "file"


def test_reflectance_from_dn_default_and_offset(utm_scene):
    with rasterio.open(utm_scene) as src:
        dn = src.read(1, window=Window(0, 0, 8, 8)).astype(np.float32)
    with open_scene(utm_scene) as scene:
        refl, valid = scene.read(Window(0, 0, 8, 8))
        np.testing.assert_allclose(refl[0], dn / 10000, rtol=1e-6)
        assert valid.all()
    with open_scene(utm_scene, offset=-1000) as scene:
        refl, _ = scene.read(Window(0, 0, 8, 8))
        np.testing.assert_allclose(refl[0], (dn - 1000) / 10000, rtol=1e-5, atol=1e-7)
        assert scene.radiometry[0].source == "--offset"


def test_metadata_scale_offset_is_used(tmp_path):
    data = np.full((4, 6, 6), 2000, dtype=np.uint16)
    path = write_raster(tmp_path / "m.tif", data, scales=[1e-4] * 4, offsets=[-0.1] * 4)
    with open_scene(path) as scene:
        refl, _ = scene.read(Window(0, 0, 6, 6))
        np.testing.assert_allclose(refl, 0.1, atol=1e-6)
        assert scene.radiometry[0].source == "metadata"


def test_float_input_is_reflectance_with_nan_nodata(tmp_path):
    data = np.full((4, 6, 6), 0.25, dtype=np.float32)
    data[:, 0, 0] = np.nan
    path = write_raster(tmp_path / "f.tif", data)
    with open_scene(path) as scene:
        refl, valid = scene.read(Window(0, 0, 6, 6))
        assert math.isnan(scene.nodata)
        assert not valid[0, 0] and valid.sum() == 35
        np.testing.assert_allclose(refl, 0.25)  # nodata filled, no NaN reaches a model


def test_nodata_is_invalid_and_outside_is_reflected(utm_scene, tmp_path):
    with rasterio.open(utm_scene) as src:
        data = src.read()
    data[:, :4, :4] = 0
    path = write_raster(tmp_path / "nd.tif", data, nodata=0, descriptions=["B02", "B03", "B04", "B08"])
    with open_scene(path) as scene:
        refl, valid = scene.read(Window(-2, -2, 10, 10))
        assert refl.shape == (4, 10, 10)
        assert not valid[:6, :6].any() and valid[6:, 6:].all()
        assert np.isfinite(refl).all()


@pytest.mark.parametrize("make,match", [
    (lambda tmp: NOCRS, "not georeferenced"),
    (lambda tmp: write_raster(tmp / "two.tif", np.ones((2, 4, 4), np.uint16)), "rssr needs 4"),
    (lambda tmp: ((tmp / "bad.tif").write_bytes(b"II*\x00garbage" * 10), tmp / "bad.tif")[1], "cannot open"),
    (lambda tmp: tmp / "missing.tif", "cannot open"),
])
def test_bad_inputs(tmp_path, make, match):
    with pytest.raises(InputError, match=match):
        open_scene(make(tmp_path))


def test_truncated_file_is_refused(tmp_path):
    blob = BOADELLA.read_bytes()
    path = tmp_path / "truncated.tif"
    path.write_bytes(blob[: len(blob) // 3])
    with pytest.raises(InputError):
        with open_scene(path, bidx=[2, 3, 4, 8]) as scene:
            scene.read(Window(0, 0, scene.grid.width, scene.grid.height))


def test_bands_on_different_grids_are_refused(tmp_path):
    a = write_raster(tmp_path / "B02.tif", np.ones((1, 4, 4), np.uint16))
    b = write_raster(tmp_path / "B03.tif", np.ones((1, 5, 4), np.uint16))
    with pytest.raises(InputError, match="same grid"):
        open_scene([a, b, a, a])


def test_vrt_of_per_band_files_with_descriptions(tmp_path):
    with rasterio.open(AWS_BANDS[0]) as ds:
        width, height, crs, transform = ds.width, ds.height, ds.crs, ds.transform
    gt = ", ".join(str(v) for v in transform.to_gdal())
    bands = "".join(
        f'<VRTRasterBand dataType="UInt16" band="{i}"><Description>{path.stem}</Description>'
        f"<NoDataValue>0</NoDataValue><SimpleSource><SourceFilename>{path}</SourceFilename>"
        f"<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>"
        for i, path in enumerate(reversed(AWS_BANDS), start=1))
    vrt = tmp_path / "stack.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{crs.to_wkt()}</SRS>'
                   f"<GeoTransform>{gt}</GeoTransform>{bands}</VRTDataset>")
    with open_scene(vrt) as scene:
        assert [b.bidx for b in scene.bands] == [4, 3, 2, 1]  # found by description, not position
        refl, valid = scene.read(Window(0, 0, 16, 16))
        with rasterio.open(AWS_BANDS[0]) as ds:
            np.testing.assert_allclose(refl[0], ds.read(1, window=Window(0, 0, 16, 16)) / 10000, rtol=1e-6)


def test_undeclared_zero_is_nodata_only_in_every_band(tmp_path):
    data = np.full((4, 6, 6), 500, dtype=np.uint16)
    data[3, 0, 0] = 0  # NIR clipped to 0 over dark water: a real value
    data[:, 5, 5] = 0  # outside the swath: every band 0
    path = write_raster(tmp_path / "z.tif", data, descriptions=["B02", "B03", "B04", "B08"])
    with open_scene(path) as scene:
        _, valid = scene.read(Window(0, 0, 6, 6))
        assert valid[0, 0] and not valid[5, 5] and valid.sum() == 35
    declared = write_raster(tmp_path / "d.tif", data, nodata=0, descriptions=["B02", "B03", "B04", "B08"])
    with open_scene(declared) as scene:  # a declared nodata value counts in any band
        _, valid = scene.read(Window(0, 0, 6, 6))
        assert not valid[0, 0] and not valid[5, 5]


@pytest.mark.parametrize("text,band", [
    ("Near Infrared", "B08"), ("near-infrared (NIR)", "B08"), ("B8", "B08"), ("B02.tif", "B02"),
    ("Blue", "B02"), ("B20", None), ("reddish", None), ("B8A", None), (None, None),
])
def test_identify_band_matches_whole_words(text, band):
    assert identify_band(text) == band


def test_near_infrared_description_is_found_by_upscale_and_prepare(tmp_path):
    descriptions = ["Red", "Green", "Blue", "Near Infrared"]
    path = write_raster(tmp_path / "rgbn.tif", np.ones((4, 4, 4), np.uint16), descriptions=descriptions)
    with open_scene(path) as scene:  # upscale
        assert [(b.name, b.bidx) for b in scene.bands] == [("B02", 3), ("B03", 2), ("B04", 1), ("B08", 4)]
    bmap = resolve_band_map(("B02", "B03", "B04", "B08"), 4, descriptions, ["gray"] * 4, None, role="hr")  # prepare
    assert bmap.sources == (3, 2, 1, 4)


def test_flipped_grid_is_refused(tmp_path):
    south_up = Affine(10.0, 0, 500000.0, 0, 10.0, 5200000.0)
    path = write_raster(tmp_path / "s.tif", np.ones((4, 4, 4), np.uint16), transform=south_up)
    with pytest.raises(InputError, match="north-up"):
        open_scene(path)


def test_grid_bounds_are_west_south_east_north():
    grid = Grid(4, 2, Affine(10.0, 0, 500000.0, 0, -10.0, 5200000.0), CRS.from_epsg(32632))
    assert grid.bounds == (500000.0, 5199980.0, 500040.0, 5200000.0)
    assert grid.zoom(Fraction(25, 2)).bounds == grid.bounds
