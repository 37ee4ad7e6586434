"""Super-resolution metrics as pure functions of tensors: per-patch values, no I/O, no model.

Used by ``rssr evaluate`` (:mod:`rssr_cli.evaluate`) and by the validation inside ``rssr train``; neither owns them.
All on reflectance (N, C, H, W) on the HR grid, over the bands valid in each patch (``valid`` (N, C) bool: a masked
NIR is left out).

- ``psnr``: 10 log10(1 / MSE), peak 1.0 reflectance (as opensr-test's IPSNR), averaged over patches.
- ``ssim``: Gaussian-window SSIM (11 px, sigma 1.5, K1 0.01, K2 0.03; pytorch-msssim) per band with L = the HR
  patch's range.
- ``consistency_l1``: mean |D(SR) - LR| with D the model's degradation (:func:`rssr_cli.degrade.downsample`):
  does the SR, seen by a 10 m sensor, give back the LR?
- ``sam_deg``: mean spectral angle between SR and HR pixel spectra, degrees.
- ``hf_ratio``: energy of SR's high frequencies (x - U(D(x)), what a 10 m pixel cannot see) over HR's. 1 is the
  truth's amount of detail; bicubic is near 0; above 1 is invented texture.
- ``mean_shift``: per band mean(SR - HR): radiometric bias.
- Detail and colour of the added detail (issue 12's definitions; B02, B03, B04 are the first three bands). With
  E_a,b(x) the mean energy of the band-pass G_a(x) - G_b(x) (Gaussian blurs of sigma a and b HR pixels, G_0 = the
  image), ``lum = (B02 + B03 + B04) / 3`` and ``chroma = (B04 - B03, B02 - B03)``:

  - ``detail = E_0,2(lum SR) / E_0,2(lum HR)``: how much of the real finest (0.8-3 m) luminance detail is there;
  - ``chroma_excess = [E_2,6(chroma SR) / E_2,6(chroma HR)] / [E_2,6(lum SR) / E_2,6(lum HR)]``: colour detail
    relative to luminance detail, against the truth's; 1 is right, above 1 is colour speckle;
  - ``colour_ratio(X) = E_2,6(chroma(X - bicubic)) / E_2,6(lum(X - bicubic))``: how colourful the detail X adds over
    bicubic is (needs no reference, so it scores real scenes too; real 0.8 m imagery: 0.07-0.25);
  - ``speckle = colour_ratio(SR) / colour_ratio(HR)``: 1 when the added detail is as colourful as real detail.

  These are ratios of energies summed over all patches (:func:`detail_and_colour`), not means of per-patch ratios,
  so that flat patches do not dominate; a ratio with a zero denominator (bicubic adds no detail) is None.
- ``improvement`` / ``omission`` / ``hallucination``: opensr-test's correctness shares (Aybar et al. 2024),
  reimplemented without its dependencies. Per pixel, with nd(x, y) = |x - y| / |x + y| averaged over bands:
  d_ref = nd(U(LR), HR), d_im = nd(SR, HR) / d_ref, d_om = nd(SR, U(LR)) / d_ref; H = d_im + d_om - 1;
  improvement = d_im + d_om (1 - exp(-l H)), omission = d_om + d_im (1 - exp(-l H)),
  hallucination = exp(-l d_im d_om) with l = 0.05; a softmin (T = 0.25) over the three gives each pixel's shares,
  averaged over the pixels where any distance exceeds the 75th percentile of d_ref ("auto" gradient threshold). As in
  opensr-test, SR is first histogram-matched to HR per band (its spatial alignment step is not reproduced).
  Differences from opensr-test, on purpose: scored on the 0.8 m HR grid itself (opensr-test needs an integer scale
  and would resample SR and HR to 1.0 m), U is bicubic (opensr-test: bilinear), and no border mask is cut (patches
  are already interior).
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytorch_msssim
import torch

from rssr_cli.degrade import downsample, upsample
from rssr_cli.filters import gaussian_blur

#: The per-patch metrics :func:`score` returns (besides the per-band sums behind ``mean_shift``).
METRICS: tuple[str, ...] = ("psnr", "ssim", "consistency_l1", "sam_deg", "hf_ratio", "improvement", "omission",
                            "hallucination")

#: The ratio metrics :func:`detail_and_colour` forms from energies summed over patches.
COLOUR_METRICS: tuple[str, ...] = ("detail", "chroma_excess", "colour_ratio", "speckle")

#: Band-passes (sigma in HR pixels): the finest detail, and the scale of a 10 m pixel's colour blobs.
FINE_BAND = (0.0, 2.0)
COLOUR_BAND = (2.0, 6.0)

#: opensr-test's correctness constants (its Config defaults: im/om/ha scores 0.05, softmin temperature 0.25,
#: "nd" distance, gradient threshold "auto" = 75th percentile of d_ref).
CORRECTNESS_LAMBDA = 0.05
CORRECTNESS_TEMPERATURE = 0.25
CORRECTNESS_QUANTILE = 0.75


def _band_weights(valid: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return valid.to(like.dtype)[:, :, None, None].expand_as(like)


def psnr(sr: torch.Tensor, hr: torch.Tensor, valid: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-patch PSNR (N,) over valid bands, peak ``data_range``."""
    w = _band_weights(valid, hr)
    mse = ((sr - hr) ** 2 * w).sum(dim=(1, 2, 3)) / w.sum(dim=(1, 2, 3)).clamp_min(1)
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-12))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The SSIM window for one channel (1, 1, 1, size) in float64: pytorch-msssim's own is float32, and its ~1e-7 error
    in the weights' sum, magnified by the variance's E[x^2] - E[x]^2, moves SSIM by up to ~1e-4."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum())[None, None, None, :]


def ssim(sr: torch.Tensor, hr: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-patch SSIM (N,), mean over valid bands; L = the HR patch's value range (valid bands).

    pytorch-msssim computes the SSIM of each band (passed as its own one-channel image, valid convolution). It takes
    one data range for the whole batch, so each patch is divided by its own L instead: SSIM does not change when the
    images and L are scaled together (every term of the formula scales by L squared).
    """
    x, y = sr.double(), hr.double()
    n, c, h, w = x.shape
    band_ok = valid.bool()
    # L over the valid bands (all bands when none is valid; 1 for a constant patch).
    in_range = torch.where(band_ok.any(1, keepdim=True), band_ok, True)[:, :, None, None].expand_as(y)
    L = y.masked_fill(~in_range, -math.inf).amax((1, 2, 3)) - y.masked_fill(~in_range, math.inf).amin((1, 2, 3))
    L = torch.where(L > 0, L, 1.0)[:, None, None, None]
    per_band = pytorch_msssim.ssim((x / L).reshape(n * c, 1, h, w), (y / L).reshape(n * c, 1, h, w), data_range=1.0,
                                   size_average=False, win=_gaussian_window(), K=(0.01, 0.03)).reshape(n, c)
    weights = band_ok.double()
    return ((per_band * weights).sum(1) / weights.sum(1).clamp_min(1)).float()


def consistency_l1(sr: torch.Tensor, lr: torch.Tensor, valid: torch.Tensor, scale: Fraction) -> torch.Tensor:
    """Per-patch mean |D(SR) - LR| over valid bands."""
    d = (downsample(sr, scale) - lr).abs()
    w = _band_weights(valid, d)
    return (d * w).sum(dim=(1, 2, 3)) / w.sum(dim=(1, 2, 3)).clamp_min(1)


def spectral_angle(sr: torch.Tensor, hr: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-patch mean spectral angle (degrees) between SR and HR spectra over valid bands."""
    w = valid.to(sr.dtype)[:, :, None, None]
    dot = (sr * hr * w).sum(1)
    norm = (sr * sr * w).sum(1).sqrt() * (hr * hr * w).sum(1).sqrt()
    cos = (dot / norm.clamp_min(1e-12)).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos)).mean(dim=(1, 2))


def high_frequency(x: torch.Tensor, scale: Fraction) -> torch.Tensor:
    """What a 10 m pixel cannot see: x - U(D(x))."""
    return x - upsample(downsample(x, scale), scale)


def hf_ratio(sr: torch.Tensor, hr: torch.Tensor, valid: torch.Tensor, scale: Fraction) -> torch.Tensor:
    """Per-patch energy of SR's high frequencies over HR's (valid bands)."""
    w = _band_weights(valid, hr)
    e_sr = (high_frequency(sr, scale) ** 2 * w).sum(dim=(1, 2, 3))
    e_hr = (high_frequency(hr, scale) ** 2 * w).sum(dim=(1, 2, 3))
    return e_sr / e_hr.clamp_min(1e-12)


def histogram_match(source: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image, per-band exact histogram matching of ``source`` to ``reference`` (same shape), by ranks."""
    out = torch.empty_like(source)
    n, c = source.shape[:2]
    for i in range(n):
        for b in range(c):
            s = source[i, b].reshape(-1)
            r = torch.sort(reference[i, b].reshape(-1)).values
            order = torch.argsort(s)
            matched = torch.empty_like(s)
            matched[order] = r
            out[i, b] = matched.reshape(source.shape[-2:])
    return out


def _nd(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    d = (x - y).abs() / (x + y).abs().clamp_min(1e-8)
    return (d * w).sum(1) / w.sum(1).clamp_min(1)


def correctness(sr: torch.Tensor, lr: torch.Tensor, hr: torch.Tensor, valid: torch.Tensor, scale: Fraction,
                *, harmonize: bool = True) -> dict[str, torch.Tensor]:
    """opensr-test's improvement / omission / hallucination shares per patch (see the module docstring)."""
    lr_up = upsample(lr, scale)
    x = histogram_match(sr, hr) if harmonize else sr
    w = valid.to(sr.dtype)[:, :, None, None].expand_as(sr)
    d_ref = _nd(lr_up, hr, w)
    d_im = _nd(x, hr, w)
    d_om = _nd(x, lr_up, w)
    out = {"improvement": [], "omission": [], "hallucination": []}
    lam, temp = CORRECTNESS_LAMBDA, CORRECTNESS_TEMPERATURE
    for i in range(sr.shape[0]):
        ref = d_ref[i].reshape(-1)
        k = max(1, int(CORRECTNESS_QUANTILE * ref.numel()))
        thr = ref.kthvalue(k).values
        mask = (d_ref[i] > thr) | (d_im[i] > thr) | (d_om[i] > thr)
        if not mask.any():
            for key in out:
                out[key].append(float("nan"))
            continue
        r = d_ref[i][mask].clamp_min(1e-8)
        im_r, om_r = d_im[i][mask] / r, d_om[i][mask] / r
        h = im_r + om_r - 1
        scores = torch.stack([im_r + om_r * (1 - torch.exp(-h * lam)),
                              om_r + im_r * (1 - torch.exp(-h * lam)),
                              torch.exp(-im_r * om_r * lam)])
        shares = torch.softmax(-scores / temp, dim=0)
        out["improvement"].append(float(shares[0].mean()))
        out["omission"].append(float(shares[1].mean()))
        out["hallucination"].append(float(shares[2].mean()))
    return {k: torch.tensor(v) for k, v in out.items()}


def band_energy(x: torch.Tensor, band: tuple[float, float]) -> torch.Tensor:
    """Per-patch mean energy (N,) of the band-pass ``G_a(x) - G_b(x)`` over channels and pixels."""
    a, b = band
    work = x.double()
    return ((gaussian_blur(work, a) - gaussian_blur(work, b)) ** 2).mean(dim=(1, 2, 3))


def luminance(x: torch.Tensor) -> torch.Tensor:
    """(B02 + B03 + B04) / 3, (N, 1, H, W): the first three bands are B02, B03, B04."""
    return x[:, :3].mean(dim=1, keepdim=True)


def chroma(x: torch.Tensor) -> torch.Tensor:
    """(B04 - B03, B02 - B03), (N, 2, H, W): colour without brightness."""
    return torch.stack([x[:, 2] - x[:, 1], x[:, 0] - x[:, 1]], dim=1)


def colour_energies(x: torch.Tensor, reference: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-patch energies behind the colour metrics: of ``x`` itself, or of what ``x`` adds over ``reference``."""
    d = x if reference is None else x - reference
    return {"lum_fine": band_energy(luminance(d), FINE_BAND), "lum": band_energy(luminance(d), COLOUR_BAND),
            "chroma": band_energy(chroma(d), COLOUR_BAND)}


def colour_ratio(x: torch.Tensor, lr_up: torch.Tensor) -> float | None:
    """``colour_ratio(X)`` over a batch: colour over luminance energy of what ``x`` adds to bicubic ``lr_up``."""
    e = colour_energies(x, lr_up)
    lum = float(e["lum"].sum())
    return float(e["chroma"].sum()) / lum if lum > 0 else None


def detail_and_colour(sums: dict[str, torch.Tensor | float]) -> dict[str, float | None]:
    """The :data:`COLOUR_METRICS` from energies summed over patches (the ``_e_*`` entries of :func:`score`)."""
    def ratio(num: float, den: float) -> float | None:
        return num / den if den > 0 and math.isfinite(num / den) else None

    e = {k[3:]: float(v) for k, v in sums.items() if k.startswith("_e_")}
    cr_sr = ratio(e["add_chroma"], e["add_lum"])
    cr_hr = ratio(e["true_chroma"], e["true_lum"])
    lum_ratio = ratio(e["sr_lum"], e["hr_lum"])
    chroma_ratio = ratio(e["sr_chroma"], e["hr_chroma"])
    return {
        "detail": ratio(e["sr_lum_fine"], e["hr_lum_fine"]),
        "chroma_excess": ratio(chroma_ratio, lum_ratio) if None not in (chroma_ratio, lum_ratio) else None,
        "colour_ratio": cr_sr,
        "speckle": ratio(cr_sr, cr_hr) if None not in (cr_sr, cr_hr) else None,
    }


def score(sr: torch.Tensor, lr: torch.Tensor, hr: torch.Tensor, valid: torch.Tensor,
          scale: Fraction) -> dict[str, torch.Tensor]:
    """Every metric for a batch, per patch (tensors (N,)), plus per-band sums for the mean shift."""
    sr, lr, hr = sr.float(), lr.float(), hr.float()
    valid = valid.bool()
    out = {
        "psnr": psnr(sr, hr, valid),
        "ssim": ssim(sr, hr, valid),
        "consistency_l1": consistency_l1(sr, lr, valid, scale),
        "sam_deg": spectral_angle(sr, hr, valid),
        "hf_ratio": hf_ratio(sr, hr, valid, scale),
        **correctness(sr, lr, hr, valid, scale),
    }
    out["_shift_sum"] = ((sr - hr).mean(dim=(2, 3)) * valid).sum(0)
    out["_shift_n"] = valid.sum(0).float()
    # Energies for the colour metrics, summed by the caller (B02-B04: always valid in the data rssr prepares).
    out.update(colour_sums(sr, hr, upsample(lr, scale)))
    return out


def colour_sums(sr: torch.Tensor, hr: torch.Tensor, lr_up: torch.Tensor) -> dict[str, torch.Tensor]:
    """The batch's energies behind :data:`COLOUR_METRICS` (``_e_*`` keys, summed over patches): what
    :func:`detail_and_colour` turns into ratios once summed over every batch."""
    sums = {}
    for prefix, energies in (("sr", colour_energies(sr)), ("hr", colour_energies(hr)),
                             ("add", colour_energies(sr, lr_up)), ("true", colour_energies(hr, lr_up))):
        sums.update({f"_e_{prefix}_{k}": v.sum() for k, v in energies.items()})
    return sums
