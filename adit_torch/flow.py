"""Generic flow matching on padded token sets (no chemistry here).

Linear interpolant ``x_t = t * x1 + (1 - t) * x0`` with ``x0 ~ N(0, I)``; the
network predicts the clean sample ``x1``; the x1 error is divided by
``1 - min(t, t_clip)`` before squaring, so the loss is the masked mean squared
error weighted by ``1 / (1 - min(t, t_clip))^2``: the velocity error
``(x1_hat - x1) / (1 - t)`` up to the clip, as in the reference's
``ldm_module.criterion``. Self-conditioning feeds the network its own detached estimate of ``x1``
half of the time. Sampling integrates the ODE with Euler steps; the velocity
implied by a clean prediction is ``(x1_hat - x_t) / (1 - t)``.

The network is any callable ``net(x_t, t, self_cond) -> x1_hat`` with
``x_t (B, N, D)``, ``t (B,)``, ``self_cond (B, N, D) | None``; conditions and
guidance are bound into it by the caller.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from adit_torch.config import FlowConfig
from adit_torch.errors import ConfigError

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``t * x1 + (1 - t) * x0`` with ``t (B,)`` broadcast over ``(B, N, D)``."""
    tt = t.view(-1, *([1] * (x1.dim() - 1))).to(x1.dtype)
    return tt * x1 + (1 - tt) * x0


def masked_noise(shape, mask: torch.Tensor, generator: torch.Generator | None = None,
                 dtype=torch.float32) -> torch.Tensor:
    """Standard normal ``(B, N, D)`` noise, zero on padded tokens (``mask (B, N)``)."""
    x0 = torch.randn(shape, generator=generator, device=mask.device, dtype=dtype)
    return x0 * mask.unsqueeze(-1).to(dtype)


def flow_matching_loss(net: Denoiser, x1: torch.Tensor, mask: torch.Tensor, cfg: FlowConfig,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Velocity-weighted clean-sample loss (scalar) for data ``x1 (B, N, D)`` with ``mask (B, N)``.

    Per sample: the squared x1 error averaged over real tokens and dims, times
    ``(1 - min(t, t_clip)) ** -cfg.weight_power`` (2: the squared velocity error); the batch loss
    is the mean over samples.

    Draws ``t ~ U(0, 1)`` per sample, noise ``x0``, and (with probability
    ``cfg.self_cond_prob`` per batch) a detached self-conditioning estimate.
    """
    bsz = x1.shape[0]
    dev = x1.device
    t = torch.rand(bsz, generator=generator, device=dev)
    x0 = masked_noise(x1.shape, mask, generator, x1.dtype)
    xt = interpolate(x0, x1, t)
    self_cond = None
    if cfg.self_cond_prob > 0 and float(torch.rand((), generator=generator, device=dev)) < cfg.self_cond_prob:
        with torch.no_grad():
            self_cond = net(xt, t, None).detach()
    pred = net(xt, t, self_cond)
    m = mask.unsqueeze(-1).to(pred.dtype)
    err = ((pred.float() - x1.float()) ** 2 * m).sum(dim=(1, 2)) / (m.sum(dim=(1, 2)) * x1.shape[-1]).clamp_min(1)
    weight = (1.0 - torch.clamp(t, max=cfg.t_clip)) ** -cfg.weight_power
    return (weight * err).mean()


@torch.no_grad()
def euler_sample(net: Denoiser, mask: torch.Tensor, dim: int, steps: int, generator: torch.Generator | None = None,
                 self_condition: bool = True, dtype=torch.float32, x0: torch.Tensor | None = None) -> torch.Tensor:
    """Integrate the flow from noise to data with ``steps`` Euler steps.

    Args:
        net: the denoiser ``(x_t, t, self_cond) -> x1_hat``.
        mask: ``(B, N)`` bool; padded tokens stay zero.
        dim: token dimension D.
        steps: number of Euler steps (times ``0, 1/steps, ..., 1 - 1/steps``).
        generator: source of the initial noise (same generator state -> same samples).
        self_condition: feed the previous ``x1_hat`` back as self-conditioning.
        x0: optional initial noise ``(B, N, D)`` (drawn from ``generator`` when None); padded tokens
            are zeroed.

    Returns:
        ``(B, N, D)`` samples at ``t = 1`` (the last clean prediction).
    """
    bsz, n = mask.shape
    m = mask.unsqueeze(-1).to(dtype)
    if x0 is None:
        x = masked_noise((bsz, n, dim), mask, generator, dtype)
    elif x0.shape != (bsz, n, dim):
        raise ConfigError(f"euler_sample: x0 has shape {tuple(x0.shape)}, expected {(bsz, n, dim)}")
    else:
        x = x0.to(dtype) * m
    x1_hat = None
    for i in range(steps):
        t = torch.full((bsz,), i / steps, device=mask.device, dtype=dtype)
        x1_hat = net(x, t, x1_hat if self_condition else None).to(dtype) * m
        velocity = (x1_hat - x) / (1.0 - i / steps)
        x = x + velocity / steps
    return x * m
