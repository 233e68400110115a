"""Real-data fixtures of the evaluation tests: MP-20 rows and QM9 molecules, read directly and kept small."""

import csv
import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from adit_torch.io import parse_cif
from adit_torch.system import AtomicSystem, atomic_number

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures" / "evaluate"
MP20 = REPO / "tests" / "fixtures" / "mp20_rows"  # 100 real rows each of the MP-20 train and test files


def mp20_rows(name: str, n: int, skip: int = 0) -> list[AtomicSystem]:
    """The first ``n`` rows (after ``skip``) of an MP-20 CSV as canonical crystals (the model's cell convention)."""
    out = []
    with gzip.open(MP20 / name, "rt", newline="") as handle:
        for k, row in enumerate(csv.DictReader(handle)):
            if k < skip:
                continue
            if len(out) == n:
                break
            info = {"id": row["material_id"], "spacegroup": int(row["spacegroup.number"])}
            out.append(parse_cif(row["cif"], info).canonical())
    return out


def qm9_molecules(n: int, skip: int = 0) -> list[AtomicSystem]:
    """``n`` QM9 molecules from the installed ``qm9pack`` CSV (rows ``skip`` .. ``skip + n``)."""
    import pandas as pd

    root = Path(importlib.util.find_spec("qm9pack").submodule_search_locations[0]) / "data"
    frame = pd.read_csv(root / "qm9_part1.csv", nrows=n + skip, usecols=["Index", "SMILES", "Elements", "XYZ_Ang"])
    out = []
    for _, row in frame.iloc[skip:].iterrows():
        symbols = row.Elements.strip("[] ").replace("'", "").split(",")
        pos = np.array(row.XYZ_Ang.replace("[", "").replace("]", "").split(","), dtype=float).reshape(-1, 3)
        out.append(AtomicSystem([atomic_number(s) for s in symbols], pos, None,
                                {"id": f"qm9-{row.Index}", "smiles": row.SMILES}))
    return out


def mp20_raw_cells(name: str, n: int) -> list[AtomicSystem]:
    """The first ``n`` rows of an MP-20 CSV in the cells their CIFs give (not reduced)."""
    out = []
    with gzip.open(MP20 / name, "rt", newline="") as handle:
        for row in csv.DictReader(handle):
            if len(out) == n:
                break
            out.append(parse_cif(row["cif"], {"id": row["material_id"]}))
    return out


@pytest.fixture(scope="session")
def mp20_raw_test():
    """100 real MP-20 test crystals in their raw CIF cells (21.6% of raw MP-20 cells have an angle
    outside (50°, 130°))."""
    return mp20_raw_cells("mp_20_pilot_test.csv.gz", 100)


@pytest.fixture(scope="session")
def mp20_test():
    """40 real MP-20 test crystals."""
    return mp20_rows("mp_20_pilot_test.csv.gz", 40)


@pytest.fixture(scope="session")
def mp20_train():
    """60 real MP-20 training crystals."""
    return mp20_rows("mp_20_pilot_train.csv.gz", 60)


@pytest.fixture(scope="session")
def qm9_sample():
    """60 real QM9 molecules spread over the first rows of the data."""
    return qm9_molecules(60, 2000)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Keep the reference-SMILES cache of each test in its own folder."""
    monkeypatch.setenv("ADIT_CACHE_DIR", str(tmp_path / "cache"))
