"""Joint MP-20 + QM9 training data: concatenation with per-dataset sampling proportions.

Dataset ids follow the batch contract: 0 = MP-20, 1 = QM9. A
:class:`JointDataset` indexes like one long sequence; :meth:`JointDataset.sample_weights`
gives per-system weights (for ``torch.utils.data.WeightedRandomSampler`` or
:meth:`JointDataset.sample_indices`) such that dataset ``k`` is drawn with
probability ``proportions[k]`` whatever its size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adit_torch.datasets.dataset import SystemDataset
from adit_torch.errors import ConfigError


def atom_count_histogram(dataset, max_atoms: int | None = None) -> np.ndarray:
    """Number of systems with N atoms, indexed by N: shape ``(max N + 1,)`` int64.

    ``dataset`` is anything with a ``num_atoms`` array (a :class:`SystemDataset`,
    a :class:`JointDataset`) or a list of systems. ``max_atoms`` pads the result to
    ``max_atoms + 1`` entries (an error if some system is larger).
    """
    counts = np.asarray(
        dataset.num_atoms if hasattr(dataset, "num_atoms") and not callable(dataset.num_atoms)
        else [s.num_atoms for s in dataset], dtype=np.int64)
    length = int(counts.max()) + 1 if len(counts) else 1
    if max_atoms is not None:
        if length > max_atoms + 1:
            raise ConfigError(f"a system has {length - 1} atoms, more than max_atoms={max_atoms}")
        length = max_atoms + 1
    return np.bincount(counts, minlength=length).astype(np.int64)


class JointDataset(Sequence):
    """Several :class:`SystemDataset` as one sequence, each drawn with a chosen proportion.

    Args:
        datasets: the parts, e.g. ``[mp20_train, qm9_train]``.
        proportions: sampling share of each part (normalised); default: proportional to size.

    Attributes:
        num_atoms: atoms per system over all parts, shape ``(M,)``.
        dataset_ids: each system's ``dataset_id`` (0 = MP-20, 1 = QM9), shape ``(M,)``.
    """

    def __init__(self, datasets: Sequence[SystemDataset], proportions=None):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ConfigError("a joint dataset needs at least one dataset")
        sizes = np.array([len(d) for d in self.datasets], dtype=np.float64)
        if (sizes == 0).any():
            raise ConfigError(f"empty dataset(s): {[d.name for d in self.datasets if len(d) == 0]}")
        p = sizes if proportions is None else np.asarray(proportions, dtype=np.float64).reshape(-1)
        if len(p) != len(self.datasets) or not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
            raise ConfigError(f"proportions {proportions!r} must be {len(self.datasets)} non-negative numbers")
        self.proportions = p / p.sum()
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.num_atoms = np.concatenate([d.num_atoms for d in self.datasets])
        self.dataset_ids = np.concatenate([np.full(len(d), d.dataset_id, np.int64) for d in self.datasets])
        self.name = "+".join(d.name for d in self.datasets)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index: int):
        """The :class:`~adit_torch.system.AtomicSystem` at a global index (``info['dataset_id']`` set)."""
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"joint dataset: index {index} out of range for {len(self)} systems")
        part = int(np.searchsorted(self.starts, i, side="right") - 1)
        return self.datasets[part][i - int(self.starts[part])]

    def sample_weights(self) -> np.ndarray:
        """Per-system sampling probabilities ``(M,)`` (sum 1): part ``k`` gets ``proportions[k]`` in total."""
        sizes = np.diff(self.starts)
        return np.repeat(self.proportions / sizes, sizes)

    def sample_indices(self, num: int, seed: int | None = None) -> np.ndarray:
        """``num`` global indices drawn with replacement following :meth:`sample_weights`."""
        rng = np.random.default_rng(seed)
        return rng.choice(len(self), size=int(num), replace=True, p=self.sample_weights())

    def histograms(self) -> dict[str, np.ndarray]:
        """Atom-count histogram of each part, by dataset name (see :func:`atom_count_histogram`)."""
        return {d.name: atom_count_histogram(d) for d in self.datasets}

    def __repr__(self) -> str:
        parts = ", ".join(f"{d.name}: {len(d)} @ {p:.2f}" for d, p in zip(self.datasets, self.proportions))
        return f"JointDataset({parts})"


def load_joint(split: str = "train", proportions=None, **kwargs) -> JointDataset:
    """MP-20 and QM9 ``split`` as a :class:`JointDataset` (MP-20 first).

    ``proportions=None`` draws every system equally often (a plain concatenation,
    as the reference joint training does); ``(0.5, 0.5)`` balances the two datasets.
    ``kwargs`` go to ``load_dataset`` (``cache_dir``, ``skip_invalid``, ``progress``;
    roots via ``mp20_root`` / ``qm9_root``).
    """
    from adit_torch.datasets import load_dataset

    mp20_root, qm9_root = kwargs.pop("mp20_root", None), kwargs.pop("qm9_root", None)
    mp20 = load_dataset("mp20", split, root=mp20_root, **kwargs)
    qm9 = load_dataset("qm9", split, root=qm9_root, **kwargs)
    return JointDataset([mp20, qm9], proportions)
