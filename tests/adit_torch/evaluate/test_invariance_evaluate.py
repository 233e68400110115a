"""The evaluators do not depend on how a structure is written down: property tests on real MP-20 and QM9 data.

Each real structure is rewritten by :func:`adit_torch.invariance.cell_transforms` (a random unimodular
change of basis, atoms moved to other periodic images, atom order, a rotation, a translation) and
every per-structure verdict must stay the same.
"""

import numpy as np
import pytest

from adit_torch.evaluate import evaluate_crystals
from adit_torch.evaluate.crystals import check_crystal
from adit_torch.evaluate.molecules import check_molecule
from adit_torch.invariance import assert_cell_invariant, cell_transforms, random_unimodular
from adit_torch.system import AtomicSystem

CRYSTAL_EXACT = ("formula", "num_atoms", "num_elements", "structurally_valid", "compositionally_valid", "valid",
                 "failed_decode", "reasons")
CRYSTAL_CLOSE = ("min_distance", "volume", "density")
MOLECULE_EXACT = ("formula", "num_atoms", "valid", "fragments", "valid_strict", "valid_connected", "smiles",
                  "stable_atoms", "molecule_stable", "reasons")


def test_unimodular_matrices_have_determinant_one_in_magnitude():
    rng = np.random.default_rng(0)
    for _ in range(50):
        u = random_unimodular(rng)
        assert abs(round(np.linalg.det(u))) == 1 and u.dtype == np.int64


def test_crystal_records_are_invariant_to_basis_images_order_and_rigid_motions(mp20_raw_test, mp20_train):
    rng = np.random.default_rng(7)
    systems = mp20_raw_test[:60] + mp20_train[:30]
    pairs = assert_cell_invariant(check_crystal, systems, rng, CRYSTAL_EXACT, CRYSTAL_CLOSE)
    assert pairs == 5 * len(systems)


def test_sheared_cells_with_angles_far_outside_the_read_out_range_score_as_their_reduced_cell(mp20_raw_test):
    # a strongly sheared basis of a real crystal: its angles leave (50°, 130°), the crystal is the same
    rng = np.random.default_rng(3)
    for system in mp20_raw_test[:20]:
        sheared = AtomicSystem(system.numbers, system.positions, random_unimodular(rng, steps=8, max_factor=2)
                               @ system.lattice, dict(system.info))
        assert check_crystal(sheared)["valid"] == check_crystal(system.canonical())["valid"]
        flagged = check_crystal(sheared, cell_angle_check=True)
        in_range = bool(np.all((sheared.angles > 50) & (sheared.angles < 130)))
        assert flagged["cell_angles_in_range"] is in_range
        if not in_range:
            assert not flagged["valid"] and any("cell as given" in reason for reason in flagged["reasons"])


def test_raw_cif_cells_score_like_their_niggli_cells(mp20_raw_test):
    raw = mp20_raw_test
    assert not all(np.all((s.angles > 50) & (s.angles < 130)) for s in raw)  # some raw cells fail the old filter
    a = evaluate_crystals(raw, False, workers=1)
    b = evaluate_crystals([s.canonical() for s in raw], False, workers=1)
    for key in ("structural_validity", "compositional_validity", "validity", "uniqueness"):
        assert a[key] == b[key], key
    assert a["structural_validity"] >= 0.99
    assert a["protocol"]["cell_angle_check"] is False and a["failed_decodes"] == 0


def test_rewritten_crystals_match_their_originals(mp20_train):
    """Uniqueness groups each crystal with its rewritten copies (StructureMatcher is setting-free too)."""
    rng = np.random.default_rng(11)
    systems = mp20_train[:8]
    copies = [t for s in systems for t in cell_transforms(s, rng).values()]
    report = evaluate_crystals(systems + copies, False, workers=1)
    groups = [r["unique_group"] for r in report["per_structure"]]
    assert len(set(groups)) == report["counts"]["unique"] <= len(systems)
    for i, system in enumerate(systems):
        mine = {groups[len(systems) + 5 * i + k] for k in range(5)}
        assert mine == {groups[i]}, system.label


def test_molecule_records_are_invariant_to_order_and_rigid_motions(qm9_sample):
    rng = np.random.default_rng(5)
    systems = qm9_sample[:40]
    pairs = assert_cell_invariant(check_molecule, systems, rng, MOLECULE_EXACT)
    assert pairs == 3 * len(systems)


def test_a_flagged_failed_decode_is_invalid_whatever_its_geometry(mp20_train):
    good = mp20_train[0]
    flagged = good.copy()
    flagged.info["decode_failed"] = "decoded lattice angle(s) outside (50°, 130°): 30.0, 90.0, 90.0"
    record = check_crystal(flagged)
    assert check_crystal(good)["valid"]
    assert not (record["valid"] or record["structurally_valid"] or record["compositionally_valid"])
    assert record["failed_decode"].startswith("decoded lattice angle") and record["reasons"][0].startswith("failed")
    report = evaluate_crystals([good, flagged], False, workers=1)
    assert report["counts"]["failed_decodes"] == 1 and report["validity"] == 0.5


@pytest.mark.parametrize("kind", ["crystal", "molecule"])
def test_transforms_keep_the_structure(kind, mp20_train, qm9_sample):
    rng = np.random.default_rng(1)
    system = mp20_train[0] if kind == "crystal" else qm9_sample[0]
    for name, other in cell_transforms(system, rng).items():
        assert sorted(other.numbers) == sorted(system.numbers), name
        d0 = np.sort(system.distance_matrix().min(axis=1))
        np.testing.assert_allclose(np.sort(other.distance_matrix().min(axis=1)), d0, atol=1e-6, err_msg=name)
