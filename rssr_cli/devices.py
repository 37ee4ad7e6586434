"""Which torch device to run on, from what a user types (``--device auto|cpu|cuda[:N]``)."""

from __future__ import annotations

import logging

import torch

from rssr_cli.errors import UsageError

__all__ = ["resolve_device"]

logger = logging.getLogger(__name__)


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA if available else CPU; ``cuda[:N]`` without CUDA (or without device N) -> CPU, warning."""
    name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        logger.info("no CUDA device found; running the diffusion model on the CPU (slow)")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        try:
            dev = torch.device(name)
        except RuntimeError as exc:
            raise UsageError(f"--device {device!r} is not a device; use auto, cpu or cuda[:N]") from exc
        if not torch.cuda.is_available():
            logger.warning("--device %s asked for but CUDA is not available; falling back to the CPU", name)
            return torch.device("cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            logger.warning("--device %s does not exist (%d CUDA device(s)); falling back to the CPU", name,
                           torch.cuda.device_count())
            return torch.device("cpu")
        return dev
    raise UsageError(f"--device {device!r} is not a device; use auto, cpu or cuda[:N]")
