"""Regenerate the small real-data fixtures in this folder from ../shared/data (see ATTRIBUTION.md).

Run from the repository root: ``python tests/data/make_fixtures.py``. Crops keep the files' own metadata (CRS,
transform, nodata, dtype); nothing is resampled.
"""

from __future__ import annotations

import json
from pathlib import Path

import rasterio
from rasterio.windows import Window

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
HERE = Path(__file__).resolve().parent


def crop(src_path: Path, dst_path: Path, window: Window, **extra) -> None:
    with rasterio.open(src_path) as src:
        profile = src.profile
        profile.update(width=int(window.width), height=int(window.height),
                       transform=src.window_transform(window), tiled=True, blockxsize=128, blockysize=128,
                       compress="deflate", predictor=2, **extra)
        profile.pop("photometric", None)
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write(src.read(window=window))
            dst.update_tags(**src.tags())


def main() -> None:
    # Sentinel-2 L2A, EPSG:4326, 12 bands int16 (Boadella reservoir, 2021-07-16): 128 x 128 px around the dam.
    crop(SHARED / "s2/boadella-l2a/Boadella_2021-07-16.tif", HERE / "boadella_l2a_4326.tif",
         Window(192, 160, 128, 128))
    # Per-band AWS COGs, UTM 29N, uint16 with nodata 0: 160 x 160 px of each 10 m band (decimated to 100 m).
    out = HERE / "aws_29RKH"
    out.mkdir(exist_ok=True)
    for band in ("B02", "B03", "B04", "B08"):
        crop(SHARED / f"s2/aws-cogs-29RKH-decimated/{band}.tif", out / f"{band}.tif", Window(400, 400, 160, 160))
    stac_item(SHARED / "s2/aws-cogs-29RKH-decimated/S2A_29RKH_20200219_0_L2A.json", out)
    # Not georeferenced.
    src = SHARED / "s2/no-crs/S2_10m_B02_B03_B04_B08_nocrs.tif"
    with rasterio.open(src) as ds:
        profile = ds.profile
        profile.update(width=64, height=64, compress="deflate")
        with rasterio.open(HERE / "nocrs.tif", "w", **profile) as dst:
            dst.write(ds.read(window=Window(0, 0, 64, 64)))
            dst.descriptions = ds.descriptions


def stac_item(src: Path, folder: Path) -> None:
    """The Earth Search STAC Item of the AWS COGs, its 10 m band assets pointing at the crops beside it (relative
    hrefs, the crop's proj:shape/proj:transform); some other assets are kept, with their remote hrefs, as the
    decoys a band lookup must pass over (B8A's nir08, the JPEG 2000 copies on s3, the 3-band visual, the
    thumbnail)."""
    item = json.loads(src.read_text())
    keep = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08"}
    decoys = ("nir08", "visual", "thumbnail", "blue-jp2", "nir-jp2", "scl")
    assets = {}
    for key, asset in item["assets"].items():
        if key in keep:
            with rasterio.open(folder / f"{keep[key]}.tif") as ds:
                asset.update({"href": f"./{keep[key]}.tif", "proj:shape": [ds.height, ds.width],
                              "proj:transform": list(ds.transform)[:6]})
            assets[key] = asset
        elif key in decoys:
            assets[key] = asset
    item["assets"] = assets
    item["links"] = [link for link in item["links"] if link["rel"] not in ("self", "canonical")]
    (folder / f"{item['id']}.json").write_text(json.dumps(item, indent=2) + "\n")


if __name__ == "__main__":
    main()
