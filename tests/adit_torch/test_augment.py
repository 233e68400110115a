"""Uniform SO(3) rotations and consistent translations."""

import numpy as np
import torch
from adit_model_data import mp20_systems, qm9_systems
from scipy import stats

from adit_torch.augment import augment_batch, random_rotations, rotate_batch, rotation_angle, translate_batch
from adit_torch.batching import collate


def test_rotations_are_proper_orthogonal():
    r = random_rotations(256, torch.Generator().manual_seed(0), dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64).expand(256, 3, 3)
    torch.testing.assert_close(r @ r.transpose(1, 2), eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(256, dtype=torch.float64))


def test_rotation_angles_follow_haar_distribution():
    """Under the Haar measure the angle has density (1 - cos t) / pi on [0, pi]."""
    r = random_rotations(20000, torch.Generator().manual_seed(1), dtype=torch.float64)
    theta = rotation_angle(r).numpy()
    cdf = lambda t: (t - np.sin(t)) / np.pi
    assert stats.kstest(theta, cdf).pvalue > 1e-3
    # a "uniform Euler angles" sampler fails the same test, so the test has power
    a, b, c = np.random.default_rng(0).uniform(0, 2 * np.pi, (3, 20000))
    b = b / 2
    tr = np.cos(a) * np.cos(c) - np.sin(a) * np.sin(c) * np.cos(b)
    tr = tr + np.cos(a) * np.cos(c) * np.cos(b) - np.sin(a) * np.sin(c) + np.cos(b)
    naive = np.arccos(np.clip((tr - 1) / 2, -1, 1))
    assert stats.kstest(naive, cdf).pvalue < 1e-6


def test_rotations_have_haar_moments():
    """E[R] = 0 and E[R_ij^2] = 1/3 for Haar-random rotations."""
    r = random_rotations(40000, torch.Generator().manual_seed(2), dtype=torch.float64)
    np.testing.assert_allclose(r.mean(0).numpy(), 0.0, atol=0.015)
    np.testing.assert_allclose((r ** 2).mean(0).numpy(), 1 / 3, atol=0.015)


def test_rotation_keeps_crystal_consistent():
    b = collate(mp20_systems(4), dtype=torch.float64)
    r = random_rotations(4, torch.Generator().manual_seed(3), dtype=torch.float64)
    rb = rotate_batch(b, r)
    torch.testing.assert_close(rb.frac, b.frac)
    m = b.mask.unsqueeze(-1)
    torch.testing.assert_close(rb.pos * m, (rb.frac @ rb.lattice) * m)
    # distances and lattice lengths are unchanged
    torch.testing.assert_close(rb.lattice.norm(dim=-1), b.lattice.norm(dim=-1))
    torch.testing.assert_close(torch.cdist(rb.pos, rb.pos), torch.cdist(b.pos, b.pos))


def test_translation_wraps_fractions_and_moves_positions_consistently():
    b = collate(mp20_systems(4) + qm9_systems(2, skip=300), dtype=torch.float64)
    tb = translate_batch(b, torch.Generator().manual_seed(4))
    m = b.mask.unsqueeze(-1)
    per = b.periodic
    assert ((tb.frac[per] >= 0) & (tb.frac[per] < 1)).all()
    torch.testing.assert_close(tb.pos[per] * m[per], (tb.frac[per] @ tb.lattice[per]) * m[per])
    # the fractional shift is the same for every atom of a crystal (modulo 1)
    for i in torch.nonzero(per).flatten().tolist():
        n = int(b.num_atoms[i])
        d = tb.frac[i, :n] - b.frac[i, :n]
        rel = d - d[:1]
        assert torch.allclose(rel - torch.round(rel), torch.zeros_like(rel), atol=1e-9)
    assert not torch.allclose(tb.frac[per], b.frac[per])
    # molecules are shifted rigidly
    mol = ~per
    diff = (tb.pos - b.pos)[mol][:, :1]
    torch.testing.assert_close((tb.pos - b.pos)[mol] * m[mol], diff.expand_as(b.pos[mol]) * m[mol])


def test_augment_is_seeded():
    b = collate(qm9_systems(3, skip=50))
    a1 = augment_batch(b, torch.Generator().manual_seed(5))
    a2 = augment_batch(b, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a1.pos, a2.pos)
    assert not torch.allclose(a1.pos, b.pos)
