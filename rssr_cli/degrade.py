"""The Sentinel-2-like degradation operator: how a 10 m pixel sees the ground.

Training (``rssr train`` / ``rssr prepare``) makes LR inputs from real HR imagery with :func:`degrade`; the diffusion
method's consistency projection (:func:`project_consistent`) and evaluation use the deterministic part
:func:`downsample`. Sharing one operator is the point: "consistent with the LR" means "the operator the model was
trained against gives back the LR".

Public API (stable; other modules import these names):

- ``downsample(hr, scale) -> lr``: Gaussian PSF then exact area averaging; deterministic and linear.
- ``degrade(hr, scale, *, generator, noise_std=NOISE_STD, jitter=JITTER) -> lr``: ``downsample`` plus sensor noise and a
  small per-band gain jitter.
- ``upsample(lr, scale) -> hr``: bicubic onto the HR grid, pixel centres aligned as GDAL does.
- ``back_project(sr, lr, scale) -> sr'``: one step of ``sr + U(lr − D sr)``: the LR's 10 m content and band means,
  within the LR's noise, without amplifying it.
- ``project_consistent(sr, lr, scale, *, damping=0) -> sr'``: ``sr + D⁺(lr − D sr)``, so that ``downsample(sr') == lr``
  (exactly for ``damping`` 0, up to the LR's noise for a Tikhonov-damped inverse).
- ``psf_sigma(scale) -> float``: the PSF's standard deviation in HR pixels.

All functions take torch tensors (N, C, H, W) of reflectance on any device. ``scale`` is HR pixels per LR pixel, a
``Fraction`` or anything ``Fraction()`` accepts exactly (12.5 -> 25/2). The HR size must be a whole number of LR pixels:
``H / scale`` an integer (at 12.5: H a multiple of 25).

The operator is separable: ``D x = D_h x D_wᵀ`` with one (m × n) matrix per axis, ``D_axis = A G`` (A: area overlap of
HR pixels with LR pixels, G: discrete Gaussian with reflected borders). Matrices are built in float64 once per (size,
scale) and cached; applying them is two small matmuls, cheap next to any network on the same tile.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "JITTER",
    "MTF_NYQUIST",
    "NOISE_STD",
    "back_project",
    "degrade",
    "downsample",
    "project_consistent",
    "psf_sigma",
    "upsample",
]

#: System MTF of a Sentinel-2 10 m band at the LR Nyquist frequency (pixel box included). The S2 MSI image-quality
#: reports give roughly 0.25-0.35 for the 10 m bands; 0.3 is the middle.
MTF_NYQUIST = 0.3

#: Standard deviation of the additive sensor noise in reflectance. S2 10 m bands have SNR ~ 150-200 at a reference
#: reflectance of ~0.1-0.3 (so ~0.001-0.002); the HR imagery brings its own noise, so we add a little on top.
NOISE_STD = 0.002

#: Half-width of the uniform per-image, per-band multiplicative gain jitter (cross-sensor calibration differences).
JITTER = 0.02


def _as_fraction(scale: Fraction | float | int | str) -> Fraction:
    s = Fraction(scale).limit_denominator(1000)
    if s <= 1:
        raise ValueError(f"scale must be greater than 1, got {float(s):g}")
    return s


def psf_sigma(scale: Fraction | float) -> float:
    """Standard deviation (in HR pixels) of the Gaussian PSF that gives the S2 system MTF at Nyquist.

    Why this sigma: the whole system's MTF at the LR Nyquist frequency f_N = 1/(2p) (p = LR pixel) is about 0.3. The
    LR pixel's own box (the area averaging below) contributes sinc(p f_N) = sin(π/2)/(π/2) = 2/π ≈ 0.637, so the
    optics + motion + detector-crosstalk part, modelled as a Gaussian with MTF exp(−2π²σ²f²), must give
    0.3 / 0.637 ≈ 0.471 at f_N: σ = p · sqrt(−2 ln(0.471)) / π ≈ 0.39 p, i.e. ≈ 4.9 HR pixels at 12.5×.
    """
    s = _as_fraction(scale)
    box = 2.0 / math.pi
    gauss = MTF_NYQUIST / box
    sigma_lr = math.sqrt(-2.0 * math.log(gauss)) / math.pi
    return sigma_lr * float(s)


@lru_cache(maxsize=64)
def _gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """(n × n) discrete Gaussian blur with symmetric (half-sample) reflection at the borders; rows sum to 1."""
    radius = max(1, int(math.ceil(4.0 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    g = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        j = i + offsets
        # Reflect indices into [0, n) the way numpy's "symmetric" padding does (edge pixel repeated).
        period = 2 * n
        j = np.mod(j, period)
        j = np.where(j >= n, period - 1 - j, j)
        np.add.at(g[i], j, kernel)
    return g


@lru_cache(maxsize=64)
def _area_matrix(n: int, scale: Fraction) -> np.ndarray:
    """(m × n) exact area averaging: LR pixel i covers HR [i·s, (i+1)·s); weight = overlap of HR pixel j / s."""
    m_frac = Fraction(n) / scale
    if m_frac.denominator != 1:
        raise ValueError(f"HR size {n} is not a whole number of LR pixels at scale {float(scale):g} "
                         f"(it must be a multiple of {scale.numerator})")
    m = int(m_frac)
    a = np.zeros((m, n), dtype=np.float64)
    for i in range(m):
        lo, hi = i * scale, (i + 1) * scale
        for j in range(math.floor(lo), math.ceil(hi)):
            overlap = min(hi, Fraction(j + 1)) - max(lo, Fraction(j))
            if overlap > 0:
                a[i, j] = float(overlap / scale)
    return a


@lru_cache(maxsize=64)
def _operator(n: int, scale: Fraction) -> np.ndarray:
    """D_axis = A G, (m × n), float64."""
    return _area_matrix(n, scale) @ _gaussian_matrix(n, psf_sigma(scale))


@lru_cache(maxsize=64)
def _pseudo_inverse(n: int, scale: Fraction, damping: float = 0.0) -> np.ndarray:
    """D_axis⁺ = Dᵀ (D Dᵀ + λ I)⁻¹, (n × m). λ = 0: the minimum-norm right inverse, so D D⁺ = I exactly (D has full
    row rank); λ > 0: Tikhonov-damped, which stops LR noise being amplified through the small singular values of D."""
    d = _operator(n, scale)
    return d.T @ np.linalg.inv(d @ d.T + damping * np.eye(d.shape[0]))


def _matrix(table: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    dtype = like.dtype if like.dtype in (torch.float32, torch.float64) else torch.float32
    return torch.from_numpy(table).to(device=like.device, dtype=dtype)


def _apply(x: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
    """rows @ x @ colsᵀ over the last two axes, in float32 at least."""
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    out = _matrix(rows, work) @ work @ _matrix(cols, work).transpose(0, 1)
    return out.to(x.dtype) if x.dtype.is_floating_point else out


def downsample(hr: torch.Tensor, scale: Fraction | float) -> torch.Tensor:
    """The deterministic S2-like operator D: Gaussian PSF (:func:`psf_sigma`) then exact area averaging.

    (N, C, H, W) -> (N, C, H/scale, W/scale). Linear, preserves constants and the mean over each LR pixel's footprint
    of the blurred image. Borders are reflected, so a tile's LR edge pixels depend only on the tile's own pixels.
    """
    s = _as_fraction(scale)
    h, w = hr.shape[-2:]
    return _apply(hr, _operator(h, s), _operator(w, s))


def degrade(
    hr: torch.Tensor,
    scale: Fraction | float,
    *,
    generator: torch.Generator,
    noise_std: float = NOISE_STD,
    jitter: float = JITTER,
) -> torch.Tensor:
    """A synthetic LR for training: ``downsample(hr)`` × a per-image, per-band gain in [1 − jitter, 1 + jitter] plus
    Gaussian sensor noise of ``noise_std`` reflectance.

    ``generator`` must live on ``hr``'s device; the same generator state gives the same LR. The gain models
    calibration differences between the HR sensor and S2 (the model should not copy the HR sensor's radiometry), the
    noise stops the model from treating the LR as noise-free.
    """
    lr = downsample(hr, scale)
    n, c = lr.shape[:2]
    if jitter > 0:
        gain = 1.0 + jitter * (2.0 * torch.rand((n, c, 1, 1), generator=generator, device=lr.device) - 1.0)
        lr = lr * gain.to(lr.dtype)
    if noise_std > 0:
        lr = lr + noise_std * torch.randn(lr.shape, generator=generator, device=lr.device).to(lr.dtype)
    return lr


def upsample(lr: torch.Tensor, scale: Fraction | float) -> torch.Tensor:
    """Bicubic onto the HR grid, ``align_corners=False`` (GDAL's pixel-centre convention), the same as
    :class:`rssr_cli.methods.BicubicUpsampler`. (N, C, h, w) -> (N, C, h·scale, w·scale); h·scale must be whole."""
    s = _as_fraction(scale)
    h, w = lr.shape[-2:]
    size = (h * s, w * s)
    if size[0].denominator != 1 or size[1].denominator != 1:
        raise ValueError(f"LR size {h}x{w} times scale {float(s):g} is not a whole number of HR pixels "
                         f"(sizes must be multiples of {s.denominator})")
    work = lr if lr.dtype in (torch.float32, torch.float64) else lr.float()
    return F.interpolate(work, size=(int(size[0]), int(size[1])), mode="bicubic", align_corners=False)


def back_project(sr: torch.Tensor, lr: torch.Tensor, scale: Fraction | float) -> torch.Tensor:
    """One step of iterative back-projection (Irani & Peleg): ``sr + U(lr − D sr)`` with U the bicubic
    :func:`upsample`.

    Why one step with a smooth U rather than the exact projection: the exact ``D⁺`` inverts the PSF blur, so the LR's
    per-pixel noise comes back amplified as a 10 m pattern of its own hue in every band (colour speckle); U never
    sharpens, so one step corrects band means and the 10 m content to within the LR's noise and leaves the detail
    alone. Iterating converges to the exact projection and brings the amplified noise back.
    """
    s = _as_fraction(scale)
    if (Fraction(sr.shape[-2]) / s, Fraction(sr.shape[-1]) / s) != tuple(lr.shape[-2:]):
        raise ValueError(f"LR shape {tuple(lr.shape[-2:])} does not match SR shape {tuple(sr.shape[-2:])} at scale "
                         f"{float(s):g}")
    return sr + upsample(lr.to(sr.dtype) - downsample(sr, s), s)


def project_consistent(sr: torch.Tensor, lr: torch.Tensor, scale: Fraction | float, *,
                       damping: float = 0.0) -> torch.Tensor:
    """Replace the low frequencies of ``sr`` by those of ``lr``: ``sr + D⁺ (lr − D sr)``.

    With per-axis pseudo-inverses, ``D D⁺ = I``, so ``downsample(result) == lr`` up to float rounding; the correction
    lies in the row space of D (PSF-blurred LR-pixel footprints), so the high frequencies of ``sr`` — what the model
    adds — are untouched. ``damping`` λ > 0 uses the Tikhonov inverse ``Dᵀ (D Dᵀ + λ I)⁻¹`` per axis instead (DDNM+'s
    remedy for a noisy LR): consistency then holds only up to the LR's noise, which is not pushed back through the
    inverse of the blur. Computed in float64 and returned in ``sr``'s dtype.
    """
    s = _as_fraction(scale)
    h, w = sr.shape[-2:]
    if (Fraction(h) / s, Fraction(w) / s) != tuple(lr.shape[-2:]):
        raise ValueError(f"LR shape {tuple(lr.shape[-2:])} does not match SR shape {(h, w)} at scale {float(s):g}")
    sr64 = sr.double()
    residual = lr.double() - _apply(sr64, _operator(h, s), _operator(w, s))
    correction = _apply(residual, _pseudo_inverse(h, s, float(damping)), _pseudo_inverse(w, s, float(damping)))
    return (sr64 + correction).to(sr.dtype)
