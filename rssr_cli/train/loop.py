"""The training loop: one CPU, one GPU, or many under ``torchrun`` (DistributedDataParallel).

Design choices, and why:

- **Randomness is a function of (seed, rank, step)**. Every step builds its own generators from those three numbers
  (batch indices, crops, flips, fresh degradation, diffusion t and noise). A resumed run therefore draws exactly
  what the uninterrupted run drew, with nothing but the step to restore; the checkpoint still stores the global
  RNG states for anything outside our control.
- **Data order**: an endless stream of per-epoch permutations of the training split (seeded by the epoch); step s,
  rank r takes stream positions ``(s * world + r) * batch ...`` so ranks see distinct patches within an epoch and
  together cover the split once per epoch, without ``DistributedSampler``'s padding duplicates.
- **Input pipeline**: a worker thread decodes the next step's uint16 patches (pinned memory on CUDA) while the
  current step runs; the fresh degradation, crops, flips and rotations run on the training device, so a GPU is not
  held up by per-sample work on the CPU.
- **Validation** is a held-out split (``val_fraction`` of the patches, chosen by a seeded permutation), scored with
  the EMA weights and the model's own LR-start sampler: PSNR of the model vs PSNR of bicubic on the same patches.
- **Optimisation**: AdamW, linear warm-up then cosine decay to ``min_lr_ratio``, gradient clipping, EMA, bf16
  autocast on CUDA. A NaN/inf loss or gradient stops every rank with a :class:`TrainingError` (the flag is
  all-reduced first, so no rank hangs in a collective).
- **Outputs** in ``out``: ``checkpoint.pt`` (every ``checkpoint_every`` steps, atomically replaced),
  ``metrics.jsonl`` (one JSON object per log/validation event), and ``model.safetensors`` (EMA weights with
  provenance) at the end. Only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from rssr_cli.atomic import atomic_write
from rssr_cli.errors import DataError, OutputError, TrainingError, UsageError
from rssr_cli.train.config import TrainConfig, model_config

CHECKPOINT_FORMAT = "rssr-checkpoint/1"

#: progress(event): events are the dicts written to metrics.jsonl ("kind": "start" | "train" | "val" | "checkpoint"
#: | "done").
Progress = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    weights: Path
    checkpoint: Path
    log: Path
    steps: int
    metrics: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------------ schedule


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from ``lr`` to ``lr * min_lr_ratio`` at the end."""
    if config.warmup and step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    span = max(1, config.steps - config.warmup)
    progress = min(1.0, (step - config.warmup) / span)
    floor = config.min_lr_ratio
    return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def _seed(*parts: int) -> int:
    """A 63-bit seed mixing several integers (splitmix64-style), so that nearby (seed, rank, step) differ a lot."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2))) & 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


@lru_cache(maxsize=4)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng(_seed(seed, 0xE90C, epoch)).permutation(n)


def batch_indices(n: int, step: int, batch: int, rank: int, world: int, seed: int) -> np.ndarray:
    """Indices into the training split for (step, rank): positions ``(step*world + rank)*batch + j`` of an endless
    stream of seeded per-epoch permutations. Distinct across ranks within an epoch; every patch once per epoch."""
    start = (step * world + rank) * batch
    out = np.empty(batch, dtype=np.int64)
    for j in range(batch):
        pos = start + j
        out[j] = _epoch_permutation(n, seed, pos // n)[pos % n]
    return out


def split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) patch indices: a seeded permutation, ``round(fraction * n)`` (at least 1 when
    fraction > 0 and n > 1) held out."""
    perm = np.random.default_rng(_seed(seed, 0x5A11)).permutation(n)
    n_val = 0 if fraction <= 0 or n < 2 else min(n - 1, max(1, round(fraction * n)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# --------------------------------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class _Dist:
    rank: int
    world: int
    local_rank: int
    initialised_here: bool

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device_name: str) -> tuple[_Dist, torch.device]:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; with more than one process, join the group (NCCL on CUDA, gloo on
    CPU). Single-process runs never touch torch.distributed."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_name == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(device_name)
        if device.type == "cuda" and device.index is None:
            device = torch.device(f"cuda:{local_rank}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device_name}: CUDA is not available on this machine")
        torch.cuda.set_device(device)
    initialised = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        initialised = True
    return _Dist(rank, world, local_rank, initialised), device


def _all_reduce(value: torch.Tensor, dist_info: _Dist, op: str = "sum") -> torch.Tensor:
    if dist_info.world == 1:
        return value
    import torch.distributed as dist

    dist.all_reduce(value, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN}[op])
    return value


def _gather_indices(idx: np.ndarray, dist_info: _Dist) -> list[list[int]]:
    """Every rank's batch indices (logged once per run, so that the data split across ranks can be checked)."""
    if dist_info.world == 1:
        return [idx.tolist()]
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist_info.world
    dist.all_gather_object(gathered, idx.tolist())
    return gathered


def _barrier(dist_info: _Dist) -> None:
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()


class _LossModel:
    """What :func:`rssr_cli.diffusion.diffusion_loss` needs from a model (``config``, ``to_residual``, a call),
    with the call going through the DDP wrapper so that gradients are synchronised."""

    def __init__(self, wrapped: torch.nn.Module, module: torch.nn.Module) -> None:
        self.wrapped = wrapped
        self.module = module
        self.config = module.config

    def to_residual(self, hr: torch.Tensor, lr_up: torch.Tensor) -> torch.Tensor:
        return self.module.to_residual(hr, lr_up)

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.wrapped(*args, **kwargs)


# ------------------------------------------------------------------------------------------------------------ data


def _load_data(config: TrainConfig, out: Path, dist_info: _Dist, progress: Progress | None):
    """The patch cache: read a ``.npz``, or prepare the archive (rank 0 prepares and saves ``out/patches.npz``,
    the other ranks wait and read it)."""
    from rssr_cli.train.archive import PrepareOptions, prepare_archive
    from rssr_cli.patches import load_cache, save_cache

    if not config.data:
        raise UsageError("no training data: pass a patch cache (.npz) or an archive")
    src = Path(config.data)
    if src.suffix == ".npz":
        return load_cache(src), str(src)
    cached = out / "patches.npz"
    if dist_info.main:
        options = PrepareOptions.from_table(config.prepare)
        prepared = prepare_archive(src, options=options)
        save_cache(prepared.cache, cached, overwrite=True)
        if progress is not None:
            progress({"kind": "prepared", "patches": len(prepared.cache), "cache": str(cached)})
    _barrier(dist_info)
    return load_cache(cached), str(src)


def _normalization(train_cache, idx: np.ndarray, base, device: torch.device):
    """Per-band statistics of the training split (up to 512 patches): mean/std of the LR, std of the residual
    HR - U(LR). Bands masked everywhere keep the preset's values."""
    from rssr_cli.degrade import upsample
    from rssr_cli.model import Normalization

    take = idx[:: max(1, len(idx) // 512)][:512]
    lr, hr, valid = train_cache.batch(take)
    lr_t, hr_t = torch.from_numpy(lr), torch.from_numpy(hr)
    res = hr_t - upsample(lr_t, train_cache.scale)
    mean, std, rstd = list(base.mean), list(base.std), list(base.residual_std)
    for c in range(lr.shape[1]):
        ok = torch.from_numpy(valid[:, c])
        if ok.any():
            mean[c] = float(lr_t[ok, c].mean())
            std[c] = max(float(lr_t[ok, c].std()), 1e-3)
            rstd[c] = max(float(res[ok, c].std()), 1e-3)
    return Normalization(mean=tuple(mean), std=tuple(std), residual_std=tuple(rstd))


class _Prefetcher:
    """Decodes the next step's patches on a worker thread while the current step runs (the indices of every step
    are known in advance, so this changes nothing in what is drawn). Numpy releases the GIL while decoding."""

    def __init__(self, cache, indices_for: Callable[[int], np.ndarray], first: int, last: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.cache = cache
        self.indices_for = indices_for
        self.last = last
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rssr-prefetch")
        self.pending = {first: self.pool.submit(self._load, first)} if first < last else {}

    def _load(self, step: int):
        idx = self.indices_for(step)
        lr, hr, valid = self.cache.batch(idx)
        pin = torch.cuda.is_available()
        tensors = [torch.from_numpy(a) for a in (lr, hr, valid)]
        return idx, [t.pin_memory() if pin else t for t in tensors]

    def get(self, step: int):
        future = self.pending.pop(step, None) or self.pool.submit(self._load, step)
        if step + 1 < self.last:
            self.pending[step + 1] = self.pool.submit(self._load, step + 1)
        return future.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _augment(lr_t: torch.Tensor, hr_t: torch.Tensor, synthetic: bool, scale: Fraction, config: TrainConfig,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh degradation (synthetic caches), random crops, flips and rotations, on the training device."""
    from rssr_cli.degrade import degrade
    from rssr_cli.train.augment import random_crop, random_dihedral

    if synthetic and config.fresh_degradation:
        lr_t = degrade(hr_t, scale, generator=generator)
    if config.crop is not None:
        lr_t, hr_t = random_crop(lr_t, hr_t, config.crop, scale, generator)
    if config.augment:
        lr_t, hr_t = random_dihedral(lr_t, hr_t, generator)
    return lr_t, hr_t


# ------------------------------------------------------------------------------------------------------ validation


@torch.no_grad()
def validate(model, val_cache, config: TrainConfig, device: torch.device) -> dict[str, float]:
    """PSNR of the model and of bicubic on the held-out patches. The model is sampled as ``rssr upscale`` samples it
    (:func:`rssr_cli.methods.diffusion.sample_tiles`: its sampler defaults, ``val_steps`` if set, position-keyed
    noise from the run's seed)."""
    from rssr_cli.degrade import upsample
    from rssr_cli.methods.diffusion import patch_origins, sample_tiles
    from rssr_cli.metrics import psnr

    mc = model.config
    sampler = mc.sampler if not config.val_steps else replace(mc.sampler, steps=config.val_steps)
    n = min(len(val_cache), config.val_max_patches)
    p_model, p_bic = [], []
    for i in range(0, n, max(1, config.batch_size)):
        idx = np.arange(i, min(n, i + max(1, config.batch_size)))
        lr, hr, valid = val_cache.batch(idx)
        lr_t, hr_t, v = (torch.from_numpy(lr).to(device), torch.from_numpy(hr).to(device),
                         torch.from_numpy(valid).to(device))
        sr, _ = sample_tiles(model, lr_t, patch_origins(idx, hr.shape[-1]), sampler, seed=config.seed,
                             amp=config.amp)
        p_model.append(psnr(sr, hr_t, v).cpu())
        p_bic.append(psnr(upsample(lr_t, mc.scale), hr_t, v).cpu())
    pm, pb = float(torch.cat(p_model).mean()), float(torch.cat(p_bic).mean())
    return {"val_psnr": pm, "val_psnr_bicubic": pb, "val_psnr_gain": pm - pb, "val_patches": n}


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


# -------------------------------------------------------------------------------------------------- checkpoints


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UsageError(f"--resume: no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # plain data only: no pickled code
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt files
        raise DataError(f"{path}: not a readable checkpoint ({str(exc).splitlines()[0] if str(exc) else exc})") \
            from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: not an rssr training checkpoint")
    return state


def _truncate_log(log: Path, step: int) -> None:
    """On resume, drop events logged after the checkpoint's step (the resumed run logs them again)."""
    if not log.exists():
        return
    keep = []
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("step", 0) <= step and event.get("kind") != "done":
            keep.append(line)
    log.write_text("".join(k + "\n" for k in keep))


# ------------------------------------------------------------------------------------------------------------ train


def train(
    config: TrainConfig,
    *,
    resume: bool | str | os.PathLike[str] = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    command: list[str] | None = None,
) -> TrainResult:
    """Train a model as ``config`` says; see the module docstring. Under torchrun every process calls this.

    ``resume``: True for ``out/checkpoint.pt``, or a checkpoint path. Without it, an ``out`` folder that already
    holds a checkpoint is refused unless ``overwrite``.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    from rssr_cli.degrade import upsample
    from rssr_cli.diffusion import NoiseSchedule, diffusion_loss
    from rssr_cli.model import build_model
    from rssr_cli.train.ema import EMA
    from rssr_cli.weights import save_weights

    dist_info, device = _setup_distributed(config.device)
    stack = ExitStack()
    try:
        out = Path(config.out)
        ckpt_path = out / "checkpoint.pt"
        log_path = out / "metrics.jsonl"
        weights_path = out / "model.safetensors"
        state = None
        if resume:
            state = _load_checkpoint(ckpt_path if resume is True else Path(resume))
        elif dist_info.main and (ckpt_path.exists() or weights_path.exists()) and not overwrite:
            raise OutputError(f"{out} already holds a training run; pass --resume to continue it or --overwrite to "
                              "start over")
        if dist_info.main:
            out.mkdir(parents=True, exist_ok=True)
        _barrier(dist_info)

        def emit(event: dict[str, Any]) -> None:
            if not dist_info.main:
                return
            with open(log_path, "a") as f:
                f.write(json.dumps(event, default=float) + "\n")
            if progress is not None:
                progress(event)

        cache, data_name = _load_data(config, out, dist_info, progress if dist_info.main else None)
        if len(cache) < 2:
            raise DataError(f"{data_name}: {len(cache)} patch(es); training needs at least 2")
        train_idx, val_idx = split_indices(len(cache), config.val_fraction, config.seed)
        train_cache, val_cache = cache.subset(train_idx), cache.subset(val_idx)
        if config.crop is not None and config.crop > cache.lr.shape[-1]:
            raise UsageError(f"crop {config.crop} is larger than the cache's {cache.lr.shape[-1]}-pixel patches")

        if state is not None:
            from rssr_cli.model import ModelConfig

            mcfg = ModelConfig.from_dict(state["model_config"])
            old = state["train_config"]
            for key in ("seed", "batch_size", "crop", "val_fraction"):
                if old.get(key) != getattr(config, key):
                    raise UsageError(f"--resume: {key} was {old.get(key)!r} in the interrupted run, now "
                                     f"{getattr(config, key)!r}; an exact continuation needs the same value")
            if state.get("patches") not in (None, len(cache)):
                raise UsageError(f"--resume: the run trained on {state['patches']} patches, {data_name} has "
                                 f"{len(cache)}; resume with the same data")
            if state.get("world_size") != dist_info.world:
                raise UsageError(f"--resume: the run used {state.get('world_size')} process(es), now "
                                 f"{dist_info.world}; an exact continuation needs the same number")
        else:
            mcfg = model_config(config.model, cache.bands, cache.scale)
            if config.normalize_from_data:
                mcfg = mcfg.replace(normalization=_normalization(train_cache, np.arange(len(train_cache)),
                                                                 mcfg.normalization, device))
        torch.manual_seed(_seed(config.seed, 0x1A17))  # the initial weights: identical on every rank
        module = build_model(mcfg).to(device)
        schedule = NoiseSchedule.from_config(mcfg.schedule)
        optimizer = torch.optim.AdamW(module.parameters(), lr=config.lr, betas=config.betas,
                                      weight_decay=config.weight_decay)
        ema = EMA(module, config.ema_decay)
        start_step = 0
        metrics: dict[str, Any] = {}
        if state is not None:
            module.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            ema.load_state_dict(state["ema"])
            start_step = int(state["step"])
            metrics = dict(state.get("metrics", {}))
            torch.set_rng_state(state["rng"]["torch"])
            if device.type == "cuda" and state["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(state["rng"]["cuda"], device)
            if dist_info.main:
                _truncate_log(log_path, start_step)
        elif dist_info.main and log_path.exists():
            log_path.unlink()
        if dist_info.world > 1:
            wrapped = DDP(module, device_ids=[device.index] if device.type == "cuda" else None)
        else:
            wrapped = module
        loss_model = _LossModel(wrapped, module)
        eval_model = build_model(mcfg).to(device).eval()

        def checkpoint(step: int) -> None:
            if dist_info.main:
                _save_checkpoint(ckpt_path, {
                    "format": CHECKPOINT_FORMAT,
                    "step": step,
                    "model": module.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "ema": ema.state_dict(),
                    "model_config": mcfg.to_dict(),
                    "train_config": config.to_dict(),
                    "world_size": dist_info.world,
                    "patches": len(cache),
                    "metrics": metrics,
                    "rng": {"torch": torch.get_rng_state(),
                            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
                })
                emit({"kind": "checkpoint", "step": step, "path": str(ckpt_path)})
            _barrier(dist_info)

        def run_validation(step: int) -> None:
            if len(val_cache) == 0:
                return
            if dist_info.main:
                ema.copy_to(eval_model)
                result = validate(eval_model, val_cache, config, device)
                metrics.update(result)
                emit({"kind": "val", "step": step, **result})
            _barrier(dist_info)

        emit({"kind": "start", "step": start_step, "steps": config.steps, "patches_train": len(train_cache),
              "patches_val": len(val_cache), "world_size": dist_info.world, "device": device.type,
              "parameters": sum(p.numel() for p in module.parameters()), "resumed": state is not None})
        module.train()
        t_last, seen = time.perf_counter(), 0
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        loss_count = 0
        prefetch = _Prefetcher(train_cache, lambda k: batch_indices(len(train_cache), k, config.batch_size,
                                                                   dist_info.rank, dist_info.world, config.seed),
                               start_step, config.steps)
        stack.callback(prefetch.close)
        for step in range(start_step, config.steps):
            step_seed = _seed(config.seed, dist_info.rank, step)
            aug_gen = torch.Generator(device=device).manual_seed(step_seed)
            dev_gen = torch.Generator(device=device).manual_seed(_seed(step_seed, 1))
            torch.manual_seed(_seed(step_seed, 2))
            idx, (lr_t, hr_t, valid) = prefetch.get(step)
            if step == start_step:
                emit({"kind": "data", "step": step, "first_batch_by_rank": _gather_indices(idx, dist_info)})
            lr_t, hr_t = lr_t.to(device, non_blocking=True), hr_t.to(device, non_blocking=True)
            lr_t, hr_t = _augment(lr_t, hr_t, train_cache.synthetic, train_cache.scale, config, aug_gen)
            mask = valid.to(device)[:, :, None, None].float()
            lr_up = upsample(lr_t, mcfg.scale)
            rate = learning_rate(step, config)
            for group in optimizer.param_groups:
                group["lr"] = rate
            with _autocast(device, config.amp):
                loss = diffusion_loss(loss_model, schedule, hr_t, lr_up, dev_gen, mask=mask)
            finite = _all_reduce(torch.isfinite(loss.detach()).to(torch.int32), dist_info, "min")
            if not bool(finite):
                raise TrainingError(f"the loss became {float(loss.detach())!r} at step {step + 1} (lr {rate:.3g}); lower "
                                    f"--set lr=..., check the data, or --resume from {ckpt_path}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
            if not torch.isfinite(grad_norm):
                raise TrainingError(f"the gradient became non-finite at step {step + 1} (lr {rate:.3g}); lower "
                                    f"--set lr=..., or --resume from {ckpt_path}")
            optimizer.step()
            ema.update(module)
            loss_sum += loss.detach().double()
            loss_count += 1
            seen += len(idx)
            done = step + 1
            if done % config.log_every == 0 or done == config.steps:
                total = _all_reduce(torch.stack([loss_sum, torch.tensor(float(loss_count), dtype=torch.float64,
                                                                         device=device)]), dist_info)
                now = time.perf_counter()
                emit({"kind": "train", "step": done, "loss": float(total[0] / total[1]), "lr": rate,
                      "grad_norm": float(grad_norm), "patches_per_s": seen * dist_info.world / (now - t_last)})
                metrics["loss"] = float(total[0] / total[1])
                t_last, seen = now, 0
                loss_sum.zero_()
                loss_count = 0
            if done % config.val_every == 0 or done == config.steps:
                run_validation(done)
                module.train()
            if done % config.checkpoint_every == 0 or done == config.steps:
                checkpoint(done)

        if dist_info.main:
            ema.copy_to(eval_model)
            provenance = {
                "trained_by": "rssr train",
                "command": command if command is not None else list(sys.argv),
                "data": data_name,
                "data_patches": {"train": len(train_cache), "val": len(val_cache)},
                "data_sources": [{k: s.get(k) for k in ("hr", "lr", "hr_band_map", "masked_bands")}
                                 for s in cache.meta.get("sources", [])][:100],
                "synthetic_lr": cache.synthetic,
                "steps": config.steps,
                "world_size": dist_info.world,
                "device": device.type,
                "metrics": metrics,
                "train_config": config.to_dict(),
                "torch": torch.__version__,
                "python": platform.python_version(),
                "weights": "EMA",
            }
            save_weights(weights_path, eval_model, mcfg, provenance)
            emit({"kind": "done", "step": config.steps, "weights": str(weights_path), **metrics})
        _barrier(dist_info)
        return TrainResult(weights=weights_path, checkpoint=ckpt_path, log=log_path, steps=config.steps,
                           metrics=metrics)
    finally:
        stack.close()
        if dist_info.initialised_here:
            import torch.distributed as dist

            dist.destroy_process_group()
