"""Sentinel-2 SAFE products (Level-1C and Level-2A) as the Copernicus Data Space distributes them.

GDAL's SENTINEL2 driver reads a product from its metadata file (``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml``, or the
``S2x_OPER_MTD_SAFL1C_...xml`` of older products) or from a ``.zip`` whose name follows ESA's convention, and exposes
one subdataset per resolution (:func:`rssr_cli.scene` opens the 10 m one). A ``.SAFE`` folder it does not open, nor a
renamed zip; :func:`product_path` finds the metadata file inside either.

The driver carries the product's metadata as tags: the quantification and special values on the dataset, the
processing-baseline offset (``BOA_ADD_OFFSET`` / ``RADIO_ADD_OFFSET``, -1000 from baseline 04.00) on each band, which
:func:`rssr_cli.bands.tag_radiometry` turns into reflectance; :func:`product_metadata` reads the rest (sensing time,
spacecraft, level, baseline, nodata value) for ``rssr info`` and the output's STAC Item.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Mapping

from rssr_cli.errors import InputError
from rssr_cli.stac import SourceMetadata

__all__ = ["DRIVER", "product_metadata", "product_nodata", "product_path"]

#: The GDAL driver of SAFE products.
DRIVER = "SENTINEL2"
#: Names of a product's main metadata file: compact naming (2016 on), then the older long naming.
METADATA_FILE = re.compile(r"^(MTD_MSIL(1C|2A)|S2[A-Z]_(OPER|USER)_MTD_SAFL(1C|2A)_.*)\.xml$", re.IGNORECASE)


def product_path(path: str) -> str | None:
    """The path GDAL opens for a SAFE product given as a ``.SAFE`` folder or a ``.zip`` (its metadata file), or None
    when ``path`` is neither (any other input, including the metadata file itself, opens as it is)."""
    p = Path(path)
    if p.is_dir():
        found = sorted(c for c in p.iterdir() if METADATA_FILE.match(c.name))
        if found:
            return str(found[0])
        if p.suffix.lower() == ".safe":
            raise InputError(f"{path} is not a Sentinel-2 SAFE product: it holds no MTD_MSIL1C.xml or MTD_MSIL2A.xml")
        return None
    if p.suffix.lower() != ".zip" or not p.is_file():
        return None
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"cannot open {path}: {exc}") from None
    found = sorted((n.count("/"), n) for n in names if METADATA_FILE.match(n.rsplit("/", 1)[-1]) and n.count("/") <= 1)
    if not found:
        raise InputError(f"{path} holds no Sentinel-2 product (no MTD_MSIL1C.xml or MTD_MSIL2A.xml in its top "
                         "folder); rssr reads SAFE zips as the Copernicus Data Space delivers them")
    return f"/vsizip/{p.resolve()}/{found[0][1]}"


def _tags(tags: Mapping[str, str]) -> dict[str, str]:
    return {k.upper(): v for k, v in tags.items()}


def product_metadata(tags: Mapping[str, str], href: str | None = None) -> SourceMetadata | None:
    """What a product's tags (as GDAL's SENTINEL2 driver sets them) say about it, or None for other datasets."""
    t = _tags(tags)
    if "PRODUCT_URI" not in t and "PRODUCT_TYPE" not in t:
        return None
    spacecraft = t.get("DATATAKE_1_SPACECRAFT_NAME") or t.get("SPACECRAFT_NAME")
    level = t.get("PROCESSING_LEVEL", "")
    carried = {"processing:level": level.replace("Level-", "L")} if level else {}
    if t.get("PROCESSING_BASELINE"):
        carried["s2:processing_baseline"] = t["PROCESSING_BASELINE"]
    if t.get("PRODUCT_URI"):
        carried["s2:product_uri"] = t["PRODUCT_URI"]
    if t.get("PRODUCT_TYPE"):
        carried["s2:product_type"] = t["PRODUCT_TYPE"]
    product_id = t.get("PRODUCT_URI", "")
    product_id = product_id[: -len(".SAFE")] if product_id.upper().endswith(".SAFE") else product_id
    return SourceMetadata(
        kind="safe", href=href, id=product_id or None,
        datetime=t.get("PRODUCT_START_TIME") or t.get("DATATAKE_1_DATATAKE_SENSING_START"),
        platform=spacecraft.lower() if spacecraft else None, constellation="sentinel-2", instruments=("msi",),
        properties=carried)


def product_nodata(tags: Mapping[str, str]) -> float | None:
    """The nodata DN a product declares (``SPECIAL_VALUE_NODATA``, 0 in every product so far), or None."""
    value = _tags(tags).get("SPECIAL_VALUE_NODATA")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
