"""Archive pairing, registration, radiometric fit, valid-data filtering and the patch cache (issue 4, data side)."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from rssr_cli.bands import Radiometry, stand_in_nir
from rssr_cli.degrade import downsample
from rssr_cli.errors import DataError, OutputError, UsageError
from rssr_cli.train.archive import PrepareOptions, find_sources, prepare_archive
from rssr_cli.train.bands import parse_band_map, resolve_band_map
from rssr_cli.patches import decode, encode, load_cache, save_cache
from rssr_cli.train.registration import phase_correlation

DATA = Path(__file__).parent / "data"
PAIRS = DATA / "train_pairs" / "manifest.csv"
HR_DIR = DATA / "train_hr"
SCALE = Fraction(25, 2)

# Known distortions built into tests/data/train_pairs/lr/s2like.tif by tests/data/train_make_fixtures.py.
LR_GAIN = (1.15, 1.10, 1.05)
LR_OFFSET = (0.012, 0.008, 0.004)
LR_SHIFT = (0.3, -0.4)


def _opts(**kw) -> PrepareOptions:
    base = dict(patch=8, missing_band="mask")
    base.update(kw)
    return PrepareOptions(**base)


@pytest.fixture(scope="module")
def real_pairs():
    return prepare_archive(PAIRS, options=_opts())


def test_real_pair_recovers_shift_and_radiometry(real_pairs):
    src = real_pairs.report.sources[0]
    assert src.status == "kept" and src.lr.endswith("s2like.tif")
    chunk = [c for c in src.chunks if c.get("status") == "kept"][0]
    dy, dx = chunk["shift_lr_px"]
    # The LR content sits at +LR_SHIFT; the HR seen through the LR's transform is displaced by -LR_SHIFT.
    assert dy == pytest.approx(-LR_SHIFT[0], abs=0.06) and dx == pytest.approx(-LR_SHIFT[1], abs=0.06)
    assert max(abs(v) for v in chunk["residual_lr_px"]) < 0.05
    for fit, gain, offset in zip(chunk["fit"], LR_GAIN, LR_OFFSET):
        assert fit["gain"] == pytest.approx(gain, abs=0.02)
        assert fit["offset"] == pytest.approx(offset, abs=0.003)
        assert fit["r2"] > 0.98
    # EPSG:3857 HR onto the LR's UTM grid; ground pixel measured in metres, not map units.
    assert src.details["crs"] == "EPSG:32632"
    assert 0.80 < src.details["hr_ground_pixel_m"] < 0.84


def test_real_pair_patches_are_aligned(real_pairs):
    cache = real_pairs.cache
    assert cache.lr.shape[1:] == (4, 8, 8) and cache.hr.shape[1:] == (4, 100, 100)
    lr, hr, valid = cache.batch(np.arange(len(cache)))
    # The NIR of an RGB-only HR is masked, the visible bands are not.
    assert valid[:, :3].all() and not valid[:, 3].any()
    sim = downsample(torch.from_numpy(hr), SCALE).numpy()
    err = np.abs(sim[:, :3] - lr[:, :3]).mean()
    assert err < 0.004
    # A one-LR-pixel offset would be far worse: the check above can fail.
    shifted = np.abs(sim[:, :3, 1:, :] - lr[:, :3, :-1, :]).mean()
    assert shifted > 2 * err


def test_missing_band_is_an_explicit_choice():
    with pytest.raises(DataError, match="--missing-band mask"):
        prepare_archive(PAIRS, options=_opts(missing_band="error"))


def test_misregistration_above_limit_is_rejected_with_reason():
    with pytest.raises(DataError, match="misregistered"):
        prepare_archive(PAIRS, options=_opts(max_shift=0.2))


def test_poor_radiometric_fit_is_rejected():
    with pytest.raises(DataError, match="radiometric fit"):
        prepare_archive(PAIRS, options=_opts(min_r2=0.9999))


def test_folder_layout_pairs_by_footprint(tmp_path):
    (tmp_path / "lr").mkdir()
    (tmp_path / "hr").mkdir()
    shutil.copy(DATA / "train_pairs/lr/s2like.tif", tmp_path / "lr")
    shutil.copy(HR_DIR / "swiss_crop.tif", tmp_path / "hr")
    shutil.copy(HR_DIR / "satellogic_crop.tif", tmp_path / "hr")  # Pakistan: no LR over it
    out = prepare_archive(tmp_path, options=_opts())
    by_name = {Path(s.hr).name: s for s in out.report.sources}
    assert by_name["swiss_crop.tif"].status == "kept"
    assert by_name["satellogic_crop.tif"].status == "rejected"
    assert "no overlapping LR" in by_name["satellogic_crop.tif"].reason
    assert len(out.cache) == len(prepare_archive(PAIRS, options=_opts()).cache)


def test_unpaired_lr_is_reported(tmp_path):
    (tmp_path / "lr").mkdir()
    (tmp_path / "hr").mkdir()
    shutil.copy(DATA / "train_pairs/lr/s2like.tif", tmp_path / "lr")
    shutil.copy(HR_DIR / "satellogic_crop.tif", tmp_path / "hr")
    with pytest.raises(DataError, match="s2like.tif: no overlapping HR raster"):
        prepare_archive(tmp_path, options=_opts())


def test_folder_without_layout_needs_synthetic_flag(tmp_path):
    with pytest.raises(DataError, match="--synthetic-lr"):
        find_sources(HR_DIR, synthetic_lr=False)


@pytest.fixture(scope="module")
def synthetic():
    return prepare_archive(HR_DIR, options=_opts(synthetic_lr=True))


def test_synthetic_lr_archive(synthetic):
    by_name = {Path(s.hr).name: s for s in synthetic.report.sources}
    sat, swiss = by_name["satellogic_crop.tif"], by_name["swiss_crop.tif"]
    # Satellogic: red-first with descriptions -> read from metadata, real NIR kept, its own UTM zone.
    assert sat.details["hr_band_map"].startswith("B02=3,B03=2,B04=1,B08=4")
    assert sat.details["crs"] == "EPSG:32641"
    # SWISSIMAGE in EPSG:3857 goes to UTM 32N; masked pixels are filtered out.
    assert swiss.details["crs"] == "EPSG:32632"
    assert swiss.rejected_patches.get("HR nodata/mask/saturated", 0) > 0
    assert swiss.details["hr_radiometry"].startswith("display")
    cache = synthetic.cache
    assert cache.synthetic and cache.bands == ("B02", "B03", "B04", "B08")
    lr, hr, valid = cache.batch(np.arange(len(cache)))
    pair_sat = [i for i, s in enumerate(cache.meta["sources"]) if s["hr"].endswith("satellogic_crop.tif")][0]
    assert valid[cache.pair == pair_sat].all()
    assert not valid[cache.pair != pair_sat, 3].any()
    # The stored LR is the S2-like degradation of the HR (within noise + jitter).
    sim = downsample(torch.from_numpy(hr), SCALE).numpy()
    assert np.abs(sim - lr).mean() < 0.006


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_not_georeferenced_hr_needs_pixel_size(tmp_path):
    with rasterio.open(HR_DIR / "satellogic_crop.tif") as ds:
        data = ds.read()
        desc = ds.descriptions
    path = tmp_path / "nogeo.tif"
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=4,
                       dtype="uint16") as out:
        out.write(data)
        out.descriptions = desc
    with pytest.raises(DataError, match="--hr-res"):
        prepare_archive(path, options=_opts(synthetic_lr=True))
    out = prepare_archive(path, options=_opts(synthetic_lr=True, hr_res=1.0))
    assert len(out.cache) == 4  # 160 m = 16 LR px = 2 x 2 patches of 8 (no snapping to a map grid)


def _write(path: Path, data: np.ndarray, **kw) -> Path:
    from affine import Affine

    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs="EPSG:32632", transform=Affine(0.8, 0, 500000, 0, -0.8, 5200000),
                       **kw) as out:
        out.write(data)
        out.descriptions = ("blue", "green", "red", "nir")[: data.shape[0]]
    return path


def test_saturated_and_constant_patches_are_filtered(tmp_path):
    rng = np.random.default_rng(0)
    data = (1000 + 800 * rng.random((4, 200, 200))).astype(np.uint16)
    data[:, :100, :100] = 1500  # a constant patch
    data[:, 100:, 100:][:, 50, 50] = 65535  # one saturated pixel
    _write(tmp_path / "hr.tif", data)
    out = prepare_archive(tmp_path / "hr.tif", options=_opts(synthetic_lr=True))
    rej = out.report.sources[0].rejected_patches
    assert rej["near-constant"] == 1
    assert rej["HR nodata/mask/saturated"] == 1
    assert len(out.cache) == 2


def test_hr_coarser_than_target_is_rejected(tmp_path):
    from affine import Affine

    data = np.full((3, 64, 64), 100, np.uint8)
    with rasterio.open(tmp_path / "coarse.tif", "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8",
                       crs="EPSG:32632", transform=Affine(2.0, 0, 500000, 0, -2.0, 5200000)) as out:
        out.write(data)
    with pytest.raises(DataError, match="coarser"):
        prepare_archive(tmp_path / "coarse.tif", options=_opts(synthetic_lr=True, hr_bands={"B02": 3, "B03": 2, "B04": 1}))


def test_options_validation():
    with pytest.raises(UsageError, match="multiple of 2"):
        prepare_archive(PAIRS, options=_opts(patch=7))


def test_band_maps():
    assert parse_band_map("B04=1,B03=2,B02=3", ("B02", "B03", "B04", "B08")) == {"B04": 1, "B03": 2, "B02": 3}
    with pytest.raises(UsageError):
        parse_band_map("B05=1", ("B02", "B03", "B04", "B08"))
    with pytest.raises(UsageError):
        parse_band_map("B02:1", ("B02",))
    m = resolve_band_map(("B02", "B03", "B04", "B08"), 3, (None, None, None), ["red", "green", "blue"], None,
                         role="hr")
    assert m.sources == (3, 2, 1, None) and m.missing == ("B08",)
    # Never assume model order for an anonymous 4-band raster.
    with pytest.raises(DataError, match="--lr-bands"):
        resolve_band_map(("B02", "B03", "B04", "B08"), 4, (None,) * 4, ["gray"] * 4, None, role="lr")
    s2 = resolve_band_map(("B02", "B03", "B04", "B08"), 12, (None,) * 12, ["gray"] * 12, None, role="lr",
                          default_positions={"B02": 2, "B03": 3, "B04": 4, "B08": 8})
    assert s2.sources == (2, 3, 4, 8)


def test_display_radiometry():
    r = Radiometry.for_dtype("uint8")
    assert r.kind == "display" and r.saturated == 255
    v = r.to_reflectance(np.array([0, 128, 255], np.uint8))
    assert v[0] == 0 and v[2] == pytest.approx(0.3) and 0.05 < v[1] < 0.08


def test_phase_correlation_subpixel():
    rng = np.random.default_rng(1)
    x = torch.nn.functional.avg_pool2d(torch.from_numpy(rng.random((1, 1, 400, 400))).float(), 5)
    big = torch.nn.functional.interpolate(x, scale_factor=10, mode="bicubic")[0, 0].numpy()

    def crop(oy, ox):
        return big[100 + oy: 600 + oy, 100 + ox: 600 + ox].reshape(50, 10, 50, 10).mean(axis=(1, 3))

    ref = crop(0, 0)
    s = phase_correlation(ref, 1.7 * crop(7, -12) + 0.05)  # radiometry must not matter
    assert s.dy == pytest.approx(-0.7, abs=0.03) and s.dx == pytest.approx(1.2, abs=0.03)
    assert s.peak > 0.9
    assert phase_correlation(ref, rng.random((50, 50))).peak < 0.3


def test_cache_roundtrip(tmp_path, synthetic):
    path = save_cache(synthetic.cache, tmp_path / "p.npz")
    again = load_cache(path)
    assert np.array_equal(again.hr, synthetic.cache.hr) and np.array_equal(again.band_valid, synthetic.cache.band_valid)
    assert again.meta["sources"] == synthetic.cache.meta["sources"] and again.scale == SCALE
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]
    with pytest.raises(OutputError, match="--overwrite"):
        save_cache(synthetic.cache, path)
    save_cache(synthetic.cache, path, overwrite=True)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(DataError, match="not an rssr patch cache"):
        load_cache(tmp_path / "other.npz")
    x = np.array([-0.1, 0.0, 0.12345, 1.5], np.float32)
    assert np.abs(decode(encode(x)) - x).max() <= 0.5e-4 + 1e-7


def test_lr_in_geographic_crs_is_resampled_to_utm(tmp_path):
    from rasterio.warp import calculate_default_transform, reproject, Resampling

    src_path = DATA / "train_pairs/lr/s2like.tif"
    with rasterio.open(src_path) as src:
        t, w, h = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        profile = src.profile.copy()
        profile.update(crs="EPSG:4326", transform=t, width=w, height=h)
        (tmp_path / "lr").mkdir()
        with rasterio.open(tmp_path / "lr/s2_4326.tif", "w", **profile) as dst:
            for b in range(1, 5):
                reproject(rasterio.band(src, b), rasterio.band(dst, b), resampling=Resampling.nearest)
            dst.descriptions = src.descriptions
    (tmp_path / "hr").mkdir()
    shutil.copy(HR_DIR / "swiss_crop.tif", tmp_path / "hr")
    out = prepare_archive(tmp_path, options=_opts(min_r2=0.8))
    src = out.report.sources[0]
    assert src.status == "kept" and src.details["lr_resampled"] is True
    assert src.details["crs"] == "EPSG:32632" and src.details["lr_pixel_m"] == pytest.approx(10.0)


def test_chunking_cuts_overlapping_patches_exactly_once():
    small = prepare_archive(HR_DIR / "swiss_crop.tif", options=_opts(synthetic_lr=True, stride=4, chunk=8))
    large = prepare_archive(HR_DIR / "swiss_crop.tif", options=_opts(synthetic_lr=True, stride=4, chunk=64))
    a = sorted(map(tuple, small.cache.origin.tolist()))
    b = sorted(map(tuple, large.cache.origin.tolist()))
    assert a == b and len(set(a)) == len(a) and len(a) > len(prepare_archive(
        HR_DIR / "swiss_crop.tif", options=_opts(synthetic_lr=True)).cache)
    order_a, order_b = np.lexsort(small.cache.origin.T[::-1]), np.lexsort(large.cache.origin.T[::-1])
    # GDAL's warper sums in a different order for other source windows: equal within 2e-4 reflectance.
    diff = np.abs(small.cache.hr[order_a].astype(int) - large.cache.hr[order_b].astype(int))
    assert diff.max() <= 3 and diff.mean() < 0.1


def test_masked_bands_are_stored_empty_and_filled_on_reading(synthetic):
    cache = synthetic.cache
    masked = ~cache.band_valid[:, 3]
    assert masked.any() and (cache.hr[masked, 3] == encode(np.float32(0.0))).all()
    _, hr, _ = cache.batch(np.flatnonzero(masked))
    assert np.allclose(hr[:, 3], stand_in_nir(hr[:, :3]), atol=1e-6)


def test_manifest_rows_carry_their_own_band_maps(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("hr,hr_bands\n"
                        f"{HR_DIR / 'satellogic_crop.tif'},B02=3;B03=2;B04=1\n")
    out = prepare_archive(manifest, options=_opts(synthetic_lr=True))
    assert out.report.sources[0].details["hr_band_map"].startswith("B02=3,B03=2,B04=1,B08=- (explicit)")
    assert not out.cache.band_valid[:, 3].any()


def test_radiometry_overrides_apply_by_data_type():
    disp = Radiometry(kind="display", gain=0.3, gamma=1.5, saturated=255)
    out = prepare_archive(HR_DIR, options=_opts(synthetic_lr=True, hr_display=disp))
    by_name = {Path(s.hr).name: s.details["hr_radiometry"] for s in out.report.sources}
    assert by_name["swiss_crop.tif"] == "display: 0.3 * (DN/255)^1.5"
    assert by_name["satellogic_crop.tif"] == "linear: DN * 0.0001 + 0"


def test_prepare_options_from_a_table():
    o = PrepareOptions.from_table({"scale": "25/2", "bands": "B02,B03,B04", "hr_bands": "B04=1,B03=2,B02=3",
                                   "hr_display": [0.3, 1.5], "hr_scale_offset": "1e-4,0", "patch": 8})
    assert o.scale == SCALE and o.bands == ("B02", "B03", "B04") and o.hr_bands == {"B04": 1, "B03": 2, "B02": 3}
    assert o.hr_display.gamma == 1.5 and o.hr_radiometry.scale == 1e-4 and o.patch == 8
    with pytest.raises(UsageError, match="unknown prepare option"):
        PrepareOptions.from_table({"pach": 8})
    with pytest.raises(UsageError, match="two numbers"):
        PrepareOptions.from_table({"hr_display": "0.3"})


def test_utm_zone_of_a_point():
    from rssr_cli.train.grids import utm_crs

    assert utm_crs(9.1, 46.5).to_epsg() == 32632
    assert utm_crs(6.0, 46.5).to_epsg() == 32632  # on a zone edge: the zone east of it
    assert utm_crs(0.5, 0.0).to_epsg() == 32631  # on the equator: the northern zone
    assert utm_crs(-70.0, -33.4).to_epsg() == 32719
    with pytest.raises(DataError, match="metric CRS"):
        utm_crs(9.0, 85.0)


def test_hr_zoom_cuts_a_raster_again_at_larger_ground_pixels(tmp_path):
    """Scale augmentation: a 0.4 m raster at hr_zoom 2 is cut as if its pixels were 0.8 m, so its patches are its
    own pixels (objects twice as large) and it yields four times the patches; a repeated row adds nothing."""
    from affine import Affine

    from rssr_cli.patches import decode
    from rssr_cli.train.data import source_shares

    rng = np.random.default_rng(0)
    data = (1000 + 2000 * rng.random((3, 400, 400))).astype(np.uint16)  # 160 m at 0.4 m
    path = tmp_path / "fine.tif"
    with rasterio.open(path, "w", driver="GTiff", width=400, height=400, count=3, dtype="uint16", crs="EPSG:32632",
                       transform=Affine(0.4, 0, 500000, 0, -0.4, 5200000)) as out:
        out.write(data)
        out.descriptions = ("blue", "green", "red")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"hr,hr_zoom\n{path},\n{path},2\n{path},2.0\n")
    out = prepare_archive(manifest, options=_opts(synthetic_lr=True))
    kept = {s.details.get("hr_zoom", 1): s.patches for s in out.report.sources}
    assert kept == {1: 4, 2.0: 16}  # 160 m and "320 m" of 80 m patches
    zoomed = np.flatnonzero(out.cache.pair == 1)
    hr = decode(out.cache.hr[zoomed])
    reflectance = data.astype(np.float64) / 10000
    # Every zoomed HR patch is a 100 x 100 window of the raster's own pixels (blue first: the model's band order).
    windows = {(r, c) for r in range(0, 301, 100) for c in range(0, 301, 100)}
    found = set()
    for patch in hr:
        for r, c in windows:
            if np.allclose(patch[0], reflectance[0, r:r + 100, c:c + 100], atol=1e-4):
                found.add((r, c))
    assert found == windows
    assert set(source_shares(out.cache, None)) == {"fine.tif", "fine.tif x2"}
    assert "kept fine.tif at hr_zoom 2: 16 patches" in "\n".join(out.report.lines())


def test_hr_zoom_is_refused_for_real_pairs_and_bad_values(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"hr,hr_zoom\n{HR_DIR / 'satellogic_crop.tif'},0\n")
    with pytest.raises(DataError, match="hr_zoom must be a positive number"):
        prepare_archive(manifest, options=_opts(synthetic_lr=True))
    manifest.write_text(f"lr,hr,hr_zoom\n{HR_DIR / 'satellogic_crop.tif'},{HR_DIR / 'satellogic_crop.tif'},2\n")
    with pytest.raises(DataError, match="hr_zoom is for HR-only archives"):
        prepare_archive(manifest, options=_opts())
