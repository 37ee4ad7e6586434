import json
from fractions import Fraction

import pytest
from pyproj import Transformer

from conftest import AWS_BANDS
from rssr_cli.aoi import bbox_aoi, geojson_aoi, parse_bbox, parse_crs, snapped_window
from rssr_cli.errors import AOIError, UsageError
from rssr_cli.scene import open_scene

S = Fraction(25, 2)


@pytest.fixture
def scene():
    with open_scene(AWS_BANDS) as s:
        yield s


def _lonlat_box(scene, x0, y0, x1, y1):
    t = Transformer.from_crs(scene.grid.crs.to_wkt(), "EPSG:4326", always_xy=True)
    lon0, lat0 = t.transform(x0, y0)
    lon1, lat1 = t.transform(x1, y1)
    return min(lon0, lon1), min(lat0, lat1), max(lon0, lon1), max(lat0, lat1)


@pytest.mark.parametrize("crs", ["scene", "EPSG:4326", "EPSG:3857"])
def test_bbox_in_three_crss_gives_even_window_covering_it(scene, crs):
    x0, y0 = scene.grid.transform @ (41.3, 87.6)  # off-grid corners on purpose
    x1, y1 = scene.grid.transform @ (72.9, 51.2)
    box_scene = (x0, y1, x1, y0)
    if crs == "scene":
        bbox = box_scene
    else:
        lonlat = _lonlat_box(scene, *box_scene)
        t = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        a, b = t.transform(lonlat[0], lonlat[1])
        c, d = t.transform(lonlat[2], lonlat[3])
        bbox = (a, b, c, d)
    aoi = bbox_aoi(bbox, parse_crs(crs, scene.grid.crs), scene.grid.crs)
    window = snapped_window(scene.grid, aoi, S)
    assert window.col_off % 2 == 0 and window.row_off % 2 == 0
    assert window.width % 2 == 0 and window.height % 2 == 0
    # The window contains the box (which is reprojected, so possibly a little larger than the scene-CRS box).
    assert window.col_off <= 41 and window.col_off + window.width >= 73
    assert window.row_off <= 51 and window.row_off + window.height >= 88
    if crs == "scene":
        assert (window.col_off, window.row_off, window.width, window.height) == (40, 50, 34, 38)


def test_geojson_feature_collection_and_miss(scene, tmp_path):
    lon0, lat0, lon1, lat1 = _lonlat_box(scene, *(scene.grid.transform @ (10, 30)),
                                         *(scene.grid.transform @ (30, 10)))
    poly = {"type": "Polygon", "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat0]]]}
    fc = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": poly}]}
    path = tmp_path / "aoi.geojson"
    path.write_text(json.dumps(fc))
    aoi = geojson_aoi(path, scene.grid.crs)
    assert aoi.mask_outside
    window = snapped_window(scene.grid, aoi, S)
    assert window.col_off % 2 == 0 and 8 <= window.col_off <= 10
    far = {"type": "Point", "coordinates": [0, 0]}
    with pytest.raises(AOIError, match="no area"):
        geojson_aoi(far, scene.grid.crs)
    miss = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}
    with pytest.raises(AOIError, match="does not intersect"):
        snapped_window(scene.grid, geojson_aoi(miss, scene.grid.crs), S)


def test_window_is_clipped_to_the_scene(scene):
    x0, y0 = scene.grid.transform @ (-50, -50)
    x1, y1 = scene.grid.transform @ (5, 7)
    window = snapped_window(scene.grid, bbox_aoi((x0, y1, x1, y0), parse_crs("scene", scene.grid.crs),
                                                 scene.grid.crs), S)
    assert (window.col_off, window.row_off, window.width, window.height) == (0, 0, 6, 8)


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "3,0,1,1"])
def test_bad_bbox(text):
    with pytest.raises(UsageError):
        parse_bbox(text)


def test_bad_geojson(tmp_path, scene):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AOIError, match="not valid JSON"):
        geojson_aoi(bad, scene.grid.crs)
    with pytest.raises(AOIError, match="cannot read"):
        geojson_aoi(tmp_path / "missing.json", scene.grid.crs)
