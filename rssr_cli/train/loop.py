"""The training loop: one CPU, one GPU, or many under ``torchrun`` (DistributedDataParallel).

:func:`train` builds a :class:`Trainer` (one process's share of the run) and runs it. Around it: the data, its
order and the seeds (:mod:`.data`), the process group (:mod:`.distributed`), checkpoints (:mod:`.checkpoint`) and the
EMA (:mod:`.ema`).

Design choices, and why:

- **Randomness is a function of (seed, rank, step)**. Every step builds its own generators from those three numbers
  (batch indices, crops, flips, fresh degradation, diffusion t and noise). A resumed run therefore draws exactly
  what the uninterrupted run drew, with nothing but the step to restore; the checkpoint still stores the global
  RNG states for anything outside our control.
- **Data order and input pipeline**: see :mod:`rssr_cli.train.data` (per-epoch permutations split across ranks
  without duplicates; decoding on a worker thread; augmentation on the training device).
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
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from rssr_cli import diffusion
from rssr_cli.degrade import upsample
from rssr_cli.errors import DataError, OutputError, TrainingError, UsageError
from rssr_cli.methods.diffusion import patch_origins, sample_tiles
from rssr_cli.metrics import psnr
from rssr_cli.model import ModelConfig, SRModel, build_model
from rssr_cli.patches import PatchCache
from rssr_cli.train.checkpoint import (
    CHECKPOINT_FORMAT,
    check_resumable,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
    truncate_log,
)
from rssr_cli.train.config import TrainConfig, model_config
from rssr_cli.train.data import (
    Prefetcher,
    Stream,
    augment,
    batch_indices,
    derive_seed,
    load_patches,
    normalization_from_data,
    source_shares,
    source_weights,
    split_indices,
)
from rssr_cli.train.distributed import Distributed, LossModel, setup_distributed, wrap_for_training
from rssr_cli.train.ema import EMA
from rssr_cli.train.real_lr import RealScenes, hr_block, radiometry_loss
from rssr_cli.weights import LoadedModel, load_weights, save_weights

__all__ = ["CHECKPOINT_FORMAT", "Progress", "TrainResult", "Trainer", "batch_indices", "learning_rate",
           "split_indices", "train", "validate"]

#: progress(event): events are the dicts written to metrics.jsonl ("kind": "start" | "data" | "train" | "val" |
#: "checkpoint" | "done"; "prepared" is reported but not logged).
Progress = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    weights: Path
    checkpoint: Path
    log: Path
    steps: int
    metrics: dict[str, Any] = field(default_factory=dict)


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from ``lr`` to ``lr * min_lr_ratio`` at the end."""
    if config.warmup and step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    span = max(1, config.steps - config.warmup)
    progress = min(1.0, (step - config.warmup) / span)
    floor = config.min_lr_ratio
    return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def validate(model: SRModel, val_cache: PatchCache, config: TrainConfig, device: torch.device) -> dict[str, float]:
    """PSNR of the model and of bicubic on the held-out patches. The model is sampled as ``rssr upscale`` samples it
    (:func:`rssr_cli.methods.diffusion.sample_tiles`: its sampler defaults, ``val_steps`` if set, position-keyed
    noise from the run's seed)."""
    mc = model.config
    sampler = mc.sampler if not config.val_steps else replace(mc.sampler, steps=config.val_steps)
    n = min(len(val_cache), config.val_max_patches)
    batch = max(1, config.batch_size)
    p_model, p_bic = [], []
    for i in range(0, n, batch):
        idx = np.arange(i, min(n, i + batch))
        lr, hr, valid = (torch.from_numpy(a).to(device) for a in val_cache.batch(idx))
        sr, _ = sample_tiles(model, lr, patch_origins(idx, hr.shape[-1]), sampler, seed=config.seed, amp=config.amp)
        p_model.append(psnr(sr, hr, valid).cpu())
        p_bic.append(psnr(upsample(lr, mc.scale), hr, valid).cpu())
    pm, pb = float(torch.cat(p_model).mean()), float(torch.cat(p_bic).mean())
    return {"val_psnr": pm, "val_psnr_bicubic": pb, "val_psnr_gain": pm - pb, "val_patches": n}


#: What a fine-tuning run ([train] init) may change in the [model] of its weights: the training loss only (the
#: architecture, normalisation and what the network predicts are the weights').
FINE_TUNING_KEYS = ("loss",)


def fine_tuning_changes(model_table: dict[str, Any], init: str) -> dict[str, Any]:
    """The [model] keys a run with ``init`` applies to its weights' config; any other key is refused, not ignored."""
    other = sorted(set(model_table) - set(FINE_TUNING_KEYS))
    if other:
        raise UsageError(f"init = {init}: the model comes from the weights file, so [model] may only set "
                         f"{', '.join(FINE_TUNING_KEYS)}; remove {', '.join(other)}")
    return {k: model_table[k] for k in FINE_TUNING_KEYS if k in model_table}


def _due(done: int, every: int, last: int) -> bool:
    """Every ``every`` steps, and always at the last one."""
    return done % every == 0 or done == last


class Trainer:
    """One process's share of a training run: the data, the model, its optimiser, EMA and noise schedule, and the
    outputs. :meth:`open` (refuse or resume an existing run), :meth:`setup`, :meth:`run` (the steps, with logging,
    validation and checkpoints as they fall due), :meth:`export`, :meth:`close` — :func:`train` calls them in order.
    Only the main process (rank 0) writes files and reports progress; collectives are entered by every rank."""

    # Set by setup().
    cache: PatchCache
    data_name: str
    train_cache: PatchCache
    val_cache: PatchCache
    model_config: ModelConfig
    model: SRModel
    schedule: diffusion.NoiseSchedule
    optimizer: torch.optim.AdamW
    ema: EMA
    loss_model: LossModel
    eval_model: SRModel

    def __init__(self, config: TrainConfig, dist: Distributed, device: torch.device, *,
                 progress: Progress | None = None, command: list[str] | None = None) -> None:
        self.config = config
        self.dist = dist
        self.device = device
        self.progress = progress if dist.main else None
        self.command = command
        self.out = Path(config.out)
        self.checkpoint_path = self.out / "checkpoint.pt"
        self.log_path = self.out / "metrics.jsonl"
        self.weights_path = self.out / "model.safetensors"
        self.start_step = 0
        self.resumed = False
        self.metrics: dict[str, Any] = {}
        self.prefetcher: Prefetcher | None = None
        # Loss and throughput since the last "train" event (summed on the device: no sync per step).
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.real_loss_sum = torch.zeros(2, dtype=torch.float64, device=device)  # block means, detail kept
        self.loss_steps = 0
        self.real_scenes: RealScenes | None = None
        self.real_reference: SRModel | None = None
        self.patches_seen = 0
        self.window_start = time.perf_counter()

    # -------------------------------------------------------------------------------------------------- setup

    def open(self, resume: bool | str | os.PathLike[str], overwrite: bool) -> dict[str, Any] | None:
        """The checkpoint to resume from (None for a fresh run); a fresh run refuses an ``out`` already used."""
        state = None
        if resume:
            state = load_checkpoint(self.checkpoint_path if resume is True else Path(resume))
        elif self.dist.main and (self.checkpoint_path.exists() or self.weights_path.exists()) and not overwrite:
            raise OutputError(f"{self.out} already holds a training run; pass --resume to continue it or "
                              "--overwrite to start over")
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries([self.checkpoint_path, self.log_path, self.weights_path,
                                      self.out / "patches.npz"])
        self.dist.barrier()
        return state

    def setup(self, state: dict[str, Any] | None) -> None:
        """Data, model, optimiser, EMA; restored from ``state`` when resuming."""
        self.load_data()
        initial = None
        if state is not None:
            check_resumable(state, self.config, patches=len(self.cache), world=self.dist.world,
                            data_name=self.data_name)
            self.model_config = ModelConfig.from_dict(state["model_config"])
        elif self.config.init is not None:
            initial = self.initial_weights(self.config.init)
            self.model_config = initial.config.replace(**fine_tuning_changes(self.config.model, self.config.init))
        else:
            self.model_config = self.fresh_model_config()
        torch.manual_seed(derive_seed(self.config.seed, Stream.INITIAL_WEIGHTS))  # identical on every rank
        self.model = build_model(self.model_config).to(self.device)
        if initial is not None:
            self.model.load_state_dict(initial.model.state_dict())
        self.schedule = diffusion.NoiseSchedule.from_config(self.model_config.schedule)
        sampler = self.model_config.sampler
        self.focus_steps = diffusion.lr_start_timesteps(self.schedule, steps=sampler.steps, start=sampler.start,
                                                        estimate=sampler.init == "estimate")
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.config.lr, betas=self.config.betas,
                                           weight_decay=self.config.weight_decay)
        self.ema = EMA(self.model, self.config.ema_decay)
        if state is not None:
            self.restore(state)
        elif self.dist.main and self.log_path.exists():
            self.log_path.unlink()
        self.loss_model = wrap_for_training(self.model, self.dist, self.device)
        self.eval_model = build_model(self.model_config).to(self.device).eval()
        if self.real_scenes is not None and self.config.real_lr_anchor > 0:
            # The network the run started from, frozen: what it draws within the blocks is kept on real input.
            self.real_reference = load_weights(self.config.init, device=self.device).model.eval().requires_grad_(False)

    def load_data(self) -> None:
        """The patch cache and its train/validation split."""
        c = self.config
        self.cache, self.data_name = load_patches(c, self.out, main=self.dist.main, wait=self.dist.barrier,
                                                  progress=self.progress)
        if len(self.cache) < 2:
            raise DataError(f"{self.data_name}: {len(self.cache)} patch(es); training needs at least 2")
        train_idx, val_idx = split_indices(len(self.cache), c.val_fraction, c.seed)
        self.train_cache, self.val_cache = self.cache.subset(train_idx), self.cache.subset(val_idx)
        self.source_weights = source_weights(self.train_cache.pair, c.source_balance)
        if c.crop is not None and c.crop > self.cache.lr.shape[-1]:
            raise UsageError(f"crop {c.crop} is larger than the cache's {self.cache.lr.shape[-1]}-pixel patches")
        if c.real_lr and c.real_lr_weight > 0:
            hr_block(self.cache.scale)  # refuses a scale at which the blocks do not fall on HR pixels
            self.real_scenes = RealScenes.open(c.real_lr, bidx=c.real_lr_bidx, bands=self.cache.bands)

    def fresh_model_config(self) -> ModelConfig:
        """The [model] table for the data's bands and scale, normalised by the training split's statistics."""
        mc = model_config(self.config.model, self.cache.bands, self.cache.scale)
        if self.config.normalize_from_data:
            mc = mc.replace(normalization=normalization_from_data(self.train_cache, mc.normalization))
        return mc

    def initial_weights(self, path: str) -> LoadedModel:
        """The weights a fine-tuning run starts from; they must be for the cache's bands and scale."""
        loaded = load_weights(path)
        config = loaded.config
        if tuple(config.bands) != tuple(self.cache.bands) or config.scale != self.cache.scale:
            raise UsageError(f"init = {path}: the weights are for bands {','.join(config.bands)} at x{config.scale}, "
                             f"{self.data_name} has {','.join(self.cache.bands)} at x{self.cache.scale}")
        return loaded

    def restore(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` stopped: weights, optimiser, EMA, step, metrics, global RNG states, and the log
        truncated to the checkpoint's step."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.ema.load_state_dict(state["ema"])
        self.start_step = int(state["step"])
        self.resumed = True
        self.metrics = dict(state.get("metrics", {}))
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        if self.dist.main:
            truncate_log(self.log_path, self.start_step)

    # ---------------------------------------------------------------------------------------------- the steps

    def run(self) -> None:
        """Every step from ``start_step`` to ``config.steps``; logs, validation and checkpoints as they fall due."""
        c = self.config
        self.emit({"kind": "start", "step": self.start_step, "steps": c.steps,
                   "patches_train": len(self.train_cache), "patches_val": len(self.val_cache),
                   "world_size": self.dist.world, "device": self.device.type,
                   "parameters": sum(p.numel() for p in self.model.parameters()), "resumed": self.resumed,
                   "source_shares": source_shares(self.train_cache, self.source_weights)})
        self.model.train()
        self.window_start = time.perf_counter()
        self.prefetcher = Prefetcher(self.train_cache, self.indices_for, self.start_step, c.steps)
        for step in range(self.start_step, c.steps):
            idx, (lr, hr, valid) = self.prefetcher.get(step)
            if step == self.start_step:
                self.emit({"kind": "data", "step": step, "first_batch_by_rank": self.dist.gather_indices(idx)})
            rate, grad_norm = self.step(step, lr, hr, valid)
            done = step + 1
            if _due(done, c.log_every, c.steps):
                self.log(done, rate, grad_norm)
            if _due(done, c.val_every, c.steps):
                self.validate(done)
                self.model.train()
            if _due(done, c.checkpoint_every, c.steps):
                self.save_checkpoint(done)

    def indices_for(self, step: int) -> np.ndarray:
        """This rank's patches (indices into the training split) at ``step``."""
        c = self.config
        return batch_indices(len(self.train_cache), step, c.batch_size, self.dist.rank, self.dist.world, c.seed,
                             self.source_weights)

    def step(self, step: int, lr: torch.Tensor, hr: torch.Tensor, valid: torch.Tensor) -> tuple[float, torch.Tensor]:
        """One optimiser step on this rank's batch (CPU tensors); returns the learning rate and gradient norm."""
        c, device = self.config, self.device
        aug_gen = torch.Generator(device=device).manual_seed(self.step_seed(Stream.STEP_AUGMENT, step))
        noise_gen = torch.Generator(device=device).manual_seed(self.step_seed(Stream.STEP_DIFFUSION, step))
        torch.manual_seed(self.step_seed(Stream.STEP_GLOBAL, step))
        lr, hr = augment(lr.to(device, non_blocking=True), hr.to(device, non_blocking=True),
                         synthetic=self.train_cache.synthetic, scale=self.train_cache.scale, config=c,
                         generator=aug_gen, bands=self.train_cache.bands)
        mask = valid.to(device)[:, :, None, None].float()
        lr_up = upsample(lr, self.model_config.scale)
        rate = learning_rate(step, c)
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=c.amp and device.type == "cuda"):
            t = None
            if c.sampler_focus > 0:
                t = diffusion.draw_timesteps(len(hr), self.schedule, noise_gen, focus=c.sampler_focus,
                                             focus_steps=self.focus_steps)
            loss = diffusion.diffusion_loss(self.loss_model, self.schedule, hr, lr_up, noise_gen, mask=mask, t=t)
        # Every rank learns whether any loss is non-finite before anyone raises: no rank waits in a collective.
        finite = self.dist.all_reduce(torch.isfinite(loss.detach()).to(torch.int32), "min")
        if not bool(finite):
            value = float(loss.detach())
            what = repr(value) if not math.isfinite(value) else "non-finite on another process"
            raise TrainingError(f"the loss became {what} at step {step + 1} (lr {rate:.3g}); lower --set lr=..., "
                                f"check the data, or --resume from {self.checkpoint_path}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.real_scenes is not None:
            self.real_step(step, rate)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        if not torch.isfinite(grad_norm):  # gradients are all-reduced by DDP: every rank sees the same norm
            raise TrainingError(f"the gradient became non-finite at step {step + 1} (lr {rate:.3g}); lower "
                                f"--set lr=..., or --resume from {self.checkpoint_path}")
        self.optimizer.step()
        self.ema.update(self.model)
        self.loss_sum += loss.detach().double()
        self.loss_steps += 1
        self.patches_seen += len(lr)
        return rate, grad_norm

    def real_step(self, step: int, rate: float) -> None:
        """Add the gradient of the radiometry loss on a batch of real LR crops (its own forward and backward: under
        DDP each backward synchronises its gradients, which then add up as in gradient accumulation)."""
        c, device = self.config, self.device
        seed = self.step_seed(Stream.STEP_REAL, step)
        lr = self.real_scenes.batch(c.real_lr_batch, torch.Generator().manual_seed(seed)).to(device)
        generator = torch.Generator(device=device).manual_seed(seed)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=c.amp and device.type == "cuda"):
            parts = radiometry_loss(self.loss_model, self.schedule, lr, generator, steps=self.focus_steps,
                                    reference=self.real_reference)
        detail = parts.detail if parts.detail is not None else torch.zeros_like(parts.means)
        loss = parts.means + c.real_lr_anchor * detail
        finite = self.dist.all_reduce(torch.isfinite(loss.detach()).to(torch.int32), "min")
        if not bool(finite):
            raise TrainingError(f"the real-LR radiometry loss became non-finite at step {step + 1} (lr {rate:.3g}); "
                                f"check the real_lr scenes, or --resume from {self.checkpoint_path}")
        (c.real_lr_weight * loss).backward()
        self.real_loss_sum += torch.stack([parts.means.detach(), detail.detach()]).double()

    def step_seed(self, stream: Stream, step: int) -> int:
        return derive_seed(self.config.seed, stream, self.dist.rank, step)

    # ---------------------------------------------------------------------------------------------- outputs

    def emit(self, event: dict[str, Any]) -> None:
        """Append ``event`` to metrics.jsonl and report it (main process only)."""
        if not self.dist.main:
            return
        with open(self.log_path, "a") as f:
            f.write(json.dumps(event, default=float) + "\n")
        if self.progress is not None:
            self.progress(event)

    def log(self, done: int, rate: float, grad_norm: torch.Tensor) -> None:
        """A "train" event: the loss averaged over every rank and step since the last one, and the throughput."""
        steps = torch.tensor(float(self.loss_steps), dtype=torch.float64, device=self.device)
        total = self.dist.all_reduce(torch.cat([self.loss_sum[None], self.real_loss_sum, steps[None]]))
        now = time.perf_counter()
        loss = float(total[0] / total[3])
        event = {"kind": "train", "step": done, "loss": loss, "lr": rate, "grad_norm": float(grad_norm),
                 "patches_per_s": self.patches_seen * self.dist.world / (now - self.window_start)}
        if self.real_scenes is not None:
            event["real_lr_loss"] = float(total[1] / total[3])
            if self.real_reference is not None:
                event["real_lr_detail"] = float(total[2] / total[3])
        self.emit(event)
        self.metrics["loss"] = loss
        self.window_start, self.patches_seen = now, 0
        self.loss_sum.zero_()
        self.real_loss_sum.zero_()
        self.loss_steps = 0

    def validate(self, done: int) -> None:
        """Score the EMA weights on the validation split (main process; the others wait)."""
        if len(self.val_cache) == 0:
            return
        if self.dist.main:
            self.ema.copy_to(self.eval_model)
            result = validate(self.eval_model, self.val_cache, self.config, self.device)
            self.metrics.update(result)
            self.emit({"kind": "val", "step": done, **result})
        self.dist.barrier()

    def save_checkpoint(self, done: int) -> None:
        if self.dist.main:
            save_checkpoint(self.checkpoint_path, {
                "step": done,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "ema": self.ema.state_dict(),
                "model_config": self.model_config.to_dict(),
                "train_config": self.config.to_dict(),
                "world_size": self.dist.world,
                "patches": len(self.cache),
                "metrics": self.metrics,
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None},
            })
            self.emit({"kind": "checkpoint", "step": done, "path": str(self.checkpoint_path)})
        self.dist.barrier()

    def export(self) -> TrainResult:
        """Write the EMA weights with their provenance (main process; the others wait)."""
        c = self.config
        if self.dist.main:
            self.ema.copy_to(self.eval_model)
            provenance = {
                "trained_by": "rssr train",
                "command": self.command if self.command is not None else list(sys.argv),
                "data": self.data_name,
                "data_patches": {"train": len(self.train_cache), "val": len(self.val_cache)},
                "data_sources": [{k: s.get(k) for k in ("hr", "lr", "hr_band_map", "masked_bands")}
                                 for s in self.cache.meta.get("sources", [])][:100],
                "synthetic_lr": self.cache.synthetic,
                "steps": c.steps,
                "world_size": self.dist.world,
                "device": self.device.type,
                "metrics": self.metrics,
                "train_config": c.to_dict(),
                "torch": torch.__version__,
                "python": platform.python_version(),
                "weights": "EMA",
            }
            save_weights(self.weights_path, self.eval_model, self.model_config, provenance)
            self.emit({"kind": "done", "step": c.steps, "weights": str(self.weights_path), **self.metrics})
        self.dist.barrier()
        return TrainResult(weights=self.weights_path, checkpoint=self.checkpoint_path, log=self.log_path,
                           steps=c.steps, metrics=self.metrics)

    def close(self) -> None:
        """Stop the prefetching thread (also after an error)."""
        if self.prefetcher is not None:
            self.prefetcher.close()


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
    dist, device = setup_distributed(config.device)
    with closing(dist), closing(Trainer(config, dist, device, progress=progress, command=command)) as trainer:
        trainer.setup(trainer.open(resume, overwrite))
        trainer.run()
        return trainer.export()
