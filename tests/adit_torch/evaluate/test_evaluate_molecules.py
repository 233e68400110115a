"""Molecule evaluation: QM9 molecules pass, broken geometries fail, EDM stability and PoseBusters behave."""

from pathlib import Path

import numpy as np
import pytest

from adit_torch.evaluate import check_molecule, evaluate_molecules, read_for_evaluation, wilson_interval
from adit_torch.evaluate.molecules import (
    canonical_smiles,
    novelty_key,
    reference_smiles,
    validity_adit,
    validity_strict,
)
from adit_torch.evaluate.posebusters import run_posebusters
from adit_torch.evaluate.stability_edm import atom_stability, bond_orders, molecule_stability
from adit_torch.system import AtomicSystem

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "evaluate"


def test_real_qm9_molecules_are_valid_and_mostly_stable(qm9_sample):
    records = [check_molecule(m) for m in qm9_sample]
    assert sum(r["valid"] for r in records) >= 0.95 * len(records)
    assert sum(r["valid_strict"] for r in records) >= 0.9 * len(records)
    atoms = sum(r["num_atoms"] for r in records)
    assert sum(r["stable_atoms"] for r in records) / atoms > 0.95
    assert sum(r["molecule_stable"] for r in records) / len(records) > 0.7


def test_smiles_of_a_real_molecule_matches_its_qm9_smiles(qm9_sample):
    with_stereo = [validity_adit(m)[0] == canonical_smiles(m.info["smiles"]) for m in qm9_sample]
    without = [novelty_key(validity_adit(m)[0]) == novelty_key(m.info["smiles"]) for m in qm9_sample]
    assert np.mean(with_stereo) < 0.9  # the PDB pipeline assigns stereocentres from 3D, QM9's strings have none
    assert np.mean(without) > 0.95  # so novelty compares SMILES without stereo tags


def test_methane_bond_orders_and_stability(qm9_sample):
    methane = AtomicSystem([6, 1, 1, 1, 1], [[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63],
                                             [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]])
    orders = bond_orders(methane.numbers, methane.positions)
    assert orders[0].tolist() == [0, 1, 1, 1, 1] and orders[1:, 1:].sum() == 0
    assert molecule_stability(methane) == (5, 5, True)
    radical = AtomicSystem(methane.numbers[:4], methane.positions[:4])
    assert atom_stability(radical).tolist() == [False, True, True, True]


def test_edm_double_and_triple_bonds():
    # C=O at 1.21 Å is double, C#N at 1.15 Å triple, C-C at 1.54 Å single
    assert bond_orders(np.array([6, 8]), np.array([[0, 0, 0], [1.21, 0, 0]]))[0, 1] == 2
    assert bond_orders(np.array([6, 7]), np.array([[0, 0, 0], [1.15, 0, 0]]))[0, 1] == 3
    assert bond_orders(np.array([6, 6]), np.array([[0, 0, 0], [1.54, 0, 0]]))[0, 1] == 1
    assert bond_orders(np.array([6, 6]), np.array([[0, 0, 0], [1.70, 0, 0]]))[0, 1] == 0
    assert bond_orders(np.array([6, 26]), np.array([[0, 0, 0], [1.5, 0, 0]]))[0, 1] == 0  # no table entry


def test_stretched_bond_and_overlap_fail_the_checks_they_should(qm9_sample):
    mol = qm9_sample[0]
    h = int(np.flatnonzero(mol.numbers == 1)[0])
    d = np.linalg.norm(mol.positions - mol.positions[h], axis=1)
    d[h] = np.inf
    stretched = mol.copy()
    heavy = int(np.argmin(d))
    stretched.positions[h] = mol.positions[heavy] + 2.5 * (mol.positions[h] - mol.positions[heavy]) / d[heavy]
    record = check_molecule(stretched)
    assert not record["molecule_stable"] and record["stable_atoms"] < mol.num_atoms
    overlap = mol.copy()
    overlap.positions[1] = overlap.positions[0] + [0.1, 0, 0]
    record = check_molecule(overlap)
    assert not record["valid_strict"] and not record["molecule_stable"]
    assert any(r.startswith("strictly invalid") for r in record["reasons"])


def test_strict_validity_rejects_a_charged_fragment():
    hydroxide = AtomicSystem([8, 1], [[0, 0, 0], [0.97, 0, 0]])
    ok, reason = validity_strict(hydroxide)
    assert not ok and "DetermineBonds" in reason


@pytest.mark.parametrize("system, reason", [
    (AtomicSystem(np.zeros(0), np.zeros((0, 3))), "no atoms"),
    (AtomicSystem([6, 1], [[0, 0, 0], [np.inf, 0, 0]]), "NaN or infinite"),
    (AtomicSystem([11, 17], [[0, 0, 0], [2, 2, 2]], np.eye(3) * 4), "not a molecule"),
])
def test_degenerate_molecules_are_invalid_with_reasons(system, reason):
    record = check_molecule(system)
    assert not record["valid"] and not record["molecule_stable"]
    assert any(reason in r for r in record["reasons"])


def test_uniqueness_and_novelty_by_smiles(qm9_sample):
    gen = qm9_sample[:10] + [qm9_sample[0].copy()]
    report = evaluate_molecules(gen, reference=[m.info["smiles"] for m in qm9_sample[5:20]],
                                posebusters=False, workers=1)
    c = report["counts"]
    assert c["valid"] == 11 and c["unique"] == 10
    assert report["uniqueness"] == pytest.approx(10 / 11)
    novel = [p.get("novel") for p in report["per_structure"]]
    assert novel[5:10] == [False] * 5  # in the reference
    assert report["per_structure"][10]["first_occurrence"] is False


def test_reference_smiles_from_3d_are_cached(qm9_sample, tmp_path, monkeypatch):
    monkeypatch.setenv("ADIT_CACHE_DIR", str(tmp_path))
    first, method = reference_smiles(qm9_sample[:8])
    assert "3D" in method and len(first) >= 7
    cached = list((tmp_path / "evaluate").glob("reference_keys_*.json"))
    assert len(cached) == 1
    second, _ = reference_smiles(qm9_sample[:8])
    assert second == first


def _write_packaged(path, digest, versions, keys):
    import gzip
    import json

    path.write_bytes(gzip.compress(json.dumps({"digest": digest, "versions": versions, "keys": keys}).encode()))


def test_packaged_keys_serve_only_their_own_reference_and_library_versions(qm9_sample, tmp_path, monkeypatch):
    """Packaged keys stand in for the pipeline only for the reference they were made from and under the
    library versions that made them; any other reference or version runs the pipeline."""
    from adit_torch.evaluate import molecules

    monkeypatch.setenv("ADIT_CACHE_DIR", str(tmp_path / "cache"))
    reference = qm9_sample[:6]
    digest = molecules.reference_digest(reference)
    packaged = tmp_path / "keys.json.gz"
    monkeypatch.setattr(molecules, "PACKAGED_KEYS", packaged)
    _write_packaged(packaged, digest, molecules.pipeline_versions(), ["C", "CC"])
    keys, method = reference_smiles(reference)
    assert keys == {"C", "CC"} and "packaged" in method
    assert not list((tmp_path / "cache").rglob("reference_keys_*.json"))  # nothing computed, nothing cached

    real, method = reference_smiles(qm9_sample[:5])  # another reference: computed
    assert "packaged" not in method and len(real) >= 4 and real != {"C", "CC"}

    other = dict(molecules.pipeline_versions(), rdkit="2000.1.1")
    _write_packaged(packaged, digest, other, ["C", "CC"])
    keys, method = reference_smiles(reference)
    assert "packaged" not in method and keys != {"C", "CC"} and len(keys) >= 5


def test_shipped_qm9_keys_were_made_with_the_pinned_libraries():
    """The packaged QM9 novelty keys record the versions of constraints.txt; refreshing the pins
    without rebuilding them (scripts/build_novelty_reference.py --qm9) fails here."""
    import gzip
    import json

    from adit_torch.evaluate.molecules import PACKAGED_KEYS

    data = json.loads(gzip.decompress(PACKAGED_KEYS.read_bytes()))
    assert data["reference"] == "qm9:train" and data["num_molecules"] > 90_000 and len(data["keys"]) > 50_000
    pins = dict(line.strip().split("==") for line in (Path(__file__).resolve().parents[3] / "constraints.txt")
                .read_text().splitlines() if "==" in line and not line.startswith("#"))
    assert data["versions"] == {"rdkit": pins["rdkit"], "openbabel": pins["openbabel-wheel"],
                                "pymatgen": pins["pymatgen-core"]}


def test_posebusters_subset_reports_every_check_with_wilson_intervals(qm9_sample):
    records = [check_molecule(m) for m in qm9_sample[:6]]
    valid = [i for i, r in enumerate(records) if r["valid"]]
    summary = run_posebusters(records, valid, subset=3, seed=1, workers=1)
    assert summary["evaluated"] == 3 and summary["of_valid"] == len(valid)
    assert {"sanitization", "bond_lengths", "internal_steric_clash", "internal_energy"} <= set(summary["checks"])
    for entry in summary["checks"].values():
        assert entry["evaluated"] == 3
        lo, hi = entry["ci95"]
        assert 0 <= lo <= entry["pass_rate"] <= hi <= 1
    assert sum("posebusters" in r for r in records) == 3


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(95, 100)
    assert lo == pytest.approx(0.8882, abs=1e-4) and hi == pytest.approx(0.9785, abs=1e-4)
    assert wilson_interval(0, 0) is None
    assert wilson_interval(0, 7)[0] == 0.0 and wilson_interval(7, 7)[1] == 1.0


def test_fixture_file_molecules():
    systems = read_for_evaluation(FIXTURES / "molecules.extxyz")
    assert [s.info["id"] for s in systems][-2:] == ["broken-stretched", "broken-overlap"]
    report = evaluate_molecules(systems, reference=read_for_evaluation(FIXTURES / "molecules_reference.extxyz"),
                                posebusters=False, workers=1)
    per = report["per_structure"]
    assert all(p["valid"] and p["valid_strict"] for p in per[:12])
    assert [p["novel"] for p in per[:3]] == [True, False, False]
    assert not per[12]["molecule_stable"] and not per[13]["valid_strict"]
