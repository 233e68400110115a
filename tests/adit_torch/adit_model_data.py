"""Real systems for the model tests: the first rows of real MP-20 and QM9 files.

MP-20 crystals come from ``mp_20_pilot_train.csv.gz`` (CIF strings parsed by
pymatgen, canonical cell); QM9 molecules from the installed ``qm9pack`` CSV.
"""

from __future__ import annotations

import ast
import csv
import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

from adit_torch.system import AtomicSystem, atomic_number

REPO = Path(__file__).resolve().parents[2]


def mp20_dir() -> Path:
    """Folder of the MP-20 CSV files: the 100 real rows kept in ``tests/fixtures/mp20_rows``."""
    return REPO / "tests" / "fixtures" / "mp20_rows"


def qm9_csv() -> Path:
    """First QM9 CSV of the installed qm9pack package (found without importing it)."""
    spec = importlib.util.find_spec("qm9pack")
    return Path(spec.submodule_search_locations[0]) / "data" / "qm9_part1.csv"


csv.field_size_limit(10**8)


@lru_cache(maxsize=4)
def _mp20(k: int, skip: int) -> tuple[AtomicSystem, ...]:
    from pymatgen.core import Structure

    out = []
    with gzip.open(mp20_dir() / "mp_20_pilot_train.csv.gz", "rt") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            if i < skip:
                continue
            if len(out) == k:
                break
            s = Structure.from_str(row["cif"], fmt="cif")
            out.append(AtomicSystem.from_pymatgen(s, {"id": row["material_id"], "dataset": "mp20"}).canonical())
    return tuple(out)


@lru_cache(maxsize=4)
def _qm9(k: int, skip: int) -> tuple[AtomicSystem, ...]:
    out = []
    with open(qm9_csv(), newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            if i < skip:
                continue
            if len(out) == k:
                break
            numbers = [atomic_number(e) for e in ast.literal_eval(row["Elements"])]
            pos = ast.literal_eval(row["XYZ_Ang"])
            out.append(AtomicSystem(numbers, pos, None, {"id": f"qm9-{row['Index']}", "dataset": "qm9"}).canonical())
    return tuple(out)


def mp20_systems(k: int = 8, skip: int = 0) -> list[AtomicSystem]:
    """``k`` MP-20 crystals (canonical cells), after skipping ``skip`` rows."""
    return [s.copy() for s in _mp20(k, skip)]


def qm9_systems(k: int = 8, skip: int = 0) -> list[AtomicSystem]:
    """``k`` QM9 molecules (centred), after skipping ``skip`` rows (the first rows are tiny molecules)."""
    return [s.copy() for s in _qm9(k, skip)]
