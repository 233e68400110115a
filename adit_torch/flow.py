"""Generic flow matching on padded token sets (no chemistry here).

Linear interpolant ``x_t = t * x1 + (1 - t) * x0`` with ``x0 ~ N(0, I)``; the
network predicts the clean sample ``x1``; the x1 error is divided by
``1 - min(t, t_clip)`` before squaring, so the loss is the masked mean squared
error weighted by ``1 / (1 - min(t, t_clip))^2``: the velocity error
``(x1_hat - x1) / (1 - t)`` up to the clip, as in the reference's
``ldm_module.criterion``. Self-conditioning feeds the network its own detached estimate of ``x1``
half of the time. Sampling integrates the ODE ``dx/dt = (x1_hat - x_t) / (1 - t)``
(the velocity implied by a clean prediction) on a time grid (:func:`time_grid`:
uniform, denser near ``t = 1``, or the reference's) with a chosen solver
(:data:`SOLVERS`: Euler, Heun, midpoint, and a second-order multistep method that
reuses the previous step's prediction); :func:`solve` counts the network evaluations (NFE) it
spends.

The network is any callable ``net(x_t, t, self_cond) -> x1_hat`` with
``x_t (B, N, D)``, ``t (B,)``, ``self_cond (B, N, D) | None``; conditions and
guidance are bound into it by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from adit_torch.config import FlowConfig
from adit_torch.errors import ConfigError

#: ODE solvers of :func:`solve`: network evaluations per step (the last Heun step, which ends at
#: ``t = 1`` where the velocity is undefined, is an Euler step: one evaluation). ``multistep`` is
#: second order at one evaluation per step (DPM-Solver++(2M) of Lu et al. 2022 written for this
#: path, see :func:`solve`).
SOLVERS = {"euler": 1, "heun": 2, "midpoint": 2, "multistep": 1}
#: Time grids of :func:`time_grid`.
TIME_GRIDS = ("uniform", "power", "reference")

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


def euler_sample(net: Denoiser, mask: torch.Tensor, dim: int, steps: int, generator: torch.Generator | None = None,
                 self_condition: bool = True, dtype=torch.float32, x0: torch.Tensor | None = None) -> torch.Tensor:
    """Integrate the flow from noise to data with ``steps`` Euler steps on the uniform grid.

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
        ``(B, N, D)`` samples at ``t = 1`` (the last clean prediction). :func:`solve` is the general
        form (solvers, grids, NFE).
    """
    bsz, n = mask.shape
    if x0 is None:
        x0 = masked_noise((bsz, n, dim), mask, generator, dtype)
    elif x0.shape != (bsz, n, dim):
        raise ConfigError(f"euler_sample: x0 has shape {tuple(x0.shape)}, expected {(bsz, n, dim)}")
    return solve(net, x0.to(dtype), mask, time_grid(steps), "euler", self_condition)[0]


def _half_logsnr(t: float) -> float:
    """``log(t / (1 - t))``, infinite at ``t = 0`` and ``t = 1``."""
    if t <= 0.0:
        return -math.inf
    if t >= 1.0:
        return math.inf
    return math.log(t) - math.log1p(-t)


def _check_solver(solver: str) -> None:
    if solver not in SOLVERS:
        raise ConfigError(f"unknown ODE solver {solver!r}; choose one of {', '.join(SOLVERS)}")


def ends_with_clean_prediction(kind: str) -> bool:
    """Whether a run on the time grid ``kind`` ends with one more evaluation at ``t = 1`` whose clean
    prediction is the sample (``final_clean`` of :func:`solve`): true for the reference's grid only."""
    return kind == "reference"


def evaluation_schedule(grid: list[float], solver: str = "euler", final_clean: bool = False) -> list[float]:
    """The time of every network evaluation :func:`solve` makes on ``grid``, in order, repeats kept
    (a Heun corrector and the next step's predictor both evaluate at the same time)."""
    _check_solver(solver)
    out = []
    for t0, t1 in zip(grid[:-1], grid[1:]):
        out.append(t0)
        if solver == "heun" and t1 < 1.0:
            out.append(t1)
        elif solver == "midpoint":
            out.append(0.5 * (t0 + t1))
    if final_clean:
        out.append(grid[-1])
    return out


def nfe_of(grid: list[float], solver: str = "euler", final_clean: bool = False) -> int:
    """Network evaluations :func:`solve` spends on ``grid`` with ``solver`` (per sample, per guidance half)."""
    return len(evaluation_schedule(grid, solver, final_clean))


def in_interval(t: float, interval: tuple[float, float] | None) -> bool:
    """Whether time ``t`` lies in the closed ``interval`` ``(lo, hi)``; None is everywhere."""
    return interval is None or interval[0] <= t <= interval[1]


def time_grid(steps: int, kind: str = "uniform", power: float = 2.0) -> list[float]:
    """Times ``t_0 < ... < t_K = 1`` of an integration from noise (0) to data (1).

    Args:
        steps: number of solver steps K.
        kind: ``uniform`` (``i / K``); ``power`` (``1 - (1 - i / K) ** power``, steps shrinking
            towards ``t = 1`` where bond lengths are set); ``reference`` (``linspace(0.01, 1, K)`` as
            the reference implementation: K - 1 steps from 0.01, then one last evaluation at 1 whose
            clean prediction is the sample).
        power: exponent of the ``power`` grid (> 1 is denser near 1).
    """
    if steps <= 0:
        raise ConfigError(f"steps must be positive, got {steps}")
    if kind == "uniform":
        return [i / steps for i in range(steps + 1)]
    if kind == "power":
        if not power > 0:
            raise ConfigError(f"the power time grid needs a positive exponent, got {power}")
        return [1.0 - (1.0 - i / steps) ** power for i in range(steps + 1)]
    if kind == "reference":
        if steps < 2:
            raise ConfigError("the reference time grid needs at least 2 steps")
        return [0.01 + (1.0 - 0.01) * i / (steps - 1) for i in range(steps)]
    raise ConfigError(f"unknown time grid {kind!r}; choose one of {', '.join(TIME_GRIDS)}")


def evaluation_times(grid: list[float], solver: str = "euler", final_clean: bool = False) -> list[float]:
    """Every distinct time at which :func:`solve` calls the network on ``grid``, sorted (for caches keyed
    by time)."""
    return sorted(set(evaluation_schedule(grid, solver, final_clean)))


@torch.no_grad()
def solve(net: Denoiser, x0: torch.Tensor, mask: torch.Tensor, grid: list[float], solver: str = "euler",
          self_condition: bool = True, final_clean: bool = False) -> tuple[torch.Tensor, int]:
    """Integrate ``dx/dt = (x1_hat(x, t) - x) / (1 - t)`` from ``x0`` at ``grid[0]`` to ``grid[-1]``.

    Args:
        net: the denoiser ``(x_t, t (B,), self_cond) -> x1_hat``.
        x0: ``(B, N, D)`` initial state (noise at ``grid[0]``); padded tokens are zeroed.
        mask: ``(B, N)`` bool.
        grid: increasing times (:func:`time_grid`); a step that ends at ``t = 1`` lands on the
            clean prediction.
        solver: ``euler``, ``heun`` (trapezoidal predictor-corrector, 2nd order), ``midpoint``
            (2nd order) or ``multistep`` (2nd order, one evaluation per step). ``multistep`` is the
            DPM-Solver++(2M) update for the path ``x_t = t x1 + (1 - t) x0``: in the half log-SNR
            ``lambda = log(t / (1 - t))`` the exact step under a constant clean prediction ``D`` is
            ``x <- (1 - t1) / (1 - t0) x + (t1 - t0 (1 - t1) / (1 - t0)) D`` (which is Euler's step with
            ``D = x1_hat``), and ``D`` is extrapolated linearly in ``lambda`` from this step's and the
            previous step's predictions, ``D = x1_hat + (x1_hat - x1_hat_prev) h / (2 h_prev)``. Steps
            that start at ``t = 0`` or follow one, and the step that ends at ``t = 1`` (infinite
            ``lambda``), use ``D = x1_hat``.
        self_condition: feed the latest ``x1_hat`` back as self-conditioning.
        final_clean: after the last step, evaluate once more at ``grid[-1]`` and return that clean
            prediction (the reference's ending when its grid stops at 1 after Euler steps).

    Returns:
        ``(x, nfe)``: the sample ``(B, N, D)`` and the number of network evaluations spent.
    """
    _check_solver(solver)
    m = mask.unsqueeze(-1).to(x0.dtype)
    bsz = x0.shape[0]
    x = x0 * m
    state = {"sc": None, "nfe": 0}

    def clean(x_t, t):
        tt = torch.full((bsz,), t, device=x_t.device, dtype=x_t.dtype)
        out = net(x_t, tt, state["sc"] if self_condition else None).to(x_t.dtype) * m
        state["sc"] = out
        state["nfe"] += 1
        return out

    def velocity(x_t, t):
        return (clean(x_t, t) - x_t) / (1.0 - t)

    prev = None  # multistep: (h of the previous step, its clean prediction)
    for t0, t1 in zip(grid[:-1], grid[1:]):
        dt = t1 - t0
        if solver == "multistep":
            d = clean(x, t0)
            h = _half_logsnr(t1) - _half_logsnr(t0)
            if t1 >= 1.0:
                x = d
            else:
                target = d
                if prev is not None and math.isfinite(prev[0]) and math.isfinite(h):
                    target = d + (d - prev[1]) * (h / (2.0 * prev[0]))
                ratio = (1.0 - t1) / (1.0 - t0)
                x = ratio * x + (t1 - t0 * ratio) * target
            prev = (h, d)
        elif solver == "midpoint":
            x_mid = x + 0.5 * dt * velocity(x, t0)
            x = x + dt * velocity(x_mid, t0 + 0.5 * dt)
        else:
            v0 = velocity(x, t0)
            pred = x + dt * v0
            if solver == "heun" and t1 < 1.0:
                x = x + 0.5 * dt * (v0 + velocity(pred, t1))
            else:
                x = pred
        x = x * m
    if final_clean:
        x = clean(x, grid[-1])
    return x * m, state["nfe"]
