"""QM9 loading from the qm9pack CSVs: parsing, centring, the standard split and bad rows."""

import csv
import gzip
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from adit_torch.datasets import load_dataset, load_full, qm9
from adit_torch.errors import DataFormatError

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "qm9"


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return load_full("qm9", root=FIXTURE, cache_dir=tmp_path_factory.mktemp("cache"))


def _raw_rows(folder=FIXTURE):
    rows = []
    for path in sorted(folder.glob("qm9_part*.csv.gz")):
        rows += list(csv.DictReader(gzip.open(path, "rt", newline="")))
    return rows


def test_package_data_found_without_importing_it(monkeypatch):
    monkeypatch.delenv("ADIT_QM9_DIR", raising=False)
    folder = qm9.default_qm9_dir()
    assert [p.name for p in qm9.qm9_source_files(folder)] == ["qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv"]
    assert "qm9pack" not in sys.modules


def test_molecules_match_the_csv(full):
    dataset, meta = full
    rows = _raw_rows()
    assert meta["rows_read"] == len(rows) == len(dataset) and meta["skipped"] == []
    assert list(dataset.ids) == [r["Index"] for r in rows]
    assert not dataset.periodic.any() and dataset.dataset_id == 1
    for i, row in enumerate(rows):
        system = dataset[i]
        assert system.num_atoms == int(row["N_atoms"])
        assert system.symbols == row["Elements"].strip("[]").replace("'", "").split(",")
        raw = np.array(row["XYZ_Ang"].replace("[", "").replace("]", "").split(","), dtype=float).reshape(-1, 3)
        np.testing.assert_allclose(system.positions, raw - raw.mean(axis=0), atol=1e-12)  # centred copy
        assert system.info["smiles"] == row["SMILES"]
        assert system.info["qm9_index"] == int(row["Index"])
        # EDM's six properties in its units (orbital energies from Hartree to meV)
        assert system.info["alpha"] == float(row["Polarizability_bohr3"])
        assert system.info["gap"] == pytest.approx(float(row["HOMO_LUMO_gap_au"]) * 27211.386, rel=1e-6)
        assert system.info["homo"] == pytest.approx(float(row["HOMO_au"]) * 27211.386, rel=1e-6)
        assert system.info["lumo"] == pytest.approx(float(row["LUMO_au"]) * 27211.386, rel=1e-6)
        assert system.info["mu"] == float(row["Dipole_debye"])
        assert system.info["Cv"] == float(row["Heatcapacity_Cv_cal_mol_K"])


def test_hydrogens_and_bare_decimal_numbers(full):
    dataset, _ = full
    acetylene = dataset[dataset.index_of("4")]  # its CSV coordinates are written as "0." and "1."
    assert acetylene.formula == "C2H2"
    assert np.allclose(acetylene.positions[:, 1:], 0.0)  # a linear molecule along x
    assert sum(dataset.numbers == 1) > sum(dataset.numbers == 6)


def test_standard_split_sizes_and_reproducibility():
    parts = qm9.qm9_split_positions(qm9.NUM_MOLECULES)
    halves = parts.pop("train_a"), parts.pop("train_b")
    assert {k: len(v) for k, v in parts.items()} == {"train": 100_000, "val": 17_748, "test": 13_083}
    # EDM's halves of the training split: disjoint, 50,000 each, together the training split
    assert [len(h) for h in halves] == [50_000, 50_000] and not np.intersect1d(*halves).size
    assert np.array_equal(np.sort(np.concatenate(halves)), parts["train"])
    joined = np.concatenate(list(parts.values()))
    assert len(np.unique(joined)) == qm9.NUM_MOLECULES and joined.min() == 0 and joined.max() == 130_830
    again = qm9.qm9_split_positions(qm9.NUM_MOLECULES, seed=qm9.SPLIT_SEED)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    other = qm9.qm9_split_positions(qm9.NUM_MOLECULES, seed=qm9.SPLIT_SEED + 1)
    assert not np.array_equal(parts["test"], other["test"])


@pytest.mark.slow
def test_installed_package_has_the_130831_molecules():
    count = 0
    for path in qm9.qm9_source_files(qm9.default_qm9_dir()):
        data = path.read_bytes()  # one record per line in these files: lines minus the header
        assert data.endswith(b"\n")
        count += data.count(b"\n") - 1
    assert count == qm9.NUM_MOLECULES


def test_training_halves_are_qm9s_only(tmp_path):
    a, b = (load_dataset("qm9", s, root=FIXTURE, cache_dir=tmp_path) for s in ("train_a", "train_b"))
    train = load_dataset("qm9", "train", root=FIXTURE, cache_dir=tmp_path)
    assert sorted([*a.ids, *b.ids]) == sorted(train.ids) and not set(a.ids) & set(b.ids)
    from adit_torch.errors import ConfigError

    with pytest.raises(ConfigError, match="only QM9 has the halves of its training split, not 'mp20'"):
        load_dataset("mp20", "train_b", cache_dir=tmp_path)


def test_fixture_split_is_proportional(tmp_path):
    parts = {s: load_dataset("qm9", s, root=FIXTURE, cache_dir=tmp_path) for s in ("train", "val", "test")}
    assert {k: len(v) for k, v in parts.items()} == {"train": 23, "val": 4, "test": 3}  # 30 * 100000/130831 ...
    ids = [set(p.ids) for p in parts.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])


def _broken_copy(tmp_path, edit) -> Path:
    folder = tmp_path / "qm9"
    shutil.copytree(FIXTURE, folder)
    path = folder / "qm9_part1.csv.gz"
    rows = list(csv.reader(gzip.open(path, "rt", newline="")))
    edit(rows[0], rows[1:])
    with gzip.open(path, "wt", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return folder


@pytest.mark.parametrize("edit, message", [
    (lambda h, r: r[2].__setitem__(h.index("Elements"), "['O','Xx','H']"), "unknown element symbol 'Xx'"),
    (lambda h, r: r[2].__setitem__(h.index("XYZ_Ang"), "[[0,0,0],[1,1,1]]"), "3 elements but 6 coordinates"),
    (lambda h, r: r[2].__setitem__(h.index("XYZ_Ang"), "[[0,0,0],[nan,0,0],[0,1,0]]"), "NaN or infinite"),
    (lambda h, r: r[2].__setitem__(h.index("XYZ_Ang"), "[[0,0,0],[0.1,0,0],[0,1,0]]"), "overlapping atoms"),
    (lambda h, r: r[2].__setitem__(h.index("XYZ_Ang"), "[[0,0,0],[x,0,0],[0,1,0]]"), "not a list of numbers"),
])
def test_bad_rows_name_file_row_and_problem(tmp_path, edit, message):
    folder = _broken_copy(tmp_path, edit)
    with pytest.raises(DataFormatError, match=rf"qm9_part1\.csv\.gz: row 3 \(QM9 index 3\): .*{message}"):
        load_full("qm9", root=folder, cache_dir=tmp_path / "cache")
    dataset, meta = load_full("qm9", root=folder, cache_dir=tmp_path / "cache", skip_invalid=True)
    assert len(dataset) == 29 and "3" not in set(dataset.ids)
    assert len(meta["skipped"]) == 1
    # the split is over source rows, so the other molecules keep their split
    assert meta["rows_read"] == 30


def test_missing_columns(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    with gzip.open(folder / "qm9_part1.csv.gz", "wt") as handle:
        handle.write("Index,SMILES\n1,C\n")
    with pytest.raises(DataFormatError, match=r"qm9_part1\.csv\.gz: columns \['Elements', 'XYZ_Ang'\] missing"):
        load_full("qm9", root=folder, cache_dir=tmp_path / "cache")
