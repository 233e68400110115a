"""Exponential moving average of model weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``shadow = decay * shadow + (1 - decay) * weights`` after every optimiser step.

    The effective decay is ``min(decay, (1 + step) / (10 + step))`` so that
    the average is not dominated by the random initial weights in short runs.
    Buffers are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999):
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the current weights of ``model`` (same architecture) into the average."""
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        shadow = list(self.model.parameters())
        weights = [p.detach().to(s.dtype) for s, p in zip(shadow, model.parameters())]
        if shadow:
            torch._foreach_lerp_(shadow, weights, 1.0 - d)  # one fused call instead of one op per tensor
        for s, b in zip(self.model.buffers(), model.buffers()):
            s.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights (a model state dict)."""
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        """Restore averaged weights and the update counter."""
        self.model.load_state_dict(state)
        self.num_updates = int(num_updates)
