"""The VAE: losses, corruption, periodic fractional loss, and overfitting real systems."""

import numpy as np
import pytest
import torch
from adit_model_data import mp20_systems, qm9_systems
from pymatgen.analysis.structure_matcher import StructureMatcher

from adit_torch.batching import collate
from adit_torch.config import VAEConfig
from adit_torch.vae import VAE, cell_volume_factor, corrupt, decode_failure, systems_from_outputs, wrap_diff


def tiny(**kw):
    return VAEConfig(d_model=64, num_layers=2, num_heads=4, **kw)


def test_wrap_diff_is_periodic():
    d = torch.tensor([0.98, -0.98, 0.4, 0.6, 1.2])
    torch.testing.assert_close(wrap_diff(d), torch.tensor([-0.02, 0.02, 0.4, -0.4, 0.2]), atol=1e-6, rtol=0)


def test_frac_loss_ignores_whole_cell_shifts():
    """A prediction off by exactly one lattice vector costs nothing; a non-periodic MSE would charge 1."""
    torch.manual_seed(0)
    vae = VAE(tiny())
    b = collate(mp20_systems(2))
    out = vae.decode(torch.zeros(*b.mask.shape, 8), b.mask, b.periodic, b.dataset)
    mean = torch.zeros(*b.mask.shape, 8)
    out["frac"] = b.frac.clone()
    _, parts = vae._loss_terms(b, out, mean, mean)
    out["frac"] = b.frac + 1.0
    _, shifted = vae._loss_terms(b, out, mean, mean)
    assert parts["frac"] < 1e-10 and shifted["frac"] < 1e-10
    out["frac"] = b.frac + 0.25
    _, off = vae._loss_terms(b, out, mean, mean)
    assert abs(off["frac"] - 0.0625) < 1e-5


def test_corruption_changes_inputs_only_where_drawn():
    cfg = tiny(mask_type_prob=0.5, jitter_prob=0.5)
    b = collate(mp20_systems(4) + qm9_systems(4, skip=200), dtype=torch.float64)
    c = corrupt(b, cfg, torch.Generator().manual_seed(0))
    masked = c.atom_types == cfg.mask_token
    assert masked.any() and not (masked & ~b.mask).any()
    moved = (c.pos - b.pos).norm(dim=-1) > 0
    assert moved.any() and not (moved & ~b.mask).any()
    # crystals: jittered fractions stay consistent with the jittered Cartesian positions
    per = b.periodic
    m = b.mask[per].unsqueeze(-1)
    dpos = (c.pos - b.pos)[per]
    dfrac = wrap_diff(c.frac - b.frac)[per]
    torch.testing.assert_close(dfrac @ b.lattice[per] * m, dpos * m, atol=1e-9, rtol=0)


def test_vae_overfits_real_crystals_and_molecules():
    """16 real systems (8 MP-20, 8 QM9) are reconstructed exactly after a few hundred steps."""
    torch.manual_seed(0)
    crystals, molecules = mp20_systems(8), qm9_systems(8, skip=1000)
    b = collate(crystals + molecules)
    vae = VAE(tiny())
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        loss, _ = vae.loss(b, g)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
    vae.eval()
    rec = vae.reconstruct(b)
    matcher = StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)
    for orig, r in zip(crystals + molecules, rec):
        assert (orig.numbers == r.numbers).all(), orig.label
        if orig.is_periodic:
            assert r.is_periodic and matcher.fit(orig.to_pymatgen(), r.to_pymatgen()), orig.label
        else:
            assert not r.is_periodic
            rmsd = np.sqrt(((orig.positions - r.positions) ** 2).sum(-1).mean())
            assert rmsd < 0.2, (orig.label, rmsd)


def test_untrained_vae_does_not_reconstruct():
    """Control for the overfit test: the same check fails before training."""
    torch.manual_seed(0)
    crystals = mp20_systems(4)
    rec = VAE(tiny()).eval().reconstruct(collate(crystals))
    assert not all((o.numbers == r.numbers).all() for o, r in zip(crystals, rec))


@pytest.mark.parametrize("lengths, angles, reason", [
    ([4.0, 5.0, 6.0], [80.0, 95.0, 100.0], None),
    ([4.0, 5.0, 6.0], [30.0, 95.0, 100.0], "outside (50°, 130°)"),
    ([4.0, 5.0, 6.0], [80.0, 95.0, 131.0], "outside (50°, 130°)"),
    ([4.0, -5.0, 6.0], [80.0, 95.0, 100.0], "non-positive"),
    ([4.0, 0.0, 6.0], [80.0, 95.0, 100.0], "non-positive"),
    ([4.0, np.nan, 6.0], [80.0, 95.0, 100.0], "non-finite"),
    ([4.0, 5.0, 6.0], [125.0, 125.0, 125.0], "form no cell"),  # each angle in range, no such cell
])
def test_decode_failures_follow_the_reference_rules(lengths, angles, reason):
    got = decode_failure(np.array(lengths), np.array(angles), np.zeros((2, 3)))
    assert got is None if reason is None else reason in got
    assert cell_volume_factor(np.array([30.0, 30.0, 150.0])) == 0.0


def test_read_out_flags_failed_decodes_without_repair():
    """Decoder outputs with a bad cell become a flagged placeholder; a good one is built as decoded."""
    n = 2
    out = {
        "type_logits": torch.zeros(2, n, 10).index_fill_(-1, torch.tensor([8]), 5.0),
        "pos": torch.zeros(2, n, 3),
        "frac": torch.tensor([[[0.1, 0.2, 0.3], [0.6, 0.5, 1.25]]] * 2),
        "lengths": torch.tensor([[3.0, 3.0, 3.0], [3.0, -3.0, 3.0]]) / n ** (1 / 3),
        "angles": torch.deg2rad(torch.tensor([[90.0, 90.0, 90.0], [90.0, 90.0, 90.0]])),
    }
    good, bad = systems_from_outputs(out, torch.ones(2, n, dtype=torch.bool), torch.ones(2, dtype=torch.bool))
    assert "decode_failed" not in good.info
    np.testing.assert_allclose(good.lengths, [3.0, 3.0, 3.0], rtol=1e-5)
    np.testing.assert_allclose(good.frac_coords, [[0.1, 0.2, 0.3], [0.6, 0.5, 0.25]], atol=1e-6)
    assert "non-positive" in bad.info["decode_failed"] and bad.info["decoded_lengths"].split()[1].startswith("-3")


def test_latent_noise_is_zero_on_padding_and_scales_with_the_latent_spread():
    from adit_torch.vae import latent_noise

    g = torch.Generator().manual_seed(0)
    mean = torch.randn(64, 12, 3, generator=g) * torch.tensor([1.0, 5.0, 0.1])
    mask = torch.ones(64, 12, dtype=torch.bool)
    mask[:, 9:] = False
    noise = latent_noise(mean, mask, 0.5, g)
    assert noise.shape == mean.shape and noise[~mask].abs().max() == 0
    spread = noise[mask].std(0) / mean[mask].std(0)
    # s ~ U(0, 0.5) per system: the noise std is sqrt(E[s^2]) = 0.5 / sqrt(3) = 0.29 of each dimension's spread
    assert torch.allclose(spread, torch.full((3,), 0.5 / 3 ** 0.5), rtol=0.15)
    assert latent_noise(mean, mask, 0.0, g).abs().max() == 0
