"""Running under ``torchrun``: which process this is, the few collectives training needs, and the DDP-wrapped loss.

A single-process run never touches :mod:`torch.distributed`: every collective here is a no-op when the world is one
process, so the training loop is written once for both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist

from rssr_cli.errors import UsageError


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run (from torchrun's RANK, WORLD_SIZE and LOCAL_RANK) and its collectives."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        """Rank 0: the only process that writes files and reports progress."""
        return self.rank == 0

    def all_reduce(self, value: torch.Tensor, op: Literal["sum", "min"] = "sum") -> torch.Tensor:
        """``value`` reduced in place over every rank (and returned)."""
        if self.world > 1:
            dist.all_reduce(value, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN}[op])
        return value

    def gather_indices(self, indices: np.ndarray) -> list[list[int]]:
        """Every rank's batch indices (logged once per run, so that the data split across ranks can be checked)."""
        if self.world == 1:
            return [indices.tolist()]
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, indices.tolist())
        return gathered

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group if :func:`setup_distributed` joined it (a caller's own group is left alone)."""
        if self.initialised_here:
            dist.destroy_process_group()


def setup_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """This process's rank and device. With more than one process, join the group (NCCL on CUDA, gloo on CPU).

    ``device_name``: "auto" (this rank's GPU, else the CPU), "cpu", "cuda" (this rank's GPU) or "cuda:N".
    """
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
    return Distributed(rank, world, local_rank, initialised), device


class LossModel:
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


def wrap_for_training(module: torch.nn.Module, distributed: Distributed, device: torch.device) -> LossModel:
    """The model as the loss calls it: through DistributedDataParallel when there are several processes."""
    if distributed.world == 1:
        return LossModel(module, module)
    from torch.nn.parallel import DistributedDataParallel

    ddp = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    return LossModel(ddp, module)
