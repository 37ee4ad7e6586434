"""The model's bands and their radiometry: one vocabulary for ``upscale``, ``prepare`` and ``evaluate``.

- Which band is which: one alias table (:data:`BAND_ALIASES`) matched as whole words in band descriptions, colour
  interpretations and file names by :func:`identify_band`, so that a band described "Near Infrared" is B08 for
  every command.
- How DNs become reflectance: :class:`Radiometry` (linear ``DN * scale + offset``, or the display mapping of 8-bit
  imagery), taken from a file's metadata when it carries one (:func:`metadata_radiometry`), and
  :func:`dn_to_reflectance`, the one conversion of DNs to reflectance with their validity. Readers add their own
  part around it (the upscale reader fills invalid pixels and pads beyond the scene; the prepare reader picks bands
  through a band map).
- :func:`stand_in_nir`: a plausible NIR level from the visible bands, for sources without NIR (training only).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Collection, Literal, Sequence

import numpy as np

#: The bands the model reads and writes, in model order.
MODEL_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B08")

#: Sentinel-2 quantification: DN = reflectance * 10000 (+ offset from processing baseline 04.00).
QUANTIFICATION = 10000.0

#: Names of each 10 m band in band descriptions, colour interpretations, file names or STAC common names.
#: Matched as whole words, punctuation counting as a space ("near-infrared" and "Near_Infrared" are "near infrared").
BAND_ALIASES: dict[str, tuple[str, ...]] = {
    "B02": ("b02", "b2", "blue"),
    "B03": ("b03", "b3", "green"),
    "B04": ("b04", "b4", "red"),
    "B08": ("b08", "b8", "nir", "near infrared"),
}

#: Band positions (1-based) of B02, B03, B04, B08 in a Sentinel-2 multi-band stack (12 bands without B10, or 13).
S2_STACK_POSITIONS: dict[str, int] = {"B02": 2, "B03": 3, "B04": 4, "B08": 8}

#: Defaults for 8-bit display imagery: reflectance = gain * (DN / 255) ** gamma. Gamma 2.2 undoes the sRGB-like
#: encoding, gain 0.3 maps white to 0.3 reflectance (S2 true-colour renderings saturate around 0.3): mid-grey
#: (128) -> 0.065, close to vegetated/urban visible reflectance. A per-pair linear fit refines it for real pairs.
DISPLAY_GAIN = 0.3
DISPLAY_GAMMA = 2.2

#: Stand-in NIR from (B02, B03, B04) reflectance: least squares on Sentinel-2 L2A over Boadella (10 dates 2020-2022,
#: 1.43 M pixels): B08 ~ -3.370 B02 + 3.610 B03 - 0.244 B04 + 0.149, R^2 = 0.13. Only for masked bands.
STAND_IN_NIR = (-3.370, 3.610, -0.244, 0.149)


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]


def _has_phrase(words: list[str], phrase: list[str]) -> bool:
    n = len(phrase)
    return any(words[i: i + n] == phrase for i in range(len(words) - n + 1))


def identify_band(text: str | None, among: Collection[str] | None = None) -> str | None:
    """The model band named in ``text`` (``B02``, ``b2``, ``blue``, ``Near Infrared`` ...), if any.

    Whole words only: ``b2`` is not found in ``b20``, nor ``red`` in ``reddish``. The first band of
    :data:`BAND_ALIASES` that matches wins; ``among`` limits the candidates (bands already assigned, bands the
    model does not use).
    """
    if not text:
        return None
    words = _words(text)
    for band, aliases in BAND_ALIASES.items():
        if among is not None and band not in among:
            continue
        if any(_has_phrase(words, _words(alias)) for alias in aliases):
            return band
    return None


@dataclass(frozen=True)
class Radiometry:
    """How one band's DNs become reflectance.

    ``kind="linear"``: ``reflectance = DN * scale + offset`` (Sentinel-2: scale ``1 / QUANTIFICATION``, offset 0, or
    -0.1 for processing baseline 04.00 and later when the offset is still in the DNs).
    ``kind="display"``: ``reflectance = gain * (DN / dn_max) ** gamma`` for gamma-encoded 8-bit imagery (no physical
    unit: orthophotos are stretched, so the numbers are a starting point that a per-pair fit refines).
    ``saturated``: DN at or above which a pixel is saturated (invalid), None for no check.
    ``source``: where the numbers came from (``metadata``, ``--offset`` ...), shown by ``rssr info``.
    """

    scale: float = 1 / QUANTIFICATION
    offset: float = 0.0
    source: str = "default"
    kind: Literal["linear", "display"] = "linear"
    gain: float = DISPLAY_GAIN
    gamma: float = DISPLAY_GAMMA
    dn_max: float = 255.0
    saturated: float | None = None

    def to_reflectance(self, dn: np.ndarray) -> np.ndarray:
        x = dn.astype(np.float32)
        if self.kind == "display":
            return (np.float32(self.gain) * np.power(np.clip(x / np.float32(self.dn_max), 0, None),
                                                     np.float32(self.gamma))).astype(np.float32)
        return (x * np.float32(self.scale) + np.float32(self.offset)).astype(np.float32)

    def to_dn(self, reflectance: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_reflectance` (float, not rounded); linear only, as outputs are written linear."""
        if self.kind != "linear":
            raise ValueError("only a linear radiometry converts reflectance back to DN")
        return (reflectance - np.float32(self.offset)) / np.float32(self.scale)

    def describe(self) -> str:
        """The formula, as the prepare report shows it."""
        if self.kind == "display":
            return f"display: {self.gain:g} * (DN/{self.dn_max:g})^{self.gamma:g}"
        return f"linear: DN * {self.scale:g} + {self.offset:g}"

    @staticmethod
    def for_dtype(dtype: str) -> "Radiometry":
        """The training default for a source's data type: 8-bit is display imagery, anything else
        DN = reflectance x 10000; the largest DN of an integer type marks saturation."""
        if np.dtype(dtype) == np.uint8:
            return Radiometry(kind="display", saturated=255, source="default for 8-bit imagery")
        if np.dtype(dtype) == np.uint16:
            return Radiometry(kind="linear", saturated=65535, source="default (DN / 10000)")
        return Radiometry(kind="linear", source="default (DN / 10000)")


def metadata_radiometry(ds, bidx: int) -> Radiometry | None:
    """The linear radiometry that band ``bidx`` of an open rasterio dataset declares, or None when it declares none.

    GDAL scale/offset first; else the Sentinel-2 product tags (:func:`tag_radiometry`) that GDAL's SENTINEL2 driver
    (SAFE products) and some exports carry.
    """
    scale, offset = ds.scales[bidx - 1], ds.offsets[bidx - 1]
    if (scale, offset) != (1.0, 0.0):
        return Radiometry(float(scale), float(offset), "metadata")
    return tag_radiometry(ds.tags(), ds.tags(bidx))


#: Tags of the reflectance quantification, most specific first: L2A (``BOA_``), then L1C. The ``AOT_`` and ``WVP_``
#: quantifications of an L2A product scale other layers (aerosol, water vapour) and must never be taken for it.
_QUANTIFICATION_TAGS = ("BOA_QUANTIFICATION_VALUE", "QUANTIFICATION_VALUE")
#: Tags of the additive offset in DN (processing baseline 04.00 and later): L2A, then L1C.
_OFFSET_TAGS = ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET")


def tag_radiometry(dataset_tags: dict[str, str], band_tags: dict[str, str]) -> Radiometry | None:
    """The radiometry that Sentinel-2 product tags declare: ``(DN + ADD_OFFSET) / QUANTIFICATION_VALUE``.

    GDAL's SENTINEL2 driver puts the offset on each band (``BOA_ADD_OFFSET`` for L2A, ``RADIO_ADD_OFFSET`` for L1C)
    and the quantification on the dataset (``BOA_QUANTIFICATION_VALUE`` for L2A beside ``AOT_`` and ``WVP_`` ones
    for other layers, ``QUANTIFICATION_VALUE`` for L1C); exports may carry either at either level. A product of a
    processing baseline before 04.00 declares a quantification and no offset: its offset is 0. ``SPECIAL_VALUE_
    SATURATED`` (65535) marks saturated pixels. None when no such tag is there.
    """
    band = {k.upper(): v for k, v in band_tags.items()}
    dataset = {k.upper(): v for k, v in dataset_tags.items()}
    add = next(((k, tags[k]) for tags in (band, dataset) for k in _OFFSET_TAGS if k in tags), None)
    if add is None:  # e.g. BOA_ADD_OFFSET_B2 in the dataset's tags of an export (the offset is the same for all bands)
        add = next(((k, v) for k, v in dataset.items() if "ADD_OFFSET" in k and "QUANTIFICATION" not in k), None)
    quant = next(((k, tags[k]) for tags in (band, dataset) for k in _QUANTIFICATION_TAGS if k in tags), None)
    if add is None and quant is None:
        return None
    said = ", ".join(f"{tag[0]} {tag[1]}" for tag in (add, quant) if tag is not None)
    try:
        q = float(quant[1]) if quant is not None else QUANTIFICATION
        saturated = dataset.get("SPECIAL_VALUE_SATURATED")
        return Radiometry(1.0 / q, float(add[1] if add else 0.0) / q, f"metadata ({said})",
                          saturated=float(saturated) if saturated is not None else None)
    except (ValueError, ZeroDivisionError):
        return None


def dn_to_reflectance(
    dn: np.ndarray,
    radiometry: Sequence[Radiometry],
    *,
    nodata: float | None = None,
    nodata_in_every_band: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance (C, h, w) float32 of DNs (C, h, w), with ``radiometry[c]`` for band c, and validity (h, w).

    Invalid: the ``nodata`` DN (NaN allowed) in any band, or only in every band with ``nodata_in_every_band``;
    a saturated DN in any band; a non-finite reflectance. The file's own masks (internal masks, alpha) are the
    reader's part.
    """
    valid = np.ones(dn.shape[1:], dtype=bool)
    if nodata is not None:
        is_nodata = np.isnan(dn) if math.isnan(nodata) else dn == nodata
        valid &= ~(is_nodata.all(axis=0) if nodata_in_every_band else is_nodata.any(axis=0))
    for band, rad in zip(dn, radiometry):
        if rad.saturated is not None:
            valid &= band < rad.saturated
    reflectance = np.stack([rad.to_reflectance(band) for band, rad in zip(dn, radiometry)])
    valid &= np.isfinite(reflectance).all(axis=0)
    return reflectance, valid


def stand_in_nir(rgb: np.ndarray) -> np.ndarray:
    """The :data:`STAND_IN_NIR` estimate from (B02, B03, B04) reflectance on axis -3 (works for (3,H,W) and (N,3,H,W))."""
    b, g, r, c = STAND_IN_NIR
    x = np.asarray(rgb, dtype=np.float32)
    return (b * x[..., 0, :, :] + g * x[..., 1, :, :] + r * x[..., 2, :, :] + c).astype(np.float32)
