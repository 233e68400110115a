"""Crystal evaluation: real MP-20 crystals pass, broken ones fail the right checks, bad input never crashes."""

import json
from pathlib import Path

import numpy as np
import pytest

from adit_torch.evaluate import Unreadable, check_crystal, evaluate_crystals, read_for_evaluation
from adit_torch.evaluate.matching import ReferenceIndex, composition_key, unique_and_novel
from adit_torch.system import AtomicSystem

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "evaluate"


def test_real_mp20_test_crystals_are_structurally_valid(mp20_test):
    records = [check_crystal(s) for s in mp20_test]
    assert all(r["structurally_valid"] for r in records)
    assert all(r["failed_decode"] is None and r["cell_angles_in_range"] is None for r in records)
    assert sum(r["compositionally_valid"] for r in records) >= 0.8 * len(records)
    assert all(r["min_distance"] > 0.5 and r["volume"] > 0.1 and 1 < r["density"] < 25 for r in records)


def test_space_groups_of_valid_crystals_match_the_dataset(mp20_test, mp20_train):
    report = evaluate_crystals(mp20_test[:12], reference=mp20_train, workers=1)
    records = zip(report["per_structure"], mp20_test)
    checked = [(r["spacegroup"], s.info["spacegroup"]) for r, s in records if r["valid"]]
    assert len(checked) >= 9
    assert all(ours == theirs for ours, theirs in checked)
    no_dist = evaluate_crystals(mp20_test[:3], reference=mp20_train, with_distributions=False, workers=1)
    assert no_dist["distributions"] is None and all(r["spacegroup"] is None for r in no_dist["per_structure"])


def test_overlapping_atoms_fail_structural_validity_with_a_reason(mp20_test):
    broken = mp20_test[0].copy()
    broken.positions[1] = broken.positions[0] + [0.2, 0.1, 0.0]
    record = check_crystal(broken)
    assert not record["structurally_valid"] and not record["valid"]
    assert any("overlapping atoms" in r and "0.224" in r for r in record["reasons"])


def test_periodic_images_count_for_the_distance_check():
    # two atoms 0.3 Å apart only across the cell boundary
    system = AtomicSystem.from_fractional([11, 17], [[0.01, 0.5, 0.5], [0.935, 0.5, 0.5]], np.eye(3) * 4.0)
    record = check_crystal(system)
    assert not record["structurally_valid"]
    assert record["min_distance"] == pytest.approx(0.3, abs=1e-6)


def test_tiny_cell_volume_fails():
    system = AtomicSystem.from_fractional([26], [[0, 0, 0]], np.diag([0.2, 0.5, 0.5]))
    record = check_crystal(system)
    assert not record["structurally_valid"]
    assert any("volume" in r for r in record["reasons"])


def test_wrong_charges_fail_compositional_validity_only():
    nacl2 = AtomicSystem.from_fractional([11, 17, 17], [[0, 0, 0], [0.5, 0.5, 0.5], [0, 0.5, 0.5]], np.eye(3) * 4.0)
    record = check_crystal(nacl2)
    assert record["structurally_valid"] and not record["compositionally_valid"] and not record["valid"]
    assert record["reasons"] == ["composition: no charge-neutral combination of smact14 oxidation states"]


def test_the_cell_angle_check_is_an_explicit_option_on_the_cell_as_given():
    system = AtomicSystem.from_parameters([11, 17], [[0, 0, 0], [0.5, 0.5, 0.5]], [4, 4, 12], [90, 90, 20])
    default = check_crystal(system)
    assert default["cell_angles_in_range"] is None and default["valid"]  # scored on its reduced cell
    strict = check_crystal(system, cell_angle_check=True)
    assert strict["cell_angles_in_range"] is False and not strict["valid"]
    assert not strict["compositionally_valid"]  # the reference pipeline never scores such a cell


@pytest.mark.parametrize("system, reason", [
    (AtomicSystem(np.zeros(0), np.zeros((0, 3)), np.eye(3) * 3), "no atoms"),
    (AtomicSystem([11, 17], [[0, 0, 0], [np.nan, 1, 1]], np.eye(3) * 4), "NaN"),
    (AtomicSystem([11, 17], [[0, 0, 0], [1, 1, 1]], [[1, 0, 0], [2, 0, 0], [0, 0, 1]]), "singular lattice"),
    (AtomicSystem([11, 17], [[0, 0, 0], [1, 1, 1]], None), "not a crystal"),
    (Unreadable("CIF does not parse", {"id": "x"}), "unreadable"),
])
def test_degenerate_inputs_are_invalid_with_reasons(system, reason):
    record = check_crystal(system)
    assert not record["valid"]
    assert any(reason in r for r in record["reasons"])


def test_evaluate_scores_every_input_in_order_and_accepts_ase_and_pymatgen(mp20_test, mp20_train):
    inputs = [mp20_test[0].to_ase(), mp20_test[1].to_pymatgen(), "not a structure", mp20_test[2]]
    report = evaluate_crystals(inputs, reference=mp20_train, workers=1)
    assert report["num_structures"] == 4
    assert [p["index"] for p in report["per_structure"]] == [0, 1, 2, 3]
    assert report["per_structure"][2]["reasons"] == ["unreadable: unsupported input type str"]
    assert report["counts"]["structurally_valid"] == 3


def test_uniqueness_groups_equivalent_copies(mp20_test):
    base = mp20_test[3]
    shifted = AtomicSystem.from_fractional(base.numbers, base.frac_coords + 0.137, base.lattice)
    supercell = AtomicSystem.from_pymatgen(base.to_pymatgen().make_supercell([2, 1, 1], in_place=False))
    rotated = base.copy()
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    rotated.positions, rotated.lattice = base.positions @ q.T, base.lattice @ q.T
    systems = [base, mp20_test[4], shifted, supercell, rotated, mp20_test[5]]
    group, novel = unique_and_novel(systems, None, workers=1)
    assert group.tolist() == [0, 1, 0, 0, 0, 2]
    assert novel == [None, None, None]


def test_novelty_against_a_reference_and_parallel_equals_serial(mp20_test, mp20_train):
    candidates = mp20_test[:12] + mp20_train[:3]
    index = ReferenceIndex(mp20_train, "mp20 train rows")
    serial = unique_and_novel(candidates, index, workers=1)
    parallel = unique_and_novel(candidates, index, workers=2)
    assert serial[0].tolist() == parallel[0].tolist() and serial[1] == parallel[1]
    group, novel = serial
    assert [novel[g] for g in group[-3:]] == [False, False, False]  # training crystals are not novel
    assert all(novel[g] for g in group[:12])  # test crystals are not in the training rows


def test_composition_key_is_order_independent():
    assert composition_key([8, 26, 8, 26, 8, 8, 8, 8]) == composition_key([26, 8, 8, 8])


def test_fixture_file_evaluation_end_to_end():
    systems = read_for_evaluation(FIXTURES / "crystals.csv")
    assert len(systems) == 16  # the broken CIF row is kept in place
    reference = read_for_evaluation(FIXTURES / "crystals_reference.csv")
    report = evaluate_crystals(systems, reference=reference, reference_name="fixture", workers=1)
    by_id = {p["id"]: p for p in report["per_structure"]}
    assert all(by_id[p["id"]]["valid"] for p in report["per_structure"][:11])
    assert not by_id["broken-overlap"]["structurally_valid"] and by_id["broken-overlap"]["compositionally_valid"]
    assert not by_id["broken-NaCl2"]["compositionally_valid"] and by_id["broken-NaCl2"]["structurally_valid"]
    # a cell with a 20° angle is still a crystal: scored on its reduced cell, it is a valid (new) NaCl cell
    assert by_id["broken-angle"]["valid"] and by_id["broken-angle"]["cell_angles_in_range"] is None
    assert report["per_structure"][15]["reasons"][0].startswith("unreadable: CIF does not parse")
    assert [p["novel"] for p in report["per_structure"][:3]] == [False, False, True]
    assert report["counts"] == {"structures": 16, "structurally_valid": 14, "compositionally_valid": 13,
                                "valid": 12, "failed_decodes": 0, "cell_angles_in_range": None, "unique": 12,
                                "novel": 10}
    assert report["novelty"] == pytest.approx(10 / 12)
    assert report["distributions"]["num_reference"] == 12
    assert 0 <= report["distributions"]["tv_elements"] <= 1


def test_reduced_reference_cells_are_cached_and_give_the_same_answer(mp20_test, mp20_train):
    candidates = mp20_test[:6] + mp20_train[:2]
    first = unique_and_novel(candidates, ReferenceIndex(mp20_train), workers=1)
    index = ReferenceIndex(mp20_train)
    assert index.path.exists() and len(index.reduced) >= 2  # at least the two training crystals' buckets
    second = unique_and_novel(candidates, index, workers=1)
    assert first[0].tolist() == second[0].tolist() and first[1] == second[1]
    assert first[1][-1] is False


def test_novelty_falls_back_to_the_packaged_training_split_without_mp20(tmp_path, monkeypatch, capsys):
    """A fresh install has no MP-20 copy: novelty is measured against the packaged partial training split
    (what the shipped models saw), named as such, with a warning; a training crystal is not novel."""
    from adit_torch.evaluate import crystals

    monkeypatch.delenv("ADIT_MP20_DIR", raising=False)
    monkeypatch.setattr("adit_torch.datasets.mp20.workplace_mp20_dir", lambda: tmp_path / "absent")
    reference, name = crystals.default_crystal_reference()
    assert name == "mp20-partial:train (packaged)" and len(reference) == 9421
    assert "packaged partial MP-20 training split" in capsys.readouterr().err
    report = crystals.evaluate_crystals(reference[:4], reference=reference, with_distributions=False, workers=1)
    assert report["counts"]["valid"] >= 2 and report["counts"]["novel"] == 0


def test_the_evaluate_command_without_mp20_uses_the_packaged_reference(tmp_path, monkeypatch, capsys):
    """`adit evaluate` with its default reference on a fresh install (what the README main job runs); an
    MP-20 split asked for by name still has to exist."""
    from adit_torch.cli import EXIT_CODES, main
    from adit_torch.evaluate import crystals
    from adit_torch.io import read_systems, write_systems

    monkeypatch.delenv("ADIT_MP20_DIR", raising=False)
    monkeypatch.setattr("adit_torch.datasets.mp20.workplace_mp20_dir", lambda: tmp_path / "absent")
    samples = tmp_path / "c.extxyz"
    write_systems(samples, list(read_systems(crystals.PACKAGED_REFERENCE))[:3])
    out = tmp_path / "c.json"
    assert main(["evaluate", str(samples), "--kind", "crystal", "--json", str(out), "--workers", "1",
                 "--no-distributions", "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["reference"]["name"] == "mp20-partial:train (packaged)" and report["counts"]["novel"] == 0
    capsys.readouterr()
    assert main(["evaluate", str(samples), "--kind", "crystal", "--reference", "mp20:train",
                 "--quiet"]) == EXIT_CODES["bad_input"]
    assert "MP-20 data not found" in capsys.readouterr().err


def test_spacegroup_search_of_a_distorted_cell_is_quiet(capfd):
    """A generated 3-atom cell (InTm2, decoded under space group 139) on which spglib's C library
    prints 'ssm_get_exact_positions failed' at 1 Å: the evaluator gets the group and nothing reaches
    stderr."""
    import warnings

    import spglib

    from adit_torch.evaluate.crystals import spacegroup_number

    lattice = np.array([[3.9158, 0.0, -2.1719], [-0.6403, 3.9734, -1.7735], [0.0, 0.0, 5.6088]])
    frac = np.array([[0.007, 0.961, 0.9859], [0.2692, 0.697, 0.4117], [0.7564, 0.2462, 0.4587]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # spglib's notice about its error handling
        spglib.get_symmetry_dataset((lattice, frac, [49, 69, 69]), symprec=1.0)
    assert "spglib:" in capfd.readouterr().err  # the library itself does print on this cell
    assert spacegroup_number(AtomicSystem.from_fractional([49, 69, 69], frac, lattice), 1.0) == 8
    assert capfd.readouterr().err == ""
