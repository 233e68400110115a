"""The preprocessing cache (keyed by source checksums) and the packed SystemDataset."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from adit_torch.datasets import cache, load_full
from adit_torch.datasets.dataset import SystemDataset
from adit_torch.io import read_systems

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _equal(a: SystemDataset, b: SystemDataset) -> None:
    for key, value in a.to_arrays().items():
        np.testing.assert_array_equal(value, b.to_arrays()[key], err_msg=key)


def test_second_load_is_a_hit_and_equal(tmp_path):
    first, meta1 = load_full("qm9", root=FIXTURES / "qm9", cache_dir=tmp_path)
    second, meta2 = load_full("qm9", root=FIXTURES / "qm9", cache_dir=tmp_path)
    assert meta1["cache_hit"] is False and meta2["cache_hit"] is True
    _equal(first, second)
    assert [s.info for s in first] == [s.info for s in second]
    assert meta2["sources"] == meta1["sources"]
    assert [r["file"] for r in meta1["sources"]] == ["qm9_part1.csv.gz", "qm9_part2.csv.gz", "qm9_part3.csv.gz"]
    assert meta1["sources"][0]["sha256"] == cache.sha256_file(FIXTURES / "qm9" / "qm9_part1.csv.gz")
    assert _entries(tmp_path) == [Path(meta1["cache_file"]).name]  # one entry, no temporary files left


def test_changed_source_bytes_miss_the_cache(tmp_path):
    folder = tmp_path / "qm9"
    shutil.copytree(FIXTURES / "qm9", folder)
    _, meta1 = load_full("qm9", root=folder, cache_dir=tmp_path / "cache")
    path = folder / "qm9_part3.csv.gz"
    text = gzip.open(path, "rt").read()
    lines = text.splitlines(keepends=True)
    with gzip.open(path, "wt") as handle:  # drop the last molecule: same file name, other bytes
        handle.write("".join(lines[:-1]))
    dataset, meta2 = load_full("qm9", root=folder, cache_dir=tmp_path / "cache")
    assert meta2["cache_hit"] is False and meta2["cache_file"] != meta1["cache_file"]
    assert len(dataset) == 29
    assert len(_entries(tmp_path / "cache")) == 2


def test_preprocessing_version_is_part_of_the_key(tmp_path, monkeypatch):
    _, meta1 = load_full("mp20", root=FIXTURES / "mp20", cache_dir=tmp_path)
    monkeypatch.setattr(cache, "PREPROCESSING_VERSION", cache.PREPROCESSING_VERSION + 1)
    _, meta2 = load_full("mp20", root=FIXTURES / "mp20", cache_dir=tmp_path)
    assert meta2["cache_hit"] is False and meta2["version"] == meta1["version"] + 1


def test_corrupt_entry_is_rebuilt(tmp_path, caplog):
    first, meta = load_full("qm9", root=FIXTURES / "qm9", cache_dir=tmp_path)
    Path(meta["cache_file"]).write_bytes(b"not a zip file")
    again, meta2 = load_full("qm9", root=FIXTURES / "qm9", cache_dir=tmp_path)
    assert meta2["cache_hit"] is False and "unreadable cache entry" in caplog.text
    _equal(first, again)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ADIT_CACHE_DIR", str(tmp_path))
    assert cache.default_cache_dir() == tmp_path
    monkeypatch.delenv("ADIT_CACHE_DIR")
    assert cache.default_cache_dir() == Path.home() / ".cache" / "aiida-adit"


# ------------------------------------------------------------------ SystemDataset
@pytest.fixture(scope="module")
def crystals():
    return list(read_systems(FIXTURES / "mp20" / "slices_raw_mp20_dataset_mini.csv.gz"))


def test_pack_and_unpack(crystals):
    data = SystemDataset.from_systems("x", crystals, ("spacegroup", "e_above_hull", "missing"))
    assert len(data) == len(crystals)
    assert data.num_atoms.tolist() == [s.num_atoms for s in crystals]
    assert data.props["spacegroup"].dtype == np.int64 and data.props["e_above_hull"].dtype == np.float64
    for original, back in zip(crystals, data):
        np.testing.assert_array_equal(original.numbers, back.numbers)
        np.testing.assert_array_equal(original.positions, back.positions)
        np.testing.assert_array_equal(original.lattice, back.lattice)
        assert back.info["spacegroup"] == original.info["spacegroup"] and back.info["missing"] == ""
    rebuilt = SystemDataset.from_arrays("x", data.to_arrays())
    _equal(data, rebuilt)


def test_subset_slices_and_lookup(crystals):
    data = SystemDataset.from_systems("x", crystals)
    sub = data[[5, 1, 5]]
    assert list(sub.ids) == [crystals[5].info["id"], crystals[1].info["id"], crystals[5].info["id"]]
    np.testing.assert_array_equal(sub[0].positions, crystals[5].positions)
    np.testing.assert_array_equal(sub[1].numbers, crystals[1].numbers)
    assert list(data[2:4].ids) == list(data.ids[2:4])
    small = data[data.num_atoms < 10]
    assert len(small) == sum(s.num_atoms < 10 for s in crystals) and (small.num_atoms < 10).all()
    assert data[-1].info["id"] == crystals[-1].info["id"]
    assert data.index_of(crystals[3].info["id"]) == 3
    with pytest.raises(KeyError, match="no system with id"):
        data.index_of("mp-0")
    with pytest.raises(IndexError, match="out of range"):
        data[len(data)]


def test_mixed_crystals_and_molecules(crystals, tmp_path):
    from adit_torch.datasets import load_dataset

    molecules = list(load_dataset("qm9", "all", root=FIXTURES / "qm9", cache_dir=tmp_path))[:3]
    data = SystemDataset.from_systems("mixed", crystals[:2] + molecules)
    assert data.periodic.tolist() == [True, True, False, False, False]
    assert data[3].lattice is None and data[0].lattice is not None
    assert "H" in data.elements()
