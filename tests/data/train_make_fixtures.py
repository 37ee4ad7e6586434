"""Regenerate the training fixtures under tests/data/train_* from the real imagery in ../shared/data (seeded).

- train_hr/swiss_crop.tif: a 400x400 crop of SWISSIMAGE (swisstopo) 0.8 m RGB, EPSG:3857, JPEG with its internal mask.
- train_hr/satellogic_crop.tif: a 160x160 crop of the Satellogic EarthView 1 m RGB+NIR tile (uint16 TOA x 10000).
- train_pairs/lr/s2like.tif: a Sentinel-2-like 10 m LR of the swiss crop in UTM 32N (4 bands B02 B03 B04 B08,
  uint16 reflectance x 10000, nodata 0), made with rssr's degradation operator, a known per-band gain/offset
  (LR_GAIN, LR_OFFSET) and a known misregistration (LR_SHIFT, in LR pixels) so that tests can check that pairing
  recovers them. B08 is the RGB stand-in (no real NIR exists for this ground).
- train_pairs/manifest.csv: the pair, as a manifest.

Run: python tests/data/train_make_fixtures.py /path/to/shared/data
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine
from rasterio.windows import Window

HERE = Path(__file__).parent
LR_GAIN = (1.15, 1.10, 1.05, 1.0)
LR_OFFSET = (0.012, 0.008, 0.004, 0.0)
LR_SHIFT = (0.3, -0.4)  # (dy, dx) in LR pixels: the LR content sits this far from where its transform says


def crop(src: Path, dst: Path, window: Window) -> None:
    with rasterio.open(src) as ds:
        profile = ds.profile.copy()
        data = ds.read(window=window)
        mask = ds.read_masks(1, window=window)
        profile.update(width=window.width, height=window.height, transform=ds.window_transform(window),
                       blockxsize=128, blockysize=128, tiled=True)
        if profile.get("compress") == "jpeg":
            profile.update(photometric="ycbcr", jpeg_quality=90)
        dst.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
            with rasterio.open(dst, "w", **profile) as out:
                out.write(data)
                out.descriptions = ds.descriptions
                out.colorinterp = ds.colorinterp
                if ds.mask_flag_enums[0] == [rasterio.enums.MaskFlags.per_dataset]:
                    out.write_mask(mask)


def make_lr(hr_path: Path, dst: Path) -> None:
    from rssr_cli.degrade import downsample
    from rssr_cli.bands import Radiometry, stand_in_nir
    from rssr_cli.train.grids import footprint, snapped_grid, to_crs, utm_crs, warp_average

    scale = Fraction(25, 2)
    with rasterio.open(hr_path) as ds:
        c = footprint(ds).centroid
        crs = utm_crs(c.x, c.y)
        lr_grid = snapped_grid(to_crs(footprint(ds), crs).bounds, crs, 10.0, 2)
        rgb = Radiometry.for_dtype("uint8").to_reflectance(ds.read([3, 2, 1]))  # B02, B03, B04
        valid = ds.read_masks(1) > 0
        src_t, src_crs = ds.transform, ds.crs
    # Content displaced by LR_SHIFT: sample the HR on a grid moved by -LR_SHIFT, write it with the true transform.
    dy, dx = LR_SHIFT
    hr, frac = warp_average(rgb, valid, src_t, src_crs, lr_grid.shifted(-dy, -dx).zoom(scale))
    hr = np.concatenate([hr, stand_in_nir(np.nan_to_num(hr))[None]])
    lr = downsample(torch.from_numpy(np.nan_to_num(hr)).float()[None], scale)[0].numpy()
    ok = np.repeat(np.repeat(frac >= 0.999, 2, 0), 2, 1).reshape(lr.shape[1], 25, lr.shape[2], 25).all(axis=(1, 3))
    for b in range(4):
        lr[b] = LR_GAIN[b] * lr[b] + LR_OFFSET[b]
    rng = np.random.default_rng(0)
    lr = lr + rng.normal(0, 0.001, lr.shape)
    dn = np.clip(np.rint(lr * 10000), 1, 65534).astype(np.uint16)
    dn[:, ~ok] = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(dst, "w", driver="GTiff", width=lr_grid.width, height=lr_grid.height, count=4,
                       dtype="uint16", crs=crs, transform=lr_grid.transform, nodata=0, compress="deflate") as out:
        out.write(dn)
        out.descriptions = ("B02", "B03", "B04", "B08")


def main(shared: Path) -> None:
    crop(shared / "hr/swissimage-0p8m/swissimage_0p8m_03_lat46.920_lon8.970.tif", HERE / "train_hr/swiss_crop.tif",
         Window(560, 20, 400, 400))
    crop(shared / "hr/satellogic-1m/useCaseA_satellogic_20220813_102958_SN20_41N_429831_3696993_TOA.tif",
         HERE / "train_hr/satellogic_crop.tif", Window(100, 100, 160, 160))
    make_lr(HERE / "train_hr/swiss_crop.tif", HERE / "train_pairs/lr/s2like.tif")
    (HERE / "train_pairs/manifest.csv").write_text("lr,hr\nlr/s2like.tif,../train_hr/swiss_crop.tif\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else HERE / "../../../shared/data"))
