"""CHGNet behind the potential interface: batched predictions agree with CHGNet itself; bad input is named."""

import numpy as np
import pytest

from adit_torch.errors import ConfigError, InvalidSystemError
from adit_torch.stability.potentials import GPA_IN_EV_PER_A3, get_potential
from adit_torch.system import AtomicSystem


def test_batched_prediction_matches_chgnet_per_structure(chgnet, mp20_small):
    systems = mp20_small[:3]
    preds = chgnet.predict(systems, batch_size=3)
    assert len(preds) == 3
    for system, pred in zip(systems, preds):
        ref = chgnet.model.predict_structure(system.to_pymatgen(), task="efs")
        # CHGNet predicts eV/atom; the interface returns total energies in eV
        assert pred.energy == pytest.approx(float(ref["e"]) * system.num_atoms, abs=1e-4)
        assert pred.forces.shape == (system.num_atoms, 3)
        np.testing.assert_allclose(pred.forces, ref["f"], atol=1e-4)
        np.testing.assert_allclose(pred.stress, ref["s"] * GPA_IN_EV_PER_A3, atol=1e-6)
    energies = chgnet.predict_energies(systems)
    np.testing.assert_allclose(energies, [p.energy for p in preds], atol=1e-4)


def test_ase_calculator_agrees_with_predict(chgnet, by_id):
    system = by_id("mp-1185360")
    atoms = system.to_ase()
    atoms.calc = chgnet.ase_calculator()
    pred = chgnet.predict([system])[0]
    assert atoms.get_potential_energy() == pytest.approx(pred.energy, abs=1e-4)
    np.testing.assert_allclose(atoms.get_forces(), pred.forces, atol=1e-4)
    np.testing.assert_allclose(atoms.get_stress(voigt=False), pred.stress, atol=1e-6)


def test_check_names_each_problem(chgnet, by_id):
    good = by_id("mp-1185360")
    overlap = good.copy()
    overlap.positions[1] = overlap.positions[0] + 0.05
    with pytest.raises(InvalidSystemError, match="mp-1185360: overlapping atoms"):
        chgnet.check(overlap)
    heavy = good.copy()
    heavy.numbers[0] = 95  # americium: outside CHGNet's 94 elements
    with pytest.raises(InvalidSystemError, match="Am not supported"):
        chgnet.check(heavy)
    molecule = AtomicSystem([8, 1, 1], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], info={"id": "water"})
    with pytest.raises(InvalidSystemError, match="water: .*molecule"):
        chgnet.check(molecule)
    small_limit = get_potential("chgnet", max_atoms=2)
    with pytest.raises(InvalidSystemError, match="4 atoms exceeds the limit of 2"):
        small_limit.check(good)
    isolated = AtomicSystem.from_fractional([29, 28], [[0, 0, 0], [0.5, 0.5, 0.5]], np.eye(3) * 20.0,
                                            info={"id": "far-apart"})
    with pytest.raises(InvalidSystemError, match="far-apart: .*cannot build its graph"):
        chgnet.predict([isolated])


def test_unknown_potential_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown potential 'mace'"):
        get_potential("mace")
