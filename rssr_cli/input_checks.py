"""Is an input what the model was made for? Checked when a scene is opened for upscaling, before any work.

The diffusion model was trained on Sentinel-2's 10 m bands as reflectance. Given anything else it still produces an
image, silently wrong: a 20 m stack (B05/B06-style) comes out at 1.6 m, 8-bit display values or reflectance x 10000
as float come out as noise or saturation. :func:`check_input` refuses such an input with one line that says what
was found and what the model expects (:class:`UnusualInputError`, exit 2); ``UpscaleOptions(allow_unusual_input=
True)`` / ``--allow-unusual-input`` skips it for users who know better.

- **Pixel size** on the ground, in metres, at the scene's centre: the geodesic length (on the CRS's ellipsoid) of one
  pixel step in x and in y, whatever the CRS: metres of a UTM zone, degrees of EPSG:4326 at the scene's latitude, and
  Web Mercator's stretched metres alike. Accepted: :data:`PIXEL_RANGE_M` (8-12.5 m), Sentinel-2's 10 m give or
  take a reprojection (a 10 m pixel re-gridded in another UTM zone or in degrees stays within a few per cent); a 20 m
  or 60 m band, or imagery already at 1-5 m, is far outside.
- **Values**, from a sample of the scene (:data:`SAMPLE_GRID` x :data:`SAMPLE_GRID` windows of :data:`SAMPLE_SIZE`
  pixels spread over it, so a full tile costs a few blocks per band), valid pixels only, after the scene's
  DN -> reflectance conversion (:class:`~rssr_cli.bands.Radiometry`):

  - median reflectance above :data:`MAX_MEDIAN_REFLECTANCE` (1.5): reflectance x 10000 (or %) given as float, or a
    scale of 1 in the metadata; even snow and bright clouds stay near 1;
  - integer DNs whose sampled maximum is at most 255 with reflectance below :data:`DISPLAY_MAX_REFLECTANCE` in every
    band: 8-bit display values (a true-colour rendering) read as DN / 10000. Real Sentinel-2 DNs of any land scene
    exceed 255 (reflectance 0.0255) somewhere; an 8-bit product whose metadata scales it to reflectance passes.

Interpolation (``--method bicubic``) works at any pixel size and on any values: it declares no expectation
(:func:`expected_input`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from rasterio.windows import Window

from rssr_cli.errors import InputError, UsageError
from rssr_cli.scene import Grid, Scene

__all__ = ["DIFFUSION_INPUT", "ExpectedInput", "UnusualInputError", "check_input", "expected_input",
           "ground_pixel_size", "sample_reflectance"]

#: Accepted ground pixel size (metres) for a model trained on Sentinel-2's 10 m bands.
PIXEL_RANGE_M = (8.0, 12.5)
#: A larger median reflectance is no reflectance (x 10000 or percent).
MAX_MEDIAN_REFLECTANCE = 1.5
#: Integer data never above this DN...
DISPLAY_DN_MAX = 255
#: ...and below this reflectance in every band: 8-bit display values read as DN / 10000.
DISPLAY_MAX_REFLECTANCE = 0.05
#: The value sample: a grid of SAMPLE_GRID x SAMPLE_GRID windows of SAMPLE_SIZE x SAMPLE_SIZE pixels.
SAMPLE_GRID = 4
SAMPLE_SIZE = 64
#: How to skip the checks, as every refusal says.
OVERRIDE = "--allow-unusual-input"


class UnusualInputError(UsageError, InputError):
    """An input the model was not made for (pixel size, value range). Exit code 2, as for other usage errors; also
    an :class:`~rssr_cli.errors.InputError`."""


@dataclass(frozen=True)
class ExpectedInput:
    """What a method was made for: ``pixel_m`` the ground pixel size in metres (None: any), ``reflectance`` whether
    values must look like reflectance; ``what`` names the method in messages."""

    what: str = "the diffusion model"
    pixel_m: float | None = 10.0
    pixel_range_m: tuple[float, float] = PIXEL_RANGE_M
    reflectance: bool = True


#: The diffusion model: Sentinel-2's 10 m bands, as reflectance.
DIFFUSION_INPUT = ExpectedInput()

_UNDECLARED = object()


def expected_input(method: Any) -> ExpectedInput | None:
    """What ``method`` (a :class:`~rssr_cli.methods.TileUpsampler`) expects: its own ``expected_input`` attribute
    when it declares one; nothing for bicubic (interpolation takes any pixel size and values); otherwise a model
    trained on Sentinel-2 10 m reflectance (:data:`DIFFUSION_INPUT`), named after the method."""
    declared = getattr(method, "expected_input", _UNDECLARED)
    if declared is not _UNDECLARED:
        return declared
    name = getattr(method, "name", None)
    if name == "bicubic":
        return None
    return DIFFUSION_INPUT if name in (None, "diffusion") else ExpectedInput(what=f"the {name} method")


def check_input(scene: Scene, expected: ExpectedInput | None = DIFFUSION_INPUT) -> None:
    """Refuse ``scene`` when it is not what ``expected`` says (:class:`UnusualInputError`, one line naming what was
    found, what is expected and :data:`OVERRIDE`); ``expected=None`` checks nothing."""
    if expected is None:
        return
    if expected.pixel_m is not None:
        _check_pixel_size(scene.grid, expected)
    if expected.reflectance:
        _check_values(scene, expected)


def ground_pixel_size(grid: Grid) -> tuple[float, float] | None:
    """The (x, y) size in metres on the ground of the pixel at ``grid``'s centre: geodesic distances on the CRS's
    ellipsoid between the midpoints of its opposite edges; for a CRS with no ellipsoid (or no transformation to
    one), its linear unit. None when neither is known."""
    from pyproj import CRS, Transformer
    from pyproj.exceptions import ProjError

    try:
        crs = CRS.from_user_input(grid.crs.to_wkt())
    except ProjError:
        return None
    t = grid.transform
    col, row = grid.width / 2, grid.height / 2
    pts = [t * (col - 0.5, row), t * (col + 0.5, row), t * (col, row - 0.5), t * (col, row + 0.5)]
    geod = crs.get_geod()
    if geod is not None and crs.geodetic_crs is not None:
        try:
            to_lonlat = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
            lon, lat = to_lonlat.transform([p[0] for p in pts], [p[1] for p in pts])
        except ProjError:
            lon, lat = [math.inf], [math.inf]
        if all(math.isfinite(v) for v in (*lon, *lat)):
            dx = geod.inv(lon[0], lat[0], lon[1], lat[1])[2]
            dy = geod.inv(lon[2], lat[2], lon[3], lat[3])[2]
            return float(dx), float(dy)
    if crs.is_projected and crs.axis_info and crs.axis_info[0].unit_conversion_factor:
        factor = crs.axis_info[0].unit_conversion_factor
        return abs(t.a) * factor, abs(t.e) * factor
    return None


def _check_pixel_size(grid: Grid, expected: ExpectedInput) -> None:
    size = ground_pixel_size(grid)
    if size is None:
        return  # a CRS without units or ellipsoid: nothing to measure against
    lo, hi = expected.pixel_range_m
    if all(lo <= s <= hi for s in size):
        return
    found = f"{size[0]:.3g} x {size[1]:.3g} m"
    if grid.crs.is_geographic:
        lat = (grid.transform * (grid.width / 2, grid.height / 2))[1]
        found += f" ({abs(grid.transform.a):.3g} x {abs(grid.transform.e):.3g} degrees at latitude {lat:.1f})"
    raise UnusualInputError(
        f"the input's pixels are {found} on the ground; {expected.what} was trained on Sentinel-2's "
        f"{expected.pixel_m:g} m bands and expects {lo:g}-{hi:g} m pixels: resample the input to "
        f"{expected.pixel_m:g} m (gdalwarp -tr), or pass {OVERRIDE} to run it anyway")


def sample_reflectance(scene: Scene, *, grid: int = SAMPLE_GRID, size: int = SAMPLE_SIZE) -> tuple[np.ndarray,
                                                                                                      np.ndarray]:
    """Reflectance (C, n) and DNs (C, n) of the valid pixels in ``grid`` x ``grid`` windows of ``size`` pixels
    spread evenly over the scene (the whole scene when it is smaller)."""
    h, w = scene.grid.height, scene.grid.width
    wh, ww = min(size, h), min(size, w)
    rows = np.unique(np.linspace(0, h - wh, grid).round().astype(int))
    cols = np.unique(np.linspace(0, w - ww, grid).round().astype(int))
    refl, dn = [], []
    for r in rows:
        for c in cols:
            data, valid = scene.read(Window(int(c), int(r), ww, wh))
            values = data[:, valid]
            refl.append(values)
            dn.append(np.stack([rad.to_dn(v) for rad, v in zip(scene.radiometry, values)]))
    return np.concatenate(refl, axis=1), np.concatenate(dn, axis=1)


def _check_values(scene: Scene, expected: ExpectedInput) -> None:
    refl, dn = sample_reflectance(scene)
    if refl.shape[1] == 0:
        return  # no valid pixel in the sample: nothing to judge
    rad = scene.radiometry[0]
    how = f"{scene.dtype}, reflectance = DN * {rad.scale:g} + {rad.offset:g}: {rad.source}"
    median = float(np.median(refl))
    if median > MAX_MEDIAN_REFLECTANCE:
        raise UnusualInputError(
            f"the input's median reflectance is {median:.4g} ({how}); {expected.what} expects reflectance about "
            "0-1 (Sentinel-2 DN / 10000, or float reflectance): reflectance x 10000 given as float? Give "
            f"reflectance, or Sentinel-2 DNs as integers, or pass {OVERRIDE} to run it anyway")
    if np.dtype(scene.dtype).kind in "iu":
        dn_max = float(np.round(dn).max())
        if dn_max <= DISPLAY_DN_MAX and float(refl.max()) < DISPLAY_MAX_REFLECTANCE:
            raise UnusualInputError(
                f"the input's values are at most {dn_max:g} ({how}, reflectance at most {float(refl.max()):.3g}): "
                f"8-bit display values, not Sentinel-2 DNs; {expected.what} expects reflectance x 10000 (L1C/L2A "
                f"DNs) or float reflectance: use the product's own bands, or pass {OVERRIDE} to run it anyway")
