"""Band maps for training archives: which source band feeds which model band.

Training data mixes sensors: Sentinel-2 LR stacks, high-resolution reflectance products and 8-bit orthophotos (red
first, often without NIR). Each model band gets an explicit source band, decided by the user's map, the band
descriptions / colour interpretation (:func:`rssr_cli.bands.identify_band`) or a Sentinel-2 stack order, and
recorded in the report. The units are :class:`rssr_cli.bands.Radiometry`'s business.

A model band the HR source lacks (typically NIR in RGB orthophotos) is never silently zero-filled. The choice is the
user's (``missing``):

- ``"error"`` (default): refuse, naming the band and this option.
- ``"mask"``: keep the patch but mark the band invalid (``band_valid[c] = False`` in the cache). The training loss
  ignores that band of that patch; its HR target and, for synthetic pairs, its LR input are filled with the
  :func:`rssr_cli.bands.stand_in_nir` estimate from the visible bands so that the network sees a plausible level.
  The stand-in is *not* NIR texture: fitted on 1.4 M Sentinel-2 L2A pixels (Boadella, 10 dates) it explains only
  R^2 = 0.13 of the NIR variance. It exists so that a mixed archive (some sources with NIR, some without) can train
  all four outputs from the sources that have them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

from rssr_cli.bands import Radiometry, identify_band, stand_in_nir
from rssr_cli.errors import DataError, UsageError

# Radiometry and stand_in_nir moved to rssr_cli.bands; the old import path keeps working.
__all__ = ["MISSING_BAND_CHOICES", "BandMap", "MissingBand", "Radiometry", "parse_band_map", "resolve_band_map",
           "stand_in_nir"]

MissingBand = Literal["error", "mask"]
MISSING_BAND_CHOICES: tuple[str, ...] = ("error", "mask")


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
                                    colorinterp[i] if i < len(colorinterp) else "") if t)
        band = identify_band(text, among=[b for b in bands if b not in found])
        if band is not None:
            found[band] = i + 1
    if found:
        return BandMap(tuple(bands), tuple(found.get(b) for b in bands), "descriptions/colour interpretation")
    if default_positions is not None and count >= max(default_positions.values()):
        return BandMap(tuple(bands), tuple(default_positions.get(b) for b in bands), f"{count}-band stack order")
    raise DataError(f"cannot tell which {role} band is which ({count} bands, no descriptions); pass a band map such "
                    f"as --{role}-bands {','.join(f'{b}={i + 1}' for i, b in enumerate(bands[:count]))}")

