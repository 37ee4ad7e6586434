"""STAC Items as inputs: which assets hold the 10 m bands, where they are, and what their ``raster:bands`` declare.

Most users reach Sentinel-2 through STAC catalogues (Earth Search, Planetary Computer, the Copernicus Data Space):
an Item (a GeoJSON Feature) whose assets are one Cloud-Optimized GeoTIFF per band. rssr reads the Item as plain JSON,
the way the STAC specification lays it out, so that no client library is needed for the few fields it uses:

- **Which asset is which band** (:meth:`StacItem.band_assets`): the asset's ``eo:bands`` common name (``blue``,
  ``green``, ``red``, ``nir``; STAC 1.1's ``bands`` with ``eo:common_name`` too) or name, else its key (``B02`` ...
  or ``blue`` ...), matched like band descriptions (:func:`rssr_cli.bands.identify_band`). Assets of several bands,
  thumbnails and overviews are skipped; an asset that says it is not at 10 m (``gsd``, ``spatial_resolution``)
  too, so that ``B02_20m`` never stands in for ``B02_10m``. Among the rest a GeoTIFF beats a JPEG 2000 and an
  ``http(s)`` or relative href beats an ``s3://`` one (requester-pays buckets need credentials).
- **Where** (:func:`resolve_href`, pure): relative hrefs against the Item's own location, absolute paths as they
  are, ``http(s)://`` through GDAL's ``/vsicurl/``, ``s3://`` through ``/vsis3/``.
- **Radiometry and nodata** (:func:`declared_radiometry`): ``raster:bands`` ``scale``/``offset``/``nodata`` (STAC
  1.1: ``raster:scale``/``raster:offset``/``nodata``). They take precedence over the files' own metadata and over
  guessing: the catalogue states the processing-baseline offset (-0.1 from baseline 04.00) that the COGs do not.

:class:`SourceMetadata` is what an input says about its acquisition (an Item's properties, a SAFE product's
metadata), for the STAC Item that describes the output (:mod:`rssr_cli.stac_item`).
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import unquote, urljoin, urlsplit

from rssr_cli.bands import BAND_ALIASES, Radiometry, identify_band
from rssr_cli.errors import InputError

__all__ = ["BandAsset", "SourceMetadata", "StacItem", "declared_radiometry", "looks_like_item", "parse_item",
           "read_item", "resolve_href"]

#: The ground pixel size of the bands rssr reads, in metres (an asset that declares another one is skipped).
TEN_METRES = 10.0
#: Asset roles that never hold a band to read.
_SKIPPED_ROLES = {"thumbnail", "overview", "visual", "metadata"}
#: GDAL's virtual file systems for the URL schemes of catalogues.
_VSI = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/"}
#: The eo extension's common names of the model bands.
COMMON_NAMES: dict[str, str] = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}
#: Seconds to wait for an Item fetched over http(s).
URL_TIMEOUT = 60


@dataclass(frozen=True)
class SourceMetadata:
    """What an input says about itself, for the catalogue record of an output: ``kind`` (``stac``, ``safe``),
    ``href`` (the Item or product as the user gave it; an Item read from stdin: its ``self`` link), ``id``,
    ``datetime`` (RFC 3339), ``platform``, ``constellation``, ``instruments``, and ``properties`` worth carrying over
    (processing level, baseline ...)."""

    kind: str
    href: str | None = None
    id: str | None = None
    datetime: str | None = None
    platform: str | None = None
    constellation: str | None = None
    instruments: tuple[str, ...] | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BandAsset:
    """The asset that feeds one model band: its ``key`` and ``href`` as the Item writes them, ``path`` for GDAL,
    and the ``radiometry``/``nodata`` its ``raster:bands`` declare (None: not declared)."""

    band: str
    key: str
    href: str
    path: str
    radiometry: Radiometry | None
    nodata: float | None
    title: str | None = None


def resolve_href(href: str, base: str | None = None) -> str:
    """The path GDAL opens for an asset ``href`` of an Item read from ``base`` (a path or URL; None: stdin, so
    relative hrefs stay relative to the current folder).

    >>> resolve_href("B02.tif", "/data/item.json")
    '/data/B02.tif'
    >>> resolve_href("https://example.com/B02.tif")
    '/vsicurl/https://example.com/B02.tif'
    >>> resolve_href("./B02.tif", "https://example.com/items/x.json")
    '/vsicurl/https://example.com/items/B02.tif'
    """
    if href.startswith("/vsi"):
        return href
    parts = urlsplit(href)
    scheme = parts.scheme.lower()
    if scheme in _VSI:
        return _VSI[scheme] + (href if scheme in ("http", "https") else href.split("://", 1)[1])
    if scheme == "file":
        return unquote(parts.path)
    if len(scheme) > 1:  # a scheme GDAL has no file system for (a one-letter one is a Windows drive)
        raise InputError(f"cannot read asset href {href!r}: rssr reads local paths, http(s)://, s3:// and gs:// hrefs")
    if os.path.isabs(href) or scheme or base is None:
        return href
    if base.startswith("/vsicurl/"):
        return resolve_href(href, base[len("/vsicurl/"):])
    base_parts = urlsplit(base)
    base_scheme = base_parts.scheme.lower()
    if base_scheme in ("http", "https"):
        return "/vsicurl/" + urljoin(base, href)
    if base_scheme in _VSI:  # s3://bucket/key: urljoin does not know these schemes
        key = posixpath.normpath(posixpath.join(posixpath.dirname(base_parts.path), href))
        return _VSI[base_scheme] + base_parts.netloc + key
    if base.startswith("/vsi"):
        return posixpath.normpath(posixpath.join(posixpath.dirname(base), href))
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(base)), href))


def looks_like_item(source: str) -> bool:
    """Whether an input path or URL names a STAC Item rather than a raster: a ``.json``/``.geojson`` name, an
    ``http(s)`` URL of a STAC API item (``.../items/ID``), or a local file that starts with ``{``."""
    parts = urlsplit(source)
    name = parts.path if parts.scheme.lower() in ("http", "https") else source
    if name.lower().endswith((".json", ".geojson")):
        return True
    if parts.scheme.lower() in ("http", "https"):
        return "/items/" in parts.path
    try:
        with open(source, "rb") as f:
            return f.read(256).lstrip()[:1] == b"{"
    except OSError:
        return False


@dataclass(frozen=True)
class StacItem:
    """A STAC Item read as JSON; ``location`` is where it came from (a path or URL; None when read from stdin)."""

    data: Mapping[str, Any]
    location: str | None = None

    @property
    def id(self) -> str:
        return str(self.data.get("id") or "item")

    @property
    def label(self) -> str:
        """How the input is named in messages and records: its location, or its id when read from stdin."""
        return self.location or self.id

    def __str__(self) -> str:
        return self.label

    @property
    def properties(self) -> Mapping[str, Any]:
        return self.data.get("properties") or {}

    @property
    def assets(self) -> Mapping[str, Mapping[str, Any]]:
        return self.data.get("assets") or {}

    def metadata(self) -> SourceMetadata:
        props = self.properties
        instruments = props.get("instruments")
        carried = {k: v for k, v in props.items()
                   if k in ("processing:level", "s2:processing_baseline", "s2:product_uri", "s2:product_type")}
        links = self.data.get("links") if isinstance(self.data.get("links"), list) else []
        self_href = next((link.get("href") for link in links if isinstance(link, Mapping)
                          and link.get("rel") == "self" and isinstance(link.get("href"), str)), None)
        return SourceMetadata(kind="stac", href=self.location or self_href, id=self.id,
                              datetime=props.get("datetime") or props.get("start_datetime"),
                              platform=props.get("platform"), constellation=props.get("constellation"),
                              instruments=tuple(instruments) if isinstance(instruments, list) else None,
                              properties=carried)

    def band_assets(self, bands: Sequence[str]) -> tuple[BandAsset, ...]:
        """The asset of each model band (see the module's docstring for the rules); one :class:`InputError` naming
        every band without one."""
        found: dict[str, list[tuple[tuple, str, Mapping[str, Any], Mapping[str, Any]]]] = {b: [] for b in bands}
        for key, asset in self.assets.items():
            match = _asset_band(key, asset, bands)
            if match is not None:
                band, entry = match
                found[band].append((_rank(key, asset, band), key, asset, entry))
        missing = [b for b in bands if not found[b]]
        if missing:
            names = ", ".join(f"{b} ({COMMON_NAMES.get(b, b.lower())})" for b in missing)
            keys = ", ".join(f"{b}/{COMMON_NAMES.get(b, b.lower())}" for b in missing)
            raise InputError(f"STAC item {self.id} has no 10 m asset for {names}: looked for eo:bands common names "
                             f"and asset keys {keys} (its assets: {', '.join(self.assets) or 'none'})")
        out = []
        for band in bands:
            _, key, asset, entry = min(found[band], key=lambda c: c[0])
            href = str(asset.get("href") or "")
            if not href:
                raise InputError(f"asset {key!r} of STAC item {self.id} has no href")
            radiometry, nodata = declared_radiometry(asset, entry, where=f"asset {key!r} of STAC item {self.id}")
            out.append(BandAsset(band, key, href, resolve_href(href, self.location), radiometry, nodata,
                                 asset.get("title")))
        return tuple(out)


def _band_entries(asset: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The asset's per-band metadata: STAC 1.1 ``bands``, else the ``eo:bands`` of the eo extension."""
    entries = asset.get("bands") or asset.get("eo:bands") or []
    return [e for e in entries if isinstance(e, Mapping)] if isinstance(entries, list) else []


def _asset_band(key: str, asset: Mapping[str, Any], bands: Sequence[str]) -> tuple[str, Mapping[str, Any]] | None:
    """(model band, its band entry) of a single-band data asset at 10 m, or None. A common name decides alone (an
    asset whose common name is ``nir08`` is B8A whatever its key); without one, the band's name, then the key."""
    if not isinstance(asset, Mapping) or _SKIPPED_ROLES & set(asset.get("roles") or []):
        return None
    entries = _band_entries(asset)
    if len(entries) > 1:
        return None
    entry = entries[0] if entries else {}
    common = entry.get("common_name") or entry.get("eo:common_name")
    texts = [common] if isinstance(common, str) and common else [entry.get("name"), key]
    band = next((b for t in texts if isinstance(t, str) and (b := identify_band(t, among=bands))), None)
    if band is None or _resolution(asset, entry) not in (None, TEN_METRES):
        return None
    return band, entry


def _resolution(asset: Mapping[str, Any], entry: Mapping[str, Any]) -> float | None:
    """The ground pixel size an asset declares, rounded to 10 m when within half a metre of it (None: none)."""
    raster = (asset.get("raster:bands") or [{}])[0] if isinstance(asset.get("raster:bands"), list) else {}
    for value in (raster.get("spatial_resolution"), entry.get("raster:spatial_resolution"),
                  asset.get("raster:spatial_resolution"), asset.get("gsd"), entry.get("gsd")):
        if isinstance(value, (int, float)):
            return TEN_METRES if abs(value - TEN_METRES) <= 0.5 else float(value)
    return None


def _rank(key: str, asset: Mapping[str, Any], band: str) -> tuple:
    """Sort key among the assets of one band: GeoTIFF first, then no type, then JPEG 2000; http(s) or relative
    hrefs before s3://; a key that is the band's name before others (``blue`` before ``blue-jp2``)."""
    media = str(asset.get("type") or "").lower()
    media_rank = 0 if "tiff" in media else 1 if not media else 2 if "jp2" in media else 3
    scheme = urlsplit(str(asset.get("href") or "")).scheme.lower()
    exact = key.lower() in (band.lower(), *BAND_ALIASES[band])
    return (media_rank, scheme in ("s3", "gs"), not exact, key)


def _number(value: Any, what: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf"):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where}: {what} {value!r} is not a number")
    return float(value)


def declared_radiometry(asset: Mapping[str, Any], entry: Mapping[str, Any] | None = None, *,
                        where: str = "asset") -> tuple[Radiometry | None, float | None]:
    """(radiometry, nodata) that an asset declares for its band: raster extension 1.x ``raster:bands[0]``
    ``scale``/``offset``/``nodata``, else STAC 1.1 fields on the band entry or the asset (``raster:scale``,
    ``raster:offset``, ``nodata``). A missing scale is 1 and a missing offset 0, as the raster extension says; no
    radiometry at all when neither is given."""
    entry = entry or {}
    bands = asset.get("raster:bands")
    raster = bands[0] if isinstance(bands, list) and bands and isinstance(bands[0], Mapping) else {}

    def pick(*names: str) -> Any:
        for source in (raster, entry, asset):
            for name in names:
                if name in source:
                    return source[name]
        return None

    scale = _number(pick("scale", "raster:scale"), "scale", where)
    offset = _number(pick("offset", "raster:offset"), "offset", where)
    nodata = _number(pick("nodata"), "nodata", where)
    if scale is not None and (not math.isfinite(scale) or scale == 0):
        raise InputError(f"{where}: scale {scale!r} cannot turn values into reflectance")
    if scale is None and offset is None:
        return None, nodata
    return Radiometry(scale if scale is not None else 1.0, offset or 0.0, "STAC raster:bands"), nodata


def parse_item(data: str | bytes | Mapping[str, Any], location: str | None = None) -> StacItem:
    """A :class:`StacItem` from JSON text or an already parsed object; refuses anything that is not an Item."""
    where = location or "stdin"
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise InputError(f"{where} is not a STAC Item: not JSON ({exc})") from None
    if not isinstance(data, Mapping):
        raise InputError(f"{where} is not a STAC Item (a JSON object with type Feature and assets)")
    kind = data.get("type")
    if kind == "FeatureCollection":
        n = len(data.get("features") or [])
        raise InputError(f"{where} is a FeatureCollection of {n} item(s); give rssr one STAC Item per scene")
    if kind != "Feature" or not isinstance(data.get("assets"), Mapping):
        raise InputError(f"{where} is not a STAC Item (type {kind!r}, "
                         f"{'no assets' if not isinstance(data.get('assets'), Mapping) else 'not a Feature'})")
    return StacItem(data, location)


def read_item(source: str | Path) -> StacItem:
    """Read a STAC Item from a local file or an ``http(s)`` URL (one line :class:`InputError` if it cannot be)."""
    source = str(source)
    if urlsplit(source).scheme.lower() in ("http", "https"):
        try:
            with urllib.request.urlopen(source, timeout=URL_TIMEOUT) as response:  # noqa: S310 (http(s) only)
                text = response.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise InputError(f"cannot read STAC item {source}: {reason}") from None
        return parse_item(text, source)
    try:
        text = Path(source).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read STAC item {source}: {exc.strerror or exc}") from None
    return parse_item(text, source)
