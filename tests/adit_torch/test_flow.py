"""Generic flow matching: interpolant, loss weighting, ODE solvers and time grids, learning a 2-mode mixture."""

import pytest
import torch
from torch import nn

from adit_torch.config import FlowConfig
from adit_torch.errors import ConfigError
from adit_torch.flow import (
    SOLVERS,
    euler_sample,
    evaluation_schedule,
    evaluation_times,
    flow_matching_loss,
    in_interval,
    interpolate,
    masked_noise,
    nfe_of,
    solve,
    time_grid,
)


def test_interpolant_endpoints_and_mask():
    x0, x1 = torch.randn(4, 5, 3), torch.randn(4, 5, 3)
    torch.testing.assert_close(interpolate(x0, x1, torch.zeros(4)), x0)
    torch.testing.assert_close(interpolate(x0, x1, torch.ones(4)), x1)
    mask = torch.tensor([[1, 1, 0, 0, 0]] * 4, dtype=torch.bool)
    noise = masked_noise((4, 5, 3), mask, torch.Generator().manual_seed(0))
    assert (noise[:, 2:] == 0).all() and (noise[:, :2] != 0).all()


def test_loss_of_perfect_denoiser_is_zero_and_weighted():
    x1 = torch.randn(8, 4, 2)
    mask = torch.ones(8, 4, dtype=torch.bool)
    cfg = FlowConfig(self_cond_prob=0.0)
    assert flow_matching_loss(lambda x, t, sc: x1, x1, mask, cfg) == 0
    # a constant x1 error of 1 per entry is a velocity error of 1 / (1 - min(t, 0.9)): the loss is the
    # mean of its square over the batch's times (the first draws of the same generator)
    loss = flow_matching_loss(lambda x, t, sc: x1 + 1, x1, mask, cfg, torch.Generator().manual_seed(0))
    t = torch.rand(8, generator=torch.Generator().manual_seed(0))
    expected = (1.0 / (1.0 - t.clamp(max=0.9)) ** 2).mean()
    torch.testing.assert_close(loss, expected)


def test_euler_sampler_with_exact_denoiser_returns_the_target():
    target = torch.randn(3, 4, 2)
    mask = torch.ones(3, 4, dtype=torch.bool)
    out = euler_sample(lambda x, t, sc: target, mask, 2, steps=7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, target)


def test_euler_sampler_given_noise_matches_the_generator_path_and_masks_it():
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    seen = []

    def net(x, t, sc):
        seen.append(x.clone())
        return torch.zeros_like(x)

    euler_sample(net, mask, 2, steps=2, generator=torch.Generator().manual_seed(5))
    noise = torch.randn((2, 3, 2), generator=torch.Generator().manual_seed(5))
    euler_sample(net, mask, 2, steps=2, x0=noise + 1.0)
    torch.testing.assert_close(seen[0], noise * mask[..., None])
    torch.testing.assert_close(seen[2], (noise + 1.0) * mask[..., None])
    with pytest.raises(ConfigError, match="x0 has shape"):
        euler_sample(net, mask, 2, steps=2, x0=torch.zeros(2, 3, 5))


class TokenMLP(nn.Module):
    def __init__(self, dim=2, hidden=64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * dim + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, dim))

    def forward(self, x, t, sc):
        sc = torch.zeros_like(x) if sc is None else sc
        tt = t.view(-1, 1, 1).expand(*x.shape[:2], 1)
        # velocity-style parametrisation x1 = x_t + (1 - t) * f, so the clean estimate
        # tends to the identity as t -> 1 (a plain small MLP over-smooths the modes)
        return x + (1 - tt) * self.net(torch.cat([x, sc, tt], dim=-1))


def test_flow_learns_two_mode_mixture():
    """Data: each token is +-2 (fair coin) plus N(0, 0.25^2) noise, per dimension."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    net = TokenMLP()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    cfg = FlowConfig()
    mask = torch.ones(256, 1, dtype=torch.bool)
    for _ in range(600):
        sign = torch.randint(0, 2, (256, 1, 1), generator=g) * 2 - 1
        x1 = 2.0 * sign + 0.25 * torch.randn(256, 1, 2, generator=g)
        loss = flow_matching_loss(net, x1, mask, cfg, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    samples = euler_sample(net, torch.ones(4000, 1, dtype=torch.bool), 2, steps=50,
                           generator=torch.Generator().manual_seed(1)).reshape(-1)
    pos = samples > 0
    assert 0.4 < pos.float().mean() < 0.6
    assert abs(float(samples[pos].mean()) - 2.0) < 0.2 and abs(float(samples[~pos].mean()) + 2.0) < 0.2
    assert 0.15 < float(samples[pos].std()) < 0.35  # data: 0.25
    # the untrained control: samples from noise would sit near 0
    assert float(samples.abs().mean()) > 1.5


def gaussian_denoiser(m: float, s: float):
    """The exact ``E[x1 | x_t]`` for data ``N(m, s^2)`` and noise ``N(0, 1)`` on the linear path."""
    def net(x, t, sc):
        tt = t.view(-1, 1, 1)
        var = tt ** 2 * s ** 2 + (1 - tt) ** 2
        return m + tt * s ** 2 * (x - tt * m) / var
    return net


def test_solvers_converge_to_the_exact_flow_map_at_their_order():
    """Gaussian to Gaussian: the flow maps ``x0`` to ``m + s x0`` exactly. Second-order solvers must be
    far closer than Euler at equal steps, and every solver must converge as steps grow."""
    m, s = 1.5, 0.3
    net = gaussian_denoiser(m, s)
    x0 = torch.linspace(-3, 3, 41, dtype=torch.float64).view(1, -1, 1)
    mask = torch.ones(1, 41, dtype=torch.bool)
    exact = m + s * x0
    err = {}
    for solver in SOLVERS:
        for steps in (5, 10, 20):
            x, nfe = solve(net, x0, mask, time_grid(steps), solver, self_condition=False)
            err[solver, steps] = float((x - exact).abs().max())
            assert nfe == nfe_of(time_grid(steps), solver)
    for solver in SOLVERS:
        assert err[solver, 20] < err[solver, 5]
    assert err["heun", 10] < err["euler", 10] / 3 and err["midpoint", 10] < err["euler", 10] / 3
    # the multistep method is second order at Euler's cost: same NFE, several times closer
    assert nfe_of(time_grid(10), "multistep") == nfe_of(time_grid(10), "euler") == 10
    assert err["multistep", 10] < err["euler", 10] / 2.5 and err["multistep", 20] < err["euler", 20] / 8
    # the power grid (steps shrinking towards t = 1) beats the uniform one for Euler here
    x, _ = solve(net, x0, mask, time_grid(10, "power"), "euler", self_condition=False)
    assert float((x - exact).abs().max()) < err["euler", 10]


def test_time_grids_and_the_times_the_network_sees():
    assert time_grid(4) == [0.0, 0.25, 0.5, 0.75, 1.0]
    power = time_grid(4, "power")
    assert power[0] == 0.0 and power[-1] == 1.0
    gaps = [b - a for a, b in zip(power, power[1:])]
    assert all(a > b for a, b in zip(gaps, gaps[1:]))  # denser towards the data
    ref = time_grid(5, "reference")
    assert len(ref) == 5 and ref[0] == pytest.approx(0.01) and ref[-1] == pytest.approx(1.0)
    assert evaluation_times(time_grid(2), "euler") == [0.0, 0.5]
    assert evaluation_times(time_grid(2), "heun") == [0.0, 0.5]  # no corrector at t = 1
    assert evaluation_times(time_grid(2), "midpoint") == [0.0, 0.25, 0.5, 0.75]
    assert nfe_of(time_grid(10), "heun") == 19 and nfe_of(ref, "euler", final_clean=True) == 5
    # the schedule keeps repeats: a Heun corrector and the next predictor both evaluate at t = 0.5
    assert evaluation_schedule(time_grid(3), "heun") == pytest.approx([0.0, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert evaluation_times(time_grid(2), "multistep") == [0.0, 0.5]
    assert in_interval(0.5, (0.0, 0.5)) and not in_interval(0.51, (0.0, 0.5)) and in_interval(0.9, None)
    seen = []
    solve(lambda x, t, sc: seen.append(float(t[0])) or x, torch.zeros(1, 2, 1), torch.ones(1, 2, dtype=torch.bool),
          time_grid(3), "midpoint")
    assert seen == pytest.approx(evaluation_times(time_grid(3), "midpoint"))
    with pytest.raises(ConfigError, match="unknown ODE solver"):
        nfe_of(time_grid(3), "rk45")
    with pytest.raises(ConfigError, match="unknown time grid"):
        time_grid(3, "cosine")
