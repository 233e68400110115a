"""MP-20 crystals (CDVAE's Materials Project subset, at most 20 atoms per cell).

A folder may hold the full CDVAE files (``train.csv``, ``val.csv``, ``test.csv``,
plain or gzipped) and/or the workplace subset files (``mp_20_pilot_*``,
``mp_20_biternary_*``, ``slices_raw_mp20_dataset_mini``); each known file name
maps to its original MP-20 split (:data:`SOURCE_SPLITS`). Rows are deduplicated
by ``material_id`` (first occurrence kept, files read in the order of
:data:`SOURCE_SPLITS`; a repeated id must carry the same split and CIF), parsed
with pymatgen, validated and canonicalised (:meth:`AtomicSystem.canonical`:
Niggli cell, lattice from lengths and angles, fractional coordinates in ``[0, 1)``).

Our split (see docs/data.md): ``test`` = original test rows; the original train
and val rows form a pool from which a fixed :data:`VAL_FRACTION` is drawn as
``val`` with ``numpy.random.default_rng(SPLIT_SEED)``; the rest is ``train``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from adit_torch.datasets.dataset import SystemDataset
from adit_torch.errors import DataFormatError, InvalidSystemError
from adit_torch.io import MAX_ATOMS, Skipped, csv_row_info, iter_csv_rows, parse_cif

#: Known file stems (without ``.csv``/``.csv.gz``) and the original MP-20 split of their rows, in reading order.
SOURCE_SPLITS = {
    "train": "train",
    "slices_raw_mp20_dataset_mini": "train",
    "mp_20_pilot_train": "train",
    "val": "val",
    "mp_20_pilot_val": "val",
    "mp_20_biternary_val": "val",
    "test": "test",
    "mp_20_pilot_test": "test",
    "mp_20_biternary_test": "test",
}
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
#: Fraction of the train+val pool held out as our validation split, and its seed.
VAL_FRACTION = 0.05
SPLIT_SEED = 42
DATASET_ID = 0
PROP_KEYS = ("spacegroup", "e_above_hull", "formation_energy_per_atom", "band_gap", "orig_split", "source_row")


def workplace_mp20_dir() -> Path:
    """Where the workplace keeps its MP-20 copy: ``<repository>/../shared/data/mp20`` (may not exist)."""
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "mp20"


def default_mp20_dir() -> Path:
    """The MP-20 folder: ``$ADIT_MP20_DIR``, else the workplace copy ``<repo>/../shared/data/mp20``.

    Raises :class:`DataFormatError` telling how to download MP-20 when neither exists.
    """
    env = os.environ.get("ADIT_MP20_DIR")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataFormatError(f"$ADIT_MP20_DIR={env} is not a folder")
        return path
    workplace = workplace_mp20_dir()
    if workplace.is_dir():
        return workplace
    raise DataFormatError(
        "MP-20 data not found: set $ADIT_MP20_DIR to a folder holding train.csv/val.csv/test.csv, "
        "or run `adit data download mp20 --dest DIR` and then set ADIT_MP20_DIR=DIR"
    )


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".csv"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def mp20_source_files(root: str | os.PathLike) -> list[tuple[Path, str]]:
    """``(path, original_split)`` of the known MP-20 CSV files in ``root``, in reading order."""
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{root}: MP-20 folder does not exist")
    found = {_stem(p): p for p in sorted(root.iterdir()) if p.name.lower().endswith((".csv", ".csv.gz"))}
    files = [(found[stem], split) for stem, split in SOURCE_SPLITS.items() if stem in found]
    if not files:
        raise DataFormatError(f"{root}: no MP-20 CSV files (expected names such as {sorted(SOURCE_SPLITS)[:4]}...)")
    return files


def preprocess_mp20(root, progress: bool | None = None) -> tuple[SystemDataset, dict]:
    """Parse, validate and canonicalise every unique MP-20 row in ``root``.

    Returns the dataset (``props``: ``spacegroup``, ``e_above_hull`` and
    ``formation_energy_per_atom`` (eV/atom), ``band_gap`` (eV), ``orig_split``
    (0/1/2 = train/val/test of the source), ``source_row`` (MP-20 row index or -1))
    and a ``meta`` dict with ``skipped`` (messages of invalid rows), ``duplicates``
    and ``rows_read``.
    """
    from tqdm.auto import tqdm

    systems, skipped, seen = [], [], {}
    duplicates = rows_read = 0
    files = mp20_source_files(root)
    bar = tqdm(desc="MP-20 preprocessing", unit="cif", disable=None if progress is None else not progress)
    for path, split in files:
        for number, row in iter_csv_rows(path):
            rows_read += 1
            mid = row.get("material_id") or ""
            if mid and mid in seen:
                duplicates += 1
                first_split, first_where, first_cif = seen[mid]
                if first_split != split:
                    raise DataFormatError(f"{path}: row {number} ({mid}) is also in the {first_split} split")
                if first_cif != row["cif"]:
                    raise DataFormatError(f"{path}: row {number} ({mid}): CIF differs from {first_where}")
                continue
            seen[mid] = (split, f"{path.name} row {number}", row["cif"])
            where = f"row {number} ({mid or 'no material_id'})"
            try:
                info = csv_row_info(row, number)
                info["orig_split"] = SPLIT_CODES[split]
                first = row.get("") or row.get("Unnamed: 0") or ""
                info["source_row"] = int(first) if first.strip().lstrip("-").isdigit() else -1
                system = parse_cif(row["cif"], info).validate(max_atoms=MAX_ATOMS).canonical()
            except (DataFormatError, InvalidSystemError) as exc:
                skipped.append(str(Skipped(str(path), where, str(exc))))
                continue
            systems.append(system)
            bar.update(1)
    bar.close()
    dataset = SystemDataset.from_systems("mp20", systems, PROP_KEYS, DATASET_ID)
    return dataset, {"skipped": skipped, "duplicates": duplicates, "rows_read": rows_read}


def mp20_split_indices(dataset: SystemDataset, seed: int = SPLIT_SEED, val_fraction: float = VAL_FRACTION):
    """``{"train", "val", "test"} -> sorted indices into dataset`` following the module's split rule."""
    orig = dataset.props["orig_split"]
    test = np.flatnonzero(orig == SPLIT_CODES["test"])
    pool = np.flatnonzero(orig != SPLIT_CODES["test"])
    perm = np.random.default_rng(seed).permutation(len(pool))
    n_val = int(round(val_fraction * len(pool)))
    return {"train": np.sort(pool[perm[n_val:]]), "val": np.sort(pool[perm[:n_val]]), "test": test}
