"""The raster being written, as plain rows of pixels in a file that survives a kill: the scratch of the sink.

A TIFF keeps its tile index in memory until it is closed, so a run killed half-way leaves a scratch TIFF that cannot be
trusted. Here the raster is raw: pixel-interleaved rows (``row, column, band``, little-endian) at offsets fixed by the
grid, in a file as large as the raster from the start (sparse: unwritten parts take no disk). Nothing in the file
describes where anything is, so nothing can be half-updated: a block written and synced (:meth:`RawScratch.sync`) is
there for the next run to keep (:mod:`rssr_cli.resume`), a block being written when the process died is simply
written again. At commit, a VRT beside it (:meth:`RawScratch.write_vrt`) describes the file to GDAL with the grid,
nodata, band descriptions, tags and scale/offset, and rio-cogeo reads that into the COG (:mod:`rssr_cli.cog`).

Write errors (disk full, I/O errors, a read-only folder) become :class:`rssr_cli.errors.OutputError` naming the file.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from rssr_cli.atomic import fsync_folder
from rssr_cli.errors import OutputError
from rssr_cli.scene import Grid

__all__ = ["RawScratch"]

_GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
               "float32": "Float32", "float64": "Float64"}


class RawScratch:
    """A ``count``-band raster of ``dtype`` on ``grid``, stored raw at ``path``; ``reuse`` keeps an existing file's
    pixels (a resumed run), else the file starts empty (all zeros).

    ``create=False`` opens a file another process created (another rank of a sharded run writing its own rows at their
    offsets, :mod:`rssr_cli.world`): it must exist with the raster's size, and is neither created, truncated nor
    resized.
    """

    def __init__(self, path: Path, grid: Grid, *, count: int, dtype: str, nodata: float | None,
                 reuse: bool = False, create: bool = True) -> None:
        self.path, self.grid, self.count, self.nodata = Path(path), grid, count, nodata
        self.dtype = np.dtype(dtype).newbyteorder("<")
        if self.dtype.name not in _GDAL_TYPES:
            raise ValueError(f"internal: no raw scratch for {dtype}")
        self.nbytes = grid.width * grid.height * count * self.dtype.itemsize
        self._fd: int | None = None
        if not create:
            self._join()
            return
        flags = os.O_RDWR | os.O_CREAT | (0 if reuse else os.O_TRUNC)
        try:
            self._fd = os.open(self.path, flags, 0o644)
            if os.fstat(self._fd).st_size != self.nbytes:
                os.ftruncate(self._fd, self.nbytes)
        except OSError as exc:
            self.close()
            raise OutputError(f"cannot create {self.path}: {exc.strerror}") from None
        fsync_folder(self.path.parent)

    def _join(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_RDWR)
            size = os.fstat(self._fd).st_size
        except OSError as exc:
            self.close()
            raise OutputError(f"cannot open {self.path}, which the first process created: {exc.strerror} (with "
                              "several machines the output folder must be on a filesystem they share)") from None
        if size != self.nbytes:
            self.close()
            raise OutputError(f"{self.path} holds {size} bytes where the first process made {self.nbytes}; is another "
                              "run writing the same output?")

    def write(self, data: np.ndarray, row0: int, col0: int) -> None:
        """Write ``data`` (count, h, w) with its top-left pixel at (``row0``, ``col0``)."""
        c, h, w = data.shape
        if c != self.count or row0 < 0 or col0 < 0 or row0 + h > self.grid.height or col0 + w > self.grid.width:
            raise ValueError(f"internal: a block of {c} x {h} x {w} at row {row0}, column {col0} does not fit the "
                             f"{self.count} x {self.grid.height} x {self.grid.width} scratch raster")
        rows = np.ascontiguousarray(np.moveaxis(data, 0, -1), dtype=self.dtype)  # (h, w, count)
        line = self.grid.width * self.count * self.dtype.itemsize
        start = (row0 * self.grid.width + col0) * self.count * self.dtype.itemsize
        try:
            if w == self.grid.width:  # whole rows: one contiguous run of bytes
                self._pwrite(memoryview(rows).cast("B"), start)
            else:
                for r in range(h):
                    self._pwrite(memoryview(rows[r]).cast("B"), start + r * line)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def _pwrite(self, view: memoryview, offset: int) -> None:
        assert self._fd is not None, "the scratch raster is closed"
        while view:
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n

    def sync(self) -> None:
        """Everything written so far is on disk when this returns."""
        if self._fd is None:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror}") from None

    def close(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
        self._fd = None

    def allocated_bytes(self) -> int:
        """Disk the file takes now (a sparse file takes only what was written)."""
        try:
            return os.stat(self.path).st_blocks * 512
        except OSError:
            return 0

    def write_vrt(self, path: Path, *, descriptions: Sequence[str], tags: Mapping[str, str],
                  scales: Sequence[float] | None = None, offsets: Sequence[float] | None = None) -> Path:
        """A VRT at ``path`` (beside the scratch file) through which GDAL reads it, described as the output will be."""
        g = self.grid
        root = ET.Element("VRTDataset", rasterXSize=str(g.width), rasterYSize=str(g.height))
        ET.SubElement(root, "SRS").text = g.crs.to_wkt()
        t = g.transform
        ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v)) for v in (t.c, t.a, t.b, t.f, t.d, t.e))
        metadata = ET.SubElement(root, "Metadata")
        for key, value in tags.items():
            ET.SubElement(metadata, "MDI", key=str(key)).text = str(value)
        size = self.dtype.itemsize
        for b in range(self.count):
            band = ET.SubElement(root, "VRTRasterBand", dataType=_GDAL_TYPES[self.dtype.name], band=str(b + 1),
                                 subClass="VRTRawRasterBand")
            ET.SubElement(band, "Description").text = descriptions[b]
            if self.nodata is not None:
                ET.SubElement(band, "NoDataValue").text = "nan" if math.isnan(self.nodata) else repr(self.nodata)
            if scales is not None and offsets is not None:
                ET.SubElement(band, "Offset").text = repr(float(offsets[b]))
                ET.SubElement(band, "Scale").text = repr(float(scales[b]))
            ET.SubElement(band, "SourceFilename", relativeToVRT="1").text = self.path.name
            ET.SubElement(band, "ImageOffset").text = str(b * size)
            ET.SubElement(band, "PixelOffset").text = str(self.count * size)
            ET.SubElement(band, "LineOffset").text = str(g.width * self.count * size)
            ET.SubElement(band, "ByteOrder").text = "LSB"
        if self.path.parent != path.parent:
            raise ValueError("internal: the VRT must lie beside its scratch file")
        try:
            ET.ElementTree(root).write(path, encoding="unicode")
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror}") from None
        return path

