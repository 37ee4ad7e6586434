"""The patch cache: aligned LR/HR patch pairs cut once from an archive, with their provenance, in one ``.npz``.

The cache is what travels to a GPU machine, so it is compact and self-contained:

- ``lr`` (N, C, h, w) and ``hr`` (N, C, h*scale, w*scale) as uint16 ``DN = round(reflectance * 10000) + 1000``
  (reflectance -0.1 .. 6.45 in 1e-4 steps, the Sentinel-2 baseline-04.00 encoding), deflate-compressed by
  ``np.savez_compressed``: 2 bytes per value instead of 4, and reflectance needs no more than 1e-4.
- ``band_valid`` (N, C) bool: False where the HR source lacked the band (``--missing-band mask``); the loss skips it.
- ``pair`` (N,) int32 index into ``meta["sources"]``, ``origin`` (N, 2) int32: the patch's top-left LR pixel in its
  pair's working grid.
- ``meta``: JSON (format version, scale, bands, synthetic or real LR, sources with their grids, band maps and fits,
  the preparation report and options).

Why npz rather than zarr: numpy only (no new dependency), one file to copy, and training caches up to a few GB load
into memory in seconds. Patch arrays stay uint16 in memory and are decoded per batch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from rssr_cli.atomic import atomic_write
from rssr_cli.errors import DataError, OutputError

CACHE_FORMAT = "rssr-patches/1"
DN_SCALE = 10000.0
DN_OFFSET = 1000.0


def encode(reflectance: np.ndarray) -> np.ndarray:
    """Reflectance (float) -> uint16 DN, clipped to the representable range."""
    dn = np.rint(np.asarray(reflectance, dtype=np.float64) * DN_SCALE + DN_OFFSET)
    return np.clip(dn, 0, 65535).astype(np.uint16)


def decode(dn: np.ndarray) -> np.ndarray:
    """uint16 DN -> float32 reflectance."""
    return ((np.asarray(dn, dtype=np.float32) - np.float32(DN_OFFSET)) / np.float32(DN_SCALE)).astype(np.float32)


@dataclass
class PatchCache:
    """Aligned LR/HR patches (encoded uint16) plus what is known about where they came from."""

    lr: np.ndarray
    hr: np.ndarray
    band_valid: np.ndarray
    pair: np.ndarray
    origin: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.lr.shape[0]
        if not (self.hr.shape[0] == self.band_valid.shape[0] == self.pair.shape[0] == self.origin.shape[0] == n):
            raise DataError("patch cache arrays disagree on the number of patches")
        if self.lr.ndim != 4 or self.hr.ndim != 4 or self.lr.shape[1] != self.hr.shape[1]:
            raise DataError("patch cache arrays must be (N, C, H, W) with the same bands")
        if n and Fraction(self.hr.shape[-1], self.lr.shape[-1]) != self.scale:
            raise DataError(f"patch cache: HR/LR size ratio {self.hr.shape[-1]}/{self.lr.shape[-1]} is not the "
                            f"recorded scale {self.scale}")

    def __len__(self) -> int:
        return int(self.lr.shape[0])

    @property
    def scale(self) -> Fraction:
        return Fraction(self.meta.get("scale", "25/2"))

    @property
    def bands(self) -> tuple[str, ...]:
        return tuple(self.meta.get("bands", ()))

    @property
    def synthetic(self) -> bool:
        return bool(self.meta.get("synthetic_lr", False))

    def batch(self, indices: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decoded float32 (lr, hr, band_valid) for the given patch indices.

        Masked HR bands are stored as zeros and filled here with the stand-in the model sees during training (never
        scored by the loss): the RGB-derived NIR stand-in for synthetic LR (whose LR was degraded from it), the
        upsampled LR band for real pairs.
        """
        idx = np.asarray(indices, dtype=np.int64)
        lr, hr, valid = decode(self.lr[idx]), decode(self.hr[idx]), self.band_valid[idx].copy()
        if not valid.all():
            hr = self._fill_masked(lr, hr, valid)
        return lr, hr, valid

    def _fill_masked(self, lr: np.ndarray, hr: np.ndarray, valid: np.ndarray) -> np.ndarray:
        bands = list(self.bands)
        if self.synthetic:
            from rssr_cli.bands import stand_in_nir

            rgb = [bands.index(b) for b in ("B02", "B03", "B04")]
            fill = stand_in_nir(hr[:, rgb])[:, None]
            fill = np.repeat(fill, hr.shape[1], axis=1)
        else:
            import torch

            from rssr_cli.degrade import upsample

            fill = upsample(torch.from_numpy(lr), self.scale).numpy()
        return np.where(valid[:, :, None, None], hr, fill).astype(np.float32)

    def subset(self, indices: np.ndarray | list[int]) -> "PatchCache":
        idx = np.asarray(indices, dtype=np.int64)
        return PatchCache(self.lr[idx], self.hr[idx], self.band_valid[idx], self.pair[idx], self.origin[idx],
                          dict(self.meta))

    @staticmethod
    def concatenate(parts: list["PatchCache"], meta: dict[str, Any]) -> "PatchCache":
        if not parts:
            raise DataError("no patches to concatenate")
        return PatchCache(np.concatenate([p.lr for p in parts]), np.concatenate([p.hr for p in parts]),
                          np.concatenate([p.band_valid for p in parts]), np.concatenate([p.pair for p in parts]),
                          np.concatenate([p.origin for p in parts]), meta)


def save_cache(cache: PatchCache, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the cache to ``path`` (.npz) through a temporary name in the same folder, then rename."""
    out = Path(path)
    if out.suffix != ".npz":
        raise DataError(f"{out}: the patch cache is a .npz file")
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists; pass --overwrite to replace it")
    if not out.parent.exists():
        raise OutputError(f"{out.parent} does not exist")
    meta = dict(cache.meta)
    meta["format"] = CACHE_FORMAT
    with atomic_write(out, overwrite=overwrite) as tmp:
        np.savez_compressed(tmp, lr=cache.lr, hr=cache.hr, band_valid=cache.band_valid, pair=cache.pair,
                            origin=cache.origin, meta=np.array(json.dumps(meta)))
    return out


def load_cache(path: str | os.PathLike) -> PatchCache:
    """Read a cache written by :func:`save_cache`; any other file is a :class:`DataError` naming what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such patch cache")
    try:
        with np.load(p, allow_pickle=False) as z:
            names = set(z.files)
            missing = {"lr", "hr", "band_valid", "pair", "origin", "meta"} - names
            if missing:
                raise DataError(f"{p}: not an rssr patch cache (missing {', '.join(sorted(missing))})")
            meta = json.loads(str(z["meta"]))
            cache = PatchCache(z["lr"], z["hr"], z["band_valid"].astype(bool), z["pair"], z["origin"], meta)
    except DataError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{p}: cannot read the patch cache ({exc})") from None
    if meta.get("format") != CACHE_FORMAT:
        raise DataError(f"{p}: patch cache format {meta.get('format')!r}, this rssr reads {CACHE_FORMAT!r}")
    if cache.lr.dtype != np.uint16 or cache.hr.dtype != np.uint16:
        raise DataError(f"{p}: patch arrays must be uint16")
    return cache
