"""The DiT: typed conditioning, adaLN-Zero start, one-pass guidance, learning a label-dependent distribution."""

import torch

from adit_torch.config import DiTConfig, FlowConfig
from adit_torch.dit import CRYSTAL, MOLECULE, NULL, Condition, DiT, GuidedDenoiser
from adit_torch.flow import euler_sample, flow_matching_loss
from adit_torch.layers import gelu_tanh


def test_condition_null_drop_cat():
    c = Condition(periodic=torch.tensor([CRYSTAL, MOLECULE, CRYSTAL]), space_group=torch.tensor([225, 14, 1]),
                  properties=torch.tensor([[1.0], [2.0], [3.0]]))
    n = c.null()
    assert (n.periodic == NULL).all() and (n.space_group == 0).all() and not n.properties_mask.any()
    d = c.drop(torch.tensor([True, False, True]))
    assert d.periodic.tolist() == [CRYSTAL, NULL, CRYSTAL]
    assert d.space_group.tolist() == [225, 0, 1]
    assert d.properties_mask.flatten().tolist() == [True, False, True]
    both = c.cat(n)
    assert both.periodic.tolist() == [CRYSTAL, MOLECULE, CRYSTAL, NULL, NULL, NULL]
    assert both.composition is None


def test_adaln_zero_starts_at_zero_output():
    """adaLN-Zero: the trunk starts at zero, so a plain x1 head outputs 0 and the residual head outputs x_t."""
    x, t = torch.randn(2, 5, 8), torch.rand(2)
    m, c = torch.ones(2, 5, dtype=torch.bool), Condition(periodic=torch.tensor([0, 1]))
    plain = DiT(DiTConfig(d_model=32, num_layers=2, num_heads=4, residual_x1=False))
    assert (plain(x, t, m, c) == 0).all()
    residual = DiT(DiTConfig(d_model=32, num_layers=2, num_heads=4))
    torch.testing.assert_close(residual(x, t, m, c), x)


def _randomised(cfg):
    torch.manual_seed(0)
    dit = DiT(cfg).eval()
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return dit


def test_optional_conditions_change_the_output():
    cfg = DiTConfig(d_model=32, num_layers=1, num_heads=4, num_space_groups=230, num_elements=4, num_properties=2)
    dit = _randomised(cfg)
    x, t, m = torch.randn(2, 3, 8), torch.rand(2), torch.ones(2, 3, dtype=torch.bool)
    base = Condition(periodic=torch.tensor([1, 1]), space_group=torch.tensor([1, 1]),
                     composition=torch.tensor([[0.5, 0.5, 0, 0]] * 2), properties=torch.zeros(2, 2))
    out = dit(x, t, m, base)
    for change in ({"space_group": torch.tensor([225, 225])},
                   {"composition": torch.tensor([[0, 0, 0.5, 0.5]] * 2)},
                   {"properties": torch.ones(2, 2)}):
        other = Condition(**{**base.__dict__, **change})
        assert not torch.allclose(dit(x, t, m, other), out)


def test_guidance_in_one_pass_matches_two_passes():
    dit = _randomised(DiTConfig(d_model=32, num_layers=2, num_heads=4))
    x, t = torch.randn(3, 4, 8), torch.rand(3)
    m = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    c = Condition(periodic=torch.tensor([CRYSTAL, MOLECULE, CRYSTAL]))
    sc = torch.randn(3, 4, 8)
    cond, uncond = dit(x, t, m, c, sc), dit(x, t, m, c.null(), sc)
    guided = dit.forward_with_cfg(x, t, m, c, sc, scale=2.0)
    torch.testing.assert_close(guided, uncond + 2.0 * (cond - uncond), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dit.forward_with_cfg(x, t, m, c, sc, scale=1.0), cond)


def test_inference_gelu_matches_the_autograd_one():
    x = torch.cat([torch.linspace(-12, 12, 4001), torch.tensor([0.0, -1e20, 1e20, -3e5, 3e5])])
    ref = torch.nn.functional.gelu(x, approximate="tanh")
    with torch.no_grad():
        torch.testing.assert_close(gelu_tanh(x), ref, atol=1e-6, rtol=1e-6)
    y = x[:4001].clone().requires_grad_(True)
    out = gelu_tanh(y)
    assert out.grad_fn is not None
    torch.testing.assert_close(out, ref[:4001], atol=0, rtol=0)


def test_precomputed_conditioning_matches_the_plain_forward():
    """GuidedDenoiser (embeddings and adaLN modulations computed once per batch) == forward_with_cfg."""
    m = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    c = Condition(periodic=torch.tensor([CRYSTAL, MOLECULE, CRYSTAL]), space_group=torch.tensor([225, 0, 14]))
    for residual in (True, False):
        dit = _randomised(DiTConfig(d_model=32, num_layers=2, num_heads=4, num_space_groups=230,
                                    residual_x1=residual))
        x, sc = torch.randn(3, 4, 8) * m[..., None], torch.randn(3, 4, 8) * m[..., None]
        for scale in (1.0, 2.5):
            fast = GuidedDenoiser(dit, m, c, scale, [i / 5 for i in range(5)])
            assert len(torch.unique(fast.guided["inverse"])) == (3 if scale == 1.0 else 4)  # 2 distinct rows + 1 null
            for t_val in (0.0, 0.6, 0.3):  # 0.3 is off the grid: falls back to the plain forward
                t = torch.full((3,), t_val)
                for self_cond in (None, sc):
                    with torch.no_grad():
                        ref = dit.forward_with_cfg(x, t, m, c, self_cond, scale)
                        torch.testing.assert_close(fast(x, t, self_cond), ref, atol=1e-5, rtol=1e-5)
                        assert not fast(x, t, self_cond)[~m].any()


def test_guidance_interval_guides_inside_and_runs_one_conditional_forward_outside():
    """With ``interval = (0, 0.5)``: guided sum at t = 0.2 and 0.5, one conditional forward at t = 0.8 (on and off the
    precomputed grid alike)."""
    m = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    c = Condition(periodic=torch.tensor([CRYSTAL, MOLECULE]))
    dit = _randomised(DiTConfig(d_model=32, num_layers=2, num_heads=4))
    x = torch.randn(2, 3, 8) * m[..., None]
    calls = []
    net = GuidedDenoiser(dit, m, c, 2.0, [0.2, 0.5, 0.8], interval=(0.0, 0.5))
    with torch.no_grad():
        for t_val in (0.2, 0.5, 0.8, 0.9):  # 0.9 is off the grid
            t = torch.full((2,), t_val)
            guided = dit.forward_with_cfg(x, t, m, c, None, 2.0)
            single = dit(x, t, m, c, None) * m[..., None]
            expected = guided if t_val <= 0.5 else single
            other = single if t_val <= 0.5 else guided
            got = net(x, t, None)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
            calls.append(float((got - other).abs().max()))
    assert min(calls) > 1e-3  # guided and unguided predictions differ, so the checks above can fail


def test_dit_learns_label_dependent_two_mode_latents():
    """Crystal-labelled latents sit at +1.5, molecule-labelled ones at -1.5 (std 0.3): samples must follow the label."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    dit = DiT(DiTConfig(d_model=32, num_layers=2, num_heads=4, latent_dim=2))
    opt = torch.optim.AdamW(dit.parameters(), lr=2e-3)
    flow = FlowConfig()
    bsz, n = 64, 3
    mask = torch.ones(bsz, n, dtype=torch.bool)
    for _ in range(250):
        label = torch.randint(0, 2, (bsz,), generator=g)
        x1 = (label.float() * 3 - 1.5).view(-1, 1, 1) + 0.3 * torch.randn(bsz, n, 2, generator=g)
        cond = Condition(periodic=label).drop(torch.rand(bsz, generator=g) >= 0.1)
        loss = flow_matching_loss(lambda x, t, sc, cond=cond: dit(x, t, mask, cond, sc), x1, mask, flow, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    dit.eval()
    m = torch.ones(500, n, dtype=torch.bool)
    for label, centre in ((CRYSTAL, 1.5), (MOLECULE, -1.5)):
        c = Condition(periodic=torch.full((500,), label))
        s = euler_sample(lambda x, t, sc, c=c: dit.forward_with_cfg(x, t, m, c, sc, 1.0), m, 2, steps=30,
                         generator=torch.Generator().manual_seed(1))
        assert abs(float(s.mean()) - centre) < 0.25, (label, float(s.mean()))
        assert 0.1 < float(s.std()) < 0.6
