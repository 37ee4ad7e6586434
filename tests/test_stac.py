"""Sentinel-2 as users get it: STAC Items (per-band COG assets with raster:bands), SAFE products, and the STAC Item
that describes an output (validated against the JSON Schemas in tests/data/stac_schemas, offline)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from conftest import AWS_BANDS, DATA, write_raster
from rssr_cli.bands import tag_radiometry
from rssr_cli.errors import InputError, OutputError, UsageError
from rssr_cli.scene import open_scene
from rssr_cli.stac import looks_like_item, parse_item, read_item, resolve_href
from rssr_cli.stac_item import EXTENSIONS, STAC_VERSION, item_path, output_item, write_item

ITEM = DATA / "aws_29RKH" / "S2A_29RKH_20200219_0_L2A.json"
SCHEMAS = DATA / "stac_schemas"


# --- where assets are ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("href,base,expected", [
    ("./B02.tif", "/data/items/item.json", "/data/items/B02.tif"),
    ("../cogs/B02.tif", "/data/items/item.json", "/data/cogs/B02.tif"),
    ("/elsewhere/B02.tif", "/data/items/item.json", "/elsewhere/B02.tif"),
    ("https://example.com/s2/B02.tif", "/data/item.json", "/vsicurl/https://example.com/s2/B02.tif"),
    ("B02.tif", "https://example.com/s2/items/item.json", "/vsicurl/https://example.com/s2/items/B02.tif"),
    ("../B02.tif", "https://example.com/s2/items/item.json", "/vsicurl/https://example.com/s2/B02.tif"),
    ("B02.tif", "/vsicurl/https://example.com/s2/item.json", "/vsicurl/https://example.com/s2/B02.tif"),
    ("s3://bucket/tiles/B02.jp2", None, "/vsis3/bucket/tiles/B02.jp2"),
    ("../B02.tif", "s3://bucket/tiles/a/item.json", "/vsis3/bucket/tiles/B02.tif"),
    ("file:///data/B02.tif", None, "/data/B02.tif"),
    ("B02.tif", None, "B02.tif"),  # an Item from stdin: relative to the current folder
])
def test_asset_hrefs_resolve_for_gdal(href, base, expected):
    assert resolve_href(href, base) == expected


def test_a_scheme_gdal_cannot_read_is_refused():
    with pytest.raises(InputError, match="ftp://"):
        resolve_href("ftp://example.com/B02.tif")


def test_item_inputs_are_told_from_rasters(tmp_path):
    json_without_suffix = tmp_path / "item"
    json_without_suffix.write_text(ITEM.read_text())
    assert looks_like_item(str(ITEM)) and looks_like_item(str(json_without_suffix))
    assert looks_like_item("https://earth-search.aws.element84.com/v1/collections/sentinel-2-l2a/items/S2A_X")
    assert looks_like_item("https://example.com/item.json?token=1")
    assert not looks_like_item("https://example.com/B02.tif")
    assert not looks_like_item(str(AWS_BANDS[0])) and not looks_like_item(str(tmp_path / "missing.tif"))


# --- a STAC Item as the input -------------------------------------------------------------------------------------

def _item(tmp_path: Path, edit=None, name: str = "item.json") -> Path:
    """The fixture Item with its band files beside it in tmp_path, optionally edited (a function of the dict)."""
    data = json.loads(ITEM.read_text())
    for src in AWS_BANDS:
        (tmp_path / src.name).write_bytes(src.read_bytes())
    if edit is not None:
        edit(data)
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _set_raster(data, **fields):
    for key in ("blue", "green", "red", "nir"):
        data["assets"][key]["raster:bands"][0].update(fields)


def test_item_bands_come_from_its_assets_with_their_radiometry():
    with open_scene(ITEM) as scene:
        assert [Path(p).name for p in scene.paths] == ["B02.tif", "B03.tif", "B04.tif", "B08.tif"]
        assert [b.asset for b in scene.bands] == ["blue", "green", "red", "nir"]  # not blue-jp2, nir08, visual
        assert all(r.source == "STAC raster:bands" and (r.scale, r.offset) == (1e-4, 0.0) for r in scene.radiometry)
        assert (scene.nodata, scene.nodata_source) == (0.0, "STAC raster:bands")
        assert scene.origin.id == "S2A_29RKH_20200219_0_L2A" and scene.origin.platform == "sentinel-2a"
        refl, _ = scene.read(Window(0, 0, 8, 8))
    with rasterio.open(AWS_BANDS[3]) as ds:
        np.testing.assert_allclose(refl[3], ds.read(1, window=Window(0, 0, 8, 8)) / 10000, rtol=1e-6)


def test_the_items_offset_wins_over_the_files_metadata_and_loses_to_offset(tmp_path):
    def baseline_4(data):
        _set_raster(data, offset=-0.1)

    path = _item(tmp_path, baseline_4)
    for src in AWS_BANDS:  # the files themselves declare another radiometry: the catalogue wins
        with rasterio.open(tmp_path / src.name, "r+") as ds:
            ds.scales, ds.offsets = (2e-4,), (0.0,)
    with rasterio.open(AWS_BANDS[0]) as ds:
        dn = ds.read(1, window=Window(0, 0, 8, 8)).astype(np.float64)
    with open_scene(path) as scene:
        assert {(r.scale, r.offset, r.source) for r in scene.radiometry} == {(1e-4, -0.1, "STAC raster:bands")}
        refl, _ = scene.read(Window(0, 0, 8, 8))
        np.testing.assert_allclose(refl[0], dn / 10000 - 0.1, atol=1e-6)
    with open_scene(path, offset=0) as scene:  # an explicit --offset replaces what anything declares
        assert {(r.offset, r.source) for r in scene.radiometry} == {(0.0, "--offset")}


def test_stac_1_1_bands_and_resolutions(tmp_path):
    """The Copernicus Data Space style: STAC 1.1 ``bands`` with ``eo:common_name``/``raster:scale``, and each band at
    several resolutions (B02_10m, B02_20m ...): only the 10 m asset is read."""
    def stac_1_1(data):
        assets = {}
        for key, band in (("blue", "B02"), ("green", "B03"), ("red", "B04"), ("nir", "B08")):
            common = key
            assets[f"{band}_20m"] = {"href": f"./{band}_20m.tif", "gsd": 20,
                                     "bands": [{"name": band, "eo:common_name": common}]}
            assets[f"{band}_10m"] = {"href": f"./{band}.tif", "type": "image/tiff; application=geotiff",
                                     "bands": [{"name": band, "eo:common_name": common, "nodata": 0,
                                                "raster:scale": 0.0001, "raster:offset": -0.1,
                                                "raster:spatial_resolution": 10}]}
        data.update(stac_version="1.1.0", assets=assets)

    with open_scene(_item(tmp_path, stac_1_1)) as scene:
        assert [b.asset for b in scene.bands] == ["B02_10m", "B03_10m", "B04_10m", "B08_10m"]
        assert {(r.scale, r.offset) for r in scene.radiometry} == {(1e-4, -0.1)} and scene.nodata == 0


def test_an_item_without_the_bands_names_those_missing(tmp_path):
    def no_nir(data):
        for key in ("nir", "nir-jp2"):
            del data["assets"][key]

    with pytest.raises(InputError) as err:
        open_scene(_item(tmp_path, no_nir))
    message = str(err.value)
    assert "\n" not in message and "B08 (nir)" in message and "B02" not in message.split(":")[0]
    assert "nir08" in message  # the assets it does have are listed


def test_an_asset_that_cannot_be_opened_is_named(tmp_path):
    def broken(data):
        data["assets"]["red"]["href"] = "./gone/B04.tif"

    with pytest.raises(InputError) as err:
        open_scene(_item(tmp_path, broken))
    assert "asset 'red'" in str(err.value) and "./gone/B04.tif" in str(err.value) and "\n" not in str(err.value)


def test_absolute_hrefs_and_an_item_from_stdin(tmp_path):
    def absolute(data):
        for key, src in zip(("blue", "green", "red", "nir"), AWS_BANDS):
            data["assets"][key]["href"] = str(src)

    data = json.loads(_item(tmp_path, absolute).read_text())
    item = parse_item(json.dumps(data))  # as `rssr upscale -` reads it: no location
    with open_scene(item) as scene:
        assert list(scene.paths) == [str(p) for p in AWS_BANDS]
        assert scene.origin.href is None and item.label == "S2A_29RKH_20200219_0_L2A"


@pytest.mark.parametrize("text,match", [
    ('{"type": "FeatureCollection", "features": [{}, {}]}', "FeatureCollection of 2"),
    ('{"type": "Collection", "id": "x"}', "not a STAC Item"),
    ("not json", "not JSON"),
])
def test_what_is_not_an_item_is_refused_in_one_line(tmp_path, text, match):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as err:
        read_item(path)
    assert "\n" not in str(err.value)


def test_bidx_does_not_apply_to_an_item():
    with pytest.raises(InputError, match="-b/--bidx"):
        open_scene(ITEM, bidx=[1, 2, 3, 4])


# --- SAFE products ------------------------------------------------------------------------------------------------

from safe_fixture import make_safe, reflectance  # noqa: E402  (needs conftest on the path, as above)


@pytest.mark.parametrize("level,how", [("L2A", "folder"), ("L2A", "zip"), ("L2A", "renamed zip"),
                                       ("L1C", "folder"), ("L2A", "metadata file")])
def test_safe_products_open_at_10_m_with_their_offset(tmp_path, level, how):
    product = make_safe(tmp_path, level=level, zipped="zip" in how)
    if how == "renamed zip":
        product = product.rename(tmp_path / "download.zip")
    elif how == "metadata file":
        product = product / f"MTD_MSI{level}.xml"
    with open_scene(product) as scene:
        assert scene.grid.res == (10.0, 10.0) and scene.grid.crs.to_epsg() == 32629
        assert [b.name for b in scene.bands] == ["B02", "B03", "B04", "B08"]
        assert {(r.scale, r.offset) for r in scene.radiometry} == {(1e-4, -0.1)}
        assert (scene.nodata, scene.nodata_source) == (0.0, "SAFE metadata")
        assert scene.origin.platform == "sentinel-2b" and scene.origin.datetime.startswith("2023-06-15T11:21")
        assert scene.origin.properties["processing:level"] == level
        refl, valid = scene.read(Window(0, 0, 64, 64))
    for i in range(4):
        expected = reflectance(i)
        np.testing.assert_allclose(refl[i][valid], expected[valid], atol=1e-6)
        assert not valid[np.isnan(expected)].any()


def test_a_product_before_baseline_4_has_no_offset(tmp_path):
    with open_scene(make_safe(tmp_path, baseline="02.14", offset_dn=None)) as scene:
        assert {(r.scale, r.offset) for r in scene.radiometry} == {(1e-4, 0.0)}
        refl, valid = scene.read(Window(0, 0, 64, 64))
    np.testing.assert_allclose(refl[0][valid], reflectance(0)[valid], atol=1e-6)


def test_the_driver_tags_become_reflectance():
    """What GDAL's SENTINEL2 driver sets: the offset per band, the quantification on the dataset beside the AOT/WVP
    quantifications of other layers (which must never be taken for the reflectance's)."""
    l2a = {"AOT_QUANTIFICATION_VALUE": "1000.0", "BOA_QUANTIFICATION_VALUE": "10000",
           "SPECIAL_VALUE_SATURATED": "65535", "WVP_QUANTIFICATION_VALUE": "1000.0"}
    r = tag_radiometry(l2a, {"BANDNAME": "B4", "BOA_ADD_OFFSET": "-1000"})
    assert (r.scale, r.offset, r.saturated) == (1e-4, -0.1, 65535.0)
    assert r.source == "metadata (BOA_ADD_OFFSET -1000, BOA_QUANTIFICATION_VALUE 10000)"  # what rssr info shows
    r = tag_radiometry({"QUANTIFICATION_VALUE": "10000"}, {"RADIO_ADD_OFFSET": "-1000"})
    assert (r.scale, r.offset) == (1e-4, -0.1)
    assert tag_radiometry(l2a, {}).offset == 0.0  # before baseline 04.00
    assert tag_radiometry({"BOA_ADD_OFFSET_B2": "-1000"}, {}).offset == -0.1  # an export's dataset tags
    assert tag_radiometry({"AREA_OR_POINT": "Area"}, {}) is None


def test_what_is_not_a_product_is_refused(tmp_path):
    (tmp_path / "empty.SAFE").mkdir()
    with pytest.raises(InputError, match="not a Sentinel-2 SAFE product"):
        open_scene(tmp_path / "empty.SAFE")
    import zipfile

    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(InputError, match="holds no Sentinel-2 product"):
        open_scene(tmp_path / "other.zip")


# --- the output's STAC Item ---------------------------------------------------------------------------------------

def _registry():
    from referencing import Registry, Resource

    def refuse(uri):  # nothing is fetched: a schema that is not in tests/data/stac_schemas fails the test
        raise LookupError(f"schema {uri} is not shipped in tests/data/stac_schemas")

    resources = []
    for path in sorted(SCHEMAS.rglob("*.json")):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"].rstrip("#"), Resource.from_contents(schema)))
    return Registry(retrieve=refuse).with_resources(resources), {uri: res.contents for uri, res in resources}


def validate_item(item: dict) -> None:
    """Validate against STAC core and every extension the Item declares (all of them must be shipped)."""
    from jsonschema import Draft7Validator

    registry, schemas = _registry()
    core = f"https://schemas.stacspec.org/v{item['stac_version']}/item-spec/json-schema/item.json"
    for uri in [core, *item["stac_extensions"]]:
        assert uri in schemas, f"{uri} is not shipped in tests/data/stac_schemas"
        errors = sorted(Draft7Validator(schemas[uri], registry=registry).iter_errors(item), key=str)
        assert not errors, f"{uri}: {errors[0].message} at {list(errors[0].absolute_path)}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", item["properties"]["datetime"])


def test_the_validation_can_fail(tmp_path):
    item = output_item(_tagged_cog(tmp_path / "x.tif"))
    validate_item(item)
    for breaking in (lambda i: i["properties"].update({"proj:shape": [1, 2, 3]}),
                     lambda i: i["assets"]["data"]["raster:bands"][0].update({"data_type": "uint17"}),
                     lambda i: i["assets"]["data"]["eo:bands"][0].update({"common_name": "sky"}),
                     lambda i: i.pop("bbox"),
                     lambda i: i["properties"].update({"processing:software": "rssr"})):
        broken = copy.deepcopy(item)
        breaking(broken)
        with pytest.raises(AssertionError):
            validate_item(broken)


def _tagged_cog(path: Path, dtype=np.uint16, scale=1e-4, offset=-0.1) -> Path:
    """A small COG-like output of rssr: B02..B08, UTM 32N at 0.8 m, scale/offset and rssr's provenance tags."""
    data = np.full((4, 25, 25), 1500, dtype=dtype)
    write_raster(path, data, transform=Affine(0.8, 0, 500000.0, 0, -0.8, 5200000.0), nodata=0,
                 descriptions=["B02", "B03", "B04", "B08"], scales=[scale] * 4, offsets=[offset] * 4)
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(RSSR_VERSION="0.1.0", RSSR_METHOD="diffusion", RSSR_MODEL="rssr-s2-x12.5", RSSR_STEPS="4",
                       RSSR_SEED="7", RSSR_SCALE="25/2", RSSR_WEIGHTS_SHA256="ab" * 32)
    return path


def test_the_item_describes_the_cog_and_how_it_was_made(tmp_path):
    cog = _tagged_cog(tmp_path / "scene_sr.tif")
    item = output_item(cog, inputs=[str(tmp_path / "scene.tif")])
    validate_item(item)
    props, data = item["properties"], item["assets"]["data"]
    assert item["id"] == "scene_sr" and data["href"] == "scene_sr.tif"
    assert props["proj:code"] == "EPSG:32632" and props["proj:shape"] == [25, 25]
    assert props["proj:transform"] == [0.8, 0.0, 500000.0, 0.0, -0.8, 5200000.0] and props["gsd"] == 0.8
    assert data["raster:bands"][0] == {"data_type": "uint16", "nodata": 0, "scale": 1e-4, "offset": -0.1,
                                       "spatial_resolution": 0.8}
    assert [b["common_name"] for b in data["eo:bands"]] == ["blue", "green", "red", "nir"]
    assert props["processing:software"] == {"rssr": "0.1.0"}
    assert props["rssr:method"] == "diffusion" and props["rssr:steps"] == "4" and props["rssr:seed"] == "7"
    assert props["rssr:weights_sha256"] == "ab" * 32
    assert props["processing:lineage"] == ("Super-resolved x12.5 from scene.tif by rssr 0.1.0 (diffusion model "
                                           "rssr-s2-x12.5, 4 steps, seed 7)")
    assert props["rssr:datetime_is_processing_time"] is True  # a plain GeoTIFF says nothing about its acquisition
    assert item["links"] == [{"rel": "derived_from", "href": str(tmp_path / "scene.tif"), "title": "input"}]
    w, s, e, n = item["bbox"]
    assert 9.0 <= w < e < 9.001 and 46.953 < s < n < 46.954  # UTM 32N (500000, 5200000) is 9 E, 46.95 N
    np.testing.assert_allclose(item["bbox"], transform_bounds("EPSG:32632", "EPSG:4326", 500000, 5199980, 500020,
                                                              5200000, densify_pts=21), atol=1e-8)
    ring = item["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) > 5


def test_a_float_output_declares_no_scale(tmp_path):
    cog = _tagged_cog(tmp_path / "f.tif", dtype=np.float32, scale=1.0, offset=0.0)
    with rasterio.open(cog, "r+") as ds:
        ds.nodata = float("nan")
    item = output_item(cog)
    validate_item(item)
    band = item["assets"]["data"]["raster:bands"][0]
    assert band["data_type"] == "float32" and band["nodata"] == "nan" and "scale" not in band


def test_the_item_is_written_atomically_and_never_clobbered(tmp_path):
    cog = _tagged_cog(tmp_path / "o.tif")
    path = item_path(cog)
    assert path == tmp_path / "o.json"
    write_item(output_item(cog), path)
    before = path.read_text()
    with pytest.raises(OutputError, match="--overwrite"):
        write_item({"changed": True}, path)
    assert path.read_text() == before and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    write_item({"changed": True}, path, overwrite=True)
    assert json.loads(path.read_text()) == {"changed": True}
    with pytest.raises(UsageError):
        item_path(tmp_path / "o.json")


def test_declared_versions_are_the_shipped_schemas():
    _, schemas = _registry()
    assert f"https://schemas.stacspec.org/v{STAC_VERSION}/item-spec/json-schema/item.json" in schemas
    assert set(EXTENSIONS) <= set(schemas)


# --- outputs declare the DN encoding they keep --------------------------------------------------------------------

def _bicubic(**kw):
    from rssr_cli.methods import BicubicOptions
    from rssr_cli.pipeline import UpscaleOptions

    return UpscaleOptions(method=BicubicOptions(), **kw)


@pytest.mark.parametrize("dtype,scales,offsets", [("auto", (1e-4,) * 4, (-0.1,) * 4),
                                                  ("int16", (1e-4,) * 4, (-0.1,) * 4),
                                                  ("float32", (1.0,) * 4, (0.0,) * 4)])
def test_integer_outputs_declare_scale_and_offset_on_every_band(tmp_path, dtype, scales, offsets):
    from rssr_cli.pipeline import upscale

    path = _item(tmp_path, lambda data: _set_raster(data, offset=-0.1))
    out = tmp_path / "o.tif"
    upscale(path, out, _bicubic(dtype=dtype, bbox=(239980, 2759020, 240980, 2760020), bbox_crs="scene"))
    with rasterio.open(out) as dst, rasterio.open(AWS_BANDS[0]) as src:
        assert dst.scales == scales and dst.offsets == offsets
        hr = dst.read(1, masked=True).astype(np.float64) * scales[0] + offsets[0]
        lr = src.read(1, masked=True, window=Window(0, 0, 10, 10)).astype(np.float64) / 10000 - 0.1
        assert hr.mean() == pytest.approx(lr.mean(), abs=2e-3)  # reflectance, whatever the encoding


def test_an_input_without_metadata_still_gets_a_declared_output(utm_scene, tmp_path):
    from rssr_cli.pipeline import upscale

    out = tmp_path / "o.tif"
    upscale(utm_scene, out, _bicubic(bbox=(500000, 5199000, 500100, 5199100), bbox_crs="scene"))
    with rasterio.open(out) as dst:
        assert dst.scales == (1e-4,) * 4 and dst.offsets == (0.0,) * 4


def test_a_safe_product_upscales_with_its_offset_declared(tmp_path):
    from rssr_cli.pipeline import upscale

    out = tmp_path / "safe_sr.tif"
    upscale(make_safe(tmp_path, zipped=True), out, _bicubic(bbox=(300000, 2789600, 300200, 2789800),
                                                            bbox_crs="scene"))
    with rasterio.open(out) as dst:
        assert dst.crs.to_epsg() == 32629 and dst.res == (0.8, 0.8)
        assert dst.scales == (1e-4,) * 4 and dst.offsets == (-0.1,) * 4
        refl = dst.read(masked=True).astype(np.float64) * 1e-4 - 0.1
    expected = np.stack([reflectance(i)[20:40, 0:20] for i in range(4)])
    np.testing.assert_allclose(refl.mean(axis=(1, 2)), np.nanmean(expected, axis=(1, 2)), atol=3e-3)


# --- item in, COG and item out (library and command line) ---------------------------------------------------------

AOI_29RKH = (239980, 2759020, 240980, 2760020)  # 10 x 10 LR pixels of the AWS crops (100 m, decimated)


def test_an_item_upscales_to_a_cog_and_its_item(tmp_path):
    from rssr_cli.pipeline import upscale

    path = _item(tmp_path, lambda data: _set_raster(data, offset=-0.1))
    out = tmp_path / "out" / "scene_sr.tif"
    out.parent.mkdir()
    result = upscale(path, out, _bicubic(bbox=AOI_29RKH, bbox_crs="scene", stac=True))
    assert result.stac == str(out.with_suffix(".json")) and result.to_dict()["stac"] == result.stac
    item = json.loads(out.with_suffix(".json").read_text())
    validate_item(item)
    props, band = item["properties"], item["assets"]["data"]["raster:bands"][0]
    with rasterio.open(out) as dst:
        assert props["proj:shape"] == [dst.height, dst.width] and props["proj:transform"] == list(dst.transform)[:6]
        assert props["proj:code"] == "EPSG:32629" and props["gsd"] == dst.res[0] == 8.0  # the crops are 100 m
        assert (band["scale"], band["offset"], band["nodata"], band["data_type"]) == (1e-4, -0.1, 0, "uint16")
    assert props["datetime"] == "2020-02-19T11:34:25.405000Z" and "rssr:datetime_is_processing_time" not in props
    assert (props["platform"], props["constellation"], props["instruments"]) == ("sentinel-2a", "sentinel-2", ["msi"])
    assert props["s2:processing_baseline"] == "02.14" and props["rssr:method"] == "bicubic"
    assert item["links"][0]["rel"] == "derived_from" and item["links"][0]["href"] == str(path.resolve())
    assert item["assets"]["data"]["href"] == "scene_sr.tif"


def test_the_item_comes_only_after_the_cog_and_both_or_neither(tmp_path, monkeypatch):
    import rssr_cli.pipeline
    import rssr_cli.sink
    from rssr_cli.pipeline import upscale

    path = _item(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())

    def no_cog(*args, **kw):
        raise OutputError("cannot write: disk full")

    monkeypatch.setattr(rssr_cli.sink, "translate_to_cog", no_cog)
    with pytest.raises(OutputError, match="disk full"):
        upscale(path, tmp_path / "a.tif", _bicubic(bbox=AOI_29RKH, bbox_crs="scene", stac=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    monkeypatch.undo()

    def no_item(*args, **kw):
        raise OutputError("cannot write the item: disk full")

    monkeypatch.setattr(rssr_cli.pipeline, "write_item", no_item)
    with pytest.raises(OutputError, match="the item"):
        upscale(path, tmp_path / "b.tif", _bicubic(bbox=AOI_29RKH, bbox_crs="scene", stac=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # the COG went again


def _cli(*args, stdin: str | None = None):
    from click.testing import CliRunner

    from rssr_cli.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], input=stdin)


CLI_SMALL = ["--method", "bicubic", "--bbox", ",".join(map(str, AOI_29RKH)), "--bbox-crs", "scene"]


def test_cli_item_file_and_stdin_to_item(tmp_path, monkeypatch):
    path = _item(tmp_path)
    out = tmp_path / "from_file.tif"
    result = _cli("upscale", path, "-o", out, "--stac", "--json", *CLI_SMALL)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["stac"] == str(out.with_suffix(".json")) and record["input"] == str(path)
    validate_item(json.loads(out.with_suffix(".json").read_text()))
    monkeypatch.chdir(tmp_path)  # an Item on stdin: its relative hrefs are relative to the current folder
    result = _cli("upscale", "-", "--stac", "--json", *CLI_SMALL, stdin=path.read_text())
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["input"] == "S2A_29RKH_20200219_0_L2A" and record["output"] == "S2A_29RKH_20200219_0_L2A_sr.tif"
    item = json.loads((tmp_path / "S2A_29RKH_20200219_0_L2A_sr.json").read_text())
    validate_item(item)
    assert item["links"] == []  # no location and no self link to point at: nothing made up
    assert "S2A_29RKH_20200219_0_L2A" in item["properties"]["processing:lineage"]


def test_cli_never_overwrites_an_item_without_overwrite(tmp_path):
    path = _item(tmp_path)
    out = tmp_path / "o.tif"
    out.with_suffix(".json").write_text("{}")
    result = _cli("upscale", path, "-o", out, "--stac", *CLI_SMALL)
    assert result.exit_code == 1 and "o.json exists; pass --overwrite" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()
    assert out.with_suffix(".json").read_text() == "{}"
    result = _cli("upscale", path, "-o", out, "--stac", "--overwrite", *CLI_SMALL)
    assert result.exit_code == 0, result.output
    assert json.loads(out.with_suffix(".json").read_text())["id"] == "o"


def test_cli_errors_about_items_are_one_line(tmp_path):
    def no_red(data):
        del data["assets"]["red"]

    result = _cli("upscale", _item(tmp_path, no_red), "-o", tmp_path / "o.tif", *CLI_SMALL)
    assert result.exit_code == 1 and "B04 (red)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    result = _cli("info", _item(tmp_path, lambda d: d["assets"]["nir"].update(href="./nope.tif")))
    assert result.exit_code == 1 and "asset 'nir'" in result.stderr and "./nope.tif" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_info_shows_the_items_radiometry_band_by_band(tmp_path):
    path = _item(tmp_path, lambda data: _set_raster(data, offset=-0.1))
    result = _cli("info", path)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith(("B02", "B03", "B04", "B08"))]
    assert len(lines) == 4 and all("DN * 0.0001 + -0.1 [STAC raster:bands]" in line for line in lines)
    assert "asset 'nir'" in lines[3] and "STAC item S2A_29RKH_20200219_0_L2A" in result.stdout
    record = json.loads(_cli("info", "-", "--json", stdin=path.read_text().replace("./B0", f"{tmp_path}/B0")).stdout)
    assert [b["offset"] for b in record["bands"]] == [-0.1] * 4


def test_cli_safe_product_to_item(tmp_path):
    product = make_safe(tmp_path)
    out = tmp_path / "safe_sr.tif"
    result = _cli("upscale", product, "-o", out, "--stac", "--method", "bicubic", "--bbox",
                  "300000,2789800,300100,2789900", "--bbox-crs", "scene")
    assert result.exit_code == 0, result.output
    item = json.loads(out.with_suffix(".json").read_text())
    validate_item(item)
    props = item["properties"]
    assert props["gsd"] == 0.8 and props["platform"] == "sentinel-2b" and props["datetime"].startswith("2023-06-15")
    assert props["processing:level"] == "L2A" and props["s2:processing_baseline"] == "05.09"
    assert item["assets"]["data"]["raster:bands"][0]["offset"] == -0.1
    assert item["links"][0]["href"] == str(product)


def test_a_resumed_finished_output_gets_its_missing_item(tmp_path):
    from rssr_cli.pipeline import upscale

    path = _item(tmp_path)
    out = tmp_path / "r.tif"
    upscale(path, out, _bicubic(bbox=AOI_29RKH, bbox_crs="scene"))
    assert not out.with_suffix(".json").exists()
    stamp = out.stat().st_mtime_ns
    result = upscale(path, out, _bicubic(bbox=AOI_29RKH, bbox_crs="scene", stac=True, resume=True))
    assert result.status == "skipped" and out.stat().st_mtime_ns == stamp
    validate_item(json.loads(out.with_suffix(".json").read_text()))
