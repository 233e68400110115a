"""The offline reference hull shipped with the package: what it holds and how real MP-20 phases sit on it."""

import numpy as np
import pytest

from adit_torch.stability.hull import default_hull_path, load_reference_hull
from adit_torch.stability.scoring import e_above_hull_of


@pytest.fixture(scope="module")
def offline():
    assert default_hull_path().is_file(), "build it with scripts/build_reference_hull.py"
    return load_reference_hull("offline")


def test_describes_how_it_was_built(offline):
    meta = offline.metadata
    assert offline.name == "offline-mp20-chgnet"
    assert meta["potential"]["name"] == "chgnet-0.3.0"
    assert "optimistic" in meta["limits"]
    assert meta["build"]["num_structures"] == 17259
    # every element of the MP elemental reference file has a reference energy
    assert len(offline.elements) == 89
    assert len(offline) > 16000


def test_entries_are_reproducible_chgnet_energies(offline, mp20_small, chgnet):
    stored = {e.entry_id: e.energy for e in offline.entries}
    energies = chgnet.predict_energies(mp20_small)
    for system, energy in zip(mp20_small, energies):
        assert stored[system.info["id"]] == pytest.approx(energy, abs=2e-3), system.info["id"]


def test_real_mp20_phases_sit_near_the_hull(offline, mp20_small, chgnet):
    energies = chgnet.predict_energies(mp20_small)
    ours = np.array([e_above_hull_of(s, e, offline)[0] for s, e in zip(mp20_small, energies)])
    mp = np.array([s.info["e_above_hull"] for s in mp20_small])
    assert (ours > -1e-4).all()  # each phase is itself an entry of the hull (energies stored to 1e-5 eV)
    assert (ours < 0.05).mean() >= 0.8, ours  # MP puts every one of them within 0.04 eV/atom
    assert np.abs(ours - mp).mean() < 0.03, (ours, mp)


def test_leaving_a_phase_out_can_only_lower_its_energy_above_hull(offline, mp20_small, chgnet):
    system = mp20_small[1]  # TaMoS4: MP E_hull 0.020 eV/atom
    energy = chgnet.predict_energies([system])[0]
    with_it = e_above_hull_of(system, energy, offline)[0]
    without = e_above_hull_of(system, energy, offline.excluding([system.info["id"]]))[0]
    assert without <= with_it + 1e-9
