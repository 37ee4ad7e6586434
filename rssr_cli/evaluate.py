"""Score super-resolution against HR ground truth: metrics as data, no printing.

:func:`evaluate` runs up to three methods on the same LR/HR patches (a patch cache: real pairs or HR with synthetic
LR) and returns an :class:`Evaluation`. The methods are built from the registry (:mod:`rssr_cli.methods`) and run
as ``rssr upscale`` runs them, so the scores are those of what ships:

- ``lr_start``: the model with its LR-start sampler (the weights file's sampler defaults, or ``steps``/``start``);
- ``pure_noise``: the same model with DDIM from pure noise in ``noise_steps`` (100) steps, the classic sampler the
  LR start is meant to beat in speed without losing quality;
- ``bicubic``: the baseline.

Metrics: :mod:`rssr_cli.metrics` (PSNR, SSIM, LR consistency, spectral angle, detail, opensr-test's correctness).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from rssr_cli.errors import DataError, UsageError
from rssr_cli.methods import TileUpsampler
from rssr_cli.metrics import COLOUR_METRICS, METRICS, detail_and_colour, score
from rssr_cli.methods.diffusion import patch_origins
from rssr_cli.patches import PatchCache, load_cache

#: What ``rssr evaluate`` scores: settings of the registered methods (:mod:`rssr_cli.methods`), not other methods.
CANDIDATES: tuple[str, ...] = ("lr_start", "pure_noise", "bicubic")

Progress = Callable[[int, int, str], None]



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
        for m in METRICS + COLOUR_METRICS:
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


def _load_data(data: str | Path | PatchCache) -> PatchCache:
    if isinstance(data, PatchCache):
        return data
    if Path(data).suffix != ".npz":
        # Preparing an archive is training-data work (rssr_cli.train.archive); `rssr evaluate` does it first.
        raise UsageError(f"{data}: evaluate scores a patch cache (.npz, from `rssr prepare`) or a PatchCache")
    return load_cache(data)


def _candidates(names: Sequence[str], cache, weights, *, steps, start, eta, texture, chroma_sigma, noise_steps,
                consistency, init, seed, device, batch_size) -> tuple[dict[str, TileUpsampler], Any, dict[str, Any]]:
    """The methods to score, built from the registry (:mod:`rssr_cli.methods`) exactly as ``rssr upscale`` builds
    them; the model is loaded once and shared. Returns them, the loaded model (or None) and the settings used."""
    from rssr_cli.methods import BicubicOptions

    settings: dict[str, Any] = {"seed": seed}
    built: dict[str, TileUpsampler] = {}
    loaded = None
    if any(m != "bicubic" for m in names):
        from rssr_cli.devices import resolve_device
        from rssr_cli.methods.diffusion import NO_TEXTURE, DiffusionOptions
        from rssr_cli.weights import default_weights_path, load_weights

        dev = resolve_device(device)
        # Without --weights, the shipped model; a clear WeightsError when it is missing.
        loaded = load_weights(weights if weights is not None else default_weights_path(), device=dev)
        if tuple(loaded.config.bands) != cache.bands:
            raise DataError(f"the data's bands {', '.join(cache.bands)} differ from the model's "
                            f"{', '.join(loaded.config.bands)}")
        if loaded.config.scale != cache.scale:
            raise DataError(f"the data's scale {cache.scale} differs from the model's {loaded.config.scale}")
        model = DiffusionOptions(weights=loaded, device=str(dev), seed=seed, consistency=consistency,
                                 batch_size=batch_size)
        noise_steps = min(noise_steps, loaded.config.schedule.timesteps)
        lr_start = replace(model, steps=steps, start=start, eta=eta, init=init, texture=texture,
                           chroma_sigma=chroma_sigma).build()
        # Pure noise: the reference, plain DDIM from N(0, I) (the LR-start sampler from the last step, start = 1),
        # without the model's texture transfer or chroma smoothing.
        pure_noise = replace(model, steps=noise_steps, start=1.0, eta=0.0, init="bicubic", texture=NO_TEXTURE,
                             chroma_sigma=0.0)
        built["lr_start"] = lr_start
        if "pure_noise" in names:
            built["pure_noise"] = pure_noise.build()
        sampler = lr_start.sampler
        settings.update(lr_start_steps=sampler.steps, start=sampler.start, eta=sampler.eta, init=sampler.init,
                        texture=sampler.texture, chroma_sigma=sampler.chroma_sigma,
                        evaluations=sampler.evaluations, noise_steps=noise_steps,
                        consistency=sampler.consistency, device=dev.type)
    if "bicubic" in names:
        built["bicubic"] = BicubicOptions(scale=cache.scale, bands=cache.bands).build()
    return {m: built[m] for m in names}, loaded, settings


def evaluate(
    data: str | Path | PatchCache,
    weights: str | Path | None = None,
    *,
    methods: Sequence[str] = CANDIDATES,
    steps: int | None = None,
    start: float | None = None,
    eta: float | None = None,
    texture: float | str | None = None,
    chroma_sigma: float | None = None,
    noise_steps: int = 100,
    consistency: str | bool | None = None,
    init: str | None = None,
    seed: int = 0,
    device: str = "auto",
    max_patches: int | None = None,
    batch_size: int = 8,
    name: str | None = None,
    progress: Progress | None = None,
) -> Evaluation:
    """Score ``methods`` on the patches of ``data`` (a ``.npz`` patch cache or a :class:`PatchCache`; ``name`` says
    where it came from in the result, by default the path). The model methods use ``weights`` (default: the shipped
    model) and run through the same :class:`~rssr_cli.methods.TileUpsampler` as ``rssr upscale``, patch i as a tile
    at HR origin ``(0, i * width)`` (:func:`~rssr_cli.methods.diffusion.patch_origins`). Deterministic for a seed and
    device."""
    import time

    unknown = [m for m in methods if m not in CANDIDATES]
    if unknown or not methods:
        raise UsageError(f"unknown method(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(CANDIDATES)}")
    cache = _load_data(data)
    n = len(cache) if max_patches is None else min(len(cache), max_patches)
    if n == 0:
        raise DataError(f"{data}: no patches to evaluate")
    upsamplers, loaded, settings = _candidates(methods, cache, weights, steps=steps, start=start, eta=eta,
                                               texture=texture, chroma_sigma=chroma_sigma, noise_steps=noise_steps,
                                               consistency=consistency, init=init, seed=seed, device=device,
                                               batch_size=batch_size)
    sums: dict[str, dict[str, Any]] = {m: {} for m in methods}
    timing = {m: 0.0 for m in methods}
    total_batches = math.ceil(n / batch_size) * len(methods)
    done = 0
    for i in range(0, n, batch_size):
        idx = np.arange(i, min(n, i + batch_size))
        lr_np, hr_np, valid_np = cache.batch(idx)
        origins = patch_origins(idx, hr_np.shape[-1])
        lr, hr, valid = torch.from_numpy(lr_np), torch.from_numpy(hr_np), torch.from_numpy(valid_np)
        for m, upsampler in upsamplers.items():
            t0 = time.perf_counter()
            sr = torch.from_numpy(upsampler.upscale_tiles(lr_np, origins).mean)
            timing[m] += time.perf_counter() - t0
            _accumulate(sums[m], score(sr, lr, hr, valid, cache.scale))
            done += 1
            if progress is not None:
                progress(done, total_batches, m)
    results = {m: {**_means(sums[m], cache.bands), "seconds": timing[m]} for m in methods}
    return Evaluation(methods=results, patches=n, bands=cache.bands, scale=str(cache.scale), data=name or str(data),
                      weights=loaded.name if loaded is not None else None, settings=settings)


def _accumulate(acc: dict[str, Any], scores: dict[str, torch.Tensor]) -> None:
    for k, v in scores.items():
        if k.startswith("_"):
            acc[k] = acc.get(k, 0) + v
        else:
            acc.setdefault(k, []).append(v)


def _means(acc: dict[str, Any], bands: tuple[str, ...]) -> dict[str, Any]:
    """Means over patches (non-finite values left out) and the per-band mean shift."""
    r: dict[str, Any] = {}
    for k in METRICS:
        v = torch.cat(acc[k])
        v = v[torch.isfinite(v)]
        r[k] = float(v.mean()) if v.numel() else None
    r.update(detail_and_colour(acc))
    shift = acc["_shift_sum"] / acc["_shift_n"].clamp_min(1)
    r["mean_shift"] = {b: (float(shift[j]) if acc["_shift_n"][j] > 0 else None) for j, b in enumerate(bands)}
    return r
