"""`adit evaluate` end to end on the fixture files, and the JSON report layout."""

import json
from pathlib import Path

import pytest

from adit_torch.cli import EXIT_CODES, main
from adit_torch.evaluate.report import write_json

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "evaluate"

CONTRACT_CRYSTAL = {"kind", "num_structures", "structural_validity", "compositional_validity", "validity",
                    "uniqueness", "novelty", "counts", "protocol", "reference", "per_structure"}
CONTRACT_MOLECULE = {"kind", "num_structures", "validity", "validity_strict", "uniqueness", "novelty",
                     "atom_stability", "molecule_stability", "posebusters", "counts", "protocol", "reference",
                     "per_structure"}


def _fractions_in_unit_interval(report, keys):
    for key in keys:
        assert report[key] is None or 0.0 <= report[key] <= 1.0, key


def test_crystal_cli_writes_the_contract_json(tmp_path, capsys):
    out = tmp_path / "eval" / "crystals.json"
    status = main(["evaluate", str(FIXTURES / "crystals.csv"), "--kind", "crystal", "--reference",
                   str(FIXTURES / "crystals_reference.csv"), "--json", str(out), "--workers", "1", "--quiet"])
    assert status == 0
    table = capsys.readouterr().out
    assert "structural validity" in table and "compositional validity (smact14)" in table
    report = json.loads(out.read_text())
    assert CONTRACT_CRYSTAL <= set(report)
    _fractions_in_unit_interval(report, ["structural_validity", "compositional_validity", "validity",
                                         "uniqueness", "novelty"])
    # 12: the NaCl cell with a 20° angle counts as the crystal it is (scored on its reduced cell)
    assert report["validity"] == report["counts"]["valid"] / report["num_structures"] == 12 / 16
    protocol = report["protocol"]
    assert protocol["oxidation_states"] == "smact14"
    assert protocol["matcher"]["stol"] == 0.5 and protocol["matcher"]["ltol"] == 0.3
    assert protocol["cell_angle_check"] is False
    assert "pymatgen" in protocol["libraries"] and "smact" in protocol["libraries"]
    assert report["reference"]["size"] == 12
    records = report["per_structure"]
    assert [r["index"] for r in records] == list(range(16))
    for r in records:
        assert {"index", "id", "formula", "valid", "reasons", "kind"} <= set(r)
        assert r["valid"] == (r["reasons"] == [])
    assert not list(out.parent.glob(".*tmp*"))  # no temporary file left behind


def test_crystal_cli_icsd24_and_check_cell_angles_change_the_protocol(tmp_path):
    out = tmp_path / "c.json"
    status = main(["evaluate", str(FIXTURES / "crystals.csv"), "--reference", "none", "--oxidation-states", "icsd24",
                   "--check-cell-angles", "--json", str(out), "--workers", "1", "--quiet"])
    assert status == 0
    report = json.loads(out.read_text())
    assert report["kind"] == "crystal"  # detected from the file
    assert report["protocol"]["oxidation_states"] == "icsd24"
    assert report["protocol"]["cell_angle_check"] is True
    assert report["novelty"] is None and report["reference"] is None
    broken_angle = next(r for r in report["per_structure"] if r["id"] == "broken-angle")
    assert not broken_angle["valid"] and broken_angle["cell_angles_in_range"] is False


def test_molecule_cli_with_posebusters_subset(tmp_path, capsys):
    out = tmp_path / "m.json"
    status = main(["evaluate", str(FIXTURES / "molecules.extxyz"), "--kind", "molecule", "--reference",
                   str(FIXTURES / "molecules_reference.extxyz"), "--posebusters-subset", "3", "--json", str(out),
                   "--workers", "1", "--quiet"])
    assert status == 0
    assert "atom stability (EDM)" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert CONTRACT_MOLECULE <= set(report)
    _fractions_in_unit_interval(report, ["validity", "validity_strict", "uniqueness", "novelty", "atom_stability",
                                         "molecule_stability"])
    pb = report["posebusters"]
    assert pb["evaluated"] == 3 and pb["subset"] == 3 and len(pb["all_pass_ci95"]) == 2
    assert sum("posebusters" in r for r in report["per_structure"]) == 3
    assert report["per_structure"][13]["id"] == "broken-overlap"
    assert all("pdb" not in r for r in report["per_structure"])


@pytest.mark.parametrize("args, message", [
    (["evaluate", "no/such/file.extxyz"], "no such file"),
    (["evaluate", "FIXTURE", "--workers", "0"], "--workers"),
    (["evaluate", "FIXTURE", "--reference", "oqmd:train"], "unknown dataset"),
])
def test_bad_input_is_a_clear_error_with_exit_status_2(args, message, capsys):
    args = [str(FIXTURES / "crystals.csv") if a == "FIXTURE" else a for a in args]
    assert main(args) == EXIT_CODES["bad_input"]
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_write_json_refuses_nan_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"a": 1})
    with pytest.raises(ValueError):
        write_json(path, {"a": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1}
    assert list(tmp_path.iterdir()) == [path]


def test_folder_of_cifs_and_sdf_keep_broken_entries_in_place(tmp_path):
    from adit_torch.evaluate import read_for_evaluation
    from adit_torch.io import write_systems

    crystals = read_for_evaluation(FIXTURES / "crystals.csv")[:3]
    folder = tmp_path / "cifs"
    for name, system in zip(("a", "c", "d"), crystals):
        write_systems(folder / f"{name}.cif", [system])
    (folder / "b.cif").write_text("not a CIF at all\n")
    systems = read_for_evaluation(folder)
    assert [type(s).__name__ for s in systems] == ["AtomicSystem", "Unreadable", "AtomicSystem", "AtomicSystem"]
    assert systems[1].info["id"].startswith("b.cif") and "does not parse" in systems[1].reason
    molecules = read_for_evaluation(FIXTURES / "molecules.extxyz")
    write_systems(tmp_path / "m.sdf", molecules)
    again = read_for_evaluation(tmp_path / "m.sdf")
    assert len(again) == len(molecules) == 14
    assert [s.num_atoms for s in again] == [s.num_atoms for s in molecules]
