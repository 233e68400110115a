"""QM9 molecules (130,831 small organic molecules, C/H/N/O/F, hydrogens included).

The source is the CSV tables shipped inside the installed ``qm9pack`` package
(``qm9pack/data/qm9_part{1,2,3}.csv``: columns ``XYZ_file, Index, SMILES, ...,
Elements, XYZ_Ang, ...``). The package itself is never imported (its
``__init__`` is broken); its folder is found with ``importlib.util.find_spec``.
Molecules are centred at their centroid; ``info`` has ``id`` (the QM9 index as
a string), ``qm9_index``, ``smiles`` and the six properties of EDM's conditional
benchmark (:data:`PROPERTY_COLUMNS`, in EDM's units: ``alpha`` Bohr^3, ``gap``,
``homo`` and ``lumo`` meV (QM9's Hartree times :data:`HARTREE_MEV`), ``mu`` Debye,
``Cv`` cal/(mol K)).

Split: a permutation of the row positions ``0..n-1`` (file order, i.e. by QM9
index) drawn with ``numpy.random.default_rng(SPLIT_SEED).permutation(n)``; the
first 100,000 are ``train``, the next 17,748 ``val``, the last 13,083 ``test``
(for ``n != 130,831`` the same fractions, rounded). ``train_a`` and ``train_b`` are
the first and the second half of ``train`` in that permutation's order (50,000 each):
the halves of EDM's property benchmark (a property predictor is trained on one, the
conditional generator on the other).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from adit_torch.datasets.dataset import SystemDataset
from adit_torch.errors import DataFormatError, InvalidSystemError
from adit_torch.io import MAX_ATOMS, Skipped, open_text
from adit_torch.system import AtomicSystem, atomic_number

#: Standard QM9 split sizes (train, val, test) for the 130,831 molecules.
SPLIT_SIZES = (100_000, 17_748, 13_083)
NUM_MOLECULES = sum(SPLIT_SIZES)
SPLIT_SEED = 42
DATASET_ID = 1
#: Hartree in meV (CODATA 2018), for QM9's orbital energies.
HARTREE_MEV = 27211.386245988
#: EDM's six conditional properties: name -> (CSV column, factor to EDM's unit).
PROPERTY_COLUMNS = {"alpha": ("Polarizability_bohr3", 1.0), "gap": ("HOMO_LUMO_gap_au", HARTREE_MEV),
                    "homo": ("HOMO_au", HARTREE_MEV), "lumo": ("LUMO_au", HARTREE_MEV),
                    "mu": ("Dipole_debye", 1.0), "Cv": ("Heatcapacity_Cv_cal_mol_K", 1.0)}
PROP_KEYS = ("qm9_index", "smiles", "source_row", *PROPERTY_COLUMNS)
_COLUMNS = ("Index", "SMILES", "Elements", "XYZ_Ang")


def default_qm9_dir() -> Path:
    """Folder of the QM9 CSVs: ``$ADIT_QM9_DIR``, else ``qm9pack/data`` of the installed package."""
    env = os.environ.get("ADIT_QM9_DIR")
    if env:
        return Path(env).expanduser()
    spec = importlib.util.find_spec("qm9pack")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise DataFormatError("QM9 data not found: install the `qm9pack` package or set $ADIT_QM9_DIR")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def qm9_source_files(root: str | os.PathLike) -> list[Path]:
    """The ``qm9_part*.csv`` (or ``.csv.gz``) files in ``root``, sorted by name."""
    root = Path(root)
    files = sorted(p for p in root.glob("qm9_part*.csv*") if p.name.endswith((".csv", ".csv.gz")))
    if not files:
        raise DataFormatError(f"{root}: no qm9_part*.csv files")
    return files


def _molecule(row: dict, columns: dict) -> AtomicSystem:
    """One centred molecule from a QM9 CSV row (raises on malformed fields)."""
    index = row[columns["Index"]].strip()
    symbols = row[columns["Elements"]].strip("[] ").replace("'", "").replace('"', "").split(",")
    numbers = [atomic_number(s) for s in symbols]
    text = row[columns["XYZ_Ang"]].replace("[", "").replace("]", "")
    try:
        pos = np.array(text.split(","), dtype=np.float64)
    except ValueError:
        raise DataFormatError("XYZ_Ang is not a list of numbers") from None
    if pos.size != 3 * len(numbers):
        raise DataFormatError(f"{len(numbers)} elements but {pos.size} coordinates")
    info = {"id": index, "qm9_index": int(index) if index.isdigit() else -1, "smiles": row[columns["SMILES"]]}
    for name, (column, factor) in PROPERTY_COLUMNS.items():
        if column in columns:
            try:
                info[name] = float(row[columns[column]]) * factor
            except ValueError:
                raise DataFormatError(f"{column} is not a number: {row[columns[column]]!r}") from None
    return AtomicSystem(numbers, pos.reshape(-1, 3), None, info)


def preprocess_qm9(root, progress: bool | None = None) -> tuple[SystemDataset, dict]:
    """Read, validate and centre every molecule of the QM9 CSVs in ``root``.

    Returns the dataset (``props``: ``qm9_index``, ``smiles``, ``source_row`` = row
    position over all files, used by the split) and ``meta`` with ``skipped``
    (messages naming file and row) and ``rows_read``.
    """
    import csv

    from tqdm.auto import tqdm

    csv.field_size_limit(1 << 28)
    systems, skipped = [], []
    position = 0
    bar = tqdm(desc="QM9 preprocessing", unit="mol", disable=None if progress is None else not progress)
    for path in qm9_source_files(root):
        with open_text(path) as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            missing = [c for c in _COLUMNS if c not in (header or [])]
            if missing:
                raise DataFormatError(f"{path}: columns {missing} missing (header: {header})")
            columns = {c: header.index(c) for c in _COLUMNS}
            columns.update({c: header.index(c) for c, _ in PROPERTY_COLUMNS.values() if c in header})
            for number, row in enumerate(reader, start=1):
                where = f"row {number}"
                try:
                    if len(row) != len(header):
                        raise DataFormatError(f"{len(row)} fields, expected {len(header)}")
                    where = f"row {number} (QM9 index {row[columns['Index']]})"
                    system = _molecule(row, columns)
                    system.info["source_row"] = position
                    system = system.validate(max_atoms=MAX_ATOMS).canonical()
                except (DataFormatError, InvalidSystemError) as exc:
                    skipped.append(str(Skipped(str(path), where, str(exc))))
                else:
                    systems.append(system)
                position += 1
                bar.update(1)
    bar.close()
    dataset = SystemDataset.from_systems("qm9", systems, PROP_KEYS, DATASET_ID)
    return dataset, {"skipped": skipped, "rows_read": position}


def qm9_split_positions(n: int, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """``{"train", "val", "test", "train_a", "train_b"} -> sorted row positions`` for ``n`` source rows (module doc)."""
    if n == NUM_MOLECULES:
        n_train, n_val = SPLIT_SIZES[0], SPLIT_SIZES[1]
    else:
        n_train = int(round(n * SPLIT_SIZES[0] / NUM_MOLECULES))
        n_val = int(round(n * SPLIT_SIZES[1] / NUM_MOLECULES))
    perm = np.random.default_rng(seed).permutation(n)
    half = n_train // 2
    return {
        "train": np.sort(perm[:n_train]),
        "val": np.sort(perm[n_train:n_train + n_val]),
        "test": np.sort(perm[n_train + n_val:]),
        "train_a": np.sort(perm[:half]),
        "train_b": np.sort(perm[half:n_train]),
    }


def qm9_split_indices(dataset: SystemDataset, rows_read: int, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Split of a preprocessed dataset: indices into ``dataset`` (skipped rows simply absent)."""
    rows = dataset.props["source_row"]
    return {k: np.flatnonzero(np.isin(rows, v)) for k, v in qm9_split_positions(rows_read, seed).items()}
