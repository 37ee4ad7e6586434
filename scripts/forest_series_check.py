"""The model's radiometry on real Sentinel-2 time series of forest: the five TreeSatAI plots (issue 12, item 3).

    pip install h5py   # the plots' Sentinel-2 series are HDF5
    python scripts/forest_series_check.py [--weights W] [--folder ../shared/data/pairs/treesatai-ts] \
        [--months 5 6 7 8 9] [--json OUT]

Each plot (Lower Saxony, birch and oak) has the Sentinel-2 L2A series of one year over a 6 x 6 window (60 m). For
every clear date (cloud and snow masks zero everywhere) in ``--months``, the window is written as a 10 m GeoTIFF
and ``rssr upscale`` runs with the model (default sampler, and ``--consistency none``) and with bicubic. Reported per
band: ``mean(model) / mean(bicubic) - 1`` in %, with and without the consistency step. Without it this is the
network's own radiometry on dense summer forest, where red and blue are dark (0.02-0.05), with real NIR: another
region and cover than ``scripts/real_s2_check.py``'s Boadella crops.

Why not a 0.8 m comparison with the plots' 0.2 m aerial images: the windows are not co-registered with them well
enough. Averaged to 10 m, the aerial correlates with the Sentinel-2 pixels at 0.0-0.4 (mean of the clear summer
dates), so a per-pixel comparison at 0.8 m would measure the misregistration, not the model.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.transform import Affine

from rssr_cli.methods import BicubicOptions, DiffusionOptions
from rssr_cli.pipeline import UpscaleOptions, upscale

FOLDER = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "pairs" / "treesatai-ts"
BANDS = ("B02", "B03", "B04", "B08")
#: Sentinel-2 band order in the HDF5 series: B02 B03 B04 B05 B06 B07 B08 B8A B11 B12.
S2_INDEX = (0, 1, 2, 6)
LR = 6
CRS_UTM32 = CRS.from_epsg(25832)


def clear_dates(h5_path: Path, months: set[int]) -> list[tuple[str, np.ndarray]]:
    """(YYYYMMDD, (4, 6, 6) reflectance) of the dates whose cloud and snow masks are zero everywhere."""
    try:
        import h5py
    except ImportError:
        raise SystemExit("forest_series_check.py reads the plots' HDF5 series: pip install h5py") from None

    with h5py.File(h5_path, "r") as h5:
        data, masks = h5["sen-2-data"][:], h5["sen-2-masks"][:]
        products = [p.decode() for p in h5["sen-2-products"][:]]
    out = []
    for product, image, mask in zip(products, data, masks):
        date = product.split("_")[2][:8]
        if int(date[4:6]) in months and mask.max() == 0:
            out.append((date, image[list(S2_INDEX)].astype(np.float32) / 10000.0))
    return out


def write_window(path: Path, lr: np.ndarray, centre: tuple[float, float]) -> None:
    """The 6 x 6 window as a uint16 DN GeoTIFF (L2A before 2022: DN = reflectance x 10000) centred on ``centre``."""
    cx, cy = centre
    transform = Affine(10.0, 0.0, cx - LR * 5.0, 0.0, -10.0, cy + LR * 5.0)
    with rasterio.open(path, "w", driver="GTiff", width=LR, height=LR, count=4, dtype="uint16", crs=CRS_UTM32,
                       transform=transform) as dst:
        dst.write(np.clip(np.round(lr * 10000), 0, 65535).astype(np.uint16))


def band_means(sr: np.ndarray, bic: np.ndarray, free: np.ndarray) -> dict:
    """Per band, mean(model) / mean(bicubic) - 1 in %, with (``sr``) and without (``free``) consistency."""
    shift = lambda x: dict(zip(BANDS, np.round((x.reshape(4, -1).mean(1) / bic.reshape(4, -1).mean(1) - 1) * 100,
                                               3).tolist()))
    return {"mean_shift_pct": shift(sr), "mean_shift_pct_no_consistency": shift(free),
            "bicubic_mean": dict(zip(BANDS, np.round(bic.reshape(4, -1).mean(1), 5).tolist()))}


def _run(src: Path, upsampler, out: Path) -> np.ndarray:
    upscale(src, out, UpscaleOptions(dtype="float32", overwrite=True), upsampler=upsampler)
    with rasterio.open(out) as ds:
        return ds.read().astype(np.float32)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights")
    ap.add_argument("--folder", default=str(FOLDER))
    ap.add_argument("--months", type=int, nargs="+", default=[5, 6, 7, 8, 9])
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = DiffusionOptions(weights=args.weights, device="cpu").build()
    free = DiffusionOptions(weights=args.weights, device="cpu", consistency="none").build()
    bicubic = BicubicOptions().build()
    folder = Path(args.folder)
    # Each aerial plot NAME.tif comes with its series NAME_YEAR.h5.
    plots = [(tif, h5) for tif in sorted(folder.glob("*.tif")) for h5 in sorted(folder.glob(tif.stem + "_*.h5"))]
    if not plots:
        raise SystemExit(f"{folder}: no aerial plot (NAME.tif) with its series (NAME_YEAR.h5)")
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for aerial, series in plots:
            with rasterio.open(aerial) as ds:
                b = ds.bounds
            centre = ((b.left + b.right) / 2, (b.bottom + b.top) / 2)
            for date, lr in clear_dates(series, set(args.months)):
                write_window(work / "lr.tif", lr, centre)
                sr = _run(work / "lr.tif", model, work / "model.tif")
                sr_free = _run(work / "lr.tif", free, work / "free.tif")
                bic = _run(work / "lr.tif", bicubic, work / "bicubic.tif")
                row = band_means(sr, bic, sr_free)
                results[f"{aerial.stem}:{date}"] = row
                print(f"{aerial.stem[:22]:22s} {date} shift % {row['mean_shift_pct']}  without consistency "
                      f"{row['mean_shift_pct_no_consistency']}", flush=True)
    table = lambda key: np.array([list(r[key].values()) for r in results.values()])  # (dates, bands)
    free_shift, default_shift = table("mean_shift_pct_no_consistency"), table("mean_shift_pct")
    free_shift_reflectance = free_shift / 100 * table("bicubic_mean")
    summary = {
        "weights": model.loaded.name, "sampler": model.provenance(), "dates": len(results),
        "mean_shift_max_abs_pct": float(np.abs(default_shift).max()),
        "mean_shift_max_abs_pct_no_consistency": dict(zip(BANDS, np.round(np.abs(free_shift).max(0), 3).tolist())),
        "mean_shift_median_pct_no_consistency": dict(zip(BANDS, np.round(np.median(free_shift, 0), 3).tolist())),
        "dates_within_1pct_no_consistency": int((np.abs(free_shift).max(1) <= 1.0).sum()),
        # Relative shifts of dark bands are large for small absolute ones: red of dense forest is 0.007-0.05.
        "mean_shift_max_abs_reflectance_no_consistency": dict(zip(BANDS, np.round(
            np.abs(free_shift_reflectance).max(0), 5).tolist())),
        "plots": results,
    }
    print(json.dumps({k: v for k, v in summary.items() if k not in ("plots", "sampler")}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
