"""Band mapping and radiometry for training archives: which source band feeds which model band, in what units.

Training data mixes sensors: Sentinel-2 LR (``DN / 10000``), high-resolution reflectance products (``TOA x 10000``)
and 8-bit display imagery (orthophotos: gamma-encoded, stretched, no physical unit). Everything inside rssr is
reflectance, so each source gets an explicit :class:`Radiometry`, and each model band an explicit source band.

A model band the HR source lacks (typically NIR in RGB orthophotos) is never silently zero-filled. The choice is the
user's (``missing``):

- ``"error"`` (default): refuse, naming the band and this option.
- ``"mask"``: keep the patch but mark the band invalid (``band_valid[c] = False`` in the cache). The training loss
  ignores that band of that patch; its HR target and, for synthetic pairs, its LR input are filled with the
  :func:`stand_in_nir` estimate from the visible bands so that the network sees a plausible level. The stand-in
  is *not* NIR texture: fitted on 1.4 M Sentinel-2 L2A pixels (Boadella, 10 dates) it explains only R^2 = 0.13 of
  the NIR variance. It exists so that a mixed archive (some sources with NIR, some without) can train all four
  outputs from the sources that have them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np

from rssr_cli.errors import DataError, UsageError

MissingBand = Literal["error", "mask"]
MISSING_BAND_CHOICES: tuple[str, ...] = ("error", "mask")

#: Words in band descriptions / colour interpretation that identify a Sentinel-2 10 m band.
BAND_WORDS: dict[str, tuple[str, ...]] = {
    "B02": ("b02", "b2", "blue"),
    "B03": ("b03", "b3", "green"),
    "B04": ("b04", "b4", "red"),
    "B08": ("b08", "b8", "nir", "near infrared", "near-infrared"),
}

#: Stand-in NIR from (B02, B03, B04) reflectance: least squares on Sentinel-2 L2A over Boadella (10 dates 2020-2022,
#: 1.43 M pixels): B08 ~ -3.370 B02 + 3.610 B03 - 0.244 B04 + 0.149, R^2 = 0.13. Only for masked bands.
STAND_IN_NIR = (-3.370, 3.610, -0.244, 0.149)

#: Defaults for 8-bit display imagery: reflectance = gain * (DN / 255) ** gamma. Gamma 2.2 undoes the sRGB-like
#: encoding, gain 0.3 maps white to 0.3 reflectance (S2 true-colour renderings saturate around 0.3): mid-grey
#: (128) -> 0.065, close to vegetated/urban visible reflectance. A per-pair linear fit refines it for real pairs.
DISPLAY_GAIN = 0.3
DISPLAY_GAMMA = 2.2


@dataclass(frozen=True)
class Radiometry:
    """How a source's DNs become reflectance.

    ``kind="linear"``: ``reflectance = DN * scale + offset`` (Sentinel-2: scale 1e-4, offset 0 or -0.1).
    ``kind="display"``: ``reflectance = gain * (DN / dn_max) ** gamma`` for gamma-encoded 8-bit imagery.
    ``saturated``: DN at or above which a pixel is saturated (invalid), None for no check.
    """

    kind: Literal["linear", "display"] = "linear"
    scale: float = 1e-4
    offset: float = 0.0
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

    def describe(self) -> str:
        if self.kind == "display":
            return f"display: {self.gain:g} * (DN/{self.dn_max:g})^{self.gamma:g}"
        return f"linear: DN * {self.scale:g} + {self.offset:g}"

    @staticmethod
    def for_dtype(dtype: str) -> "Radiometry":
        """The default for a source's data type: 8-bit is display imagery, anything else DN = reflectance x 10000."""
        if np.dtype(dtype) == np.uint8:
            return Radiometry(kind="display", saturated=255)
        if np.dtype(dtype) == np.uint16:
            return Radiometry(kind="linear", saturated=65535)
        return Radiometry(kind="linear")


def stand_in_nir(rgb: np.ndarray) -> np.ndarray:
    """The :data:`STAND_IN_NIR` estimate from (B02, B03, B04) reflectance on axis -3 (works for (3,H,W) and (N,3,H,W))."""
    b, g, r, c = STAND_IN_NIR
    x = np.asarray(rgb, dtype=np.float32)
    return (b * x[..., 0, :, :] + g * x[..., 1, :, :] + r * x[..., 2, :, :] + c).astype(np.float32)


@dataclass(frozen=True)
class BandMap:
    """``sources[i]``: the 1-based source band feeding model band ``bands[i]``, or None when the source lacks it."""

    bands: tuple[str, ...]
    sources: tuple[int | None, ...]
    how: str = "explicit"

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(b for b, s in zip(self.bands, self.sources) if s is None)

    def describe(self) -> str:
        return ",".join(f"{b}={s if s is not None else '-'}" for b, s in zip(self.bands, self.sources))


def parse_band_map(text: str | Mapping[str, int] | None, bands: Sequence[str]) -> dict[str, int | None] | None:
    """``"B04=1,B03=2,B02=3"`` (commas, semicolons or spaces; or a TOML table) -> {model band: source band}.
    Bands not named are missing."""
    if text is None:
        return None
    if isinstance(text, Mapping):
        items = {str(k).upper(): v for k, v in text.items()}
    else:
        items = {}
        for part in re.split(r"[,;\s]+", str(text)):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise UsageError(f"band map entry {part!r} is not MODEL_BAND=SOURCE_BAND (e.g. B04=1)")
            k, v = part.split("=", 1)
            items[k.strip().upper()] = v.strip()
    out: dict[str, int | None] = {}
    for name, value in items.items():
        if name not in bands:
            raise UsageError(f"band map names {name}, which is not a model band ({', '.join(bands)})")
        if value in (None, "", "-", "none"):
            out[name] = None
            continue
        try:
            idx = int(value)
        except (TypeError, ValueError):
            raise UsageError(f"band map: {name}={value!r} is not a 1-based band number") from None
        if idx < 1:
            raise UsageError(f"band map: {name}={idx}: band numbers start at 1")
        out[name] = idx
    return out


def resolve_band_map(
    bands: Sequence[str],
    count: int,
    descriptions: Sequence[str | None],
    colorinterp: Sequence[str],
    explicit: Mapping[str, int | None] | None,
    *,
    role: str,
    default_positions: Mapping[str, int] | None = None,
) -> BandMap:
    """Which source band feeds each model band, and how that was decided (recorded in the report).

    Order of precedence: the explicit map; band descriptions or colour interpretation (``red``/``green``/``blue``/
    ``nir``, ``B04``...); ``default_positions`` (Sentinel-2 band order for a 12/13-band stack). Anything else is an error naming the option
    to pass: a 3- or 4-band raster without metadata is never assumed to be in model order (RGB orthophotos and
    Satellogic tiles are red first, the model is blue first).
    """
    if explicit is not None:
        sources = tuple(explicit.get(b) for b in bands)
        for b, s in zip(bands, sources):
            if s is not None and s > count:
                raise DataError(f"{role} band map {b}={s}, but the raster has {count} band(s)")
        return BandMap(tuple(bands), sources, "explicit")
    found: dict[str, int] = {}
    for i in range(count):
        text = " ".join(t for t in ((descriptions[i] or "") if i < len(descriptions) else "",
                                    colorinterp[i] if i < len(colorinterp) else "") if t).lower()
        for band, words in BAND_WORDS.items():
            if band in bands and band not in found and any(re.search(rf"(^|[^a-z0-9]){re.escape(w)}($|[^a-z0-9])",
                                                                     text) for w in words):
                found[band] = i + 1
                break
    if found:
        return BandMap(tuple(bands), tuple(found.get(b) for b in bands), "descriptions/colour interpretation")
    if default_positions is not None and count >= max(default_positions.values()):
        return BandMap(tuple(bands), tuple(default_positions.get(b) for b in bands), f"{count}-band stack order")
    raise DataError(f"cannot tell which {role} band is which ({count} bands, no descriptions); pass a band map such "
                    f"as --{role}-bands {','.join(f'{b}={i + 1}' for i, b in enumerate(bands[:count]))}")


#: Sentinel-2 multi-band stacks (12 bands without B10, or 13 with it): B02, B03, B04, B08 are bands 2, 3, 4, 8.
S2_STACK_POSITIONS = {"B02": 2, "B03": 3, "B04": 4, "B08": 8}
