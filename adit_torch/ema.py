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
        self.model = _copy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the current weights of ``model`` (same architecture) into the average."""
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        # matched by name, not by position
        params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
        shadow = list(self.model.named_parameters())
        weights = [params[name].detach().to(s.dtype) for name, s in shadow]
        if shadow:
            torch._foreach_lerp_([s for _, s in shadow], weights, 1.0 - d)  # one fused call, not one op per tensor
        for name, s in self.model.named_buffers():
            s.copy_(buffers[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights (a model state dict)."""
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        """Restore averaged weights and the update counter."""
        self.model.load_state_dict(state)
        self.num_updates = int(num_updates)


def _copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with its weights: built anew from ``model.cfg`` where its class takes one (without
    touching the global random state), else ``copy.deepcopy``. A deep copy of e3nn's generated modules
    (:mod:`adit_torch.equivariant`) regenerates their code and lists its constants in the state dict, which
    a model built from its config does not."""
    cfg = getattr(model, "cfg", None)
    if cfg is not None:
        with torch.random.fork_rng(devices=[]):
            try:
                fresh = type(model)(cfg)
            except TypeError:
                fresh = None
        if fresh is not None:
            first = next(model.parameters(), None)
            if first is not None:
                fresh = fresh.to(device=first.device, dtype=first.dtype)
            fresh.load_state_dict(model.state_dict())
            return fresh
    return copy.deepcopy(model)
