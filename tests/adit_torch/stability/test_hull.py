"""Energy above hull: hand-computed values, file formats, the pluggable references, clear errors."""

import gzip
import json

import pytest

from adit_torch.errors import ConfigError, DataFormatError, InvalidSystemError
from adit_torch.stability.hull import ReferenceHull, load_reference_hull


def _entries(rows):
    from pymatgen.core import Composition
    from pymatgen.entries.computed_entries import ComputedEntry

    return [ComputedEntry(Composition(formula), energy, entry_id=name) for name, formula, energy in rows]


# Li-O with made-up but physical-looking energies (total eV): Li -1.9/atom, O -4.9/atom (as O2),
# Li2O at -14.3 eV per formula unit, Li2O2 at -19.9 eV, a metastable LiO2 at -13.0 eV.
LIO = [("Li", "Li", -1.9), ("O2", "O2", -9.8), ("Li2O", "Li2O", -14.3), ("Li2O2", "Li2O2", -19.9),
       ("LiO2", "LiO2", -13.0)]


def test_e_above_hull_matches_hand_computation():
    hull = ReferenceHull(_entries(LIO), "li-o")
    # formation energies per atom: Li2O (-14.3 + 3.8 + 4.9) / 3 = -1.8667, Li2O2 (-19.9 + 3.8 + 9.8) / 4 = -1.575
    # LiO2 (x_O = 2/3) lies between Li2O2 (x_O = 1/2) and O2 (x_O = 1, formation energy 0): linear in between
    ef_li2o2 = (-19.9 + 2 * 1.9 + 2 * 4.9) / 4
    hull_at = ef_li2o2 * (1 - 2 / 3) / (1 - 1 / 2)
    ef_lio2 = (-13.0 + 1.9 + 2 * 4.9) / 3
    assert hull.e_above_hull("LiO2", -13.0) == pytest.approx(ef_lio2 - hull_at, abs=1e-9)
    assert hull.formation_energy_per_atom("Li2O2", -19.9) == pytest.approx(ef_li2o2)
    # a hull vertex sits on the hull; an energy below it gives a negative distance (allowed, as in Matbench)
    assert hull.e_above_hull("Li2O", -14.3) == pytest.approx(0.0, abs=1e-9)
    assert hull.e_above_hull("Li4O2", 2 * -14.3 - 0.6) == pytest.approx(-0.1, abs=1e-9)
    # per-formula scaling does not matter
    assert hull.e_above_hull("Li4O4", -26.0) == pytest.approx(hull.e_above_hull("Li2O2", -13.0), abs=1e-9)


def test_agrees_with_pymatgen_phase_diagram_directly():
    from pymatgen.analysis.phase_diagram import PhaseDiagram
    from pymatgen.core import Composition
    from pymatgen.entries.computed_entries import ComputedEntry

    entries = _entries(LIO)
    pd = PhaseDiagram(entries)
    hull = ReferenceHull(entries, "li-o")
    for formula, energy in [("Li3O2", -17.0), ("LiO3", -15.2), ("Li5O", -13.0)]:
        query = ComputedEntry(Composition(formula), energy)
        expected = pd.get_decomp_and_e_above_hull(query, allow_negative=True)[1]
        assert hull.e_above_hull(formula, energy) == pytest.approx(expected, abs=1e-9)


def test_chemical_systems_are_built_from_subsystems_only():
    rows = LIO + [("Na", "Na", -1.3), ("NaLiO", "NaLiO", -12.0)]
    hull = ReferenceHull(_entries(rows), "li-na-o")
    assert hull.elements == {"Li", "O", "Na"}
    diagram = hull.phase_diagram(["Li", "O"])
    assert {e.entry_id for e in diagram.all_entries} == {"Li", "O2", "Li2O", "Li2O2", "LiO2"}
    with pytest.raises(InvalidSystemError, match="element\\(s\\) Fe have no reference entry in hull 'li-na-o'"):
        hull.e_above_hull("FeO", -10.0)
    assert len(hull.excluding(["Li2O2"]).entries) == len(rows) - 1


def test_reads_csv_json_and_its_own_format(tmp_path):
    csv_path = tmp_path / "refs.csv"
    csv_path.write_text("formula,energy\n" + "".join(f"{f},{e}\n" for _, f, e in LIO))
    from_csv = load_reference_hull(str(csv_path))
    assert from_csv.e_above_hull("LiO2", -13.0) == pytest.approx(
        ReferenceHull(_entries(LIO), "x").e_above_hull("LiO2", -13.0))
    per_atom = tmp_path / "per_atom.csv"
    per_atom.write_text("formula,energy_per_atom\nLi,-1.9\nO,-4.9\nLi2O,-4.7666666667\n")
    assert ReferenceHull.from_file(per_atom).e_above_hull("Li2O", -14.3) == pytest.approx(0.0, abs=1e-6)

    json_path = tmp_path / "entries.json.gz"
    with gzip.open(json_path, "wt") as fh:
        json.dump([e.as_dict() for e in _entries(LIO)], fh)
    assert ReferenceHull.from_file(json_path).e_above_hull("Li2O2", -19.9) == pytest.approx(0.0, abs=1e-9)

    saved = ReferenceHull(_entries(LIO), "mine", {"potential": {"name": "test"}}).save(tmp_path / "h.json.gz")
    again = ReferenceHull.from_file(saved)
    assert again.name == "mine" and len(again) == len(LIO)
    assert again.e_above_hull("LiO2", -13.0) == pytest.approx(ReferenceHull(_entries(LIO), "x").e_above_hull(
        "LiO2", -13.0))


def test_bad_reference_files_name_the_problem(tmp_path):
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("formula,energy\nLi,-1.9\nXq2,oops\n")
    with pytest.raises(DataFormatError, match="bad.csv: line 3"):
        ReferenceHull.from_file(bad_csv)
    no_cols = tmp_path / "cols.csv"
    no_cols.write_text("name,value\nLi,-1\n")
    with pytest.raises(DataFormatError, match="needs a 'formula' column"):
        ReferenceHull.from_file(no_cols)
    junk = tmp_path / "junk.json"
    junk.write_text("[{\"energy\": 1}]")
    with pytest.raises(DataFormatError, match="item 0 is not a ComputedEntry"):
        ReferenceHull.from_file(junk)
    with pytest.raises(ConfigError, match="unknown reference hull 'nowhere.json'"):
        load_reference_hull("nowhere.json")


def test_mp2023_without_matbench_discovery_is_a_clear_error():
    pytest.importorskip("pymatgen")
    try:
        import matbench_discovery  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="matbench-discovery"):
            load_reference_hull("mp2023")
    else:  # pragma: no cover - only where the optional extra is installed
        pytest.skip("matbench-discovery is installed; the online path is not exercised in tests")


def _fake_matbench(monkeypatch, path):
    """Stand in for matbench-discovery's ``DataFiles`` so that the hull file is ``path`` (no download)."""
    import sys
    import types

    data = types.ModuleType("matbench_discovery.data")
    data.DataFiles = types.SimpleNamespace(mp_patched_phase_diagram=types.SimpleNamespace(path=str(path)))
    package = types.ModuleType("matbench_discovery")
    package.data = data
    monkeypatch.setitem(sys.modules, "matbench_discovery", package)
    monkeypatch.setitem(sys.modules, "matbench_discovery.data", data)


class _Marker:
    """Unpickling this object creates a file: the test fails if that ever happens."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_mp2023_hull_file_is_checked_before_anything_is_unpickled(tmp_path, monkeypatch):
    import gzip
    import pickle

    from adit_torch.stability.mp2023 import PPD_SHA256, verify_ppd_file

    marker = tmp_path / "unpickled"
    planted = tmp_path / "2023-02-07-ppd-mp.pkl.gz"
    with gzip.open(planted, "wb") as fh:
        pickle.dump(_Marker(str(marker)), fh)
    _fake_matbench(monkeypatch, planted)
    with pytest.raises(DataFormatError, match=f"not the published MP 2023-02-07 hull file .* expected {PPD_SHA256}"):
        load_reference_hull("mp2023")
    assert not marker.exists()
    with pytest.raises(DataFormatError, match="refusing to unpickle"):
        verify_ppd_file(planted)
    ok = tmp_path / "ok.bin"
    ok.write_bytes(b"hull")
    import hashlib

    digests = hashlib.sha256(b"hull").hexdigest(), hashlib.md5(b"hull", usedforsecurity=False).hexdigest()
    assert verify_ppd_file(ok, *digests) == ok


def test_caches_with_pickled_objects_are_never_unpickled(tmp_path):
    """The dataset cache, the reduced-cell cache and cached latents refuse object arrays (allow_pickle=False)."""
    import numpy as np

    from adit_torch.datasets.cache import load_entry
    from adit_torch.evaluate.matching import ReferenceIndex

    marker = tmp_path / "unpickled"
    evil = np.array([_Marker(str(marker))], dtype=object)
    entry = tmp_path / "entry.npz"
    np.savez(entry, meta=np.array("{}"), numbers=evil)
    assert load_entry(entry, "mp20") is None  # unreadable: rebuilt, never unpickled
    index = ReferenceIndex([], "empty")
    index.path = tmp_path / "reduced.npz"
    np.savez(index.path, index=evil, offsets=evil, numbers=evil, frac=evil, lattices=evil)
    assert index._load() == {}
    assert not marker.exists()
