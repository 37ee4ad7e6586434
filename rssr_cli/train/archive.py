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

This module orchestrates; each job has its module: :mod:`.sources` (which rasters, which pairs), :mod:`.reading`
(bands -> reflectance), :mod:`.grids` (working grids and windows), :mod:`.registration` (shift and radiometric fit),
:mod:`.patching` (chunks, filters, cache parts), :mod:`.pairing` (one real pair) and :mod:`.synthetic` (one HR-only
raster); :mod:`.prepare_options` and :mod:`.prepare_report` hold the options and the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import rasterio

from rssr_cli.errors import DataError
from rssr_cli.patches import PatchCache
from rssr_cli.train.pairing import pair_patches
from rssr_cli.train.prepare_options import PrepareOptions
from rssr_cli.train.prepare_report import PrepareReport, SourceReport
from rssr_cli.train.sources import SourceEntry, find_sources, pair_by_footprint
from rssr_cli.train.synthetic import synthetic_patches

__all__ = ["NoPatchesError", "PrepareOptions", "PrepareReport", "PreparedArchive", "Progress", "SourceReport",
           "find_sources", "prepare_archive"]

#: progress(done, total, message)
Progress = Callable[[int, int, str], None]


@dataclass
class PreparedArchive:
    cache: PatchCache
    report: PrepareReport


class NoPatchesError(DataError):
    """Nothing usable in an archive. ``report`` says what was examined and why each source was rejected: the CLI
    writes it even though no patch cache is written."""

    def __init__(self, message: str, report: PrepareReport) -> None:
        super().__init__(message)
        self.report = report


def prepare_archive(
    archive: str | Path,
    *,
    options: PrepareOptions = PrepareOptions(),
    progress: Progress | None = None,
) -> PreparedArchive:
    """Find, pair, align and cut an archive into a :class:`PatchCache`; see the module docstring for the steps.

    A source that fails (a :class:`DataError` or an unreadable raster) is rejected with the reason in the report;
    raises :class:`NoPatchesError` (a :class:`DataError`) when nothing usable is left: the message carries the first
    rejection reasons, the exception the report.
    """
    options.validate()
    lr_entries, hr_entries = find_sources(archive, synthetic_lr=options.synthetic_lr)
    jobs: list[tuple[SourceEntry | None, SourceEntry]]
    if options.synthetic_lr:
        jobs, reports = [(None, e) for e in hr_entries], []
    else:
        pairs, reports = pair_by_footprint(lr_entries, hr_entries, min_overlap=options.min_overlap)
        jobs = list(pairs)
    parts: list[PatchCache] = []
    sources: list[dict[str, Any]] = []
    for i, (le, he) in enumerate(jobs):
        if progress is not None:
            progress(i, len(jobs), he.path.name if le is None else f"{le.path.name} x {he.path.name}")
        report = SourceReport(hr=str(he.path), lr=str(le.path) if le is not None else None)
        reports.append(report)
        part = _source_patches(le, he, len(sources), options, report)
        if part is not None:
            sources.append({"hr": report.hr, "lr": report.lr, **report.details})
            parts.append(part)
    if progress is not None:
        progress(len(jobs), len(jobs), "done")
    report = PrepareReport(reports, options.to_dict())
    if not parts:
        reasons = "; ".join(f"{Path(r.hr or r.lr or '').name}: {r.reason}" for r in reports[:3])
        raise NoPatchesError(f"no usable patches in {archive} ({reasons})", report)
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


def _source_patches(lr: SourceEntry | None, hr: SourceEntry, index: int, options: PrepareOptions,
                    report: SourceReport) -> PatchCache | None:
    """The patches of one pair, or of one HR raster without LR; None when it is rejected (the reason is in
    ``report``)."""
    try:
        if lr is None:
            return synthetic_patches(hr, index, options, report)
        return pair_patches(lr, hr, index, options, report)
    except DataError as exc:
        report.reason = str(exc)
    except rasterio.errors.RasterioError as exc:
        report.reason = f"unreadable: {exc}"
    return None
