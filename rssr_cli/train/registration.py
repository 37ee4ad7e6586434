"""Registration and radiometric fit of a real pair's HR to its LR, chunk by chunk.

:func:`register_and_fit` warps the HR onto the chunk's HR grid, measures the misregistration against the LR by
phase correlation (:func:`phase_correlation`, numpy only) between the LR and the HR degraded with the model's own
operator, resamples the HR on a grid shifted by that amount, and fits ``LR = a * D(HR) + b`` per band to put the HR
on the LR's reflectance level (TOA vs BOA, spectral response, the display mapping of 8-bit HR). A chunk that cannot
be aligned raises :class:`ChunkRejected` with the reason the report shows.

Why phase correlation: LR and HR of a real pair come from different sensors, dates and georeferencing chains; a
constant offset of a fraction of an LR pixel is common and, left in, teaches the model to shift its output. The
whitened cross-power spectrum is insensitive to the radiometric differences between the two (gain, offset, haze) and
its peak gives the translation directly; evaluating the inverse DFT on a fine grid around the peak gives the
sub-pixel part (a parabola through three samples is biased by up to a third of a pixel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from rssr_cli.scene import Grid
from rssr_cli.train.prepare_options import PrepareOptions
from rssr_cli.train.reading import FULLY_VALID, Source, Warped

#: Gaussian low-pass applied to the whitened cross-power spectrum, in cycles per pixel.
LOWPASS_SIGMA = 0.15


@dataclass(frozen=True)
class Shift:
    """``moving(y, x) ~ reference(y - dy, x - dx)``: move ``moving`` by ``(-dy, -dx)`` to align it.

    ``peak`` is the height of the normalised correlation peak (1 for identical images up to a translation; near
    ``1/sqrt(pixels)`` for unrelated ones): a low peak means the two images share little structure.
    """

    dy: float
    dx: float
    peak: float

    @property
    def magnitude(self) -> float:
        return float(np.hypot(self.dy, self.dx))


def _fill(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = image.astype(np.float64, copy=True)
    mean = float(out[valid].mean()) if valid.any() else 0.0
    out[~valid] = mean
    return out - mean


def _dft_at(cross: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The inverse DFT of ``cross`` evaluated at arbitrary (sub-pixel) positions: a matrix-multiply upsampling
    around the peak (Guizar-Sicairos et al., 2008) that costs O(n * points) instead of an FFT of the upsampled size."""
    h, w = cross.shape
    ky = np.exp(2j * np.pi * np.outer(ys, np.fft.fftfreq(h)))
    kx = np.exp(2j * np.pi * np.outer(np.fft.fftfreq(w), xs))
    return np.real(ky @ cross @ kx) / (h * w)


def phase_correlation(reference: np.ndarray, moving: np.ndarray, valid: np.ndarray | None = None) -> Shift:
    """Translation of ``moving`` relative to ``reference`` (2-D arrays of one shape), in pixels.

    Invalid pixels are filled with the mean; a Hann window suppresses the wrap-around edges the FFT assumes.
    """
    if reference.shape != moving.shape or reference.ndim != 2:
        raise ValueError("phase_correlation needs two 2-D arrays of the same shape")
    if valid is None:
        valid = np.isfinite(reference) & np.isfinite(moving)
    h, w = reference.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    a = _fill(reference, valid) * window
    b = _fill(moving, valid) * window
    fa = np.fft.fft2(a)
    fb = np.fft.fft2(b)
    cross = fb * np.conj(fa)
    cross /= np.maximum(np.abs(cross), 1e-12)
    # Low-pass weights: frequencies near Nyquist are aliased in both images (area downsampling of real texture)
    # and pull the estimate towards whole pixels by up to 0.1 px; a Gaussian of sigma 0.15 cycles/px keeps the
    # error under 0.02 px on aliased test images.
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    weights = np.exp(-(fy**2 + fx**2) / (2 * LOWPASS_SIGMA**2))
    cross *= weights
    surface = np.real(np.fft.ifft2(cross)) / (weights.sum() / (h * w))
    iy, ix = np.unravel_index(int(np.argmax(surface)), surface.shape)
    peak = float(surface[iy, ix])
    dy = float(iy - h if iy > h / 2 else iy)
    dx = float(ix - w if ix > w / 2 else ix)
    # Two rounds of local upsampling: 1/20 px over +-1 px, then 1/400 px over +-0.05 px.
    for half, n in ((1.0, 41), (0.05, 41)):
        ys = dy + np.linspace(-half, half, n)
        xs = dx + np.linspace(-half, half, n)
        local = _dft_at(cross, ys, xs)
        jy, jx = np.unravel_index(int(np.argmax(local)), local.shape)
        dy, dx = float(ys[jy]), float(xs[jx])
        peak = max(peak, float(local[jy, jx]) / float(weights.sum() / (h * w)))
    return Shift(dy=float(dy), dx=float(dx), peak=peak)


#: Shifts below this (LR pixels) are left alone: resampling would blur more than it aligns.
NEGLIGIBLE_SHIFT = 0.02
#: After correcting the shift, the remaining shift must be below this (LR pixels), else registration failed.
MAX_RESIDUAL = 0.2
#: A chunk needs this fraction of LR pixels valid in both images to be measured at all.
MIN_VALID_OVERLAP = 0.25
#: Plausible gains of the per-band fit: outside, the "fit" explains a mismatch rather than a radiometric difference.
GAIN_RANGE = (0.2, 5.0)


class ChunkRejected(Exception):
    """A chunk left out of the patches; the message is the reason the report shows, ``kind`` the short name it is
    counted under (the message up to its first parenthesis unless given)."""

    def __init__(self, reason: str, *, kind: str | None = None) -> None:
        super().__init__(reason)
        self.kind = kind or reason.split("(")[0].strip()


def misregistration_hint(chunks: list[dict[str, Any]], max_shift: float) -> str | None:
    """What the chunks rejected as misregistered measured, and the ``--max-shift`` that would accept them (None when
    no chunk was): the figure a user needs to decide whether the offset is real (georeferencing) or a failure."""
    shifts = [c["shift_lr_px"] for c in chunks if c.get("rejection") == "misregistered" and "shift_lr_px" in c]
    if not shifts:
        return None
    sizes = [float(np.hypot(dy, dx)) for dy, dx in shifts]
    accept = math.ceil(max(sizes) + 0.5)
    if len(shifts) == 1:
        (dy, dx), = shifts
        found = f"measured shift (dy, dx) = ({dy:.1f}, {dx:.1f}) LR px, {sizes[0]:.2f}"
    else:
        dy, dx = np.median(np.asarray(shifts, dtype=float), axis=0)
        found = (f"measured shifts of {min(sizes):.2f}-{max(sizes):.2f} LR px in {len(shifts)} chunks (median "
                 f"(dy, dx) = ({dy:.1f}, {dx:.1f}))")
    return f"{found} > --max-shift {max_shift:g}; pass --max-shift {accept} to accept and correct it"


@dataclass(frozen=True)
class _Measured:
    """The HR on a chunk's HR grid, its shift against the LR, the HR degraded onto the LR grid (``sim``) and the
    LR pixels valid in both (``ok``)."""

    hr: Warped
    shift: Shift
    sim: np.ndarray
    ok: np.ndarray


def register_and_fit(hr: Source, chunk: Grid, lr: np.ndarray, lr_valid: np.ndarray, options: PrepareOptions,
                     info: dict[str, Any]) -> Warped:
    """The HR on the HR grid of ``chunk`` (an LR grid), aligned with ``lr`` and on its reflectance level.

    The measured shift, the residual after correcting it and the fits are recorded in ``info`` (the chunk's entry
    in the report). Raises :class:`ChunkRejected`.
    """
    scale = Fraction(options.scale)
    measured = _measure(hr, chunk, lr, lr_valid, scale, uncovered="no HR coverage")
    shift = measured.shift
    info["shift_lr_px"] = [round(shift.dy, 3), round(shift.dx, 3)]
    info["peak"] = round(shift.peak, 3)
    if shift.peak < options.min_peak:
        raise ChunkRejected(f"no common structure (correlation peak {shift.peak:.2f} < {options.min_peak:g}; "
                            "clouds, change between dates, or a wrong band map)")
    if shift.magnitude > options.max_shift:
        raise ChunkRejected(f"misregistered: measured shift (dy, dx) = ({shift.dy:.1f}, {shift.dx:.1f}) LR px, "
                            f"{shift.magnitude:.2f} > --max-shift {options.max_shift:g}", kind="misregistered")
    if shift.magnitude > NEGLIGIBLE_SHIFT:
        measured = _measure(hr, chunk.shifted(shift.dy, shift.dx), lr, lr_valid, scale,
                            uncovered="no HR coverage after the shift")
        residual = measured.shift
        info["residual_lr_px"] = [round(residual.dy, 3), round(residual.dx, 3)]
        if residual.magnitude > MAX_RESIDUAL:
            raise ChunkRejected(f"registration did not converge (residual {residual.magnitude:.2f} LR px)")
    return _fit_radiometry(measured, lr, hr.band_map.bands, options.min_r2, info)


def _measure(hr: Source, chunk: Grid, lr: np.ndarray, lr_valid: np.ndarray, scale: Fraction, *,
             uncovered: str) -> _Measured:
    """Warp the HR onto the HR grid of ``chunk`` and measure its shift against the LR (mean of the bands)."""
    warped = hr.average_onto(chunk, scale)
    if warped is None:
        raise ChunkRejected(uncovered)
    sim = _downsample(_fill_invalid(np.nan_to_num(warped.data), warped.valid), scale)
    ok = lr_valid & (_area_fraction(warped.valid, scale) >= FULLY_VALID)
    if ok.mean() < MIN_VALID_OVERLAP:
        raise ChunkRejected("too little valid overlap")
    shift = phase_correlation(lr[warped.present].mean(axis=0), sim.mean(axis=0), ok)
    return _Measured(warped, shift, sim, ok)


def _fit_radiometry(measured: _Measured, lr: np.ndarray, bands: tuple[str, ...], min_r2: float,
                    info: dict[str, Any]) -> Warped:
    """Map each HR band onto the LR's level with ``LR = a * D(HR) + b``; a poor or implausible fit rejects."""
    data = measured.hr.data.copy()
    fits = []
    for k, band in enumerate(measured.hr.present):
        a, b, r2 = fit_linear(lr[band], measured.sim[k], measured.ok)
        fits.append({"band": bands[band], "gain": round(a, 4), "offset": round(b, 5), "r2": round(r2, 4)})
        if r2 < min_r2 or not GAIN_RANGE[0] <= a <= GAIN_RANGE[1]:
            info["fit"] = fits
            raise ChunkRejected(f"radiometric fit {bands[band]}: gain {a:.2f}, R^2 {r2:.2f} "
                                f"(needs R^2 >= {min_r2:g}, gain {GAIN_RANGE[0]:g}..{GAIN_RANGE[1]:g})")
        data[k] = a * data[k] + b
    info["fit"] = fits
    return Warped(data, measured.hr.valid, measured.hr.present)


def fit_linear(lr: np.ndarray, sim: np.ndarray, valid: np.ndarray) -> tuple[float, float, float]:
    """Least squares ``lr = a * sim + b`` over valid pixels; returns (a, b, R^2)."""
    x = sim[valid].astype(np.float64)
    y = lr[valid].astype(np.float64)
    A = np.stack([x, np.ones_like(x)], axis=1)
    (a, b), *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - (a * x + b)
    var = y.var()
    r2 = 1.0 - resid.var() / var if var > 0 else 0.0
    return float(a), float(b), float(r2)


def _area_fraction(valid: np.ndarray, scale: Fraction) -> np.ndarray:
    """Fraction of each LR pixel's HR footprint that is valid: exact area averaging by repeating each HR pixel
    ``denominator`` times and averaging blocks of ``numerator`` (12.5x: repeat 2, average 25)."""
    v = np.repeat(np.repeat(valid.astype(np.float32), scale.denominator, 0), scale.denominator, 1)
    n = scale.numerator
    h, w = v.shape[0] // n, v.shape[1] // n
    return v[: h * n, : w * n].reshape(h, n, w, n).mean(axis=(1, 3))


def _fill_invalid(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Invalid pixels take their band's valid mean, so that the degradation's PSF does not smear NaN around."""
    out = x.copy()
    for c in range(out.shape[0]):
        vals = out[c][valid]
        out[c][~valid] = float(vals.mean()) if vals.size else 0.0
    return out


def _downsample(hr: np.ndarray, scale: Fraction) -> np.ndarray:
    """The model's own degradation (:func:`rssr_cli.degrade.downsample`) of an HR array onto the LR grid."""
    import torch

    from rssr_cli.degrade import downsample

    return downsample(torch.from_numpy(np.ascontiguousarray(hr, dtype=np.float32))[None], scale)[0].numpy()
