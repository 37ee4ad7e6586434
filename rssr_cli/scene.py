"""Open a Sentinel-2 input as a :class:`Scene`: its grid, which file/band feeds each model band, radiometry, nodata.

A scene is one multi-band raster (GeoTIFF, VRT), several single-band rasters on one grid (the ``B02.tif B03.tif
B04.tif B08.tif`` layout of the AWS COGs), a STAC Item whose assets are those rasters (:mod:`rssr_cli.stac`: the
catalogue's ``raster:bands`` scale/offset/nodata win over the files' metadata and over defaults), or a SAFE product at
its 10 m subdataset (:mod:`rssr_cli.safe`: the product's offset from its metadata). Reading returns reflectance, never
DNs:
``reflectance = DN * scale + offset`` per band (:class:`Radiometry`), which is ``(DN + offset_dn) / 10000`` for
Sentinel-2 quantification.
"""

from __future__ import annotations

import math
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import array_bounds
from rasterio.windows import Window

from rssr_cli.bands import (
    MODEL_BANDS,
    QUANTIFICATION,
    Radiometry,
    dn_to_reflectance,
    identify_band,
    metadata_radiometry,
)
from rssr_cli.errors import InputError, underlying_reason
from rssr_cli.safe import DRIVER as SAFE_DRIVER
from rssr_cli.safe import product_metadata, product_nodata, product_path
from rssr_cli.stac import SourceMetadata, StacItem, looks_like_item, read_item

# Radiometry and QUANTIFICATION live in rssr_cli.bands; they stay importable from here (pipeline.py uses them).
__all__ = ["QUANTIFICATION", "BandSource", "Grid", "Radiometry", "Scene", "open_scene"]


@dataclass(frozen=True)
class Grid:
    """A raster grid as a value: size, affine transform and CRS (odc-geo's GeoBox, reduced to what rssr needs)."""

    width: int
    height: int
    transform: Affine
    crs: CRS

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north): the grid is north-up (open_scene refuses rotated and flipped inputs)."""
        return array_bounds(self.height, self.width, self.transform)

    @property
    def res(self) -> tuple[float, float]:
        return (math.hypot(self.transform.a, self.transform.d), math.hypot(self.transform.b, self.transform.e))

    def window(self, window: Window) -> "Grid":
        """The grid of a window of this grid (the window may extend beyond it)."""
        return Grid(int(window.width), int(window.height),
                    self.transform @ Affine.translation(window.col_off, window.row_off), self.crs)

    def shifted(self, dy: float, dx: float) -> "Grid":
        """The same grid moved by (dy, dx) of its own pixels (row, column directions)."""
        return Grid(self.width, self.height, self.transform @ Affine.translation(dx, dy), self.crs)

    def zoom(self, scale: Fraction) -> "Grid":
        """The grid ``scale`` times finer over the same origin; sizes round up so nothing at the edge is lost."""
        return Grid(math.ceil(self.width * scale), math.ceil(self.height * scale),
                    self.transform @ Affine.scale(1 / float(scale)), self.crs)


@dataclass(frozen=True)
class BandSource:
    """Where one model band is read from: file index in ``Scene.paths`` and 1-based band index in that file."""

    name: str
    file: int
    bidx: int
    description: str | None
    asset: str | None = None  # the STAC asset's key, when the scene is a STAC Item


@dataclass
class Scene:
    """An opened input. Use as a context manager (``with open_scene(...) as scene``) so file handles are closed."""

    paths: tuple[str, ...]
    grid: Grid
    bands: tuple[BandSource, ...]
    dtype: str
    radiometry: tuple[Radiometry, ...]
    nodata: float | None
    nodata_source: str
    _datasets: list = field(default_factory=list, repr=False)
    _stack: ExitStack = field(default_factory=ExitStack, repr=False)
    _use_file_masks: bool = True
    #: True when nodata is the undeclared default (DN 0): a pixel is nodata only if every band is.
    nodata_all_bands: bool = False
    #: What the input says about its acquisition (a STAC Item's properties, a SAFE product's metadata), if anything.
    origin: SourceMetadata | None = None

    def __enter__(self) -> "Scene":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.bands)

    def any_valid(self, window: Window, *, pixels_per_read: int = 1 << 22) -> bool:
        """Whether ``window`` holds at least one valid pixel (as :meth:`read` decides). Read in strips of rows, so
        memory stays bounded, and stopped at the first valid pixel: a scene with data costs one strip, an empty one a
        read of its window (far cheaper than computing its tiles)."""
        r_lo, r_hi = max(int(window.row_off), 0), min(int(window.row_off + window.height), self.grid.height)
        c_lo, c_hi = max(int(window.col_off), 0), min(int(window.col_off + window.width), self.grid.width)
        rows = max(1, pixels_per_read // max(c_hi - c_lo, 1))
        for row in range(r_lo, r_hi, rows):
            _, valid = self.read(Window(c_lo, row, c_hi - c_lo, min(rows, r_hi - row)))
            if valid.any():
                return True
        return False

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Reflectance (C, h, w) float32 and validity (h, w) bool for ``window``, which may extend beyond the scene.

        Pixels outside the scene are filled by reflecting the scene (context for the model, never output) and are
        invalid. Invalid pixels inside (nodata, masks, NaN) hold the mean of the valid pixels of their band so that a
        model sees no artificial edges of extreme values; the caller masks them in the output anyway.
        """
        row0, col0 = int(window.row_off), int(window.col_off)
        h, w = int(window.height), int(window.width)
        r_lo, r_hi = max(row0, 0), min(row0 + h, self.grid.height)
        c_lo, c_hi = max(col0, 0), min(col0 + w, self.grid.width)
        if r_lo >= r_hi or c_lo >= c_hi:
            raise InputError("internal: read window does not touch the scene")
        inner = Window(c_lo, r_lo, c_hi - c_lo, r_hi - r_lo)
        dn = np.empty((len(self.bands), inner.height, inner.width), dtype=self.dtype)
        masked = np.zeros((inner.height, inner.width), dtype=bool)
        for i, band in enumerate(self.bands):
            ds = self._datasets[band.file]
            try:
                dn[i] = ds.read(band.bidx, window=inner)
                if self._use_file_masks:
                    masked |= ds.read_masks(band.bidx, window=inner) == 0
            except rasterio.errors.RasterioIOError as exc:
                raise InputError(f"cannot read {self.paths[band.file]} (truncated or damaged?): "
                                 f"{underlying_reason(exc)}") from None
        # A declared nodata value marks a pixel invalid in any band; the default (DN 0, no declaration) only when every
        # band is 0, as outside a Sentinel-2 swath: one band at 0 (NIR over dark water) is a real, clipped value.
        data, valid = dn_to_reflectance(dn, self.radiometry, nodata=self.nodata,
                                        nodata_in_every_band=self.nodata_all_bands)
        valid &= ~masked
        if not valid.all():
            for band in data:
                fill = float(band[valid].mean()) if valid.any() else 0.0
                band[~valid] = fill
        pad = ((r_lo - row0, row0 + h - r_hi), (c_lo - col0, col0 + w - c_hi))
        if any(p for pair in pad for p in pair):
            data = _pad_reflect(data, pad)
            valid = np.pad(valid, pad, mode="constant", constant_values=False)
        return data, valid


def _pad_reflect(data: np.ndarray, pad: tuple[tuple[int, int], tuple[int, int]]) -> np.ndarray:
    """Reflect-pad (C, h, w); falls back to edge padding where the data is smaller than the pad."""
    (top, bottom), (left, right) = pad
    h, w = data.shape[1:]
    if top < h and bottom < h and left < w and right < w:
        return np.pad(data, ((0, 0), (top, bottom), (left, right)), mode="symmetric")
    return np.pad(data, ((0, 0), (top, bottom), (left, right)), mode="edge")


def _ten_metre_subdataset(path: str) -> str:
    """A SAFE product (or its MTD XML) opens as a container of subdatasets: pick the 10 m one, as GDAL names it."""
    with rasterio.open(path) as ds:
        if ds.count or not ds.subdatasets:
            return path
        ten = [name for name in ds.subdatasets if ":10m:" in name]
    if not ten:
        raise InputError(f"{path} holds subdatasets but none at 10 m; open one of them directly")
    return ten[0]


@dataclass(frozen=True)
class _Declared:
    """What a catalogue or product says over the files' own metadata: radiometry per model band (None: not said),
    a nodata value (counted in any band, like a file's) and where it came from, and the input's record."""

    radiometry: tuple[Radiometry | None, ...] = ()
    nodata: float | None = None
    nodata_source: str = ""
    origin: SourceMetadata | None = None


def open_scene(
    paths: str | Path | StacItem | Sequence[str | Path],
    *,
    bidx: Sequence[int] | None = None,
    bands: Sequence[str] = MODEL_BANDS,
    nodata: float | None = None,
    offset: float | None = None,
    georeferenced: bool = True,
) -> Scene:
    """Open one multi-band raster, or several single-band rasters on one grid, or a STAC Item, as a :class:`Scene`.

    ``bidx`` (1-based) picks the bands in model order; without it the bands are identified from band descriptions or
    file names, or taken in order when the file has exactly ``len(bands)`` bands. A STAC Item (a
    :class:`~rssr_cli.stac.StacItem`, or the path or URL of one) names its bands' assets and their radiometry
    (:mod:`rssr_cli.stac`); a SAFE product (``.SAFE`` folder, ``.zip`` or metadata file) opens at its 10 m
    subdataset with the product's offset (:mod:`rssr_cli.safe`). ``offset`` is the Sentinel-2 additive offset in DN
    (for example -1000 for processing baseline 04.00 and later) and replaces any other; ``nodata`` overrides the
    file's nodata value. ``georeferenced=False`` accepts a file without CRS or geotransform (for a reader of pixels
    only, such as training; the output grid of ``rssr upscale`` needs both).
    """
    item = _stac_input(paths)
    if item is not None:
        return _open_item(item, bidx=bidx, bands=tuple(bands), nodata=nodata, offset=offset)
    path_list = [str(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not path_list:
        raise InputError("no input given")
    opened = _open_all([(path, path) for path in path_list])
    try:
        declared = _product_declarations(path_list[0], opened[0]) if len(opened) == 1 else _Declared()
        sources = _choose_bands(path_list, opened, bidx=bidx, bands=tuple(bands))
        return _build_scene(path_list, opened, sources, nodata=nodata, offset=offset, declared=declared,
                            georeferenced=georeferenced)
    except BaseException:
        _close(opened)
        raise


def _stac_input(paths) -> StacItem | None:
    """The STAC Item among the inputs (an item object, or a single path or URL that names one), else None."""
    if isinstance(paths, StacItem):
        return paths
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if isinstance(paths, Sequence) and len(paths) == 1:
        if isinstance(paths[0], StacItem):
            return paths[0]
        if looks_like_item(str(paths[0])):
            return read_item(str(paths[0]))
    if any(isinstance(p, StacItem) for p in paths):
        raise InputError("a STAC Item is one scene on its own; give it alone")
    return None


def _open_item(item: StacItem, *, bidx, bands: tuple[str, ...], nodata, offset) -> Scene:
    if bidx:
        raise InputError(f"-b/--bidx does not apply to STAC item {item.id}: its assets name their bands")
    assets = item.band_assets(bands)
    opened = _open_all([(a.path, f"asset {a.key!r} of STAC item {item.id} ({a.href})") for a in assets])
    try:
        nodatas = {a.nodata for a in assets if a.nodata is not None}
        if len({repr(v) for v in nodatas}) > 1:
            raise InputError(f"the assets of STAC item {item.id} declare different nodata values "
                             f"({', '.join(sorted(map(repr, nodatas)))}); pass one with --nodata")
        declared = _Declared(tuple(a.radiometry for a in assets), next(iter(nodatas), None), "STAC raster:bands",
                             item.metadata())
        sources = tuple(BandSource(a.band, i, 1, opened[i].descriptions[0] or a.title, asset=a.key)
                        for i, a in enumerate(assets))
        return _build_scene([a.path for a in assets], opened, sources, nodata=nodata, offset=offset,
                            declared=declared)
    except BaseException:
        _close(opened)
        raise


def _open_all(sources: list[tuple[str, str]]) -> list:
    """Open each (GDAL path, how to name it in errors); a SAFE folder or zip opens at its 10 m subdataset."""
    opened: list = []
    try:
        for path, name in sources:
            try:
                with warnings.catch_warnings():  # the missing georeferencing is reported later, as an error
                    warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                    opened.append(rasterio.open(_ten_metre_subdataset(product_path(path) or path)))
            except rasterio.errors.RasterioIOError as exc:
                raise InputError(f"cannot open {name}: {str(exc).splitlines()[0]}") from None
    except BaseException:
        _close(opened)
        raise
    return opened


def _close(datasets: list) -> None:
    for ds in datasets:
        ds.close()


def _product_declarations(path: str, ds) -> _Declared:
    """A SAFE product's nodata value and record (its offsets are band tags that :func:`metadata_radiometry` reads)."""
    if ds.driver != SAFE_DRIVER:
        return _Declared()
    tags = ds.tags()
    return _Declared((), product_nodata(tags), "SAFE metadata", product_metadata(tags, href=path))


def _choose_bands(paths: list[str], datasets: list, *, bidx, bands: tuple[str, ...]) -> tuple[BandSource, ...]:
    """Which (file, band) feeds each model band: ``bidx``, else band descriptions or file names, else the order of
    a file with exactly as many bands."""
    available = [(f, b, ds.descriptions[b - 1], identify_band(ds.descriptions[b - 1]) or
                  (identify_band(Path(paths[f]).stem) if ds.count == 1 else None))
                 for f, ds in enumerate(datasets) for b in range(1, ds.count + 1)]
    if bidx:
        if len(bidx) != len(bands):
            raise InputError(f"-b/--bidx lists {len(bidx)} bands; the method needs {len(bands)} "
                             f"({', '.join(bands)})")
        if any(i < 1 or i > len(available) for i in bidx):
            raise InputError(f"-b/--bidx {','.join(map(str, bidx))} is out of range: the input has "
                             f"{len(available)} band(s)")
        chosen = [available[i - 1] for i in bidx]
    else:
        by_name = {name: entry for entry in available for name in [entry[3]] if name}
        if all(b in by_name for b in bands):
            chosen = [by_name[b] for b in bands]
        elif len(available) == len(bands):
            chosen = available  # e.g. a 4-band B02,B03,B04,B08 stack without descriptions
        elif len(available) < len(bands):
            raise InputError(f"the input has {len(available)} band(s); rssr needs {len(bands)} "
                             f"({', '.join(bands)})")
        else:
            raise InputError(f"cannot tell which of the {len(available)} bands are {', '.join(bands)} (no band "
                             "descriptions); pass them with -b/--bidx, e.g. -b 2,3,4,8 for a 12-band L2A stack")
    return tuple(BandSource(name, f, b, desc) for name, (f, b, desc, _) in zip(bands, chosen))


def _check_grids(paths: list[str], datasets: list, georeferenced: bool = True) -> None:
    first = datasets[0]
    for path, ds in zip(paths, datasets):
        if not georeferenced and ds.transform == Affine.identity():
            continue
        if ds.crs is None or ds.transform == Affine.identity():
            raise InputError(f"{path} is not georeferenced (no CRS or geotransform); rssr needs both to write an "
                             "aligned output")
        t = ds.transform
        if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
            raise InputError(f"{path} has a rotated or flipped geotransform; warp it to a north-up grid first "
                             "(gdalwarp)")
    for path, ds in zip(paths[1:], datasets[1:]):
        if (ds.crs, ds.transform, ds.shape) != (first.crs, first.transform, first.shape):
            raise InputError(f"{path} is not on the same grid as {paths[0]} (CRS, transform and size must match)")
        if ds.dtypes[0] != first.dtypes[0]:
            raise InputError(f"{path} has dtype {ds.dtypes[0]}, {paths[0]} has {first.dtypes[0]}")


def _radiometry(datasets: list, sources: tuple[BandSource, ...], dtype: str, offset: float | None,
                declared: _Declared) -> tuple[Radiometry, ...]:
    """Per band: ``--offset``, else what the catalogue declares, else the file's metadata, else the default."""
    out = []
    for i, src in enumerate(sources):
        said = declared.radiometry[i] if i < len(declared.radiometry) else None
        meta = metadata_radiometry(datasets[src.file], src.bidx)
        if offset is not None:
            out.append(Radiometry(1 / QUANTIFICATION, offset / QUANTIFICATION, "--offset"))
        elif said is not None:
            out.append(said)
        elif meta is not None:
            out.append(meta)
        elif np.dtype(dtype).kind == "f":
            out.append(Radiometry(1.0, 0.0, "float input is reflectance"))
        else:
            out.append(Radiometry(1 / QUANTIFICATION, 0.0, "default (DN / 10000)"))
    return tuple(out)


def _build_scene(paths: list[str], datasets: list, sources: tuple[BandSource, ...], *, nodata, offset,
                 declared: _Declared, georeferenced: bool = True) -> Scene:
    _check_grids(paths, datasets, georeferenced)
    first = datasets[0]
    dtype = first.dtypes[0]
    if np.dtype(dtype).kind not in "uif":
        raise InputError(f"unsupported data type {dtype}; rssr reads uint16, int16 or float32")
    radiometry = _radiometry(datasets, sources, dtype, offset, declared)

    if nodata is not None:
        nd, nd_source, use_masks = float(nodata), "--nodata", False
    elif declared.nodata is not None:
        nd, nd_source, use_masks = float(declared.nodata), declared.nodata_source, True
    elif first.nodata is not None:
        nd, nd_source, use_masks = float(first.nodata), "file", True
    elif np.dtype(dtype).kind == "f":
        nd, nd_source, use_masks = float("nan"), "default (NaN for float input)", True
    else:
        nd, nd_source, use_masks = 0.0, "default (DN 0 in every band is Sentinel-2 nodata)", True

    grid = Grid(first.width, first.height, first.transform, first.crs)
    scene = Scene(paths=tuple(paths), grid=grid, bands=sources, dtype=dtype, radiometry=radiometry,
                  nodata=nd, nodata_source=nd_source, _use_file_masks=use_masks,
                  nodata_all_bands=nd_source.startswith("default (DN 0"), origin=declared.origin)
    scene._datasets = datasets
    for ds in datasets:
        scene._stack.callback(ds.close)
    return scene
