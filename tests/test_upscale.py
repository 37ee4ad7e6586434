"""End-to-end upscales on real Sentinel-2 pixels with the bicubic method (and stand-in models)."""

import json
from fractions import Fraction

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

from conftest import BOADELLA, write_raster
from rssr_cli import upscale
from rssr_cli.errors import OutputError
from rssr_cli.methods import BicubicOptions, BicubicUpsampler, TileResult
from rssr_cli.pipeline import UpscaleOptions, plan_upscale
from rssr_cli.tiling import plan_tiles

BICUBIC = BicubicOptions()
S = Fraction(25, 2)


def opts(**kw) -> UpscaleOptions:
    return UpscaleOptions(method=kw.pop("method", BICUBIC), **kw)


def test_full_scene_grid_crs_and_cog(utm_scene, tmp_path):
    out = tmp_path / "out.tif"
    result = upscale(utm_scene, out, opts(tile_size=32, overlap=4))
    with rasterio.open(utm_scene) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs
        assert dst.res == (0.8, 0.8)
        assert dst.transform.c == src.transform.c and dst.transform.f == src.transform.f
        assert (dst.width, dst.height) == (1600, 1600)
        np.testing.assert_allclose(dst.bounds, src.bounds, atol=0.4)  # within half an HR pixel
        assert dst.dtypes[0] == "uint16" and dst.nodata == 0
        assert dst.descriptions == ("B02", "B03", "B04", "B08")
        assert dst.overviews(1) == [2, 4]
        tags = dst.tags()
        assert tags["RSSR_METHOD"] == "bicubic" and tags["RSSR_SCALE"] == "25/2"
        assert tags["OVERVIEW_RESAMPLING"] == "AVERAGE"
        assert "RSSR_VERSION" in tags and tags["RSSR_SOURCE"] == "utm.tif"
        # Scene borders are not darkened: the edge rows keep the level of the LR edge pixels.
        lr = src.read(1).astype(float)
        hr = dst.read(1).astype(float)
        assert abs(hr[:6].mean() - lr[0].mean()) < 0.05 * lr[0].mean()
        assert abs(hr[:, -6:].mean() - lr[:, -1].mean()) < 0.05 * lr[:, -1].mean()
    assert cog_validate(str(out), strict=True)[0]
    assert result.plan.tiles == 25
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif", "utm.tif"]  # no scratch left


def test_int16_epsg4326_scene_with_bidx(tmp_path):
    out = tmp_path / "b.tif"
    upscale(BOADELLA, out, opts(bidx=(2, 3, 4, 8)))
    with rasterio.open(BOADELLA) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.dtypes[0] == "int16"
        assert dst.res == pytest.approx((src.res[0] / 12.5, src.res[1] / 12.5), rel=1e-12)
        assert (dst.width, dst.height) == (1600, 1600)
        lr = src.read(4).astype(float)
        hr = dst.read(3).astype(float)
        # 25 x 25 HR pixels are exactly 2 x 2 LR pixels: block means agree.
        lr_blocks = lr.reshape(64, 2, 64, 2).mean(axis=(1, 3))
        hr_blocks = hr.reshape(64, 25, 64, 25).mean(axis=(1, 3))
        assert np.corrcoef(lr_blocks.ravel(), hr_blocks.ravel())[0, 1] > 0.99
        assert abs(hr_blocks.mean() - lr_blocks.mean()) < 0.01 * lr_blocks.mean()


def test_hr_grid_is_aligned_with_lr_pixel_edges(tmp_path):
    """A single bright LR pixel lands centred on its 12.5 x 12.5 HR footprint."""
    data = np.full((4, 20, 20), 1000, dtype=np.uint16)
    data[:, 9, 6] = 5000
    path = write_raster(tmp_path / "dot.tif", data, descriptions=["B02", "B03", "B04", "B08"])
    out = tmp_path / "dot_sr.tif"
    upscale(path, out, opts(tile_size=8, overlap=2))
    with rasterio.open(out) as dst:
        hr = dst.read(1).astype(float) - 1000
    rows, cols = np.indices(hr.shape)
    w = np.clip(hr, 0, None)
    centroid = ((rows + 0.5) * w).sum() / w.sum(), ((cols + 0.5) * w).sum() / w.sum()
    assert centroid == pytest.approx((9.5 * 12.5, 6.5 * 12.5), abs=0.25)


@pytest.mark.parametrize("crs", ["EPSG:32632", "EPSG:4326", "EPSG:3857"])
def test_bbox_outputs_are_aligned_and_cover_the_aoi(utm_scene, tmp_path, crs):
    from pyproj import Transformer

    t = Transformer.from_crs("EPSG:32632", crs, always_xy=True)
    (x0, x1), (y0, y1) = t.transform([500123.0, 500655.0], [5198903.0, 5199412.0])
    bbox = (x0, y0, x1, y1)
    out = tmp_path / "aoi.tif"
    result = upscale(utm_scene, out, opts(bbox=bbox, bbox_crs=crs))
    win = result.plan.window
    assert win.col_off % 2 == 0 and win.row_off % 2 == 0
    with rasterio.open(utm_scene) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs
        # The output origin sits on an LR pixel edge, an even number of LR pixels from the scene origin.
        assert (dst.transform.c - src.transform.c) / 10 == win.col_off
        assert (src.transform.f - dst.transform.f) / 10 == win.row_off
        lr_bounds = src.window_bounds(win)
        np.testing.assert_allclose(dst.bounds, lr_bounds, atol=0.4)
        assert dst.res == (0.8, 0.8)
    assert cog_validate(str(out))[0]


def test_polygon_aoi_masks_outside_and_reads_context(utm_scene, tmp_path):
    from pyproj import Transformer

    t = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True)
    corners = [(500200, 5199800), (500900, 5199800), (500200, 5199100)]  # a right triangle
    ring = [list(t.transform(x, y)) for x, y in corners]
    aoi = tmp_path / "tri.geojson"
    aoi.write_text(json.dumps({"type": "Feature", "properties": {},
                               "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]}}))
    out = tmp_path / "tri_sr.tif"
    upscale(utm_scene, out, opts(aoi=str(aoi)))
    with rasterio.open(out) as dst:
        band = dst.read(1)
        rows, cols = np.indices(band.shape)
        x = dst.transform.c + (cols + 0.5) * dst.transform.a
        y = dst.transform.f + (rows + 0.5) * dst.transform.e
        inside = (x - 500200) / 700 + (5199800 - y) / 700 < 1  # left of the hypotenuse
        margin = np.abs((x - 500200) / 700 + (5199800 - y) / 700 - 1) > 0.01
        assert (band[~inside & margin] == 0).all()
        assert (band[inside & margin] > 0).all()


def test_nodata_is_carried_to_the_output(utm_scene, tmp_path):
    with rasterio.open(utm_scene) as src:
        data = src.read()
    data[:, 10:20, 30:50] = 0
    path = write_raster(tmp_path / "holes.tif", data, nodata=0, descriptions=["B02", "B03", "B04", "B08"])
    out = tmp_path / "holes_sr.tif"
    upscale(path, out, opts(tile_size=32, overlap=4))
    with rasterio.open(out) as dst:
        hr = dst.read(1, window=Window(0, 0, 1600, 400))
        assert (hr[125:250, 375:625] == 0).all()
        assert (hr[:125] > 0).all() and (hr[250:] > 0).all()
        assert (hr[:, :375] > 0).all() and (hr[:, 625:] > 0).all()


def test_float32_reflectance_output(utm_scene, tmp_path):
    out = tmp_path / "f.tif"
    upscale(utm_scene, out, opts(dtype="float32", bbox=(500000, 5199000, 500300, 5199300), bbox_crs="scene"))
    with rasterio.open(utm_scene) as src, rasterio.open(out) as dst:
        assert dst.dtypes[0] == "float32" and np.isnan(dst.nodata)
        hr = dst.read(1)
        lr = src.read(1, window=Window(0, 70, 30, 30)) / 10000
        assert hr.mean() == pytest.approx(lr.mean(), rel=0.02)


def test_metadata_offset_is_restored(tmp_path):
    data = np.full((4, 16, 16), 1500, dtype=np.uint16)
    path = write_raster(tmp_path / "off.tif", data, scales=[1e-4] * 4, offsets=[-0.1] * 4,
                        descriptions=["B02", "B03", "B04", "B08"])
    out = tmp_path / "off_sr.tif"
    upscale(path, out, opts())
    with rasterio.open(out) as dst:
        assert dst.scales == (1e-4,) * 4 and dst.offsets == (-0.1,) * 4
        assert (dst.read() == 1500).all()


def test_refuses_to_overwrite_and_overwrites_with_flag(utm_scene, tmp_path):
    out = tmp_path / "o.tif"
    out.write_bytes(b"precious")
    with pytest.raises(OutputError, match="--overwrite"):
        upscale(utm_scene, out, opts())
    assert out.read_bytes() == b"precious"
    upscale(utm_scene, out, opts(overwrite=True, bbox=(500000, 5199000, 500100, 5199100), bbox_crs="scene"))
    assert cog_validate(str(out))[0]


def exploding(base: type) -> BicubicUpsampler:
    """An upsampler of class ``base`` that fails on its fourth batch (mid-run, after blocks were written)."""

    class Exploding(base):
        calls = 0

        def upscale_tiles(self, lr, origins):
            self.calls += 1
            if self.calls > 3:
                raise RuntimeError("boom")
            return super().upscale_tiles(lr, origins)

    return Exploding()


def test_failure_leaves_nothing_behind(utm_scene, tmp_path):
    out = tmp_path / "x.tif"
    with pytest.raises(RuntimeError):
        upscale(utm_scene, out, opts(tile_size=16, overlap=2), upsampler=exploding(BicubicUpsampler))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["utm.tif"]


class TileOffsets(BicubicUpsampler):
    """A stand-in model that adds a different constant to every tile: the worst case for seams."""

    def upscale_tiles(self, lr, origins):
        hr = super().upscale_tiles(lr, origins).mean
        for k, (r, c) in enumerate(origins):
            hr[k] += 0.05 * ((r * 7 + c * 13) // 100 % 5)
        return TileResult(mean=hr)


def _max_gradient(a, axis):
    return np.abs(np.diff(a, axis=axis))


def test_no_seams_between_tiles(utm_scene, tmp_path):
    out = tmp_path / "seams.tif"
    options = opts(tile_size=32, overlap=8, dtype="float32")
    result = upscale(utm_scene, out, options, upsampler=TileOffsets())
    plan = plan_tiles(result.plan.window, S, tile_size=32, overlap=8, context=4)
    with rasterio.open(out) as dst:
        img = dst.read(1).astype(np.float64)
    gx = _max_gradient(img, 1)
    # Where a pasted tile would start or end (gx[:, c] is the step between columns c and c + 1).
    edges = np.zeros(gx.shape[1], bool)
    for j in range(1, len(plan.cols.starts)):
        edges[plan.hr(plan.cols.starts[j]) - 1] = True
        edges[plan.hr(plan.cols.starts[j - 1] + plan.cols.size) - 1] = True
    across, inside = gx[:, edges].max(), gx[:, ~edges].max()
    assert across <= inside
    gy = _max_gradient(img, 0)  # and between tile rows
    row_edges = np.zeros(gy.shape[0], bool)
    for i in range(1, len(plan.rows.starts)):
        row_edges[plan.hr(plan.rows.starts[i]) - 1] = True
        row_edges[plan.hr(plan.rows.starts[i - 1] + plan.rows.size) - 1] = True
    assert gy[row_edges].max() <= gy[~row_edges].max()
    # The same check catches tiles pasted without feathering (it can fail).
    hard = img.copy()
    for j in range(1, len(plan.cols.starts)):
        hard[:, plan.hr(plan.cols.starts[j]):] += 0.05
    assert _max_gradient(hard, 1)[:, edges].max() > _max_gradient(hard, 1)[:, ~edges].max()


class WithStd(BicubicUpsampler):
    samples = 2

    def upscale_tiles(self, lr, origins):
        mean = super().upscale_tiles(lr, origins).mean
        return TileResult(mean=mean, std=np.full_like(mean, 0.01))


def test_samples_write_an_uncertainty_companion(utm_scene, tmp_path):
    out = tmp_path / "m.tif"
    options = UpscaleOptions(method=BICUBIC,
                             bbox=(500000, 5199000, 500200, 5199200), bbox_crs="scene")
    result = upscale(utm_scene, out, options, upsampler=WithStd())
    std_path = tmp_path / "m_std.tif"
    assert result.uncertainty == str(std_path)
    with rasterio.open(out) as a, rasterio.open(std_path) as b:
        assert (a.transform, a.crs, a.shape) == (b.transform, b.crs, b.shape)
        assert b.dtypes[0] == "float32"
        np.testing.assert_allclose(b.read(1), 0.01, rtol=1e-5)
    assert cog_validate(str(std_path))[0]


def test_plan_writes_nothing(utm_scene, tmp_path):
    plan = plan_upscale(utm_scene, tmp_path / "p.tif", opts())
    assert plan.hr_grid.shape == (1600, 1600)
    assert plan.output_bytes == 1600 * 1600 * 4 * 2
    assert not (tmp_path / "p.tif").exists()


def test_the_scene_is_read_once_per_row_of_tiles(utm_scene, tmp_path, monkeypatch):
    """The output mask comes from the validity read with the strips: no extra reads for it."""
    from rssr_cli.scene import Scene

    windows = []
    read = Scene.read

    def counting_read(self, window):
        windows.append(window)
        return read(self, window)

    monkeypatch.setattr(Scene, "read", counting_read)
    options = opts(tile_size=32, overlap=4, chunk_width=700)
    upscale(utm_scene, tmp_path / "r.tif", options)
    tiles = plan_tiles(Window(0, 0, 128, 128), S, tile_size=32, overlap=4, context=4)
    chunks = list(tiles.column_chunks(700))
    assert len(chunks) > 1
    # One strip read first (the scene holds a valid pixel: Scene.any_valid), then one read per row of tiles and chunk.
    assert len(windows) == 1 + len(tiles.rows.starts) * len(chunks)


@pytest.mark.parametrize("dtype", ["float32", "uint16"])
def test_output_mask_is_the_lr_validity_under_each_pixel(tmp_path, dtype):
    """Nearest LR pixel under each HR pixel centre, across tile rows, column chunks and an odd-sized scene edge."""
    rng = np.random.default_rng(3)
    data = rng.integers(500, 3000, (4, 37, 45), dtype=np.uint16)
    holes = np.zeros((37, 45), bool)
    holes[5:9, 3:20] = holes[20:37, 40:45] = holes[14, 14] = holes[36, :7] = True
    data[:, holes] = 0
    path = write_raster(tmp_path / "odd.tif", data, nodata=0, descriptions=["B02", "B03", "B04", "B08"])
    out = tmp_path / "odd_sr.tif"
    calls = []
    upscale(path, out, opts(tile_size=12, overlap=4, chunk_width=200, dtype=dtype),
            progress=lambda done, total: calls.append((done, total)))
    with rasterio.open(out) as dst:
        hr = dst.read(1)
    rows = np.minimum(((np.arange(hr.shape[0]) + 0.5) / 12.5).astype(int), 36)
    cols = np.minimum(((np.arange(hr.shape[1]) + 0.5) / 12.5).astype(int), 44)
    expected_invalid = holes[np.ix_(rows, cols)]
    invalid = np.isnan(hr) if dtype == "float32" else hr == 0
    assert hr.shape == (463, 563)
    np.testing.assert_array_equal(invalid, expected_invalid)
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1] and len({t for _, t in calls}) == 1


def test_a_failed_output_leaves_no_uncertainty_companion(utm_scene, tmp_path, monkeypatch):
    """The output and its _std companion appear together or not at all."""
    import rssr_cli.sink
    from rssr_cli.cog import translate_to_cog

    def failing_for_the_output(scratch, output, cog, **kw):
        if not output.stem.endswith("_std"):
            raise OSError("disk full")
        translate_to_cog(scratch, output, cog, **kw)

    monkeypatch.setattr(rssr_cli.sink, "translate_to_cog", failing_for_the_output)
    options = opts(bbox=(500000, 5199000, 500200, 5199200), bbox_crs="scene")
    with pytest.raises(OSError, match="disk full"):
        upscale(utm_scene, tmp_path / "m.tif", options, upsampler=WithStd())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["utm.tif"]


def test_failure_with_samples_leaves_nothing_behind(utm_scene, tmp_path):
    with pytest.raises(RuntimeError):
        upscale(utm_scene, tmp_path / "x.tif", opts(tile_size=16, overlap=2), upsampler=exploding(WithStd))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["utm.tif"]
