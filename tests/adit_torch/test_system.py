"""AtomicSystem: converters, validation and crystal canonicalisation on real MP-20 and QM9 entries."""

from pathlib import Path

import numpy as np
import pytest

from adit_torch._geometry import lll_reduce
from adit_torch.errors import InvalidSystemError
from adit_torch.io import read_systems
from adit_torch.system import AtomicSystem, atomic_number, lattice_from_parameters

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def crystals():
    return list(read_systems(FIXTURES / "mp20" / "slices_raw_mp20_dataset_mini.csv.gz"))


@pytest.fixture(scope="module")
def molecules(tmp_path_factory):
    from adit_torch.datasets import load_dataset

    return list(load_dataset("qm9", "all", root=FIXTURES / "qm9", cache_dir=tmp_path_factory.mktemp("cache")))


def _same(a, b, atol=1e-8):
    assert a.numbers.tolist() == b.numbers.tolist()
    np.testing.assert_allclose(a.positions, b.positions, atol=atol)
    if a.lattice is None:
        assert b.lattice is None
    else:
        np.testing.assert_allclose(a.lattice, b.lattice, atol=atol)


# ------------------------------------------------------------------ converters
def test_ase_round_trip(crystals, molecules):
    for system in crystals + molecules:
        atoms = system.to_ase()
        assert bool(atoms.pbc.all()) == system.is_periodic
        back = AtomicSystem.from_ase(atoms)
        _same(system, back)
        assert back.info["id"] == system.info["id"]


def test_pymatgen_round_trip(crystals, molecules):
    from pymatgen.core import Composition, Molecule, Structure

    for system in crystals:
        structure = system.to_pymatgen()
        assert isinstance(structure, Structure)
        assert structure.volume == pytest.approx(system.volume)
        _same(system, AtomicSystem.from_pymatgen(structure))
    for system in molecules:
        molecule = system.to_pymatgen()
        assert isinstance(molecule, Molecule)
        assert molecule.composition == Composition(system.formula)
        _same(system, AtomicSystem.from_pymatgen(molecule))


def test_rdkit_round_trip_and_smiles(molecules):
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    agree = 0
    for system in molecules:
        mol = system.to_rdkit()
        assert mol.GetNumAtoms() == system.num_atoms  # hydrogens kept
        _same(system, AtomicSystem.from_rdkit(mol))
        try:
            rdDetermineBonds.DetermineBonds(mol, charge=0)
            Chem.SanitizeMol(mol)
            ours = _plain_smiles(Chem.MolToSmiles(Chem.RemoveHs(mol)))
        except Exception:  # bond orders not assignable: counted as a disagreement
            continue
        agree += ours == _plain_smiles(system.info["smiles"])
    # bond perception from the QM9 geometries recovers the stored SMILES for nearly all fixture molecules
    assert agree >= len(molecules) - 2


def _plain_smiles(smiles: str) -> str:
    """Canonical SMILES without stereochemistry (QM9's SMILES column carries none for most molecules)."""
    from rdkit import Chem

    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles), isomericSmiles=False)


def test_rdkit_refuses_crystals(crystals):
    with pytest.raises(InvalidSystemError, match="crystals cannot be converted"):
        crystals[0].to_rdkit()


def test_from_ase_refuses_partial_periodicity(crystals):
    atoms = crystals[0].to_ase()
    atoms.pbc = [True, True, False]
    with pytest.raises(InvalidSystemError, match="partially periodic"):
        AtomicSystem.from_ase(atoms, {"id": "slab"})


def test_atomic_number():
    assert atomic_number("fe") == 26
    with pytest.raises(InvalidSystemError, match="unknown element symbol 'Qq'"):
        atomic_number("Qq")


# ------------------------------------------------------------------ validation
def test_validate_accepts_real_data(crystals, molecules):
    for system in crystals + molecules:
        assert system.validate() is system


def test_validate_messages_name_the_system():
    with pytest.raises(InvalidSystemError, match="empty-one: no atoms"):
        AtomicSystem(np.zeros(0), np.zeros((0, 3)), info={"id": "empty-one"}).validate()
    with pytest.raises(InvalidSystemError, match=r"z0: unknown atomic number\(s\) \[0\]"):
        AtomicSystem([0, 6], [[0, 0, 0], [0, 0, 1.5]], info={"id": "z0"}).validate()
    with pytest.raises(InvalidSystemError, match="2 atomic numbers but 1 positions"):
        AtomicSystem([1, 1], [[0, 0, 0]])


def test_min_distance_uses_periodic_images(crystals):
    system = crystals[0]
    d = system.distance_matrix()
    brute = np.inf
    frac = system.frac_coords
    for shift in np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1])).reshape(3, -1).T:
        cart = (frac[:, None] - frac[None] + shift) @ system.lattice
        dist = np.linalg.norm(cart, axis=-1)
        if not shift.any():
            np.fill_diagonal(dist, np.inf)
        brute = min(brute, dist.min())
    assert system.min_distance() == pytest.approx(brute)
    assert d.shape == (system.num_atoms, system.num_atoms)


# ------------------------------------------------------------------ canonical form
def test_canonical_is_niggli_with_wrapped_fractions(crystals):
    from pymatgen.core import Lattice

    for system in crystals:
        canon = system.canonical()
        frac = canon.frac_coords
        assert (frac >= 0).all() and (frac < 1).all()
        np.testing.assert_allclose(canon.lattice, lattice_from_parameters(canon.lengths, canon.angles), atol=1e-9)
        assert canon.volume == pytest.approx(system.volume, rel=1e-8)
        assert canon.formula == system.formula
        assert np.sort(canon.distance_matrix().min(axis=1)) == pytest.approx(
            np.sort(system.distance_matrix().min(axis=1)), abs=1e-6)
        # Niggli conditions: a <= b <= c, and the three angles all acute or all non-acute
        assert np.all(np.diff(canon.lengths) > -1e-6)
        acute = canon.angles < 90 - 1e-4
        assert acute.all() or not acute.any()
        again = Lattice(canon.lattice).get_niggli_reduced_lattice()  # already reduced: same metric
        np.testing.assert_allclose(again.abc, canon.lengths, atol=1e-6)
        np.testing.assert_allclose(sorted(again.angles), sorted(canon.angles), atol=1e-5)


def test_fractional_coordinates_given_are_kept_exactly(crystals):
    """Built from fractional coordinates, a crystal returns them bit for bit (a wrapped 0.0 stays 0.0,
    not the -1e-34 that solving ``frac @ lattice`` back gives), also through ``copy``."""
    for system in crystals:
        frac = np.mod(system.frac_coords, 1.0)
        frac[0] = 0.0  # an atom on the origin: the case round-off turned negative
        built = AtomicSystem.from_fractional(system.numbers, frac, system.lattice, system.info)
        assert np.array_equal(built.frac_coords, frac)
        assert np.array_equal(built.copy().frac_coords, frac)
        out = built.frac_coords
        out[0] = 0.5  # the caller's array is a copy
        assert np.array_equal(built.frac_coords, frac)


def test_fractional_coordinates_follow_moved_atoms(crystals):
    """Once the positions or the lattice change (in place or by assignment) the fractional
    coordinates are solved from them again, never stale."""
    system = crystals[1].canonical()
    shift = np.array([0.1, -0.2, 0.3])
    moved = system.copy()
    moved.positions[0] += shift
    expected = np.linalg.solve(moved.lattice.T, moved.positions.T).T
    np.testing.assert_allclose(moved.frac_coords, expected, atol=0)
    assigned = system.copy()
    assigned.lattice = 1.1 * assigned.lattice
    np.testing.assert_allclose(assigned.frac_coords, system.frac_coords / 1.1, atol=1e-12)


def test_canonical_forgets_the_choice_of_cell(crystals):
    """A sheared, shifted and unwrapped description of the same crystal has the same canonical form."""
    system = crystals[2]
    shear = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 1]])  # unimodular: same lattice, other basis
    lattice = shear @ system.lattice
    frac = np.linalg.solve(lattice.T, system.positions.T).T + np.array([0.3, -1.2, 2.0])
    other = AtomicSystem.from_fractional(system.numbers, frac, lattice, system.info)
    a, b = system.canonical(), other.canonical()
    np.testing.assert_allclose(a.lengths, b.lengths, atol=1e-6)
    np.testing.assert_allclose(a.angles, b.angles, atol=1e-5)
    from pymatgen.analysis.structure_matcher import StructureMatcher

    assert StructureMatcher().fit(a.to_pymatgen(), b.to_pymatgen())


def test_canonical_centres_molecules(molecules):
    for system in molecules:
        moved = AtomicSystem(system.numbers, system.positions + [3.0, -2.0, 7.5], None, system.info)
        canon = moved.canonical()
        np.testing.assert_allclose(canon.positions.mean(axis=0), 0.0, atol=1e-10)
        np.testing.assert_allclose(canon.positions, system.positions, atol=1e-10)  # stored molecules are centred


def test_overlap_found_in_a_very_skewed_cell():
    """The same 0.3 Å image contact must be found whatever basis describes the cell."""
    cubic = np.eye(3) * 4.0
    frac = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.925, 0.0, 0.0]])  # 3rd atom 0.3 Å from the 1st's image
    skew = np.array([[1, 7, 0], [0, 1, 0], [3, 0, 1]]) @ cubic  # unimodular: same lattice, long thin basis
    reference = AtomicSystem(np.array([11, 17, 11]), frac @ cubic, cubic).distance_matrix()
    assert reference[0, 1] == pytest.approx(np.sqrt(3) * 2.0) and reference[0, 0] == pytest.approx(4.0)
    for lattice in (cubic, skew):
        system = AtomicSystem(np.array([11, 17, 11]), frac @ cubic, lattice, {"id": "skewed"})
        np.testing.assert_allclose(system.distance_matrix(), reference, atol=1e-9)
        assert system.min_distance() == pytest.approx(0.3)
        with pytest.raises(InvalidSystemError, match="skewed: overlapping atoms"):
            system.validate()


def test_lll_reduce_keeps_the_lattice(crystals):
    for system in crystals:
        reduced = lll_reduce(system.lattice)
        change = reduced @ np.linalg.inv(system.lattice)  # must be an integer matrix with det +-1
        np.testing.assert_allclose(change, np.round(change), atol=1e-6)
        assert abs(np.linalg.det(np.round(change))) == pytest.approx(1.0)
        assert np.linalg.norm(reduced, axis=1).max() <= np.linalg.norm(system.lattice, axis=1).max() + 1e-9
