"""A user's own structures as training data: a folder of CIFs, an extxyz file, an SDF file or a
CSV with a ``cif`` column (the readers of :func:`adit_torch.io.read_systems`).

Every structure is validated and put in its canonical form (Niggli cell and wrapped fractional
coordinates for crystals, centred molecules) as the MP-20 and QM9 loaders do. Crystals take
the crystal slot of the model (dataset id 0, as MP-20) and molecules the molecule slot (1, as
QM9), so a shipped model can be fine-tuned on them (``--init``). Scalar properties (numeric
CSV columns, numeric extxyz ``info`` keys present in every structure) are kept as per-system
properties. The split is deterministic: a seeded permutation puts ``VAL_FRACTION`` of the
structures (at least one when there are two or more) in ``val``, the rest in ``train``; no
``test`` split is made from a user's data.

The result is cached like the public datasets, keyed by the files' SHA-256
(:mod:`adit_torch.datasets.cache`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from adit_torch.datasets.cache import cached
from adit_torch.datasets.dataset import SystemDataset
from adit_torch.errors import ConfigError, DataFormatError

#: Fraction of a user's structures held out for validation, and the seed of the split.
VAL_FRACTION, SPLIT_SEED = 0.1, 0
#: Keys of ``info`` that are bookkeeping, not properties.
_NOT_PROPERTIES = {"id", "source", "material_id", "cif", "smiles", "dataset", "kind", "seed", "index"}
#: Per-system splits of a user dataset.
USER_SPLITS = ("train", "val", "all")


def is_user_dataset(name: str) -> bool:
    """True when ``name`` is a path to an existing file or folder (not a dataset name)."""
    return name not in ("mp20", "qm9", "joint") and Path(name).expanduser().exists()


def _sources(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".cif")
        if not files:
            raise DataFormatError(f"{path}: a dataset folder must hold .cif files; none found")
        return files
    return [path]


def _properties(systems) -> list[str]:
    """Numeric ``info`` keys present in every system."""
    if not systems:
        return []
    keys = set(systems[0].info) - _NOT_PROPERTIES
    for s in systems:
        keys &= {k for k, v in s.info.items()
                 if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)}
    return sorted(keys)


def _build(path: Path, skip_invalid: bool):
    from adit_torch.io import read_systems

    systems = read_systems(path, skip_invalid=skip_invalid)
    skipped = list(getattr(systems, "skipped", []))
    canonical = [s.canonical() for s in systems]
    if not canonical:
        raise DataFormatError(f"{path}: no valid structure to train on" +
                              (f" ({len(skipped)} skipped, first: {skipped[0]})" if skipped else ""))
    keys = _properties(canonical)
    crystals = [s for s in canonical if s.is_periodic]
    molecules = [s for s in canonical if not s.is_periodic]
    order = [s for s in crystals] + [s for s in molecules]
    dataset = SystemDataset.from_systems(path.name, order, keys)
    meta = {"skipped": [str(x) for x in skipped], "num_crystals": len(crystals), "num_molecules": len(molecules),
            "properties": keys}
    return dataset, meta


def split_positions(n: int, seed: int = SPLIT_SEED, val_fraction: float = VAL_FRACTION) -> dict[str, np.ndarray]:
    """Deterministic ``train``/``val`` index arrays for ``n`` structures (sorted)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = 0 if n < 2 else max(1, int(round(val_fraction * n)))
    return {"val": np.sort(perm[:n_val]), "train": np.sort(perm[n_val:])}


def load_user_dataset(path: str | os.PathLike, split: str = "train", skip_invalid: bool = False,
                      cache_dir=None) -> list[SystemDataset]:
    """A user's structures for training, as one :class:`SystemDataset` per kind present.

    Args:
        path: folder of ``.cif`` files, or an extxyz, SDF, CIF or CSV (``cif`` column) file.
        split: ``"train"``, ``"val"`` or ``"all"``.
        skip_invalid: leave out structures that fail to read or validate (listed in the log);
            otherwise the first one raises, naming the file and the entry.
        cache_dir: cache folder (default :func:`adit_torch.datasets.cache.default_cache_dir`).

    Returns:
        ``[crystals, molecules]`` (only the kinds present; dataset ids 0 and 1).

    Raises:
        ConfigError: unknown split, or a path that does not exist.
        DataFormatError / InvalidSystemError: unreadable or invalid content, with its location.
    """
    if split not in USER_SPLITS:
        raise ConfigError(f"unknown split {split!r} of a user dataset; expected one of {USER_SPLITS}")
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"dataset {path}: no such file or folder")
    name = f"user-{'skip' if skip_invalid else 'strict'}"
    dataset, meta = cached(name, _sources(path), lambda: _build(path, skip_invalid), cache_dir)
    if split != "all":
        dataset = dataset.subset(split_positions(len(dataset))[split])
    lattices = np.asarray(dataset.lattices)
    periodic = ~np.isnan(lattices.reshape(len(dataset), -1)).any(axis=1)
    parts = []
    for dataset_id, sel in ((0, np.flatnonzero(periodic)), (1, np.flatnonzero(~periodic))):
        if len(sel):
            part = dataset.subset(sel)
            part.dataset_id = dataset_id
            part.name = f"{path.name}:{'crystals' if dataset_id == 0 else 'molecules'}"
            parts.append(part)
    return parts
