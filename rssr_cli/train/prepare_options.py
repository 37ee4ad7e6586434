"""How ``rssr prepare`` turns an archive into patches: :class:`PrepareOptions`, from keywords, a TOML ``[prepare]``
table or the command line."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, Mapping

from rssr_cli.bands import MODEL_BANDS, Radiometry
from rssr_cli.errors import UsageError
from rssr_cli.train.bands import MISSING_BAND_CHOICES, MissingBand, parse_band_map


@dataclass(frozen=True)
class PrepareOptions:
    """How an archive is turned into patches. Sizes are in LR pixels and must be multiples of the scale's
    denominator (2 at 12.5x) so that every patch starts and ends on a whole HR pixel."""

    scale: Fraction = Fraction(25, 2)
    bands: tuple[str, ...] = MODEL_BANDS
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
