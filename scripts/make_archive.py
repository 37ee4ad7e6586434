"""Build the training / validation / test archives of the default model from ../shared/data, reproducibly.

    python scripts/make_archive.py [--data ../shared/data] [--out data-work/archive]

Writes HR-only manifests (``rssr prepare --synthetic-lr`` reads them; paths are relative to the manifest):

- ``train.csv``: SWISSIMAGE mosaics 01, 02, 04 (RGB, NIR masked), the Inria 0.3 m urban tile (RGB, NIR masked,
  ``hr_res`` 0.3), and the western 200 m of the Satellogic tile (RGB+NIR, the only HR NIR), copied
  ``SATELLOGIC_COPIES`` times so that the NIR output sees more than 0.3 % of the gradient;
- ``val.csv``: SWISSIMAGE mosaics 03 and 07 (used to tune the sampler defaults, never for the reported numbers);
- ``test.csv``: SWISSIMAGE mosaic 08 (Brig-Naters: town, rail yard, river, forest, meadows) and the eastern 184 m of
  the Satellogic tile. Training and tuning never see these pixels.

and, for the v2 model (issue 12: more sources, towns and farmland among the held-out regions):

- ``train-v2.csv``: everything in ``train.csv`` plus the NAIP crop m_3607717 (Virginia: forest and fields, RGB+NIR,
  ``NAIP_COPIES`` copies) and the northern 270 m of the Banepa drone mosaic (a dense Nepali town, RGB, NIR masked,
  ``BANEPA_COPIES`` copies);
- ``test-naip_test.csv``, ``test-banepa_south.csv``: two more held-out regions, the NAIP crop m_3607824 (North
  Carolina: forest and field edges) and the southern 270 m of Banepa (town), each scored on its own. The NAIP airport crop (86 m x 105 m) is smaller than one 160 m patch: unused.

The repeated NAIP and Banepa rows of ``train-v2.csv`` add nothing: ``rssr prepare`` reads a raster once per manifest
(the v2 caches hold 4 NAIP and 7 Banepa patches, once each); ``source_balance`` is the lever for how often they are
drawn. The rows are kept so that ``train-v2.csv`` stays the manifest the v2 models were trained on.

and, for candidates after v2.6 (session 21: dense towns are short of data, weights/README.md "What remains"):

- ``train-v3.csv``: ``train-v2.csv`` plus the towns again at larger ground pixels (``hr_zoom``, scale augmentation:
  the same streets with houses ``TOWN_ZOOMS`` times as large, in new positions against the 10 m grid): the Banepa
  north half at 0.13 m and the Inria tile at 0.3 m, which ``train-v2.csv`` lists but loses (its clipped roofs are
  masked as nodata and a patch needs every pixel valid: no patch is kept), written again here with its roofs kept
  as the v2 sources are.

NAIP's 8-bit DNs are uncalibrated: the visible bands get the orthophotos' mapping below, and NIR
``NAIP_NIR_GAIN * DN / 255`` (forest at DN ~185 -> 0.33, water at DN ~15 -> 0.03, the range of Sentinel-2 L2A B08).
Banepa's pure-white areas outside the flight are 0.01 % of the two halves used (measured), so nothing is masked there:
a "white is nodata" rule would also mask the town's white roofs, and a patch needs every pixel valid.

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
NAIP = "hr/naip-rgbn"
TRAIN_NAIP = "m_3607717_sw_18_1_20160620_subset.tif"
TEST_NAIP = "m_3607824_se_17_1_20160620_subset.tif"
NAIP_NIR_GAIN = 0.45
NAIP_COPIES = 4
BANEPA = "hr/banepa-drone/banepa_oam_0p13m_train_mosaic.tif"
BANEPA_SPLIT_ROW = 2048  # half of the 540 m mosaic (0.133 m rows): north train, south test (each ≥ 2 patch rows)
BANEPA_COPIES = 2
TOWN_ZOOMS = (1.5, 2.0)


def _to_reflectance(src: Path, dst: Path, *, nir_gain: float | None = None, rows: tuple[int, int] | None = None,
                    mask_clipped: bool = True) -> None:
    """8-bit display RGB (and NIR as band 4 with ``nir_gain``) -> uint16 reflectance x 10000 (1..65534), invalid
    pixels 0 (nodata). ``rows``: only these rows; ``mask_clipped``: a pixel at 255 in any band is nodata (the v1
    recipe; the v2 sources keep bright roofs, which clip a channel in nearly every town patch)."""
    import warnings

    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        ds = rasterio.open(src)
    with ds:
        window = Window(0, rows[0], ds.width, rows[1] - rows[0]) if rows else None
        dn = ds.read(window=window)
        valid = (ds.read_masks(window=window) > 0).all(axis=0)
        if mask_clipped:
            valid &= ~(dn == 255).any(axis=0)
        refl = DISPLAY_GAIN * (dn.astype(np.float64) / 255.0) ** DISPLAY_GAMMA
        if nir_gain is not None:
            refl[3] = nir_gain * dn[3] / 255.0  # NIR: linear, see NAIP_NIR_GAIN
        out = np.clip(np.rint(refl * 10000), 1, 65534).astype(np.uint16)
        out[:, ~valid] = 0
        profile = {"driver": "GTiff", "width": dn.shape[2], "height": dn.shape[1], "count": ds.count, "dtype": "uint16",
                   "nodata": 0, "compress": "deflate", "predictor": 2, "tiled": True, "blockxsize": 512,
                   "blockysize": 512, "BIGTIFF": "IF_SAFER"}
        if ds.crs is not None:
            profile |= {"crs": ds.crs, "transform": ds.window_transform(window) if window else ds.transform}
        with rasterio.open(dst, "w", **profile) as o:
            o.write(out)
            o.descriptions = ("Red", "Green", "Blue", "NIR")[: ds.count]


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
        w = csv.DictWriter(f, fieldnames=["hr", "hr_res", "hr_zoom"], restval="")
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
    train_v2, test_v2 = _v2_sources(data, out)
    _manifest(out / "train-v2.csv", train + train_v2)
    for row in test_v2:  # one manifest per new test region: the card reports every region on its own
        _manifest(out / f"test-{Path(row['hr']).stem}.csv", [row])
    print(f"wrote {out}/train-v2.csv ({len(train) + len(train_v2)} rasters) and test-naip_test.csv, "
          "test-banepa_south.csv")
    towns = _v3_towns(data, out)
    _manifest(out / "train-v3.csv", train + train_v2 + towns)
    print(f"wrote {out}/train-v3.csv (+{len(towns)} town rows)")


def _v3_towns(data: Path, out: Path) -> list[dict[str, str]]:
    """The towns of ``train-v3.csv``: the Inria tile with its roofs kept (once as it is), then both towns at every
    zoom of ``TOWN_ZOOMS``."""
    inria = out / "train" / "bellingham_roofs_kept.tif"
    if not inria.exists():
        _to_reflectance(data / INRIA, inria, mask_clipped=False)
    rows = [{"hr": f"train/{inria.name}", "hr_res": "0.3"}]
    for zoom in TOWN_ZOOMS:
        rows.append({"hr": f"train/{inria.name}", "hr_res": "0.3", "hr_zoom": f"{zoom:g}"})
        rows.append({"hr": "train/banepa_north.tif", "hr_res": "", "hr_zoom": f"{zoom:g}"})
    return rows


def _v2_sources(data: Path, out: Path) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The v2 model's extra sources (see the module docstring): NAIP RGB+NIR and the Banepa town, split in space."""
    with rasterio.open(data / BANEPA) as ds:
        height = ds.height
    made = {
        ("train", "naip_train.tif"): dict(src=data / NAIP / TRAIN_NAIP, nir_gain=NAIP_NIR_GAIN),
        ("test", "naip_test.tif"): dict(src=data / NAIP / TEST_NAIP, nir_gain=NAIP_NIR_GAIN),
        ("train", "banepa_north.tif"): dict(src=data / BANEPA, rows=(0, BANEPA_SPLIT_ROW)),
        ("test", "banepa_south.tif"): dict(src=data / BANEPA, rows=(BANEPA_SPLIT_ROW, height)),
    }
    for (sub, name), spec in made.items():
        dst = out / sub / name
        if not dst.exists():
            src = spec.pop("src")
            _to_reflectance(src, dst, mask_clipped=False, **spec)
    copies = {"naip_train.tif": NAIP_COPIES, "banepa_north.tif": BANEPA_COPIES}
    train = [{"hr": f"train/{name}", "hr_res": ""} for name, k in copies.items() for _ in range(k)]
    test = [{"hr": "test/naip_test.tif", "hr_res": ""}, {"hr": "test/banepa_south.tif", "hr_res": ""}]
    return train, test


if __name__ == "__main__":
    main()
