"""Reading and writing systems on real MP-20 and QM9 entries, and every kind of bad input."""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from adit_torch.errors import DataFormatError, InvalidSystemError
from adit_torch.io import detect_kind, parse_cif, read_systems, write_systems
from adit_torch.system import AtomicSystem

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MP20_TEST = FIXTURES / "mp20" / "mp_20_biternary_test.csv.gz"


@pytest.fixture(scope="module")
def crystals():
    return read_systems(MP20_TEST)


@pytest.fixture(scope="module")
def molecules(tmp_path_factory):
    from adit_torch.datasets import load_dataset

    return list(load_dataset("qm9", "all", root=FIXTURES / "qm9", cache_dir=tmp_path_factory.mktemp("cache")))


def _same(a: AtomicSystem, b: AtomicSystem, atol=1e-6):
    assert a.numbers.tolist() == b.numbers.tolist()
    np.testing.assert_allclose(a.positions, b.positions, atol=atol)
    if a.lattice is None:
        assert b.lattice is None
    else:
        np.testing.assert_allclose(a.lattice, b.lattice, atol=atol)


# ------------------------------------------------------------------ reading real data
def test_csv_reads_cdvae_columns(crystals):
    assert [s.info["id"] for s in crystals] == ["mp-10009", "mp-1225695", "mp-1224266", "mp-1002572", "mp-626680"]
    first = crystals[0]
    assert first.is_periodic and first.formula == "Ga4Te4"
    assert first.info["spacegroup"] == 194
    assert first.info["pretty_formula"] == "GaTe"
    assert isinstance(first.info["e_above_hull"], float)
    assert first.info["source"] == str(MP20_TEST)
    assert crystals.skipped == []


def test_detect_kind():
    assert detect_kind("a.csv.gz") == "csv"
    assert detect_kind("a.extxyz") == "extxyz"
    assert detect_kind("b.SDF") == "sdf"
    with pytest.raises(DataFormatError, match="file kind"):
        detect_kind("model.pt")


# ------------------------------------------------------------------ round trips
def test_extxyz_round_trip_crystals_and_molecules(tmp_path, crystals, molecules):
    systems = list(crystals) + molecules[:5]
    out = tmp_path / "mixed.extxyz"
    write_systems(out, systems)
    back = read_systems(out)
    assert len(back) == len(systems)
    for a, b in zip(systems, back):
        _same(a, b)
        assert b.info["id"] == a.info["id"]
    assert back[0].info["spacegroup"] == 194
    assert back[-1].info["smiles"] == molecules[4].info["smiles"]


def test_cif_file_and_folder_round_trip(tmp_path, crystals):
    single = write_systems(tmp_path / "one.cif", crystals[:1])
    assert [p.name for p in single] == ["one.cif"]
    (back,) = read_systems(tmp_path / "one.cif")
    _same(crystals[0], back, atol=1e-5)
    assert back.info["id"] == "mp-10009"
    files = write_systems(tmp_path / "many_cif", crystals)
    assert [p.name for p in files] == [f"{i:05d}.cif" for i in range(len(crystals))]
    folder = read_systems(tmp_path / "many_cif")
    assert [s.info["id"] for s in folder] == [s.info["id"] for s in crystals]
    for a, b in zip(crystals, folder):
        _same(a, b, atol=1e-5)
    (tmp_path / "many_cif" / "notes.txt").write_text("kept")
    (tmp_path / "many_cif" / "000007.cif").write_text("stale")  # as a write of over 100,000 names them
    write_systems(tmp_path / "many_cif", crystals[:2])  # a shorter rewrite leaves no stale structures
    assert sorted(p.name for p in (tmp_path / "many_cif").iterdir()) == ["00000.cif", "00001.cif", "notes.txt"]
    assert [s.info["id"] for s in read_systems(tmp_path / "many_cif")] == [s.info["id"] for s in crystals[:2]]
    assert (tmp_path / "many_cif" / "notes.txt").read_text() == "kept"


def test_cif_file_names_sort_in_sample_order():
    from adit_torch.io import cif_file_name

    assert [cif_file_name(i, 3) for i in range(3)] == ["00000.cif", "00001.cif", "00002.cif"]
    assert cif_file_name(99_999, 100_000) == "99999.cif"
    names = [cif_file_name(i, 100_001) for i in (0, 99_999, 100_000)]
    assert names == ["000000.cif", "099999.cif", "100000.cif"] and names == sorted(names)


def test_cif_file_refuses_several_systems_and_molecules(tmp_path, crystals, molecules):
    with pytest.raises(DataFormatError, match="holds one system"):
        write_systems(tmp_path / "two.cif", crystals[:2])
    with pytest.raises(InvalidSystemError, match="molecule cannot be written as CIF"):
        write_systems(tmp_path / "mol_cif", molecules[:1], kind="cif")
    assert not (tmp_path / "two.cif").exists()


@pytest.mark.parametrize("perceive", [False, True])
def test_sdf_round_trip_keeps_hydrogens(tmp_path, molecules, perceive):
    out = tmp_path / "mols.sdf"
    write_systems(out, molecules, perceive_bonds=perceive)
    back = read_systems(out)
    assert [s.info["id"] for s in back] == [s.info["id"] for s in molecules]
    for a, b in zip(molecules, back):
        _same(a, b, atol=1e-4)  # the V2000 format keeps 4 decimals
    from rdkit import Chem

    mols = [m for m in Chem.SDMolSupplier(str(out), removeHs=False, sanitize=False)]
    bonds = sum(m.GetNumBonds() for m in mols)
    assert (bonds > 0) == perceive


def test_sdf_refuses_crystals(tmp_path, crystals):
    with pytest.raises(InvalidSystemError, match="crystals cannot be converted"):
        write_systems(tmp_path / "x.sdf", crystals[:1])


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path, crystals, molecules):
    out = tmp_path / "mols.sdf"
    write_systems(out, molecules[:2])
    before = out.read_bytes()
    with pytest.raises(InvalidSystemError):
        write_systems(out, molecules[:3] + list(crystals[:1]))  # fails after writing three records
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mols.sdf"]


# ------------------------------------------------------------------ bad input
def _csv_with(tmp_path, rows: list[str], name="bad.csv") -> Path:
    """A CDVAE-layout CSV: real first rows of the fixture with some ``cif`` fields replaced."""
    import csv

    real = list(csv.DictReader(gzip.open(MP20_TEST, "rt", newline="")))
    path = tmp_path / name
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(real[0]))
        writer.writeheader()
        for i, cif in enumerate(rows):
            row = dict(real[i])
            if cif is not None:
                row["cif"] = cif
            writer.writerow(row)
    return path


def _real_cif(i=0) -> str:
    import csv

    return list(csv.DictReader(gzip.open(MP20_TEST, "rt", newline="")))[i]["cif"]


def test_unparseable_cif_names_file_and_row(tmp_path):
    path = _csv_with(tmp_path, [None, "data_broken\n_cell_length_a 3\nthis is not a cif\n"])
    with pytest.raises(DataFormatError, match=r"bad\.csv: row 2 \(mp-1225695\): CIF does not parse"):
        read_systems(path)


def test_unknown_element_in_cif(tmp_path):
    cif = _real_cif(0).replace("  Te  Te", "  Qq  Qq")
    path = _csv_with(tmp_path, [cif])
    with pytest.raises(InvalidSystemError, match=r"bad\.csv: row 1 \(mp-10009\): .*unknown element"):
        read_systems(path)


def test_unknown_element_in_extxyz(tmp_path):
    path = tmp_path / "u.extxyz"
    props = "Properties=species:S:1:pos:R:3"
    path.write_text(f"1\n{props}\nC 0 0 0\n2\n{props}\nQq 0 0 0\nH 0 0 1\n")
    with pytest.raises(InvalidSystemError, match=r"u\.extxyz: frame 1 \(line 4\): unknown element symbol 'Qq'"):
        read_systems(path)


def test_nan_coordinates(tmp_path):
    path = tmp_path / "nan.extxyz"
    path.write_text("2\nProperties=species:S:1:pos:R:3 id=m7\nC 0 0 0\nO nan 0 1.2\n")
    with pytest.raises(InvalidSystemError, match=r"nan\.extxyz: frame 0 \(line 1\): m7: NaN or infinite"):
        read_systems(path)


def test_overlap_through_periodic_image(tmp_path):
    # Two atoms 0.2 Å apart only through the periodic boundary (x = 0.01 and 0.99 of 10 Å).
    system = AtomicSystem.from_fractional([11, 17], [[0.01, 0.5, 0.5], [0.99, 0.5, 0.5]], np.eye(3) * 10,
                                          {"id": "wrapped"})
    assert np.linalg.norm(system.positions[0] - system.positions[1]) > 9
    path = tmp_path / "overlap.extxyz"
    write_systems(path, [system])
    with pytest.raises(InvalidSystemError, match=r"overlap\.extxyz: frame 0 .*wrapped: overlapping atoms"):
        read_systems(path)


def test_singular_lattice(tmp_path):
    path = tmp_path / "flat.extxyz"
    header = 'Lattice="3 0 0 3 0 0 0 0 3" Properties=species:S:1:pos:R:3 pbc="T T T"'
    path.write_text(f"2\n{header}\nNa 0 0 0\nCl 1.5 1.5 1.5\n")
    with pytest.raises(InvalidSystemError, match=r"flat\.extxyz: frame 0 .*singular lattice"):
        read_systems(path)


def test_size_limit(tmp_path):
    with pytest.raises(InvalidSystemError, match=r"row 1 \(mp-10009\): mp-10009: 8 atoms exceeds the limit of 4"):
        read_systems(MP20_TEST, max_atoms=4)


@pytest.mark.parametrize("suffix", [".csv", ".extxyz", ".sdf", ".cif"])
def test_empty_file(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_text("")
    with pytest.raises(DataFormatError, match=rf"empty{suffix}: empty file"):
        read_systems(path)


def test_missing_file_and_missing_cif_column(tmp_path):
    with pytest.raises(DataFormatError, match="no such file"):
        read_systems(tmp_path / "nothing.extxyz")
    path = tmp_path / "nocif.csv"
    path.write_text("material_id,structure\nmp-1,abc\n")
    with pytest.raises(DataFormatError, match=r"nocif\.csv: no 'cif' column"):
        read_systems(path)


def test_truncated_extxyz(tmp_path):
    path = tmp_path / "cut.extxyz"
    path.write_text("3\nProperties=species:S:1:pos:R:3\nC 0 0 0\nO 0 0 1.2\n")
    with pytest.raises(DataFormatError, match=r"cut\.extxyz: frame 0 \(line 1\): file ends before its 3 atoms"):
        read_systems(path)


def test_skip_invalid_reports_what_was_skipped(tmp_path, caplog):
    bad_element = _real_cif(2).replace("  Tm  Tm", "  Qq  Qq")
    path = _csv_with(tmp_path, [None, "garbage", bad_element, None])
    systems = read_systems(path, skip_invalid=True)
    assert [s.info["id"] for s in systems] == ["mp-10009", "mp-1002572"]
    assert [s.where for s in systems.skipped] == ["row 2 (mp-1225695)", "row 3 (mp-1224266)"]
    assert "CIF does not parse" in systems.skipped[0].reason
    assert "unknown element" in systems.skipped[1].reason
    assert all(s.source == str(path) for s in systems.skipped)
    assert "skipped 2 invalid structure(s)" in caplog.text


def test_parse_cif_of_real_row():
    system = parse_cif(_real_cif(0), {"id": "x"})
    assert system.formula == "Ga4Te4" and system.info["id"] == "x"
    assert system.volume == pytest.approx(system.to_pymatgen().volume)


def test_no_temp_files_left_after_success(tmp_path, crystals):
    write_systems(tmp_path / "a.extxyz", crystals)
    assert os.listdir(tmp_path) == ["a.extxyz"]


def test_bad_sdf_record_and_bad_cif_file_in_a_folder(tmp_path, molecules, crystals):
    out = tmp_path / "mols.sdf"
    write_systems(out, molecules[:3])
    records = out.read_text().split("$$$$\n")
    records[1] = "broken\n  nothing here\n\n  2  1  0  0  0  0  0  0  0  0999 V2000\nM  END\n"
    out.write_text("$$$$\n".join(records))
    with pytest.raises(DataFormatError, match=r"mols\.sdf: record 1: record does not parse"):
        read_systems(out)
    kept = read_systems(out, skip_invalid=True)
    assert [s.info["id"] for s in kept] == [molecules[0].info["id"], molecules[2].info["id"]]
    assert [s.where for s in kept.skipped] == ["record 1"]

    folder = tmp_path / "cifs"
    write_systems(folder, crystals[:3])
    (folder / "00001.cif").write_text("data_nothing\n_cell_length_a 3\n")
    with pytest.raises(DataFormatError, match=r"00001\.cif: data block 0: CIF does not parse"):
        read_systems(folder)
    kept = read_systems(folder, skip_invalid=True)
    assert [s.info["id"] for s in kept] == [crystals[0].info["id"], crystals[2].info["id"]]
    assert kept.skipped[0].source.endswith("00001.cif")


def test_compressed_output_is_refused(tmp_path, crystals):
    with pytest.raises(DataFormatError, match="compressed output is not supported"):
        write_systems(tmp_path / "x.extxyz.gz", crystals)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["extxyz", "sdf", "cif"])
def test_stream_writer_is_complete_or_untouched(tmp_path, kind):
    """Systems streamed in chunks read back in order; an error half-way leaves the old file as it was."""
    from adit_torch.io import StreamWriter, read_systems

    if kind == "cif":
        systems = [AtomicSystem.from_parameters([11, 17], [[0, 0, 0], [0.5, 0.5, 0.5]], [4.0 + 0.1 * i] * 3,
                                                [90, 90, 90], {"id": f"c{i}"}) for i in range(5)]
        path = tmp_path / "out_cif"
    else:
        systems = [AtomicSystem([8, 1, 1], [[0, 0, 0], [0.96 + 0.01 * i, 0, 0], [-0.24, 0.93, 0]], None,
                                {"id": f"m{i}"}) for i in range(5)]
        path = tmp_path / f"out.{kind}"
    with StreamWriter(path, kind) as writer:
        writer.write(systems[:2])
        writer.write(systems[2:])
    back = read_systems(path)
    assert [len(s) for s in back] == [len(s) for s in systems]
    for a, b in zip(systems, back):
        np.testing.assert_allclose(b.distance_matrix()[np.triu_indices(len(a), 1)],
                                   a.distance_matrix()[np.triu_indices(len(a), 1)], atol=1e-5)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(RuntimeError, match="stopped"):
        with StreamWriter(path, kind) as writer:
            writer.write(systems[:1])
            raise RuntimeError("stopped")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no temporary left, old output kept
    assert len(read_systems(path)) == 5
