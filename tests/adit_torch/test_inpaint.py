"""Inpainting: the kept tokens end on the fragment's latents for every solver; the shipped model keeps
real fragments (types and geometry) while generating the rest; bad requests fail clearly."""

import numpy as np
import pytest
import torch
from adit_model_data import qm9_systems

from adit_torch._geometry import kabsch_rmsd
from adit_torch.config import DiTConfig, FlowConfig
from adit_torch.dit import DiT
from adit_torch.errors import ConfigError
from adit_torch.inpaint import keep_exactly, kept_fidelity
from adit_torch.sample import sample_latents
from adit_torch.system import AtomicSystem

STATS = {"num_atoms_hist": {"molecule": {"4": 1, "9": 3}}, "latent_mean": [0.5] * 8, "latent_std": [2.0] * 8}


@pytest.mark.parametrize(("solver", "grid"), [("euler", "uniform"), ("heun", "power"), ("euler", "reference")])
def test_kept_tokens_end_exactly_on_the_known_latents(solver, grid):
    torch.manual_seed(0)
    dit = DiT(DiTConfig(d_model=32, num_layers=1, num_heads=4)).eval()
    known = torch.randn(3, 8)
    out = list(sample_latents(dit, FlowConfig(steps=6), STATS, "molecule", 5, known=known, progress=False,
                              solver=solver, grid=grid, seed=1))
    for idx, z, mask, _, _ in out:
        expected = known * 2.0 + 0.5  # back in the VAE's units
        torch.testing.assert_close(z[:, :3], expected.expand(len(idx), 3, 8))
        assert (mask.sum(1) > 3).all()  # drawn sizes exceed the fragment: 4 and 9 only
    free = torch.cat([z[:, 3:][mask[:, 3:]] for _, z, mask, _, _ in out])
    assert free.std() > 0.1  # the rest is generated, not copied


def test_kabsch_rmsd_is_zero_for_a_rigid_motion_and_positive_otherwise():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    assert kabsch_rmsd(a, a @ q.T + 3.0) < 1e-9
    assert kabsch_rmsd(a, a + rng.normal(scale=0.1, size=a.shape)) > 0.01


def test_crystal_fidelity_ignores_a_periodic_shift():
    frag = AtomicSystem.from_parameters([8, 8], [[0.1, 0.1, 0.1], [0.4, 0.5, 0.6]], [4, 4, 4], [90, 90, 90])
    sample = AtomicSystem.from_parameters([8, 8, 12], [[0.9, 0.6, 0.1], [0.2, 0.0, 0.6], [0.5, 0.5, 0.5]],
                                          [4, 4, 4], [90, 90, 90])
    f = kept_fidelity(frag, sample)
    assert f["types_kept"] and f["rmsd"] < 1e-9


def test_keep_exactly_writes_the_fragment_and_leaves_failed_decodes():
    frag = AtomicSystem.from_parameters([8, 8], [[0.1, 0.1, 0.1], [0.4, 0.5, 0.6]], [4, 4, 4], [90, 90, 90])
    sample = AtomicSystem.from_parameters([8, 16, 12], [[0.93, 0.62, 0.08], [0.2, 0.05, 0.61], [0.5, 0.5, 0.5]],
                                          [4.1, 4, 4], [90, 90, 90], info={"id": "sample-0"})
    out = keep_exactly(frag, sample)
    assert out.info == {"id": "sample-0", "kept_exact": True}
    f = kept_fidelity(frag, out)
    assert f["types_kept"] and f["rmsd"] < 1e-9  # the fragment itself, up to one common shift
    np.testing.assert_allclose(out.frac_coords[2], sample.frac_coords[2])  # generated atoms stay
    np.testing.assert_allclose(out.lattice, sample.lattice)
    failed = AtomicSystem.from_parameters([8, 8, 12], sample.frac_coords, [4, 4, 4], [90, 90, 90],
                                          info={"decode_failed": True})
    assert keep_exactly(frag, failed) is failed


@pytest.fixture(scope="module")
def shipped():
    from adit_torch.pretrained import load_pretrained

    return load_pretrained()


def _qm9_fragment(qm9_system: AtomicSystem) -> AtomicSystem:
    heavy = qm9_system.numbers > 1
    return AtomicSystem(qm9_system.numbers[heavy], qm9_system.positions[heavy])


@pytest.fixture(scope="module")
def qm9_sample():
    return [s for s in qm9_systems(200) if s.num_atoms >= 14][:3]


def test_shipped_model_keeps_a_real_molecular_fragment(shipped, qm9_sample):
    """The heavy-atom skeletons of real QM9 molecules, completed with the shipped model: the kept
    atoms come back with their elements and within a small RMSD of their positions."""
    from adit_torch.sample import sample_systems

    dit, vae, flow_cfg, meta = shipped
    stats = meta["data"]
    for system in qm9_sample[:3]:
        fragment = _qm9_fragment(system)
        out = sample_systems(dit, vae, flow_cfg, stats, "molecule", 8, steps=10, solver="heun", seed=0,
                             num_atoms=system.num_atoms, progress=False, fragment=fragment)
        assert all(s.num_atoms == system.num_atoms for s in out)
        assert np.mean([s.info["kept_types"] for s in out]) >= 0.75
        assert np.median([s.info["kept_rmsd"] for s in out]) < 0.25


def test_exact_keep_writes_the_given_atoms_and_moves_nothing_else(shipped, qm9_sample):
    """Same noise with exact_keep on (the default) and off: the exact samples hold the fragment's own
    atoms, the generated atoms are the decoded ones, and the recorded fidelity is the decoder's in both."""
    from scipy.spatial.distance import pdist

    from adit_torch.sample import sample_systems

    dit, vae, flow_cfg, meta = shipped
    system = qm9_sample[0]
    fragment = _qm9_fragment(system)
    k = fragment.num_atoms
    kw = dict(steps=6, solver="heun", seed=0, num_atoms=system.num_atoms, progress=False, fragment=fragment)
    exact = sample_systems(dit, vae, flow_cfg, meta["data"], "molecule", 4, **kw)
    decoded = sample_systems(dit, vae, flow_cfg, meta["data"], "molecule", 4, exact_keep=False, **kw)
    for e, d in zip(exact, decoded):
        assert e.info["kept_exact"] and "kept_exact" not in d.info
        assert e.info["kept_rmsd"] == d.info["kept_rmsd"] > 0  # the decoder does not reproduce it exactly
        np.testing.assert_array_equal(e.numbers[:k], fragment.numbers)
        np.testing.assert_allclose(pdist(e.positions[:k]), pdist(fragment.positions), atol=1e-6)
        np.testing.assert_allclose(e.positions[k:], d.positions[k:])
        assert kabsch_rmsd(d.positions[:k], e.positions[:k]) == pytest.approx(d.info["kept_rmsd"], abs=1e-4)


def test_bad_fragment_requests_fail_clearly(shipped, qm9_sample):
    from adit_torch.sample import sample_systems

    dit, vae, flow_cfg, meta = shipped
    fragment = _qm9_fragment(qm9_sample[0])
    with pytest.raises(ConfigError, match="more atoms than the fragment"):
        sample_systems(dit, vae, flow_cfg, meta["data"], "molecule", 2, steps=2, num_atoms=fragment.num_atoms,
                       progress=False, fragment=fragment)
    with pytest.raises(ConfigError, match="crystals were asked for"):
        sample_systems(dit, vae, flow_cfg, meta["data"], "crystal", 2, steps=2, progress=False, fragment=fragment)
    with pytest.raises(ConfigError, match="keep_lattice keeps a crystal fragment's lattice"):
        sample_systems(dit, vae, flow_cfg, meta["data"], "molecule", 2, steps=2, num_atoms=20, progress=False,
                       fragment=fragment, keep_lattice=True)


def test_shipped_model_keeps_a_crystals_lattice_and_sites():
    """Two sites of a real MP-20 crystal and its lattice kept: every sample has that lattice exactly,
    and keeps the sites' elements and positions in it."""
    from adit_model_data import mp20_systems

    from adit_torch.pretrained import load_pretrained
    from adit_torch.sample import sample_systems

    dit, vae, flow_cfg, meta = load_pretrained()
    crystal = next(s for s in mp20_systems(50) if 6 <= s.num_atoms <= 12)
    fragment = AtomicSystem.from_fractional(crystal.numbers[:2], crystal.frac_coords[:2], crystal.lattice)
    out = sample_systems(dit, vae, flow_cfg, meta["data"], "crystal", 6, steps=10, solver="heun", seed=0,
                         num_atoms=crystal.num_atoms, progress=False, fragment=fragment, keep_lattice=True)
    for s in out:
        np.testing.assert_allclose(s.lattice, crystal.lattice, atol=1e-6)
        assert s.info["kept_lattice"] and s.num_atoms == crystal.num_atoms
        exact = kept_fidelity(fragment, s)  # the given sites themselves (exact_keep, the default)
        assert exact["types_kept"] and exact["rmsd"] < 1e-6
    assert np.mean([s.info["kept_types"] for s in out]) >= 0.75
    assert np.median([s.info["kept_rmsd"] for s in out]) < 0.5
