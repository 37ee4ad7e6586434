"""What each training step sees: the patch cache, the train/validation split, the data order, the seeds, the input
pipeline (prefetching) and the augmentation.

- **Randomness is a function of (seed, rank, step)**: :func:`derive_seed` hashes the run's seed with a purpose and
  the numbers that identify a draw (numpy's :class:`~numpy.random.SeedSequence`), so nearby keys give unrelated
  streams and a resumed run draws exactly what the uninterrupted run drew.
- **Data order**: an endless stream of per-epoch permutations of the training split (seeded by the epoch); step s,
  rank r takes stream positions ``(s * world + r) * batch ...`` so ranks see distinct patches within an epoch and
  together cover the split once per epoch, without ``DistributedSampler``'s padding duplicates.
- **Input pipeline**: a worker thread decodes the next step's uint16 patches (pinned memory on CUDA) while the
  current step runs; the fresh degradation, crops, flips and rotations run on the training device, so a GPU is not
  held up by per-sample work on the CPU.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from enum import IntEnum
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from rssr_cli.bands import MODEL_BANDS
from rssr_cli.degrade import degrade, upsample
from rssr_cli.errors import UsageError
from rssr_cli.model import Normalization
from rssr_cli.patches import PatchCache, load_cache, save_cache
from rssr_cli.train.augment import RadiometryRanges, random_crop, random_dihedral, random_radiometry
from rssr_cli.train.config import TrainConfig

#: A batch as the prefetcher hands it over: the indices, then (lr, hr, valid) tensors on the CPU.
Batch = tuple[np.ndarray, list[torch.Tensor]]


class Stream(IntEnum):
    """What a derived seed is for (the first key of :func:`derive_seed`): streams for different purposes never
    coincide, whatever the other numbers."""

    SPLIT = 1
    EPOCH_ORDER = 2
    INITIAL_WEIGHTS = 3
    STEP_AUGMENT = 4
    STEP_DIFFUSION = 5
    STEP_GLOBAL = 6
    STEP_REAL = 7


def derive_seed(seed: int, stream: Stream, *key: int) -> int:
    """A 63-bit seed (what :func:`torch.manual_seed` accepts) for ``stream`` and ``key`` (rank, step, ...) of a run
    seeded with ``seed`` (any int; reduced to 64 bits, as :func:`rssr_cli.diffusion.positional_noise` does)."""
    entropy = [seed & 0xFFFF_FFFF_FFFF_FFFF, int(stream), *key]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]) & 0x7FFF_FFFF_FFFF_FFFF


@lru_cache(maxsize=4)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng(derive_seed(seed, Stream.EPOCH_ORDER, epoch)).permutation(n)


@lru_cache(maxsize=4)
def _weighted_epoch(n: int, seed: int, epoch: int, weights: tuple[float, ...]) -> np.ndarray:
    # n draws with replacement: an "epoch" of the same length as a plain one, each patch with its own probability.
    return np.random.default_rng(derive_seed(seed, Stream.EPOCH_ORDER, epoch)).choice(n, size=n, p=np.array(weights))


def source_weights(pair: np.ndarray, balance: float) -> tuple[float, ...] | None:
    """Per-patch draw probabilities that give each source (``PatchCache.pair``) a share of the draws proportional to
    its number of patches raised to ``balance``: 1 draws every patch equally (None: plain epochs), 0 every source
    equally, 0.5 between. Small sources (one town, one farm) are then seen more often than their area alone gives."""
    if balance == 1:
        return None
    _, inverse, counts = np.unique(pair, return_inverse=True, return_counts=True)
    weights = counts[inverse].astype(np.float64) ** (balance - 1.0)
    return tuple((weights / weights.sum()).tolist())


def source_shares(cache: PatchCache, weights: tuple[float, ...] | None) -> dict[str, float]:
    """Each source's expected share of the draws (file name of its HR image, with `` x2`` for a copy at hr_zoom 2
    -> fraction), for the run's log."""
    sources = cache.meta.get("sources", [])
    p = np.full(len(cache), 1.0 / len(cache)) if weights is None else np.asarray(weights)
    shares: dict[str, float] = {}
    for index in np.unique(cache.pair):
        source = sources[index] if index < len(sources) else {}
        name = Path(source.get("hr") or source.get("lr") or f"source {index}").name
        if source.get("hr_zoom", 1) != 1:
            name += f" x{source['hr_zoom']:g}"
        shares[name] = shares.get(name, 0.0) + round(float(p[cache.pair == index].sum()), 5)
    return shares


def batch_indices(n: int, step: int, batch: int, rank: int, world: int, seed: int,
                  weights: tuple[float, ...] | None = None) -> np.ndarray:
    """Indices into the training split for (step, rank): positions ``(step*world + rank)*batch + j`` of an endless
    stream of seeded per-epoch orders. Without ``weights`` an order is a permutation (every patch once per epoch,
    distinct across ranks within an epoch); with ``weights`` (:func:`source_weights`) it is n weighted draws."""
    start = (step * world + rank) * batch
    out = np.empty(batch, dtype=np.int64)
    for j in range(batch):
        pos = start + j
        order = _epoch_permutation(n, seed, pos // n) if weights is None else _weighted_epoch(n, seed, pos // n,
                                                                                              weights)
        out[j] = order[pos % n]
    return out


def split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) patch indices: a seeded permutation, ``round(fraction * n)`` (at least 1 when
    fraction > 0 and n > 1) held out."""
    perm = np.random.default_rng(derive_seed(seed, Stream.SPLIT)).permutation(n)
    n_val = 0 if fraction <= 0 or n < 2 else min(n - 1, max(1, round(fraction * n)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def load_patches(config: TrainConfig, out: Path, *, main: bool, wait: Callable[[], None],
                 progress: Callable[[dict[str, Any]], None] | None) -> tuple[PatchCache, str]:
    """The patch cache and the name of the data: a ``.npz`` is read; an archive is prepared by the main process
    into ``out/patches.npz`` while the others ``wait`` (a barrier) and then read it. Only an archive needs rasterio:
    a machine without the geospatial stack (a lent GPU) trains from a cache."""
    if not config.data:
        raise UsageError("no training data: pass a patch cache (.npz) or an archive")
    src = Path(config.data)
    if src.suffix == ".npz":
        return load_cache(src), str(src)
    from rssr_cli.train.archive import PrepareOptions, prepare_archive

    cached = out / "patches.npz"
    if main:
        prepared = prepare_archive(src, options=PrepareOptions.from_table(config.prepare))
        save_cache(prepared.cache, cached, overwrite=True)
        if progress is not None:
            progress({"kind": "prepared", "patches": len(prepared.cache), "cache": str(cached)})
    wait()
    return load_cache(cached), str(src)


def normalization_from_data(cache: PatchCache, base: Normalization) -> Normalization:
    """Per-band statistics of (up to 512 patches of) ``cache``: mean/std of the LR, std of the residual
    HR - U(LR). Bands masked everywhere keep ``base``'s values."""
    take = np.arange(len(cache))[:: max(1, len(cache) // 512)][:512]
    lr, hr, valid = cache.batch(take)
    lr_t, hr_t = torch.from_numpy(lr), torch.from_numpy(hr)
    res = hr_t - upsample(lr_t, cache.scale)
    mean, std, rstd = list(base.mean), list(base.std), list(base.residual_std)
    for c in range(lr.shape[1]):
        ok = torch.from_numpy(valid[:, c])
        if ok.any():
            mean[c] = float(lr_t[ok, c].mean())
            std[c] = max(float(lr_t[ok, c].std()), 1e-3)
            rstd[c] = max(float(res[ok, c].std()), 1e-3)
    return Normalization(mean=tuple(mean), std=tuple(std), residual_std=tuple(rstd))


class Prefetcher:
    """Decodes the next step's patches on a worker thread while the current step runs (the indices of every step
    are known in advance, so this changes nothing in what is drawn). Numpy releases the GIL while decoding."""

    def __init__(self, cache: PatchCache, indices_for: Callable[[int], np.ndarray], first: int, last: int) -> None:
        self.cache = cache
        self.indices_for = indices_for
        self.last = last
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rssr-prefetch")
        self.pending: dict[int, Future[Batch]] = {first: self.pool.submit(self._load, first)} if first < last else {}

    def _load(self, step: int) -> Batch:
        idx = self.indices_for(step)
        lr, hr, valid = self.cache.batch(idx)
        pin = torch.cuda.is_available()
        tensors = [torch.from_numpy(a) for a in (lr, hr, valid)]
        return idx, [t.pin_memory() if pin else t for t in tensors]

    def get(self, step: int) -> Batch:
        future = self.pending.pop(step, None) or self.pool.submit(self._load, step)
        if step + 1 < self.last:
            self.pending[step + 1] = self.pool.submit(self._load, step + 1)
        return future.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def augment(lr: torch.Tensor, hr: torch.Tensor, *, synthetic: bool, scale: Fraction, config: TrainConfig,
            generator: torch.Generator, bands: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Radiometry, fresh degradation (synthetic caches), random crops, flips and rotations, on the training device.

    The radiometric map comes first: a synthetic pair's LR is then degraded from the mapped HR (LR and HR consistent
    through the operator, the sensor noise at its own level whatever the brightness), a real pair has both mapped.
    ``bands``: the cache's band names (for the haze weights); None means :data:`rssr_cli.bands.MODEL_BANDS`, what
    ``rssr prepare`` writes unless told other bands. Nothing is drawn for an augmentation that is off.
    """
    if config.radiometric:
        ranges = RadiometryRanges(brightness=config.brightness, spectral_gain=config.spectral_gain,
                                  haze=config.haze, band_offset=config.band_offset)
        lr, hr = random_radiometry(lr, hr, generator, ranges, bands=MODEL_BANDS if bands is None else bands)
    if synthetic and config.fresh_degradation:
        lr = degrade(hr, scale, generator=generator)
    if config.crop is not None:
        lr, hr = random_crop(lr, hr, config.crop, scale, generator)
    if config.augment:
        lr, hr = random_dihedral(lr, hr, generator)
    return lr, hr
