"""The equivariant encoder option: its neighbour graph, its invariances (with the library's helpers, on real
MP-20 and QM9 systems) and the frame-free losses it trains with."""

import dataclasses

import numpy as np
import pytest
import torch
from adit_model_data import mp20_systems, qm9_systems

from adit_torch.batching import collate
from adit_torch.config import VAEConfig, vae_config
from adit_torch.equivariant import (
    aligned_position_error,
    kabsch_rotations,
    origin_free_frac_error,
    radius_graph,
)
from adit_torch.errors import ConfigError, InvalidSystemError
from adit_torch.invariance import (
    assert_crystal_translation_invariant,
    assert_periodic_image_invariant,
    assert_permutation_equivariant,
    assert_rotation_invariant,
    assert_translation_invariant,
    rotation_sensitivity,
)
from adit_torch.vae import VAE

SMALL = dict(d_model=32, num_layers=2, num_heads=4, eq_channels=8, eq_layers=3)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    eq = VAE(VAEConfig(encoder="equivariant", **SMALL)).double().eval()
    tf = VAE(VAEConfig(d_model=32, num_layers=2, num_heads=4)).double().eval()
    return eq, tf


@pytest.fixture(scope="module")
def systems():
    return mp20_systems(4) + qm9_systems(4, skip=700)


def latents(vae):
    return lambda b: vae.encode(b)[0]


def test_radius_graph_finds_the_neighbours_pymatgen_finds(systems):
    """Every atom's neighbours within the cutoff, periodic images included, as pymatgen lists them."""
    cutoff = 5.0
    b = collate(systems, dtype=torch.float64)
    src, dst, vec, image = radius_graph(b, cutoff)
    n = b.mask.shape[1]
    for k, s in enumerate(systems):
        mine = sorted(round(float(d), 6) for d, i in zip(vec.norm(dim=-1), dst) if int(i) // n == k)
        if s.is_periodic:
            structure = s.to_pymatgen()
            ref = sorted(round(float(nb.nn_distance), 6) for site in structure.get_all_neighbors(cutoff) for nb in site)
        else:
            d = np.linalg.norm(s.positions[:, None] - s.positions[None], axis=-1)
            ref = sorted(round(float(x), 6) for x in d[(d < cutoff) & (d > 0)])
        assert len(mine) > 0 and mine == ref, s.label
    assert not image[~b.periodic[dst // n]].any()  # molecules have no images
    lattice = b.lattice[dst // n]
    rebuilt = (b.pos.new_zeros(0, 3) if len(src) == 0 else
               torch.einsum("ei,eij->ej", b.frac.view(-1, 3)[src] + image, lattice)
               - torch.einsum("ei,eij->ej", b.frac.view(-1, 3)[dst], lattice))
    per = b.periodic[dst // n]
    torch.testing.assert_close(rebuilt[per], vec[per])


def test_a_cell_too_thin_for_the_cutoff_is_refused():
    crystal = mp20_systems(1)[0]
    thin = dataclasses.replace(collate([crystal], dtype=torch.float64))
    thin.lattice[0, 2] *= 0.02
    with pytest.raises(InvalidSystemError, match="system 0 of the batch: a lattice plane spacing"):
        radius_graph(thin, 5.0)


def test_equivariant_latents_are_invariant_by_construction(models, systems):
    """Rotations, translations (crystals too) and periodic images leave the latents unchanged to float precision;
    the Transformer encoder's latents change clearly under rotation."""
    eq, tf = models
    b = collate(systems, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    assert rotation_sensitivity(latents(eq), b, g) < 1e-6
    assert_rotation_invariant(latents(eq), b, g, atol=1e-6)
    assert_translation_invariant(latents(eq), b, g, atol=1e-9)
    assert_crystal_translation_invariant(latents(eq), b, g, atol=1e-9)
    assert_permutation_equivariant(latents(eq), b, g, atol=1e-9)
    assert_periodic_image_invariant(latents(eq), systems, g, atol=1e-9)
    assert float(latents(eq)(b).abs().max()) > 1e-2  # and not trivially zero
    assert rotation_sensitivity(latents(tf), b, torch.Generator().manual_seed(0)) > 1e-2
    with pytest.raises(AssertionError, match="crystal translation"):
        assert_crystal_translation_invariant(latents(tf), b, torch.Generator().manual_seed(0))


def test_equivariant_latents_tell_a_molecule_from_its_mirror_image(models):
    """The odd (0o) scalars change sign under inversion, so a chiral molecule and its mirror image differ."""
    eq, _ = models
    mols = qm9_systems(40, skip=700)
    chiral = [m for m in mols if m.num_atoms >= 12][:4]
    b = collate(chiral, dtype=torch.float64)
    mirrored = dataclasses.replace(b, pos=b.pos * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    assert float((latents(eq)(mirrored) - latents(eq)(b)).abs().max()) > 1e-4


def test_frame_free_losses_ignore_the_frame_and_nothing_else(systems):
    g = torch.Generator().manual_seed(1)
    b = collate(systems, dtype=torch.float64)
    pos = b.pos - (b.pos * b.mask.unsqueeze(-1)).sum(1, keepdim=True) / b.num_atoms.view(-1, 1, 1)
    pos = pos * b.mask.unsqueeze(-1)
    q, _ = torch.linalg.qr(torch.randn(len(b), 3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.linalg.det(q)).view(-1, 1, 1)  # proper rotations
    turned = torch.einsum("bni,bji->bnj", pos, q)
    assert float(aligned_position_error(turned, pos, b.mask).max()) < 1e-18
    unique = (b.num_atoms >= 10) & ~b.periodic  # the rotation is unique for these (not collinear)
    recovered = (kabsch_rotations(turned, pos, b.mask) @ q)[unique]
    torch.testing.assert_close(recovered, torch.eye(3, dtype=torch.float64).expand_as(recovered), atol=1e-9, rtol=0)
    bent = turned + 0.3 * torch.randn(turned.shape, generator=g, dtype=torch.float64) * b.mask.unsqueeze(-1)
    err = aligned_position_error(bent, pos, b.mask)
    assert float(err[b.mask].mean()) > 0.05
    # a mirror image is not a rotation: it keeps a large error
    assert float(aligned_position_error(pos * torch.tensor([-1.0, 1, 1], dtype=torch.float64), pos,
                                        b.mask)[b.mask & ~b.periodic.view(-1, 1)].mean()) > 0.1
    shifted = torch.remainder(b.frac + torch.rand(len(b), 1, 3, generator=g, dtype=torch.float64), 1.0)
    crystals = b.mask & b.periodic.view(-1, 1)
    assert float(origin_free_frac_error(shifted, b.frac, b.mask)[crystals].max()) < 1e-18
    moved = shifted + 0.05 * torch.randn(shifted.shape, generator=g, dtype=torch.float64)
    assert float(origin_free_frac_error(moved, b.frac, b.mask)[crystals].mean()) > 1e-3


def test_equivariant_vae_trains_and_round_trips_its_config(systems):
    """A few steps on real systems lower the loss; the config refuses an unknown encoder."""
    torch.manual_seed(0)
    vae = VAE(vae_config("XS", encoder="equivariant", eq_channels=8, eq_layers=2))
    b = collate(systems)
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss, parts = vae.loss(b, torch.Generator().manual_seed(0), corruption=False)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    assert all(np.isfinite(losses))
    assert {id(p) for p in vae.encoder_parameters()} == {id(p) for p in vae.eq_encoder.parameters()}
    with pytest.raises(ConfigError, match="encoder must be one of transformer, equivariant"):
        vae_config("XS", encoder="painn")


def test_aligned_rmsd_ignores_rotation_and_translation_only():
    from scipy.spatial.transform import Rotation

    from adit_torch._geometry import kabsch_rmsd

    mol = qm9_systems(1, skip=700)[0]
    rot = Rotation.from_euler("zyx", [40, -25, 70], degrees=True).as_matrix()
    moved = mol.positions @ rot.T + np.array([3.0, -1.0, 2.0])
    assert kabsch_rmsd(mol.positions, moved) < 1e-9
    same_frame = np.sqrt(((moved - moved.mean(0) - (mol.positions - mol.positions.mean(0))) ** 2).sum(-1).mean())
    assert same_frame > 0.5  # what the unaligned RMSD would charge
    noisy = moved + np.random.default_rng(0).normal(scale=0.1, size=moved.shape)
    assert 0.05 < kabsch_rmsd(mol.positions, noisy) < 0.25
