"""MP-20 loading: file discovery, deduplication, canonical crystals, the split and bad rows."""

import csv
import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from adit_torch.datasets import load_dataset, load_full, mp20
from adit_torch.errors import DataFormatError

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "mp20"


def _ids_by_split(folder: Path) -> dict[str, set]:
    """material_ids of each original split, read straight from the CSV files."""
    out = {"train": set(), "val": set(), "test": set()}
    for path in folder.glob("*.csv.gz"):
        split = mp20.SOURCE_SPLITS[path.name[: -len(".csv.gz")]]
        out[split] |= {r["material_id"] for r in csv.DictReader(gzip.open(path, "rt", newline=""))}
    return out


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return load_full("mp20", root=FIXTURE, cache_dir=tmp_path_factory.mktemp("cache"))


def test_workplace_files_and_their_splits():
    root = mp20.workplace_mp20_dir()
    if not root.is_dir():
        pytest.skip(f"the workplace MP-20 copy {root} is absent on this machine")
    files = mp20.mp20_source_files(root)
    assert [(p.name, s) for p, s in files] == [
        ("slices_raw_mp20_dataset_mini.csv.gz", "train"), ("mp_20_pilot_train.csv.gz", "train"),
        ("mp_20_pilot_val.csv.gz", "val"), ("mp_20_biternary_val.csv.gz", "val"),
        ("mp_20_pilot_test.csv.gz", "test"), ("mp_20_biternary_test.csv.gz", "test"),
    ]


def test_default_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ADIT_MP20_DIR", str(FIXTURE))
    assert mp20.default_mp20_dir() == FIXTURE
    monkeypatch.setenv("ADIT_MP20_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataFormatError, match="is not a folder"):
        mp20.default_mp20_dir()


def test_missing_data_tells_how_to_download(monkeypatch, tmp_path):
    monkeypatch.delenv("ADIT_MP20_DIR", raising=False)
    monkeypatch.setattr(mp20, "workplace_mp20_dir", lambda: tmp_path / "absent")
    with pytest.raises(DataFormatError, match="adit data download mp20 --dest DIR"):
        mp20.default_mp20_dir()
    with pytest.raises(DataFormatError, match="no MP-20 CSV files"):
        mp20.mp20_source_files(tmp_path)


def test_deduplicated_by_material_id(full):
    dataset, meta = full
    expected = _ids_by_split(FIXTURE)
    assert sorted(dataset.ids) == sorted(set.union(*expected.values()))
    assert len(set(dataset.ids)) == len(dataset)
    rows = sum(1 for p in FIXTURE.glob("*.csv.gz") for _ in csv.DictReader(gzip.open(p, "rt", newline="")))
    assert meta["rows_read"] == rows
    assert meta["duplicates"] == rows - len(dataset)
    for split, code in mp20.SPLIT_CODES.items():
        assert set(dataset.ids[dataset.props["orig_split"] == code]) == expected[split]


def test_systems_are_canonical_crystals_with_properties(full):
    dataset, _ = full
    assert dataset.periodic.all() and dataset.dataset_id == 0
    for i in range(len(dataset)):
        system = dataset[i]
        frac = system.frac_coords
        assert (frac > -1e-9).all() and (frac < 1 + 1e-9).all()
        assert np.all(np.diff(system.lengths) > -1e-6)  # Niggli order a <= b <= c
        assert isinstance(system.info["spacegroup"], int) and 1 <= system.info["spacegroup"] <= 230
        assert system.info["e_above_hull"] < 0.08
        assert system.info["dataset"] == "mp20"
    gate = dataset[dataset.index_of("mp-10009")]
    assert gate.formula == "Ga4Te4" and gate.info["spacegroup"] == 194


def test_canonical_matches_the_raw_cif(full):
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Structure

    dataset, _ = full
    row = next(csv.DictReader(gzip.open(FIXTURE / "mp_20_biternary_val.csv.gz", "rt", newline="")))
    raw = Structure.from_str(row["cif"], fmt="cif")
    ours = dataset[dataset.index_of(row["material_id"])].to_pymatgen()
    assert ours.volume == pytest.approx(raw.volume, rel=1e-6)
    assert StructureMatcher().fit(raw, ours)


def test_split_rule(full):
    dataset, _ = full
    parts = mp20.mp20_split_indices(dataset)
    orig = dataset.props["orig_split"]
    everything = np.concatenate(list(parts.values()))
    assert sorted(everything) == list(range(len(dataset)))  # disjoint and complete
    assert (orig[parts["test"]] == 2).all() and len(parts["test"]) == (orig == 2).sum()
    pool = (orig != 2).sum()
    assert len(parts["val"]) == round(mp20.VAL_FRACTION * pool)
    again = mp20.mp20_split_indices(dataset)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    other = mp20.mp20_split_indices(dataset, seed=7, val_fraction=0.4)
    assert len(other["val"]) == round(0.4 * pool)
    assert not np.array_equal(other["val"], mp20.mp20_split_indices(dataset, seed=8, val_fraction=0.4)["val"])


def test_load_dataset_splits(tmp_path):
    train = load_dataset("mp20", "train", root=FIXTURE, cache_dir=tmp_path)
    val = load_dataset("mp20", "val", root=FIXTURE, cache_dir=tmp_path)
    test = load_dataset("mp20", "test", root=FIXTURE, cache_dir=tmp_path)
    expected = _ids_by_split(FIXTURE)
    assert set(test.ids) == expected["test"]
    assert set(train.ids) | set(val.ids) == expected["train"] | expected["val"]
    assert not set(train.ids) & set(val.ids)


def _copy(tmp_path) -> Path:
    folder = tmp_path / "mp20"
    shutil.copytree(FIXTURE, folder)
    return folder


def _rewrite(path: Path, edit) -> None:
    rows = list(csv.DictReader(gzip.open(path, "rt", newline="")))
    fields = list(rows[0])
    edit(rows)
    with gzip.open(path, "wt", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def test_invalid_row_is_reported_with_file_and_row(tmp_path):
    folder = _copy(tmp_path)
    target = folder / "mp_20_biternary_test.csv.gz"
    _rewrite(target, lambda rows: rows[4].update(cif="data_x\nnot a cif at all\n"))
    with pytest.raises(DataFormatError, match=r"mp_20_biternary_test\.csv\.gz: row 5 \(mp-626680\): CIF does not"):
        load_full("mp20", root=folder, cache_dir=tmp_path / "cache")
    dataset, meta = load_full("mp20", root=folder, cache_dir=tmp_path / "cache", skip_invalid=True)
    assert "mp-626680" not in set(dataset.ids) and len(dataset) == len(set.union(*_ids_by_split(FIXTURE).values())) - 1
    assert len(meta["skipped"]) == 1 and "row 5 (mp-626680)" in meta["skipped"][0]


def test_repeated_row_must_agree_with_the_first(tmp_path):
    folder = _copy(tmp_path)  # mp-1002572 is row 6 of the pilot test file and row 4 of the biternary one
    _rewrite(folder / "mp_20_biternary_test.csv.gz", lambda rows: rows[3].update(cif=rows[0]["cif"]))
    with pytest.raises(DataFormatError, match=r"biternary_test\.csv\.gz: row 4 \(mp-1002572\): CIF differs from "
                                              r"mp_20_pilot_test\.csv\.gz row 6"):
        load_full("mp20", root=folder, cache_dir=tmp_path / "cache")


def test_same_material_in_two_splits_is_an_error(tmp_path):
    folder = _copy(tmp_path)
    stolen = next(csv.DictReader(gzip.open(folder / "mp_20_pilot_test.csv.gz", "rt", newline="")))
    _rewrite(folder / "slices_raw_mp20_dataset_mini.csv.gz", lambda rows: rows.append(stolen))
    with pytest.raises(DataFormatError, match=r"mp_20_pilot_test\.csv\.gz: row 1 \(mp-10009\) is also in the train"):
        load_full("mp20", root=folder, cache_dir=tmp_path / "cache")
