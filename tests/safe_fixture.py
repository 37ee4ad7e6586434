"""A small synthetic Sentinel-2 SAFE product (L1C or L2A, compact naming) that GDAL's SENTINEL2 driver opens.

The layout is the real one, cut to what the driver reads: the product metadata (``MTD_MSIL1C.xml`` /
``MTD_MSIL2A.xml``: product info, granule list, special values, quantification, the processing-baseline offsets), the
granule's ``MTD_TL.xml`` (CRS, 10 m size and position) and one JPEG 2000 file per 10 m band, plus ``manifest.safe``.
The pixels are a 64 x 64 crop of the real per-band AWS COGs in tests/data/aws_29RKH (see ATTRIBUTION.md), stored with
the product's offset added, as a processing baseline 04.00 product stores them.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from conftest import AWS_BANDS

SIZE = 64
ORIGIN = (300000.0, 2790000.0)  # UTM 29N, inside tile 29RKH
EPSG = 32629
DATATAKE = "20230615T112121"


def _band_dn(band: int, offset_dn: int) -> np.ndarray:
    """Real L2A DNs (reflectance x 10000) of AWS band ``band`` (0..3), stored as a product with ``offset_dn`` stores
    them: DN = reflectance x 10000 - offset, and 0 stays nodata."""
    with rasterio.open(AWS_BANDS[band]) as ds:
        dn = ds.read(1, window=Window(40, 40, SIZE, SIZE)).astype(np.int32)
    return np.where(dn > 0, dn - offset_dn, 0).astype(np.uint16)


def _write_jp2(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    transform = Affine(10.0, 0.0, ORIGIN[0], 0.0, -10.0, ORIGIN[1])
    with rasterio.open(path, "w", driver="JP2OpenJPEG", width=SIZE, height=SIZE, count=1, dtype="uint16",
                       crs=f"EPSG:{EPSG}", transform=transform, QUALITY=100, REVERSIBLE="YES") as dst:
        dst.write(data, 1)


def _product_xml(level: str, uri: str, baseline: str, granule: str, images: list[str], offset_dn: int | None) -> str:
    l2a = level == "L2A"
    root = "Level-2A_User_Product" if l2a else "Level-1C_User_Product"
    xsd = "User_Product_Level-2A.xsd" if l2a else "User_Product_Level-1C.xsd"
    image_files = "".join(f"<IMAGE_FILE>{name}</IMAGE_FILE>" for name in images)
    if l2a:
        quant = ("<QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit=\"none\">10000</BOA_QUANTIFICATION_VALUE>"
                 "<AOT_QUANTIFICATION_VALUE unit=\"none\">1000.0</AOT_QUANTIFICATION_VALUE>"
                 "<WVP_QUANTIFICATION_VALUE unit=\"cm\">1000.0</WVP_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST>")
        offsets = "" if offset_dn is None else "<BOA_ADD_OFFSET_VALUES_LIST>" + "".join(
            f'<BOA_ADD_OFFSET band_id="{i}">{offset_dn}</BOA_ADD_OFFSET>' for i in range(13)) + \
            "</BOA_ADD_OFFSET_VALUES_LIST>"
    else:
        quant = '<QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>'
        offsets = "" if offset_dn is None else "<Radiometric_Offset_List>" + "".join(
            f'<RADIO_ADD_OFFSET band_id="{i}">{offset_dn}</RADIO_ADD_OFFSET>' for i in range(13)) + \
            "</Radiometric_Offset_List>"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:{root} xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/{xsd}">
<n1:General_Info><Product_Info>
<PRODUCT_START_TIME>2023-06-15T11:21:21.024Z</PRODUCT_START_TIME>
<PRODUCT_STOP_TIME>2023-06-15T11:21:21.024Z</PRODUCT_STOP_TIME>
<PRODUCT_URI>{uri}</PRODUCT_URI>
<PROCESSING_LEVEL>Level-{level[1:]}</PROCESSING_LEVEL>
<PRODUCT_TYPE>S2MSI{level[1:]}</PRODUCT_TYPE>
<PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
<Datatake datatakeIdentifier="GS2B_{DATATAKE}_032840_N{baseline}"><SPACECRAFT_NAME>Sentinel-2B</SPACECRAFT_NAME>
<DATATAKE_SENSING_START>2023-06-15T11:21:21.024Z</DATATAKE_SENSING_START></Datatake>
<Query_Options completeSingleTile="true"><PRODUCT_FORMAT>SAFE_COMPACT</PRODUCT_FORMAT></Query_Options>
<Product_Organisation><Granule_List><Granule datastripIdentifier="DS" granuleIdentifier="{granule}"
imageFormat="JPEG2000">{image_files}</Granule></Granule_List></Product_Organisation>
</Product_Info>
<Product_Image_Characteristics>
<Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT>
<SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX></Special_Values>
<Special_Values><SPECIAL_VALUE_TEXT>SATURATED</SPECIAL_VALUE_TEXT>
<SPECIAL_VALUE_INDEX>65535</SPECIAL_VALUE_INDEX></Special_Values>
{quant}{offsets}
</Product_Image_Characteristics>
</n1:General_Info></n1:{root}>
"""


def _tile_xml(level: str) -> str:
    tile = "Level-2A_Tile_ID" if level == "L2A" else "Level-1C_Tile_ID"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:{tile} xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_{tile.replace('_ID', '')}_Metadata.xsd">
<n1:General_Info><TILE_ID>T29RKH</TILE_ID></n1:General_Info>
<n1:Geometric_Info><Tile_Geocoding><HORIZONTAL_CS_NAME>WGS84 / UTM zone 29N</HORIZONTAL_CS_NAME>
<HORIZONTAL_CS_CODE>EPSG:{EPSG}</HORIZONTAL_CS_CODE>
<Size resolution="10"><NROWS>{SIZE}</NROWS><NCOLS>{SIZE}</NCOLS></Size>
<Geoposition resolution="10"><ULX>{ORIGIN[0]:.0f}</ULX><ULY>{ORIGIN[1]:.0f}</ULY>
<XDIM>10</XDIM><YDIM>-10</YDIM></Geoposition>
</Tile_Geocoding></n1:Geometric_Info></n1:{tile}>
"""


def make_safe(folder: Path, *, level: str = "L2A", baseline: str = "05.09", offset_dn: int | None = -1000,
              zipped: bool = False) -> Path:
    """Write a product into ``folder``; returns the ``.SAFE`` folder, or the ``.zip`` holding it with ``zipped``.
    ``offset_dn`` None: a product of a baseline before 04.00 (no offset list, DNs without offset)."""
    uri = f"S2B_MSI{level}_{DATATAKE}_N{baseline.replace('.', '')}_R037_T29RKH_20230615T134405.SAFE"
    granule_dir = f"{level}_T29RKH_A032840_{DATATAKE}"
    granule_id = f"S2B_OPER_MSI_{level}_TL_2BPS_20230615T134405_A032840_T29RKH_N{baseline}"
    safe = folder / uri
    images = []
    for i, band in enumerate(("B02", "B03", "B04", "B08")):
        if level == "L2A":
            stem = f"GRANULE/{granule_dir}/IMG_DATA/R10m/T29RKH_{DATATAKE}_{band}_10m"
        else:
            stem = f"GRANULE/{granule_dir}/IMG_DATA/T29RKH_{DATATAKE}_{band}"
        images.append(stem)
        _write_jp2(safe / f"{stem}.jp2", _band_dn(i, offset_dn or 0))
    (safe / f"MTD_MSI{level}.xml").write_text(_product_xml(level, uri, baseline, granule_id, images, offset_dn))
    (safe / "GRANULE" / granule_dir / "MTD_TL.xml").write_text(_tile_xml(level))
    (safe / "manifest.safe").write_text('<?xml version="1.0" encoding="UTF-8"?><xfdu:XFDU '
                                        'xmlns:xfdu="urn:ccsds:schema:xfdu:1"/>\n')
    if not zipped:
        return safe
    archive = folder / (uri[: -len(".SAFE")] + ".SAFE.zip")
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(safe.rglob("*")):
            z.write(path, path.relative_to(folder).as_posix())
    return archive


def reflectance(band: int) -> np.ndarray:
    """The reflectance the product's band ``band`` (0..3) holds (NaN at nodata)."""
    with rasterio.open(AWS_BANDS[band]) as ds:
        dn = ds.read(1, window=Window(40, 40, SIZE, SIZE)).astype(np.float64)
    return np.where(dn > 0, dn / 10000, np.nan)
