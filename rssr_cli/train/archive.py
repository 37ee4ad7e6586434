"""Training archives -> aligned LR/HR patch pairs (:class:`~rssr_cli.patches.PatchCache`) and a report.

Two kinds of archive:

- **Real pairs**: a folder with ``lr/`` and ``hr/`` sub-folders, or a manifest (CSV with ``lr``/``hr`` columns, or
  JSON: a list of ``{"lr": ..., "hr": ...}``). Every LR x HR combination whose footprints intersect (shapely on
  lon/lat outlines, pyproj/GDAL for the CRSs) is a pair. For each pair, in chunks of the LR grid:

  1. the LR is read on its own grid (or resampled onto the local UTM zone at ``lr_res`` when its CRS is not metric);
  2. the HR is area-averaged onto the grid exactly ``scale`` x finer than that LR chunk and aligned with its pixel
     edges;
  3. the misregistration is measured by phase correlation between the LR and the HR degraded with the model's
     operator (:func:`rssr_cli.degrade.downsample`), then corrected by resampling the HR on a grid shifted by that
     amount, or the chunk is rejected (shift above ``max_shift``, weak correlation, no convergence);
  4. a per-band linear fit ``LR = a * D(HR) + b`` maps the HR onto the LR's reflectance level (TOA vs BOA, spectral
     response, the display mapping of 8-bit HR); a poor fit (R^2 < ``min_r2``) rejects the chunk;
  5. patches are cut where every LR and HR pixel is valid (nodata, masks, saturated DNs) and the HR is not
     near-constant.

- **HR only** (``synthetic_lr=True``): every raster under the folder (or the manifest's ``hr`` column) is resampled
  onto a metric grid at ``lr_res / scale`` and cut into patches; the LR is the S2-like degradation
  :func:`rssr_cli.degrade.degrade` of each HR patch (training draws a fresh degradation every step).

The report (:class:`PrepareReport`) says what was kept and why everything else was rejected.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from rasterio.windows import Window

from rssr_cli.bands import S2_STACK_POSITIONS, Radiometry, dn_to_reflectance, stand_in_nir
from rssr_cli.errors import DataError, UsageError
from rssr_cli.train.bands import MISSING_BAND_CHOICES, BandMap, MissingBand, resolve_band_map
from rssr_cli.patches import PatchCache, encode

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")

#: progress(done, total, message)
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class PrepareOptions:
    """How an archive is turned into patches. Sizes are in LR pixels and must be multiples of the scale's
    denominator (2 at 12.5x) so that every patch starts and ends on a whole HR pixel."""

    scale: Fraction = Fraction(25, 2)
    bands: tuple[str, ...] = ("B02", "B03", "B04", "B08")
    patch: int = 16
    stride: int | None = None
    synthetic_lr: bool = False
    lr_res: float = 10.0
    hr_res: float | None = None
    lr_bands: Mapping[str, int | None] | None = None
    hr_bands: Mapping[str, int | None] | None = None
    lr_radiometry: Radiometry | None = None
    hr_radiometry: Radiometry | None = None
    hr_display: Radiometry | None = None  # 8-bit HR sources only; hr_radiometry applies to the others
    missing_band: MissingBand = "error"
    min_overlap: float = 0.0
    chunk: int = 64
    max_shift: float = 1.0
    min_peak: float = 0.3
    min_r2: float = 0.5
    min_std: float = 0.002
    max_hr_coarsening: float = 1.3
    seed: int = 0

    def validate(self) -> None:
        den = Fraction(self.scale).denominator
        for name in ("patch", "chunk"):
            v = getattr(self, name)
            if v <= 0 or v % den:
                raise UsageError(f"--{name} {v} must be a positive multiple of {den} LR pixels at scale "
                                 f"{float(self.scale):g}")
        stride = self.stride or self.patch
        if stride <= 0 or stride % den:
            raise UsageError(f"--stride {stride} must be a positive multiple of {den} LR pixels")
        if self.missing_band not in MISSING_BAND_CHOICES:
            raise UsageError(f"--missing-band must be one of {', '.join(MISSING_BAND_CHOICES)}")
        if self.lr_res <= 0 or (self.hr_res is not None and self.hr_res <= 0):
            raise UsageError("pixel sizes must be positive")

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> "PrepareOptions":
        """Options from plain values, as in a TOML ``[prepare]`` table or the command line: ``scale = "25/2"``,
        ``bands = "B02,B03,B04,B08"``, ``hr_bands = "B04=1,B03=2,B02=3"`` (or a table), ``lr_scale_offset`` /
        ``hr_scale_offset = [1e-4, 0]``, ``hr_display = [0.3, 2.2]``, and the fields of this class by name."""
        from rssr_cli.train.bands import parse_band_map

        t = dict(table)
        kw: dict[str, Any] = {}
        try:
            if "scale" in t:
                kw["scale"] = Fraction(str(t.pop("scale"))).limit_denominator(1000)
            if "bands" in t:
                b = t.pop("bands")
                kw["bands"] = tuple(x.strip().upper() for x in (b.split(",") if isinstance(b, str) else b)
                                    if x.strip())
        except (ValueError, AttributeError):
            raise UsageError("scale must be a number or a fraction such as 25/2, bands a list of band names") \
                from None
        bands = kw.get("bands", cls.bands)
        for key in ("lr_bands", "hr_bands"):
            if key in t:
                kw[key] = parse_band_map(t.pop(key), bands)
        for key, kind in (("lr_scale_offset", "linear"), ("hr_scale_offset", "linear"), ("hr_display", "display")):
            if key not in t:
                continue
            pair = _two_numbers(t.pop(key), key)
            if pair is None:
                continue
            if kind == "display":
                kw["hr_display"] = Radiometry(kind="display", gain=pair[0], gamma=pair[1], saturated=255)
            else:
                kw[key.replace("scale_offset", "radiometry")] = Radiometry(kind="linear", scale=pair[0],
                                                                           offset=pair[1], saturated=65535)
        names = {f for f in cls.__dataclass_fields__} - {"lr_radiometry", "hr_radiometry", "hr_display"}
        unknown = set(t) - names
        if unknown:
            raise UsageError(f"unknown prepare option(s) {', '.join(sorted(unknown))}")
        kw.update(t)
        options = cls(**kw)
        options.validate()
        return options

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scale"] = str(Fraction(self.scale))
        d["bands"] = list(self.bands)
        for k in ("lr_radiometry", "hr_radiometry", "hr_display"):
            r = getattr(self, k)
            d[k] = r.describe() if r is not None else None
        for k in ("lr_bands", "hr_bands"):
            d[k] = dict(getattr(self, k)) if getattr(self, k) is not None else None
        return d


def _two_numbers(value: Any, name: str) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        parts = value.split(",") if isinstance(value, str) else list(value)
        a, b = (float(v) for v in parts)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be two numbers A,B, got {value!r}") from None
    return a, b


@dataclass
class SourceReport:
    """What happened to one pair (real) or one HR raster (synthetic)."""

    hr: str
    lr: str | None = None
    status: str = "rejected"
    reason: str = ""
    patches: int = 0
    rejected_patches: dict[str, int] = field(default_factory=dict)
    chunks: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class PrepareReport:
    sources: list[SourceReport]
    options: dict[str, Any]

    @property
    def patches(self) -> int:
        return sum(s.patches for s in self.sources)

    def to_dict(self) -> dict[str, Any]:
        rejected: Counter[str] = Counter()
        for s in self.sources:
            rejected.update(s.rejected_patches)
        return {
            "patches": self.patches,
            "sources_kept": sum(s.status == "kept" for s in self.sources),
            "sources_rejected": sum(s.status != "kept" for s in self.sources),
            "rejected_patches": dict(rejected),
            "sources": [asdict(s) for s in self.sources],
            "options": self.options,
        }

    def lines(self) -> list[str]:
        """A short human-readable account (the CLI prints it; the library does not)."""
        d = self.to_dict()
        out = [f"{d['patches']} patches from {d['sources_kept']} source(s); {d['sources_rejected']} rejected"]
        for s in self.sources:
            name = f"{Path(s.lr).name} x {Path(s.hr).name if s.hr else '-'}" if s.lr else Path(s.hr).name
            if s.status == "kept":
                extra = ", ".join(f"{k}: {v}" for k, v in sorted(s.rejected_patches.items()))
                out.append(f"  kept {name}: {s.patches} patches" + (f" (skipped {extra})" if extra else ""))
            else:
                out.append(f"  rejected {name}: {s.reason}")
        return out


@dataclass
class PreparedArchive:
    cache: PatchCache
    report: PrepareReport


@dataclass(frozen=True)
class _Entry:
    path: Path
    res: float | None = None
    bands: str | None = None


# --------------------------------------------------------------------------------------------- archive discovery


def _rasters(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)


def _float_or_none(v: Any) -> float | None:
    if v in (None, ""):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        raise DataError(f"manifest: pixel size {v!r} is not a number") from None


def find_sources(archive: str | Path, *, synthetic_lr: bool) -> tuple[list[_Entry], list[_Entry]]:
    """(LR entries, HR entries) of an archive folder, manifest or single raster."""
    root = Path(archive)
    if not root.exists():
        raise DataError(f"{root}: no such archive")
    lr: list[_Entry] = []
    hr: list[_Entry] = []
    if root.is_dir():
        if (root / "hr").is_dir():
            hr = [_Entry(p) for p in _rasters(root / "hr")]
            if (root / "lr").is_dir() and not synthetic_lr:
                lr = [_Entry(p) for p in _rasters(root / "lr")]
        elif synthetic_lr:
            hr = [_Entry(p) for p in _rasters(root)]
        else:
            raise DataError(f"{root}: expected lr/ and hr/ sub-folders or a manifest; for an HR-only archive "
                            "pass --synthetic-lr")
    elif root.suffix.lower() in (".csv", ".json"):
        rows: list[Mapping[str, Any]]
        if root.suffix.lower() == ".csv":
            with open(root, newline="") as f:
                rows = list(csv.DictReader(f))
        else:
            data = json.loads(root.read_text())
            rows = data.get("pairs", data) if isinstance(data, dict) else data
            if not isinstance(rows, list):
                raise DataError(f"{root}: a JSON manifest is a list of {{\"lr\": ..., \"hr\": ...}} objects")
        base = root.parent
        seen_lr: set[Path] = set()
        seen_hr: set[Path] = set()
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping) or not (row.get("hr") or row.get("lr")):
                raise DataError(f"{root}: row {i + 1} names neither an lr nor an hr raster")
            if row.get("lr") and not synthetic_lr:
                p = (base / str(row["lr"])).resolve()
                if p not in seen_lr:
                    seen_lr.add(p)
                    lr.append(_Entry(p, bands=row.get("lr_bands") or None))
            if row.get("hr"):
                p = (base / str(row["hr"])).resolve()
                if p not in seen_hr:
                    seen_hr.add(p)
                    hr.append(_Entry(p, _float_or_none(row.get("hr_res")), row.get("hr_bands") or None))
        for e in lr + hr:
            if not e.path.is_file():
                raise DataError(f"{root}: {e.path} does not exist")
    elif root.suffix.lower() in RASTER_SUFFIXES and synthetic_lr:
        hr = [_Entry(root)]
    else:
        raise DataError(f"{root}: not a folder, a .csv/.json manifest, or (with --synthetic-lr) a raster")
    if not hr:
        raise DataError(f"{root}: no HR rasters found")
    if not synthetic_lr and not lr:
        raise DataError(f"{root}: no LR rasters found (for an HR-only archive pass --synthetic-lr)")
    return lr, hr


# --------------------------------------------------------------------------------------------------- reading


def _read(ds, band_map: BandMap, radiometry: Radiometry, window=None, *,
          zero_is_nodata: bool = False) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Reflectance of the mapped bands present in the source, (C_present, h, w), and the valid mask (h, w).

    Invalid: masked by the dataset (nodata, internal mask, alpha) in any mapped band, saturated DNs, non-finite
    values, and for integer Sentinel-2-like sources without a declared nodata, DN 0 in every band.
    """
    present = [c for c, s in enumerate(band_map.sources) if s is not None]
    idx = [band_map.sources[c] for c in present]
    dn = ds.read(idx, window=window, boundless=False)
    masks = ds.read_masks(idx, window=window)
    undeclared_zero = zero_is_nodata and ds.nodata is None and np.issubdtype(dn.dtype, np.integer)
    refl, valid = dn_to_reflectance(dn, [radiometry] * len(idx), nodata=0.0 if undeclared_zero else None,
                                    nodata_in_every_band=True)
    valid &= (masks > 0).all(axis=0)
    return refl, valid, present


def _area_fraction(valid: np.ndarray, scale: Fraction) -> np.ndarray:
    """Fraction of each LR pixel's HR footprint that is valid: exact area averaging by repeating each HR pixel
    ``denominator`` times and averaging blocks of ``numerator`` (12.5x: repeat 2, average 25)."""
    v = np.repeat(np.repeat(valid.astype(np.float32), scale.denominator, 0), scale.denominator, 1)
    n = scale.numerator
    h, w = v.shape[0] // n, v.shape[1] // n
    return v[: h * n, : w * n].reshape(h, n, w, n).mean(axis=(1, 3))


def _fill_invalid(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = x.copy()
    for c in range(out.shape[0]):
        vals = out[c][valid]
        out[c][~valid] = float(vals.mean()) if vals.size else 0.0
    return out


def _downsample(hr: np.ndarray, scale: Fraction) -> np.ndarray:
    import torch

    from rssr_cli.degrade import downsample

    return downsample(torch.from_numpy(np.ascontiguousarray(hr, dtype=np.float32))[None], scale)[0].numpy()


# ------------------------------------------------------------------------------------------------ patch cutting


def _cut(
    lr: np.ndarray | None,
    hr: np.ndarray,
    lr_valid: np.ndarray | None,
    hr_valid: np.ndarray,
    options: PrepareOptions,
    rejected: Counter[str],
    limit: tuple[int, int] | None = None,
) -> list[tuple[int, int]]:
    """Top-left LR offsets of the patches that pass the valid-data filters (counts of the others in ``rejected``).

    ``limit``: only offsets below (rows, cols): a chunk's region extends ``patch - stride`` beyond the chunk so that
    overlapping patches across chunk edges are cut exactly once, by the chunk they start in."""
    s = Fraction(options.scale)
    p = options.patch
    stride = options.stride or p
    hp = int(p * s)
    h_lr = int(Fraction(hr.shape[1]) / s)
    w_lr = int(Fraction(hr.shape[2]) / s)
    lim_r, lim_c = limit if limit is not None else (h_lr, w_lr)
    kept = []
    for r in range(0, min(h_lr - p + 1, lim_r), stride):
        for c in range(0, min(w_lr - p + 1, lim_c), stride):
            R, C = int(r * s), int(c * s)
            if lr_valid is not None and not lr_valid[r: r + p, c: c + p].all():
                rejected["LR nodata/saturated"] += 1
                continue
            if not hr_valid[R: R + hp, C: C + hp].all():
                rejected["HR nodata/mask/saturated"] += 1
                continue
            if float(hr[:, R: R + hp, C: C + hp].mean(axis=0).std()) < options.min_std:
                rejected["near-constant"] += 1
                continue
            kept.append((r, c))
    return kept


def _chunks(height: int, width: int, options: PrepareOptions):
    """(row, col, rows, cols, limit) of the chunks a grid is processed in: ``chunk`` LR pixels rounded to the
    stride, plus the ``patch - stride`` overlap, so that memory stays bounded whatever the source size."""
    stride = options.stride or options.patch
    step = max(1, options.chunk // stride) * stride
    extra = max(0, options.patch - stride)
    for r0 in range(0, height - options.patch + 1, step):
        for c0 in range(0, width - options.patch + 1, step):
            h = min(step + extra, height - r0)
            w = min(step + extra, width - c0)
            yield r0, c0, h, w, (step, step)


def _masked_to_zero(hr: np.ndarray, valid_bands: np.ndarray) -> np.ndarray:
    """Masked bands are stored as zeros (they compress to nothing) and refilled on reading (PatchCache.batch)."""
    out = hr.copy()
    out[:, ~valid_bands] = 0.0
    return out


# ------------------------------------------------------------------------------------------------ synthetic LR


def _synthetic_source(entry: _Entry, index: int, options: PrepareOptions, report: SourceReport) -> PatchCache | None:
    import rasterio
    import torch
    from affine import Affine

    from rssr_cli.degrade import degrade
    from rssr_cli.train.grids import (
        LOCAL_CRS,
        footprint,
        ground_pixel_size,
        is_metric,
        snapped_grid,
        to_crs,
        utm_crs,
        warp_average,
    )

    s = Fraction(options.scale)
    with warnings.catch_warnings():
        # Rasters without georeferencing are allowed here (with --hr-res); rasterio warns on opening them.
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        ds = rasterio.open(entry.path)
    with ds:
        bmap = resolve_band_map(options.bands, ds.count, ds.descriptions,
                                [ci.name for ci in ds.colorinterp], _explicit(entry, options.hr_bands, options),
                                role="hr")
        report.details["hr_band_map"] = f"{bmap.describe()} ({bmap.how})"
        if not _missing_ok(bmap, options, report):
            return None
        rad = hr_radiometry(ds.dtypes[0], options)
        report.details["hr_radiometry"] = rad.describe()
        georeferenced = ds.crs is not None and not (ds.transform == Affine.identity() and not ds.gcps[0])
        hr_res = float(options.lr_res / s)
        if not georeferenced:
            res = entry.res or options.hr_res
            if res is None:
                report.reason = "not georeferenced: give its pixel size in metres (--hr-res, or a manifest hr_res)"
                return None
            src_crs = LOCAL_CRS
            src_transform = Affine(res, 0, 0, 0, -res, ds.height * res)
            dst_crs = LOCAL_CRS
            bounds = (0.0, 0.0, ds.width * res, ds.height * res)
            src_px = res
        else:
            src_crs, src_transform = ds.crs, ds.transform
            if is_metric(ds.crs):
                dst_crs = ds.crs
            else:
                c = footprint(ds).centroid
                dst_crs = utm_crs(c.x, c.y)
            bounds = to_crs(footprint(ds), dst_crs).bounds
            src_px = ground_pixel_size(ds, dst_crs)
        report.details["hr_ground_pixel_m"] = round(src_px, 4)
        report.details["crs"] = dst_crs.to_string()
        if src_px > options.max_hr_coarsening * hr_res:
            report.reason = (f"HR pixel {src_px:.2f} m is coarser than the {hr_res:g} m target by more than "
                             f"x{options.max_hr_coarsening:g}")
            return None
        lr_grid = snapped_grid(bounds, dst_crs, options.lr_res, s.denominator)
        if lr_grid is None or lr_grid.width < options.patch or lr_grid.height < options.patch:
            report.reason = f"smaller than one patch ({options.patch} LR px = {options.patch * options.lr_res:g} m)"
            return None
        report.details["grid"] = {"crs": dst_crs.to_string(), "lr_res": options.lr_res,
                                  "transform": list(lr_grid.transform)[:6], "width": lr_grid.width,
                                  "height": lr_grid.height}
        rejected: Counter[str] = Counter()
        valid_bands = np.array([src is not None for src in bmap.sources], dtype=bool)
        hp = int(options.patch * s)
        parts: list[PatchCache] = []
        for k, (r0, c0, h, w, limit) in enumerate(_chunks(lr_grid.height, lr_grid.width, options)):
            cgrid = lr_grid.window(Window(c0, r0, w, h))
            win = _source_window(ds, src_transform, src_crs, cgrid)
            if win is None:
                continue
            refl, valid, present = _read(ds, bmap, rad, win)
            data, frac = warp_average(refl, valid, src_transform @ Affine.translation(win.col_off, win.row_off),
                                      src_crs, cgrid.zoom(s))
            hr = _full_bands(data, present, bmap, options, lr_up=None)
            offsets = _cut(None, np.nan_to_num(hr), None, frac >= 0.999, options, rejected, limit)
            if not offsets:
                continue
            hr_patches = np.stack([hr[:, int(r * s): int(r * s) + hp, int(c * s): int(c * s) + hp]
                                   for r, c in offsets])
            gen = torch.Generator().manual_seed(options.seed * 1_000_003 + index * 10_007 + k)
            lr_patches = degrade(torch.from_numpy(hr_patches), s, generator=gen).numpy()
            n = len(offsets)
            parts.append(PatchCache(encode(lr_patches), encode(_masked_to_zero(hr_patches, valid_bands)),
                                    np.repeat(valid_bands[None], n, 0), np.full(n, index, np.int32),
                                    np.asarray([(r + r0, c + c0) for r, c in offsets], np.int32).reshape(n, 2),
                                    {"scale": str(s), "bands": list(options.bands)}))
    report.rejected_patches = dict(rejected)
    if not parts:
        report.reason = "no valid patch (" + ", ".join(f"{k}: {v}" for k, v in rejected.items()) + ")"
        return None
    out = PatchCache.concatenate(parts, parts[0].meta)
    report.status, report.patches = "kept", len(out)
    return out


def _source_window(ds, src_transform, src_crs, grid, margin: int = 2):
    """The source window (with a margin) covering ``grid``; None if they do not overlap."""
    from rasterio.warp import transform_bounds
    from rasterio.windows import from_bounds

    b = grid.bounds if src_crs == grid.crs else transform_bounds(grid.crs, src_crs, *grid.bounds, densify_pts=21)
    win = from_bounds(*b, transform=src_transform)
    col0 = max(0, int(math.floor(win.col_off)) - margin)
    row0 = max(0, int(math.floor(win.row_off)) - margin)
    col1 = min(ds.width, int(math.ceil(win.col_off + win.width)) + margin)
    row1 = min(ds.height, int(math.ceil(win.row_off + win.height)) + margin)
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def hr_radiometry(dtype: str, options: PrepareOptions) -> Radiometry:
    """The HR radiometry for a source of ``dtype``: ``hr_display`` applies to 8-bit sources only and
    ``hr_radiometry`` (linear) to the others, so that one archive can mix 8-bit orthophotos and 16-bit reflectance
    products (SWISSIMAGE + Satellogic) with an override for each."""
    if np.dtype(dtype) == np.uint8:
        return options.hr_display or Radiometry.for_dtype(dtype)
    return options.hr_radiometry or Radiometry.for_dtype(dtype)


def _explicit(entry: _Entry, default: Mapping[str, int | None] | None, options: PrepareOptions):
    """A manifest row's own band map (``lr_bands``/``hr_bands`` columns) wins over the command-line one."""
    from rssr_cli.train.bands import parse_band_map

    return parse_band_map(entry.bands, options.bands) if entry.bands else default


def _missing_ok(bmap: BandMap, options: PrepareOptions, report: SourceReport) -> bool:
    missing = bmap.missing
    if not missing:
        return True
    if options.missing_band == "error":
        report.reason = (f"HR lacks model band(s) {', '.join(missing)}; map it with --hr-bands, or pass "
                         f"--missing-band mask to train without it for this source")
        return False
    unsupported = [b for b in missing if b != "B08"]
    if unsupported:
        report.reason = f"HR lacks visible band(s) {', '.join(unsupported)}; only a missing B08 (NIR) can be masked"
        return False
    if not {"B02", "B03", "B04"} <= set(options.bands):
        report.reason = "a masked B08 needs B02, B03 and B04 for its stand-in"
        return False
    report.details["masked_bands"] = list(missing)
    return True


def _full_bands(data: np.ndarray, present: list[int], bmap: BandMap, options: PrepareOptions,
                lr_up: np.ndarray | None) -> np.ndarray:
    """All model bands on the HR grid: the present ones, and masked ones filled with a stand-in (the upsampled LR
    band for real pairs, :func:`stand_in_nir` of the HR for synthetic ones). Masked bands never reach the loss."""
    c = len(bmap.bands)
    out = np.zeros((c,) + data.shape[1:], dtype=np.float32)
    for k, band in enumerate(present):
        out[band] = data[k]
    for band, src in enumerate(bmap.sources):
        if src is None:
            if lr_up is not None:
                out[band] = lr_up[band]
            else:
                rgb = np.stack([out[bmap.bands.index(b)] for b in ("B02", "B03", "B04")])
                out[band] = stand_in_nir(np.nan_to_num(rgb))
    return out


# ------------------------------------------------------------------------------------------------ real pairs


def _lr_work_grid(ds, inter_lonlat, options: PrepareOptions):
    """The LR chunking grid over the intersection: the LR's own pixels when its CRS is metric, else a UTM grid at
    ``lr_res`` (the LR is then resampled bilinearly, which softens it a little: prefer LR in a metric CRS)."""
    from affine import Affine

    from rssr_cli.train.grids import Grid, is_metric, snapped_grid, to_crs, utm_crs

    den = Fraction(options.scale).denominator
    if is_metric(ds.crs):
        t = ds.transform
        if abs(t.b) > 1e-9 or abs(t.d) > 1e-9 or not math.isclose(abs(t.a), abs(t.e), rel_tol=1e-6):
            return None, "LR grid is rotated or has non-square pixels"
        minx, miny, maxx, maxy = to_crs(inter_lonlat, ds.crs).bounds
        col0 = max(0, math.ceil((minx - t.c) / t.a - 1e-6))
        col1 = min(ds.width, math.floor((maxx - t.c) / t.a + 1e-6))
        row0 = max(0, math.ceil((t.f - maxy) / -t.e - 1e-6))
        row1 = min(ds.height, math.floor((t.f - miny) / -t.e + 1e-6))
        w = (col1 - col0) - (col1 - col0) % den
        h = (row1 - row0) - (row1 - row0) % den
        if w <= 0 or h <= 0:
            return None, "overlap smaller than one LR pixel"
        return (Grid(w, h, t @ Affine.translation(col0, row0), ds.crs), (row0, col0), False), ""
    c = inter_lonlat.centroid
    crs = utm_crs(c.x, c.y)
    grid = snapped_grid(to_crs(inter_lonlat, crs).bounds, crs, options.lr_res, den)
    if grid is None:
        return None, "overlap smaller than one LR pixel"
    return (grid, None, True), ""


def _fit(lr: np.ndarray, sim: np.ndarray, valid: np.ndarray) -> tuple[float, float, float]:
    """Least squares ``lr = a * sim + b`` over valid pixels; returns (a, b, R^2)."""
    x = sim[valid].astype(np.float64)
    y = lr[valid].astype(np.float64)
    A = np.stack([x, np.ones_like(x)], axis=1)
    (a, b), *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - (a * x + b)
    var = y.var()
    r2 = 1.0 - resid.var() / var if var > 0 else 0.0
    return float(a), float(b), float(r2)


def _pair(lr_entry: _Entry, hr_entry: _Entry, index: int, options: PrepareOptions,
          report: SourceReport) -> PatchCache | None:
    import rasterio

    from rssr_cli.train.grids import footprint, ground_pixel_size, warp_average, warp_bilinear
    from rssr_cli.train.registration import phase_correlation

    s = Fraction(options.scale)
    with rasterio.open(lr_entry.path) as lds, rasterio.open(hr_entry.path) as hds:
        if lds.crs is None or hds.crs is None:
            report.reason = "a real pair needs georeferenced LR and HR"
            return None
        inter = footprint(lds).intersection(footprint(hds))
        lr_map = resolve_band_map(options.bands, lds.count, lds.descriptions, [c.name for c in lds.colorinterp],
                                  _explicit(lr_entry, options.lr_bands, options), role="lr",
                                  default_positions=S2_STACK_POSITIONS)
        report.details["lr_band_map"] = f"{lr_map.describe()} ({lr_map.how})"
        if lr_map.missing:
            report.reason = f"LR lacks model band(s) {', '.join(lr_map.missing)} (the model's input needs them)"
            return None
        hr_map = resolve_band_map(options.bands, hds.count, hds.descriptions, [c.name for c in hds.colorinterp],
                                  _explicit(hr_entry, options.hr_bands, options), role="hr")
        report.details["hr_band_map"] = f"{hr_map.describe()} ({hr_map.how})"
        if not _missing_ok(hr_map, options, report):
            return None
        lr_rad = options.lr_radiometry or Radiometry.for_dtype(lds.dtypes[0])
        hr_rad = hr_radiometry(hds.dtypes[0], options)
        report.details["lr_radiometry"] = lr_rad.describe()
        report.details["hr_radiometry"] = hr_rad.describe()
        work, why = _lr_work_grid(lds, inter, options)
        if work is None:
            report.reason = why
            return None
        lr_grid, native_offset, warped = work
        lr_res = lr_grid.res[0]
        report.details["crs"] = lr_grid.crs.to_string()
        report.details["lr_pixel_m"] = lr_res
        report.details["lr_resampled"] = warped
        src_px = ground_pixel_size(hds, lr_grid.crs)
        report.details["hr_ground_pixel_m"] = round(src_px, 4)
        if src_px > options.max_hr_coarsening * lr_res / float(s):
            report.reason = (f"HR pixel {src_px:.2f} m is coarser than the {lr_res / float(s):g} m target by more "
                             f"than x{options.max_hr_coarsening:g}")
            return None
        if native_offset is not None:

            r0, c0 = native_offset
            lr_all, lr_valid_all, _ = _read(lds, lr_map, lr_rad, Window(c0, r0, lr_grid.width, lr_grid.height),
                                            zero_is_nodata=True)
        else:
            refl, v, _ = _read(lds, lr_map, lr_rad, zero_is_nodata=True)
            lr_all, vf = warp_bilinear(refl, v, lds.transform, lds.crs, lr_grid)
            lr_valid_all = vf > 0
        parts: list[PatchCache] = []
        rejected: Counter[str] = Counter()
        valid_bands = np.array([src is not None for src in hr_map.sources], dtype=bool)
        for r0, c0, h, w, limit in _chunks(lr_grid.height, lr_grid.width, options):
            cgrid = lr_grid.window(Window(c0, r0, w, h))
            lr = lr_all[:, r0: r0 + h, c0: c0 + w]
            lr_valid = lr_valid_all[r0: r0 + h, c0: c0 + w]
            info: dict[str, Any] = {"row": r0, "col": c0}
            report.chunks.append(info)
            if lr_valid.mean() < 0.25:
                info["status"] = "rejected: LR mostly nodata"
                rejected["chunk: LR mostly nodata"] += 1
                continue
            hr_out = _register_and_fit(hds, hr_map, hr_rad, cgrid, lr, lr_valid, options, info,
                                       phase_correlation, warp_average)
            if hr_out is None:
                rejected[f"chunk: {info['status'].split(':', 1)[1].split('(')[0].strip()}"] += 1
                continue
            hr_data, hr_valid, present = hr_out
            import torch

            from rssr_cli.degrade import upsample

            lr_up = upsample(torch.from_numpy(np.ascontiguousarray(lr))[None], s)[0].numpy()
            hr = _full_bands(hr_data, present, hr_map, options, lr_up=lr_up)
            offsets = _cut(lr, np.nan_to_num(hr), lr_valid, hr_valid, options, rejected, limit)
            info["patches"] = len(offsets)
            if not offsets:
                continue
            p, hp = options.patch, int(options.patch * s)
            lr_p = np.stack([lr[:, r: r + p, c: c + p] for r, c in offsets])
            hr_p = np.stack([hr[:, int(r * s): int(r * s) + hp, int(c * s): int(c * s) + hp]
                             for r, c in offsets])
            n = len(offsets)
            origins = np.asarray([(r + r0, c + c0) for r, c in offsets], np.int32).reshape(n, 2)
            parts.append(PatchCache(encode(lr_p), encode(_masked_to_zero(hr_p, valid_bands)),
                                    np.repeat(valid_bands[None], n, 0),
                                    np.full(n, index, np.int32), origins,
                                    {"scale": str(s), "bands": list(options.bands)}))
    report.rejected_patches = dict(rejected)
    report.details["grid"] = {"crs": lr_grid.crs.to_string(), "transform": list(lr_grid.transform)[:6],
                              "width": lr_grid.width, "height": lr_grid.height}
    if not parts:
        report.reason = "no valid patch (" + ", ".join(f"{k}: {v}" for k, v in rejected.items()) + ")"
        return None
    out = PatchCache.concatenate(parts, parts[0].meta)
    report.status, report.patches = "kept", len(out)
    return out


def _register_and_fit(hds, hr_map: BandMap, hr_rad: Radiometry, cgrid, lr: np.ndarray, lr_valid: np.ndarray,
                      options: PrepareOptions, info: dict[str, Any], phase_correlation, warp_average):
    """Warp the HR onto the chunk's HR grid, measure and correct the shift, fit the radiometry. None = rejected
    (``info["status"]`` says why)."""
    s = Fraction(options.scale)

    def warp(grid):
        win = _source_window(hds, hds.transform, hds.crs, grid)
        if win is None:
            return None
        refl, valid, present = _read(hds, hr_map, hr_rad, win)
        data, frac = warp_average(refl, valid, hds.window_transform(win), hds.crs, grid.zoom(s))
        return data, frac >= 0.999, present

    def measure(data, hr_valid, present):
        common = present
        sim = _downsample(_fill_invalid(np.nan_to_num(data), hr_valid), s)
        ok = lr_valid & (_area_fraction(hr_valid, s) >= 0.999)
        if ok.mean() < 0.25:
            return None, sim, ok
        ref = lr[common].mean(axis=0)
        mov = sim.mean(axis=0)
        return phase_correlation(ref, mov, ok), sim, ok

    def register(grid, uncovered: str):
        """Warp onto ``grid`` and measure its shift against the LR: (data, valid, present, shift, sim, ok), or
        (None, reason) when either is impossible."""
        out = warp(grid)
        if out is None:
            return None, uncovered
        data, hr_valid, present = out
        shift, sim, ok = measure(data, hr_valid, present)
        if shift is None:
            return None, "rejected: too little valid overlap"
        return (data, hr_valid, present, shift, sim, ok), ""

    got, why = register(cgrid, "rejected: no HR coverage")
    if got is None:
        info["status"] = why
        return None
    data, hr_valid, present, shift, sim, ok = got
    info["shift_lr_px"] = [round(shift.dy, 3), round(shift.dx, 3)]
    info["peak"] = round(shift.peak, 3)
    if shift.peak < options.min_peak:
        info["status"] = (f"rejected: no common structure (correlation peak {shift.peak:.2f} < {options.min_peak:g}; "
                          "clouds, change between dates, or a wrong band map)")
        return None
    if shift.magnitude > options.max_shift:
        info["status"] = f"rejected: misregistered ({shift.magnitude:.2f} LR px > {options.max_shift:g})"
        return None
    if shift.magnitude > 0.02:
        got, why = register(cgrid.shifted(shift.dy, shift.dx), "rejected: no HR coverage after the shift")
        if got is None:
            info["status"] = why
            return None
        data, hr_valid, present, residual, sim, ok = got
        info["residual_lr_px"] = [round(residual.dy, 3), round(residual.dx, 3)]
        if residual.magnitude > 0.2:
            info["status"] = f"rejected: registration did not converge (residual {residual.magnitude:.2f} LR px)"
            return None
    fits = []
    for k, band in enumerate(present):
        a, b, r2 = _fit(lr[band], sim[k], ok)
        fits.append({"band": hr_map.bands[band], "gain": round(a, 4), "offset": round(b, 5), "r2": round(r2, 4)})
        if r2 < options.min_r2 or not 0.2 <= a <= 5.0:
            info["fit"] = fits
            info["status"] = (f"rejected: radiometric fit {hr_map.bands[band]}: gain {a:.2f}, R^2 {r2:.2f} "
                              f"(needs R^2 >= {options.min_r2:g}, gain 0.2..5)")
            return None
        data[k] = a * data[k] + b
    info["fit"] = fits
    info["status"] = "kept"
    return data, hr_valid, present


# --------------------------------------------------------------------------------------------------- entry point


def prepare_archive(
    archive: str | Path,
    *,
    options: PrepareOptions = PrepareOptions(),
    progress: Progress | None = None,
) -> PreparedArchive:
    """Find, pair, align and cut an archive into a :class:`PatchCache`; see the module docstring for the steps.

    Raises :class:`DataError` when nothing usable is left (the message carries the first rejection reasons).
    """
    import rasterio

    from rssr_cli.train.grids import footprint

    options.validate()
    lr_entries, hr_entries = find_sources(archive, synthetic_lr=options.synthetic_lr)
    reports: list[SourceReport] = []
    parts: list[PatchCache] = []
    sources: list[dict[str, Any]] = []
    if options.synthetic_lr:
        jobs = [(None, e) for e in hr_entries]
    else:
        fps = {}
        for e in lr_entries + hr_entries:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                ds = rasterio.open(e.path)
            with ds:
                fps[e.path] = footprint(ds) if ds.crs is not None else None
        jobs = []
        paired_hr: set[Path] = set()
        for le in lr_entries:
            for he in hr_entries:
                a, b = fps[le.path], fps[he.path]
                if a is None or b is None or not a.intersects(b):
                    continue
                inter = a.intersection(b).area
                if inter <= 0 or inter / min(a.area, b.area) <= options.min_overlap:
                    continue
                jobs.append((le, he))
                paired_hr.add(he.path)
        for he in hr_entries:
            if he.path not in paired_hr:
                why = "not georeferenced" if fps[he.path] is None else "no overlapping LR raster"
                reports.append(SourceReport(hr=str(he.path), reason=why))
        paired_lr = {le.path for le, _ in jobs}
        for le in lr_entries:
            if le.path not in paired_lr:
                why = "not georeferenced" if fps[le.path] is None else "no overlapping HR raster"
                reports.append(SourceReport(hr="", lr=str(le.path), reason=why))
    for i, (le, he) in enumerate(jobs):
        if progress is not None:
            progress(i, len(jobs), he.path.name if le is None else f"{le.path.name} x {he.path.name}")
        rep = SourceReport(hr=str(he.path), lr=str(le.path) if le is not None else None)
        reports.append(rep)
        index = len(sources)
        try:
            part = (_synthetic_source(he, index, options, rep) if le is None
                    else _pair(le, he, index, options, rep))
        except DataError as exc:
            rep.reason = str(exc)
            part = None
        except rasterio.errors.RasterioError as exc:
            rep.reason = f"unreadable: {exc}"
            part = None
        if part is not None:
            sources.append({"hr": str(he.path), "lr": str(le.path) if le is not None else None, **rep.details})
            parts.append(part)
    if progress is not None:
        progress(len(jobs), len(jobs), "done")
    report = PrepareReport(reports, options.to_dict())
    if not parts:
        reasons = "; ".join(f"{Path(r.hr or r.lr or '').name}: {r.reason}" for r in reports[:3])
        raise DataError(f"no usable patches in {archive} ({reasons})")
    meta = {
        "scale": str(Fraction(options.scale)),
        "bands": list(options.bands),
        "synthetic_lr": options.synthetic_lr,
        "patch_lr": options.patch,
        "lr_res": options.lr_res,
        "sources": sources,
        "report": report.to_dict(),
    }
    return PreparedArchive(PatchCache.concatenate(parts, meta), report)
