"""Build the training / validation / test archives of the default model from ../shared/data, reproducibly.

    python scripts/make_archive.py [--data ../shared/data] [--out data-work/archive]

Writes HR-only manifests (``rssr prepare --synthetic-lr`` reads them; paths are relative to the manifest):

- ``train.csv``: SWISSIMAGE mosaics 01, 02, 04 (RGB, NIR masked), the Inria 0.3 m urban tile (RGB, NIR masked,
  ``hr_res`` 0.3), and the western 200 m of the Satellogic tile (RGB+NIR, the only HR NIR), copied
  ``SATELLOGIC_COPIES`` times so that the NIR output sees more than 0.3 % of the gradient;
- ``val.csv``: SWISSIMAGE mosaics 03 and 07 (used to tune the sampler defaults, never for the reported numbers);
- ``test.csv``: SWISSIMAGE mosaic 08 (Brig-Naters: town, rail yard, river, forest, meadows) and the eastern 184 m of
  the Satellogic tile. Training and tuning never see these pixels.

The Satellogic split is cut on UTM metres (x < 200 m from the west edge: train; x >= 200 m: test), so the two parts
share no pixel. The 8-bit SWISSIMAGE and Inria images are converted to 16-bit reflectance x 10000 with ``DISPLAY_GAIN`` and
``DISPLAY_GAMMA`` (``reflectance = 0.3 (DN/255)^1.5``), so that one ``rssr prepare`` reads every source with its default
linear radiometry (``--hr-display`` would apply to the 16-bit Satellogic tile too). Why gamma 1.5 rather than
rssr's default 2.2: with 2.2 the synthetic LR was about half as bright as real Sentinel-2 L2A (B02 median 0.018 vs
0.036 over Boadella); 0.3/1.5 puts the medians and 99th percentiles of the visible bands within ~20 % of real S2
(see weights/README.md). The source's mask is kept (nodata 0), and pixels at DN 255 in any band (clipped) are masked
as ``rssr prepare`` does for saturated 8-bit data.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import rasterio
from rasterio.windows import Window

SWISS = "hr/swissimage-0p8m"
TRAIN_SWISS = ("swissimage_0p8m_01_lat46.976_lon9.808.tif", "swissimage_0p8m_02_lat46.971_lon9.614.tif",
               "swissimage_0p8m_04_lat46.795_lon10.245.tif")
VAL_SWISS = ("swissimage_0p8m_03_lat46.920_lon8.970.tif", "swissimage_0p8m_07_lat46.458_lon7.523.tif")
TEST_SWISS = ("swissimage_0p8m_08_lat46.317_lon7.970.tif",)
SATELLOGIC = "hr/satellogic-1m/useCaseA_satellogic_20220813_102958_SN20_41N_429831_3696993_TOA.tif"
INRIA = "hr/inria-0p3m/bellingham1+1024.tif"
SATELLOGIC_SPLIT_M = 200  # metres from the west edge (1 m pixels)
SATELLOGIC_COPIES = 8
DISPLAY_GAIN = 0.3
DISPLAY_GAMMA = 1.5


def _to_reflectance(src: Path, dst: Path) -> None:
    """8-bit display RGB -> uint16 reflectance x 10000 (1..65534), invalid pixels 0 (nodata)."""
    import warnings

    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        ds = rasterio.open(src)
    with ds:
        dn = ds.read()
        valid = (ds.read_masks() > 0).all(axis=0) & ~(dn == 255).any(axis=0)
        refl = DISPLAY_GAIN * (dn.astype(np.float64) / 255.0) ** DISPLAY_GAMMA
        out = np.clip(np.rint(refl * 10000), 1, 65534).astype(np.uint16)
        out[:, ~valid] = 0
        profile = {"driver": "GTiff", "width": ds.width, "height": ds.height, "count": ds.count, "dtype": "uint16",
                   "nodata": 0, "compress": "deflate", "predictor": 2, "tiled": True, "blockxsize": 512,
                   "blockysize": 512, "BIGTIFF": "IF_SAFER"}
        if ds.crs is not None:
            profile |= {"crs": ds.crs, "transform": ds.transform}
        with rasterio.open(dst, "w", **profile) as o:
            o.write(out)
            o.colorinterp = ds.colorinterp
            o.descriptions = ("Red", "Green", "Blue")[: ds.count]


def _crop(src: Path, dst: Path, col0: int, col1: int) -> None:
    with rasterio.open(src) as ds:
        win = Window(col0, 0, col1 - col0, ds.height)
        profile = ds.profile | {"width": col1 - col0, "height": ds.height,
                                "transform": ds.window_transform(win), "compress": "deflate", "tiled": False}
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        with rasterio.open(dst, "w", **profile) as out:
            out.write(ds.read(window=win))
            out.descriptions = ds.descriptions
            out.colorinterp = ds.colorinterp


def _manifest(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["hr", "hr_res"])
        w.writeheader()
        w.writerows(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default="data-work/archive")
    args = ap.parse_args()
    data, out = Path(args.data), Path(args.out)
    for sub in ("train", "val", "test"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    def copy(name: str, sub: str) -> dict[str, str]:
        dst = out / sub / Path(name).name
        if not dst.exists():
            _to_reflectance(data / name, dst)
        return {"hr": f"{sub}/{dst.name}", "hr_res": ""}

    train = [copy(f"{SWISS}/{n}", "train") for n in TRAIN_SWISS]
    inria = copy(INRIA, "train")
    inria["hr_res"] = "0.3"
    train.append(inria)
    sat = data / SATELLOGIC
    with rasterio.open(sat) as ds:
        width = ds.width
        assert abs(ds.res[0] - 1.0) < 1e-6, "the Satellogic tile is expected at 1 m"
    for k in range(SATELLOGIC_COPIES):
        dst = out / "train" / f"satellogic_west_{k}.tif"
        _crop(sat, dst, 0, SATELLOGIC_SPLIT_M)
        train.append({"hr": f"train/{dst.name}", "hr_res": ""})
    val = [copy(f"{SWISS}/{n}", "val") for n in VAL_SWISS]
    test = [copy(f"{SWISS}/{n}", "test") for n in TEST_SWISS]
    dst = out / "test" / "satellogic_east.tif"
    _crop(sat, dst, SATELLOGIC_SPLIT_M, width)
    test.append({"hr": f"test/{dst.name}", "hr_res": ""})
    _manifest(out / "train.csv", train)
    _manifest(out / "val.csv", val)
    _manifest(out / "test.csv", test)
    _manifest(out / "test_satellogic.csv", [test[-1]])
    print(f"wrote {out}/train.csv ({len(train)} rasters), val.csv ({len(val)}), test.csv ({len(test)})")


if __name__ == "__main__":
    main()
