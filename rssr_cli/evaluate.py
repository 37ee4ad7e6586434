"""Score super-resolution against HR ground truth: metrics as data, no printing.

:func:`evaluate` runs up to three methods on the same LR/HR patches (a patch cache, or an archive prepared on the
fly, real pairs or HR with synthetic LR) and returns an :class:`Evaluation`:

- ``lr_start``: the model with its LR-start sampler (the weights file's sampler defaults, or ``steps``/``start``);
- ``pure_noise``: the same model with DDIM from pure noise in ``noise_steps`` (100) steps, the classic sampler the
  LR start is meant to beat in speed without losing quality;
- ``bicubic``: the baseline.

Metrics, all on reflectance, on the HR grid, over the bands valid in each patch (a masked NIR is left out):

- ``psnr``: 10 log10(1 / MSE), peak 1.0 reflectance (as opensr-test's IPSNR), averaged over patches.
- ``ssim``: Gaussian-window SSIM (11 px, sigma 1.5, K1 0.01, K2 0.03) per band with L = the HR patch's range.
- ``consistency_l1``: mean |D(SR) - LR| with D the model's degradation (:func:`rssr_cli.degrade.downsample`):
  does the SR, seen by a 10 m sensor, give back the LR?
- ``sam_deg``: mean spectral angle between SR and HR pixel spectra, degrees.
- ``hf_ratio``: energy of SR's high frequencies (x - U(D(x)), what a 10 m pixel cannot see) over HR's. 1 is the
  truth's amount of detail; bicubic is near 0; above 1 is invented texture.
- ``mean_shift``: per band mean(SR - HR): radiometric bias.
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
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rssr_cli.errors import DataError, UsageError

METHODS: tuple[str, ...] = ("lr_start", "pure_noise", "bicubic")
METRICS: tuple[str, ...] = ("psnr", "ssim", "consistency_l1", "sam_deg", "hf_ratio", "improvement", "omission",
                            "hallucination")

#: opensr-test's correctness constants (its Config defaults: im/om/ha scores 0.05, softmin temperature 0.25,
#: "nd" distance, gradient threshold "auto" = 75th percentile of d_ref).
CORRECTNESS_LAMBDA = 0.05
CORRECTNESS_TEMPERATURE = 0.25
CORRECTNESS_QUANTILE = 0.75

Progress = Callable[[int, int, str], None]


# --------------------------------------------------------------------------------------------------------- metrics


def _band_weights(valid: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return valid.to(like.dtype)[:, :, None, None].expand_as(like)


def psnr(sr: torch.Tensor, hr: torch.Tensor, valid: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-patch PSNR (N,) over valid bands, peak ``data_range``."""
    w = _band_weights(valid, hr)
    mse = ((sr - hr) ** 2 * w).sum(dim=(1, 2, 3)) / w.sum(dim=(1, 2, 3)).clamp_min(1)
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-12))


def _gaussian_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    return g


def ssim(sr: torch.Tensor, hr: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-patch SSIM (N,), mean over valid bands; L = the HR patch's value range (valid bands)."""
    x, y = sr.double(), hr.double()
    n, c = x.shape[:2]
    g = _gaussian_window(device=x.device)
    kx = g[None, None, None, :].repeat(c, 1, 1, 1)
    ky = g[None, None, :, None].repeat(c, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kx, groups=c), ky, groups=c)

    w = valid.bool()
    ranges = []
    for i in range(n):
        v = y[i][w[i]] if w[i].any() else y[i]
        ranges.append(float(v.max() - v.min()) or 1.0)
    L = torch.tensor(ranges, dtype=torch.float64, device=x.device)[:, None, None, None]
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx**2
    syy = blur(y * y) - my**2
    sxy = blur(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    per_band = smap.mean(dim=(2, 3))
    wf = w.double()
    return ((per_band * wf).sum(1) / wf.sum(1).clamp_min(1)).float()


def consistency_l1(sr: torch.Tensor, lr: torch.Tensor, valid: torch.Tensor, scale: Fraction) -> torch.Tensor:
    """Per-patch mean |D(SR) - LR| over valid bands."""
    from rssr_cli.degrade import downsample

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
    from rssr_cli.degrade import downsample, upsample

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
    from rssr_cli.degrade import upsample

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
    return out


# ------------------------------------------------------------------------------------------------------ evaluation


@dataclass
class Evaluation:
    """Per-method metrics (means over patches; ``mean_shift`` per band) and what was evaluated."""

    methods: dict[str, dict[str, Any]]
    patches: int
    bands: tuple[str, ...]
    scale: str
    data: str
    weights: str | None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bands"] = list(self.bands)
        return d

    def table(self) -> str:
        """A plain-text table (the CLI prints it; the library does not)."""
        names = list(self.methods)
        rows = [("metric", *names)]
        for m in METRICS:
            rows.append((m, *(_fmt(self.methods[n].get(m)) for n in names)))
        for b, band in enumerate(self.bands):
            rows.append((f"mean_shift {band}", *(_fmt((self.methods[n].get("mean_shift") or {}).get(band), 4)
                                                 for n in names)))
        rows.append(("seconds", *(_fmt(self.methods[n].get("seconds"), 1) for n in names)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
                 for r in rows]
        header = f"{self.patches} patches ({', '.join(self.bands)}, x{float(Fraction(self.scale)):g}) from {self.data}"
        return "\n".join([header, lines[0], "-" * len(lines[0]), *lines[1:]])


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def _load_data(data: str | Path, prepare_options):
    from rssr_cli.train.archive import PrepareOptions, prepare_archive
    from rssr_cli.patches import load_cache

    p = Path(data)
    if p.suffix == ".npz":
        return load_cache(p)
    return prepare_archive(p, options=prepare_options or PrepareOptions()).cache


def evaluate(
    data: str | Path,
    weights: str | Path | None = None,
    *,
    methods: Sequence[str] = METHODS,
    steps: int | None = None,
    start: float | None = None,
    noise_steps: int = 100,
    consistency: bool | None = None,
    seed: int = 0,
    device: str = "auto",
    max_patches: int | None = None,
    batch_size: int = 8,
    prepare_options=None,
    progress: Progress | None = None,
) -> Evaluation:
    """Score ``methods`` on the patches of ``data`` (a ``.npz`` cache or an archive, prepared with
    ``prepare_options``). ``weights`` is required for the model methods. Deterministic for a given seed and device."""
    import time

    from rssr_cli.degrade import project_consistent, upsample

    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UsageError(f"unknown method(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(METHODS)}")
    cache = _load_data(data, prepare_options)
    scale = cache.scale
    n = len(cache) if max_patches is None else min(len(cache), max_patches)
    if n == 0:
        raise DataError(f"{data}: no patches to evaluate")
    loaded = None
    settings: dict[str, Any] = {"seed": seed}
    if any(m != "bicubic" for m in methods):
        from rssr_cli.diffusion_method import resolve_device
        from rssr_cli.weights import load_weights

        if weights is None:  # the shipped model; a clear WeightsError when it is missing
            from rssr_cli.weights import default_weights_path

            weights = default_weights_path()
        dev = resolve_device(device)
        loaded = load_weights(weights, device=dev)
        if tuple(loaded.config.bands) != cache.bands:
            raise DataError(f"the data's bands {', '.join(cache.bands)} differ from the model's "
                            f"{', '.join(loaded.config.bands)}")
        if loaded.config.scale != scale:
            raise DataError(f"the data's scale {scale} differs from the model's {loaded.config.scale}")
        sampler = loaded.config.sampler
        settings.update(lr_start_steps=steps or sampler.steps, start=start if start is not None else sampler.start,
                        noise_steps=min(noise_steps, loaded.config.schedule.timesteps),
                        consistency=sampler.consistency if consistency is None else consistency, device=dev.type)
    sums: dict[str, dict[str, Any]] = {m: {} for m in methods}
    timing = {m: 0.0 for m in methods}
    total_batches = math.ceil(n / batch_size) * len(methods)
    done = 0
    for i in range(0, n, batch_size):
        idx = np.arange(i, min(n, i + batch_size))
        lr_np, hr_np, valid_np = cache.batch(idx)
        lr, hr, valid = torch.from_numpy(lr_np), torch.from_numpy(hr_np), torch.from_numpy(valid_np)
        for m in methods:
            t0 = time.perf_counter()
            if m == "bicubic":
                sr = upsample(lr, scale)
            else:
                sr = _model_sr(m, loaded, lr, idx, settings, seed)
                if settings["consistency"]:
                    sr = project_consistent(sr, lr, scale)
            timing[m] += time.perf_counter() - t0
            s = score(sr, lr, hr, valid, scale)
            acc = sums[m]
            for k, v in s.items():
                if k.startswith("_"):
                    acc[k] = acc.get(k, 0) + v
                else:
                    acc.setdefault(k, []).append(v)
            done += 1
            if progress is not None:
                progress(done, total_batches, m)
    results: dict[str, dict[str, Any]] = {}
    for m in methods:
        acc = sums[m]
        r: dict[str, Any] = {}
        for k in METRICS:
            v = torch.cat(acc[k])
            v = v[torch.isfinite(v)]
            r[k] = float(v.mean()) if v.numel() else None
        shift = acc["_shift_sum"] / acc["_shift_n"].clamp_min(1)
        r["mean_shift"] = {b: (float(shift[j]) if acc["_shift_n"][j] > 0 else None)
                           for j, b in enumerate(cache.bands)}
        r["seconds"] = timing[m]
        results[m] = r
    return Evaluation(methods=results, patches=n, bands=cache.bands, scale=str(scale), data=str(data),
                      weights=loaded.name if loaded is not None else None, settings=settings)


def _model_sr(method: str, loaded, lr: torch.Tensor, idx: np.ndarray, settings: dict[str, Any],
              seed: int) -> torch.Tensor:
    """SR of a batch with the loaded model: LR-start (positional noise, as in ``rssr upscale``) or pure-noise DDIM."""
    from rssr_cli.degrade import upsample
    from rssr_cli.diffusion import NoiseSchedule, ddim_sample, lr_start_sample

    model, config = loaded.model, loaded.config
    dev = next(model.parameters()).device
    schedule = NoiseSchedule.from_config(config.schedule)
    lr_up = upsample(lr.to(dev), config.scale)
    gen = torch.Generator(device=dev).manual_seed(seed * 1_000_003 + int(idx[0]))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else _null()
    with torch.no_grad(), autocast:
        priors = model.prior(lr_up)

        def denoiser(x_t, t, cond):
            return model(x_t, t, cond, priors=priors)

        if method == "lr_start":
            x0 = lr_start_sample(denoiser, schedule, lr_up, steps=settings["lr_start_steps"],
                                 start=settings["start"], noise=gen, prediction=config.prediction)
        else:
            x0 = ddim_sample(denoiser, schedule, lr_up, steps=settings["noise_steps"], noise=gen,
                             prediction=config.prediction)
        sr = model.from_residual(x0.float(), lr_up.float())
    return sr.float().cpu()


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
