"""Datasets: MP-20 crystals, QM9 molecules, their joint mixture, and the preprocessing cache.

``load_dataset("mp20" | "qm9", split)`` returns a :class:`SystemDataset`; the first
call preprocesses the source files and caches the result (see :mod:`.cache`),
later calls read one ``.npz``.
"""

from __future__ import annotations

from adit_torch.datasets import mp20, qm9
from adit_torch.datasets.cache import PREPROCESSING_VERSION, cached, default_cache_dir
from adit_torch.datasets.dataset import SystemDataset
from adit_torch.datasets.mp20 import default_mp20_dir
from adit_torch.datasets.qm9 import default_qm9_dir
from adit_torch.errors import ConfigError, DataFormatError

DATASETS = ("mp20", "qm9")
SPLITS = ("train", "val", "test", "all", "train_a", "train_b")
#: Splits only QM9 has: the halves of its training split for EDM's property benchmark.
QM9_HALVES = ("train_a", "train_b")
#: Integer label of each dataset (the ``dataset`` field of batches).
DATASET_IDS = {"mp20": mp20.DATASET_ID, "qm9": qm9.DATASET_ID}


def load_full(name: str, root=None, cache_dir=None, skip_invalid: bool = False,
              progress: bool | None = None) -> tuple[SystemDataset, dict]:
    """All systems of dataset ``name`` (every split) and the cache ``meta``.

    Raises :class:`DataFormatError` listing the invalid rows (file, row, problem)
    unless ``skip_invalid``; with it, ``meta["skipped"]`` lists them.
    """
    if name == "mp20":
        root = default_mp20_dir() if root is None else root
        sources = [p for p, _ in mp20.mp20_source_files(root)]
        build = lambda: mp20.preprocess_mp20(root, progress)
    elif name == "qm9":
        root = default_qm9_dir() if root is None else root
        sources = qm9.qm9_source_files(root)
        build = lambda: qm9.preprocess_qm9(root, progress)
    else:
        raise ConfigError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    dataset, meta = cached(name, sources, build, cache_dir)
    skipped = meta.get("skipped", [])
    if skipped and not skip_invalid:
        shown = "\n  ".join(skipped[:10])
        more = f"\n  ... and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        raise DataFormatError(
            f"{name}: {len(skipped)} invalid structure(s) in {root}:\n  {shown}{more}\n"
            "pass skip_invalid=True (--skip-invalid) to leave them out"
        )
    return dataset, meta


def split_indices(name: str, dataset: SystemDataset, meta: dict, seed: int | None = None) -> dict:
    """``{"train", "val", "test"} -> indices`` into the full ``dataset`` of ``name``."""
    if name == "mp20":
        return mp20.mp20_split_indices(dataset, mp20.SPLIT_SEED if seed is None else seed)
    return qm9.qm9_split_indices(dataset, int(meta["rows_read"]), qm9.SPLIT_SEED if seed is None else seed)


def load_dataset(name: str, split: str = "train", root=None, cache_dir=None, skip_invalid: bool = False,
                 seed: int | None = None, progress: bool | None = None) -> SystemDataset:
    """One split of MP-20 or QM9 as a :class:`SystemDataset`.

    Args:
        name: ``"mp20"`` or ``"qm9"``.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``; for QM9 also ``"train_a"`` and
            ``"train_b"``, the two halves of ``train`` (:mod:`adit_torch.datasets.qm9`).
        root: source folder (default :func:`default_mp20_dir` / :func:`default_qm9_dir`).
        cache_dir: cache folder (default :func:`default_cache_dir`).
        skip_invalid: leave out invalid rows (listed in the log) instead of raising.
        seed: split seed (default: the documented fixed seed of each dataset).
        progress: show a progress bar while preprocessing (default: when on a terminal).
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {SPLITS}")
    if split in QM9_HALVES and name != "qm9":
        raise ConfigError(f"split {split!r}: only QM9 has the halves of its training split, not {name!r}")
    dataset, meta = load_full(name, root, cache_dir, skip_invalid, progress)
    if split == "all":
        return dataset
    return dataset.subset(split_indices(name, dataset, meta, seed)[split])


__all__ = [
    "DATASETS", "DATASET_IDS", "PREPROCESSING_VERSION", "QM9_HALVES", "SPLITS", "SystemDataset", "default_cache_dir",
    "default_mp20_dir", "default_qm9_dir", "load_dataset", "load_full", "split_indices",
]
