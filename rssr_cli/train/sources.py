"""Which rasters an archive holds, and which LR and HR rasters pair up.

An archive is a folder with ``lr/`` and ``hr/`` sub-folders, a manifest (CSV with ``lr``/``hr`` columns, or JSON: a
list of ``{"lr": ..., "hr": ...}``), or, for HR-only archives, any folder or a single raster. Manifest rows may carry
their own ``hr_res`` (pixel size of a raster without georeferencing), ``lr_bands``/``hr_bands`` band maps and, for
HR-only archives, ``hr_zoom`` (scale augmentation: cut the raster as if its ground pixels were that many times larger;
a raster may be listed at several zooms). Every LR x HR combination whose lon/lat footprints overlap is a pair.
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import rasterio

from rssr_cli.errors import DataError
from rssr_cli.train.bands import parse_band_map
from rssr_cli.train.grids import footprint
from rssr_cli.train.prepare_report import SourceReport

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


@dataclass(frozen=True)
class SourceEntry:
    """One raster of an archive, with what its manifest row says about it."""

    path: Path
    res: float | None = None
    bands: str | None = None
    #: Scale augmentation (HR-only archives): the raster is cut as if its ground pixel were ``zoom`` times its size,
    #: so objects come out ``zoom`` times larger in the patches. 1 = as it is.
    zoom: float = 1.0

    def band_map(self, default: Mapping[str, int | None] | None,
                 model_bands: Sequence[str]) -> Mapping[str, int | None] | None:
        """The row's own band map (``lr_bands``/``hr_bands`` columns) wins over the command-line one."""
        return parse_band_map(self.bands, model_bands) if self.bands else default


def open_raster(path: str | Path) -> rasterio.io.DatasetReader:
    """Open a raster that may lack georeferencing (allowed for HR-only archives, with a pixel size) without the
    warning rasterio gives for it: the callers report it themselves."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        return rasterio.open(path)


def find_sources(archive: str | Path, *, synthetic_lr: bool) -> tuple[list[SourceEntry], list[SourceEntry]]:
    """(LR entries, HR entries) of an archive folder, manifest or single raster."""
    root = Path(archive)
    if not root.exists():
        raise DataError(f"{root}: no such archive")
    if root.is_dir():
        lr, hr = _folder_sources(root, synthetic_lr=synthetic_lr)
    elif root.suffix.lower() in (".csv", ".json"):
        lr, hr = _manifest_sources(root, synthetic_lr=synthetic_lr)
    elif root.suffix.lower() in RASTER_SUFFIXES and synthetic_lr:
        lr, hr = [], [SourceEntry(root)]
    else:
        raise DataError(f"{root}: not a folder, a .csv/.json manifest, or (with --synthetic-lr) a raster")
    if not hr:
        raise DataError(f"{root}: no HR rasters found")
    if not synthetic_lr and not lr:
        raise DataError(f"{root}: no LR rasters found (for an HR-only archive pass --synthetic-lr)")
    return lr, hr


def _rasters(folder: Path) -> list[SourceEntry]:
    return [SourceEntry(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES]


def _folder_sources(root: Path, *, synthetic_lr: bool) -> tuple[list[SourceEntry], list[SourceEntry]]:
    if (root / "hr").is_dir():
        has_lr = (root / "lr").is_dir() and not synthetic_lr
        return (_rasters(root / "lr") if has_lr else []), _rasters(root / "hr")
    if synthetic_lr:
        return [], _rasters(root)
    raise DataError(f"{root}: expected lr/ and hr/ sub-folders or a manifest; for an HR-only archive pass "
                    "--synthetic-lr")


def _manifest_rows(root: Path) -> list[Mapping[str, Any]]:
    if root.suffix.lower() == ".csv":
        with open(root, newline="") as f:
            return list(csv.DictReader(f))
    data = json.loads(root.read_text())
    rows = data.get("pairs", data) if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise DataError(f"{root}: a JSON manifest is a list of {{\"lr\": ..., \"hr\": ...}} objects")
    return rows


def _manifest_sources(root: Path, *, synthetic_lr: bool) -> tuple[list[SourceEntry], list[SourceEntry]]:
    """Entries of a manifest, each raster once per ``hr_zoom`` (a raster in several rows pairs by footprint like any
    other; repeating a row does not repeat its patches); paths are relative to the manifest."""
    lr: dict[Path, SourceEntry] = {}
    hr: dict[tuple[Path, float], SourceEntry] = {}
    for i, row in enumerate(_manifest_rows(root)):
        if not isinstance(row, Mapping) or not (row.get("hr") or row.get("lr")):
            raise DataError(f"{root}: row {i + 1} names neither an lr nor an hr raster")
        if row.get("lr") and not synthetic_lr:
            p = (root.parent / str(row["lr"])).resolve()
            lr.setdefault(p, SourceEntry(p, bands=row.get("lr_bands") or None))
        if row.get("hr"):
            p = (root.parent / str(row["hr"])).resolve()
            zoom = _zoom(row.get("hr_zoom"), root, i)
            if zoom != 1 and not synthetic_lr:
                raise DataError(f"{root}: row {i + 1}: hr_zoom is for HR-only archives (--synthetic-lr); a zoomed HR "
                                "no longer matches the ground of a real LR")
            hr.setdefault((p, zoom), SourceEntry(p, _float_or_none(row.get("hr_res")), row.get("hr_bands") or None,
                                                 zoom))
    for e in [*lr.values(), *hr.values()]:
        if not e.path.is_file():
            raise DataError(f"{root}: {e.path} does not exist")
    return list(lr.values()), list(hr.values())


def _zoom(v: Any, root: Path, i: int) -> float:
    if v in (None, ""):
        return 1.0
    try:
        zoom = float(v)
    except (TypeError, ValueError):
        zoom = float("nan")
    if not 0 < zoom < float("inf"):
        raise DataError(f"{root}: row {i + 1}: hr_zoom must be a positive number, got {v!r}")
    return zoom


def _float_or_none(v: Any) -> float | None:
    if v in (None, ""):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        raise DataError(f"manifest: pixel size {v!r} is not a number") from None


def pair_by_footprint(
    lr_entries: list[SourceEntry],
    hr_entries: list[SourceEntry],
    *,
    min_overlap: float,
) -> tuple[list[tuple[SourceEntry, SourceEntry]], list[SourceReport]]:
    """(LR, HR) pairs whose footprints overlap by more than ``min_overlap`` of the smaller one, and a report for
    every raster left without a partner (not georeferenced, or nothing over it)."""
    footprints = {}
    for e in lr_entries + hr_entries:
        with open_raster(e.path) as ds:
            footprints[e.path] = footprint(ds) if ds.crs is not None else None
    pairs = []
    for le in lr_entries:
        for he in hr_entries:
            a, b = footprints[le.path], footprints[he.path]
            if a is None or b is None or not a.intersects(b):
                continue
            inter = a.intersection(b).area
            if inter > 0 and inter / min(a.area, b.area) > min_overlap:
                pairs.append((le, he))
    unpaired = []
    paired_hr = {he.path for _, he in pairs}
    for he in hr_entries:
        if he.path not in paired_hr:
            why = "not georeferenced" if footprints[he.path] is None else "no overlapping LR raster"
            unpaired.append(SourceReport(hr=str(he.path), reason=why))
    paired_lr = {le.path for le, _ in pairs}
    for le in lr_entries:
        if le.path not in paired_lr:
            why = "not georeferenced" if footprints[le.path] is None else "no overlapping HR raster"
            unpaired.append(SourceReport(hr="", lr=str(le.path), reason=why))
    return pairs, unpaired
