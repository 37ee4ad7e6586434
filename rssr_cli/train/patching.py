"""Cutting aligned LR/HR arrays into patches: chunks of a grid, the valid-data filters, and the cache parts.

Sizes are in LR pixels; an LR offset ``r`` is the HR offset ``r * scale``, a whole HR pixel because offsets are
multiples of the scale's denominator (:class:`~rssr_cli.train.prepare_options.PrepareOptions` checks it).
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from typing import Iterator, NamedTuple

import numpy as np

from rssr_cli.errors import DataError
from rssr_cli.patches import PatchCache, encode
from rssr_cli.train.prepare_options import PrepareOptions
from rssr_cli.train.prepare_report import SourceReport


class Chunk(NamedTuple):
    """A block of an LR grid processed at once. Patches may start only above ``limit`` (rows, cols from the
    chunk's corner): the chunk extends ``patch - stride`` beyond it so that overlapping patches across chunk edges
    are cut exactly once, by the chunk they start in."""

    row: int
    col: int
    height: int
    width: int
    limit: tuple[int, int]


def chunks(height: int, width: int, options: PrepareOptions) -> Iterator[Chunk]:
    """The chunks a grid is processed in: ``chunk`` LR pixels rounded to the stride, plus the ``patch - stride``
    overlap, so that memory stays bounded whatever the source size."""
    stride = options.stride or options.patch
    step = max(1, options.chunk // stride) * stride
    extra = max(0, options.patch - stride)
    for r0 in range(0, height - options.patch + 1, step):
        for c0 in range(0, width - options.patch + 1, step):
            yield Chunk(r0, c0, min(step + extra, height - r0), min(step + extra, width - c0), (step, step))


def cut_offsets(
    lr: np.ndarray | None,
    hr: np.ndarray,
    lr_valid: np.ndarray | None,
    hr_valid: np.ndarray,
    options: PrepareOptions,
    rejected: Counter[str],
    limit: tuple[int, int] | None = None,
) -> list[tuple[int, int]]:
    """Top-left LR offsets of the patches that pass the valid-data filters (counts of the others in ``rejected``):
    every LR and HR pixel valid, and an HR that is not near-constant. ``lr`` is None for synthetic sources, whose LR
    is made from the HR."""
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


def patches_at(x: np.ndarray, offsets: list[tuple[int, int]], size: int, scale: Fraction = Fraction(1)) -> np.ndarray:
    """(N, C, size, size) patches of ``x`` (C, h, w) at LR ``offsets``; ``scale`` > 1 for an HR array."""
    return np.stack([x[:, int(r * scale): int(r * scale) + size, int(c * scale): int(c * scale) + size]
                     for r, c in offsets])


def cache_part(lr: np.ndarray, hr: np.ndarray, valid_bands: np.ndarray, index: int, chunk: Chunk,
               offsets: list[tuple[int, int]], options: PrepareOptions) -> PatchCache:
    """The patches of one chunk as a :class:`PatchCache`: origins on the source's LR grid, masked bands stored as
    zeros (they compress to nothing and are refilled on reading, :meth:`PatchCache.batch`)."""
    n = len(offsets)
    hr = hr.copy()
    hr[:, ~valid_bands] = 0.0
    origins = np.asarray([(r + chunk.row, c + chunk.col) for r, c in offsets], np.int32).reshape(n, 2)
    return PatchCache(encode(lr), encode(hr), np.repeat(valid_bands[None], n, 0), np.full(n, index, np.int32),
                      origins, {"scale": str(Fraction(options.scale)), "bands": list(options.bands)})


def collect(parts: list[PatchCache], rejected: Counter[str], report: SourceReport) -> PatchCache:
    """One source's patches, with the counts of the rejected ones in its report; a DataError when none is left
    (with the report's hints: what was measured and the option that would accept it)."""
    report.rejected_patches = dict(rejected)
    if not parts:
        raise DataError("no valid patch (" + ", ".join(f"{k}: {v}" for k, v in rejected.items()) + ")"
                        + "".join(f"; {hint}" for hint in report.hints))
    out = PatchCache.concatenate(parts, parts[0].meta)
    report.status, report.patches = "kept", len(out)
    return out
