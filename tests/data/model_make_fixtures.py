"""Regenerate tests/data/model_satellogic_96.tif, the model tests' tiny real HR image (deterministic, no randomness).

A 96 x 96 crop (rows 240-335, cols 64-159: the most textured 96 px window on a 16 px grid, by mean horizontal
gradient) of the Satellogic EarthView 1 m tile, bands reordered to B02 B03 B04 B08 (blue, green, red, NIR), uint16
TOA reflectance x 10000, georeferencing kept.

Run: python tests/data/model_make_fixtures.py /path/to/shared/data
"""

from __future__ import annotations

import sys
from pathlib import Path

import rasterio
from rasterio.windows import Window

HERE = Path(__file__).parent
SOURCE = "hr/satellogic-1m/useCaseA_satellogic_20220813_102958_SN20_41N_429831_3696993_TOA.tif"
WINDOW = Window(col_off=64, row_off=240, width=96, height=96)
BAND_ORDER = (3, 2, 1, 4)  # source is Red, Green, Blue, NIR


def main(shared_data: Path) -> None:
    with rasterio.open(shared_data / SOURCE) as src:
        data = src.read(BAND_ORDER, window=WINDOW)
        profile = dict(driver="GTiff", dtype="uint16", count=4, width=96, height=96, crs=src.crs,
                       transform=src.window_transform(WINDOW), nodata=0, compress="deflate", predictor=2)
    with rasterio.open(HERE / "model_satellogic_96.tif", "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = ("B02 blue", "B03 green", "B04 red", "B08 NIR")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "shared" / "data")
