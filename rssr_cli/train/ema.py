"""Exponential moving average of the model's weights: the exported model is the EMA, not the last step.

Why: diffusion training is noisy step to step; the EMA of the weights samples visibly better than any single
iterate (Ho et al. 2020, Song & Ermon 2020). The decay warms up as ``min(decay, (1 + n) / (10 + n))`` so that the
average is not dominated by the random initialisation during the first thousand steps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class EMA:
    """Shadow copies (float32) of every floating-point tensor in ``model.state_dict()``."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.updates = 0
        self.shadow: dict[str, torch.Tensor] = {k: v.detach().clone().float() if v.is_floating_point()
                                                else v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.is_floating_point():
                s.mul_(d).add_(v.detach().float(), alpha=1.0 - d)
            else:
                s.copy_(v)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (same architecture), in its own dtypes."""
        target = model.state_dict()
        model.load_state_dict({k: self.shadow[k].to(dtype=target[k].dtype, device=target[k].device)
                               for k in target})

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": {k: v.cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        for k, v in state["shadow"].items():
            self.shadow[k] = v.to(self.shadow[k].device, self.shadow[k].dtype).clone()
