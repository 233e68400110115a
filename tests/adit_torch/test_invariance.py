"""Symmetry checks of the VAE and DiT with the library's invariance helpers."""

import pytest
import torch
from adit_model_data import mp20_systems, qm9_systems

from adit_torch.batching import collate
from adit_torch.config import DiTConfig, VAEConfig
from adit_torch.dit import Condition, DiT
from adit_torch.invariance import (
    assert_periodic_image_invariant,
    assert_permutation_equivariant,
    assert_rotation_invariant,
    assert_translation_invariant,
    permute_batch,
    rotation_sensitivity,
)
from adit_torch.vae import VAE


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return VAE(VAEConfig(d_model=32, num_layers=2, num_heads=4)).double().eval()


@pytest.fixture(scope="module")
def systems():
    return mp20_systems(3) + qm9_systems(3, skip=700)


def latents(vae):
    return lambda b: vae.encode(b)[0]


def decoded_lattice(vae):
    def fn(b):
        out = vae.decode(vae.encode(b)[0], b.mask, b.periodic, b.dataset)
        return torch.cat([out["lengths"], out["angles"]], dim=-1)
    return fn


def test_vae_is_permutation_equivariant(vae, systems):
    b = collate(systems, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    assert_permutation_equivariant(latents(vae), b, g, atol=1e-9)
    assert_permutation_equivariant(decoded_lattice(vae), b, g, atol=1e-9)  # pooled: invariant


def test_permutation_check_detects_order_dependence(systems):
    b = collate(systems, dtype=torch.float64)
    order_dependent = lambda batch: batch.pos.cumsum(dim=1)
    with pytest.raises(AssertionError, match="permutation"):
        assert_permutation_equivariant(order_dependent, b, torch.Generator().manual_seed(0))
    new, perm = permute_batch(b, torch.Generator().manual_seed(1))
    assert (new.mask == b.mask).all() and not torch.equal(new.pos, b.pos)


def test_molecule_translation_is_removed_by_centring(vae, systems):
    b = collate(systems, dtype=torch.float64)
    assert_translation_invariant(latents(vae), b, torch.Generator().manual_seed(0), atol=1e-9)
    # control: raw positions are of course not translation invariant
    with pytest.raises(AssertionError):
        assert_translation_invariant(lambda x: x.pos, b, torch.Generator().manual_seed(0))


def test_crystal_periodic_images_do_not_matter(vae):
    assert_periodic_image_invariant(latents(vae), mp20_systems(4), torch.Generator().manual_seed(0), atol=1e-8)


def test_vae_encoder_is_not_rotation_invariant_by_design(vae, systems):
    """ADiT learns approximate invariance from random rotations; the encoder itself depends on orientation."""
    b = collate(systems, dtype=torch.float64)
    with pytest.raises(AssertionError, match="rotation"):
        assert_rotation_invariant(latents(vae), b, torch.Generator().manual_seed(0))
    assert rotation_sensitivity(latents(vae), b, torch.Generator().manual_seed(0)) > 1e-4
    # what is invariant: the batch's lattice lengths/angles targets
    assert_rotation_invariant(lambda x: torch.cat([x.lengths, x.angles], -1), b, torch.Generator().manual_seed(0))


def test_dit_is_permutation_equivariant(systems):
    torch.manual_seed(0)
    dit = DiT(DiTConfig(d_model=32, num_layers=2, num_heads=4)).double().eval()
    for p in dit.parameters():  # leave the adaLN-Zero start so the output is not trivially zero
        torch.nn.init.normal_(p, std=0.1)
    b = collate(systems, dtype=torch.float64)
    z = torch.randn(*b.mask.shape, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t = torch.full((len(b),), 0.3, dtype=torch.float64)
    cond = Condition(periodic=b.periodic.long())

    out = dit(z, t, b.mask, cond)
    new, perm = permute_batch(b, torch.Generator().manual_seed(3))
    zp = torch.gather(z, 1, perm.unsqueeze(-1).expand_as(z))
    out_p = dit(zp, t, new.mask, cond)
    ref = torch.gather(out, 1, perm.unsqueeze(-1).expand_as(out))
    m = b.mask.unsqueeze(-1)
    torch.testing.assert_close(out_p * m, ref * m, atol=1e-9, rtol=0)
