"""A compact, indexable collection of systems: :class:`SystemDataset`.

All atoms of all systems sit in flat numpy arrays (numbers, positions) with
offsets, so a dataset of 130k molecules loads from one ``.npz`` in about a
second and indexing builds an :class:`~adit_torch.system.AtomicSystem` on demand.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adit_torch.errors import DataFormatError
from adit_torch.system import SYMBOLS, AtomicSystem

_CORE = ("numbers", "positions", "offsets", "lattices", "ids")


class SystemDataset(Sequence):
    """Systems packed into flat arrays; ``dataset[i]`` is an :class:`AtomicSystem`.

    Attributes:
        name: dataset name (``"mp20"``, ``"qm9"``, or a file name).
        dataset_id: integer dataset label (0 = MP-20, 1 = QM9, -1 = other).
        numbers: atomic numbers of all atoms, shape ``(T,)``.
        positions: Cartesian positions of all atoms, shape ``(T, 3)``, Å.
        offsets: start of each system in the atom arrays, shape ``(M + 1,)``.
        lattices: lattice rows per system, shape ``(M, 3, 3)``, Å; NaN for molecules.
        ids: system ids, shape ``(M,)`` (str).
        props: per-system properties, name -> array ``(M,)`` (float, int or str).
    """

    def __init__(self, name, numbers, positions, offsets, lattices, ids, props=None, dataset_id: int = -1):
        self.name = str(name)
        self.dataset_id = int(dataset_id)
        self.numbers = np.asarray(numbers, dtype=np.int16).reshape(-1)
        self.positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        self.offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)
        self.lattices = np.asarray(lattices, dtype=np.float64).reshape(-1, 3, 3)
        self.ids = np.asarray(ids).astype(str).reshape(-1)
        self.props = {k: np.asarray(v) for k, v in (props or {}).items()}
        m = len(self.offsets) - 1
        if m < 0 or self.offsets[0] != 0 or self.offsets[-1] != len(self.numbers) or len(self.positions) != len(
            self.numbers
        ):
            raise DataFormatError(f"dataset {self.name}: inconsistent atom arrays")
        if len(self.lattices) != m or len(self.ids) != m or any(len(v) != m for v in self.props.values()):
            raise DataFormatError(f"dataset {self.name}: per-system arrays do not have {m} entries")

    # ------------------------------------------------------------ sequence
    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index):
        """An :class:`AtomicSystem` for an integer; a new :class:`SystemDataset` for a slice or index array."""
        if isinstance(index, slice):
            return self.subset(np.arange(len(self))[index])
        if isinstance(index, (list, np.ndarray)):
            return self.subset(index)
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"dataset {self.name}: index {index} out of range for {len(self)} systems")
        a, b = self.offsets[i], self.offsets[i + 1]
        lattice = None if np.isnan(self.lattices[i, 0, 0]) else self.lattices[i].copy()
        info = {"id": str(self.ids[i]), "dataset": self.name, "dataset_id": self.dataset_id}
        for key, values in self.props.items():
            info[key] = values[i].item()
        return AtomicSystem(self.numbers[a:b].astype(np.int64), self.positions[a:b].copy(), lattice, info)

    @property
    def num_atoms(self) -> np.ndarray:
        """Atoms per system, shape ``(M,)``, int64."""
        return np.diff(self.offsets)

    @property
    def periodic(self) -> np.ndarray:
        """True for crystals, shape ``(M,)``."""
        return ~np.isnan(self.lattices[:, 0, 0])

    def elements(self) -> list[str]:
        """Sorted chemical symbols present (by atomic number)."""
        return [SYMBOLS[z] for z in np.unique(self.numbers)]

    def subset(self, indices) -> SystemDataset:
        """A new dataset holding the systems at ``indices`` (in that order) or where a boolean mask is True."""
        idx = np.asarray(indices)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64).reshape(-1)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"dataset {self.name}: subset index out of range for {len(self)} systems")
        idx = idx % max(len(self), 1)
        counts = self.num_atoms[idx]
        starts = self.offsets[idx]
        atom_idx = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(counts.sum())
        return SystemDataset(
            self.name, self.numbers[atom_idx], self.positions[atom_idx],
            np.concatenate([[0], np.cumsum(counts)]), self.lattices[idx], self.ids[idx],
            {k: v[idx] for k, v in self.props.items()}, self.dataset_id,
        )

    def index_of(self, system_id: str) -> int:
        """Position of the system with id ``system_id``; ``KeyError`` when absent."""
        hits = np.flatnonzero(self.ids == str(system_id))
        if not len(hits):
            raise KeyError(f"dataset {self.name}: no system with id {system_id!r}")
        return int(hits[0])

    # ---------------------------------------------------------- conversion
    @classmethod
    def from_systems(cls, name, systems, prop_keys=(), dataset_id: int = -1) -> SystemDataset:
        """Pack a list of :class:`AtomicSystem`; ``prop_keys`` of each ``info`` become ``props``.

        Missing numeric properties become NaN (floats) or -1 (ints); missing strings ``""``.
        """
        systems = list(systems)
        counts = np.array([s.num_atoms for s in systems], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        numbers = np.concatenate([s.numbers for s in systems]) if systems else np.zeros(0, np.int64)
        positions = np.concatenate([s.positions for s in systems]) if systems else np.zeros((0, 3))
        lattices = np.full((len(systems), 3, 3), np.nan)
        for i, s in enumerate(systems):
            if s.lattice is not None:
                lattices[i] = s.lattice
        ids = [str(s.info.get("id", i)) for i, s in enumerate(systems)]
        props = {key: _column([s.info.get(key) for s in systems]) for key in prop_keys}
        return cls(name, numbers, positions, offsets, lattices, ids, props, dataset_id)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for ``np.savez`` (properties prefixed ``prop_``); inverse of :meth:`from_arrays`."""
        out = {"numbers": self.numbers, "positions": self.positions, "offsets": self.offsets,
               "lattices": self.lattices, "ids": self.ids, "dataset_id": np.array(self.dataset_id)}
        out.update({f"prop_{k}": v for k, v in self.props.items()})
        return out

    @classmethod
    def from_arrays(cls, name, arrays) -> SystemDataset:
        """Rebuild from :meth:`to_arrays` output (or an open ``.npz``)."""
        missing = [k for k in _CORE if k not in arrays]
        if missing:
            raise DataFormatError(f"dataset {name}: arrays {missing} missing")
        props = {k[5:]: arrays[k] for k in arrays if k.startswith("prop_")}
        dataset_id = int(arrays["dataset_id"]) if "dataset_id" in arrays else -1
        return cls(name, *(arrays[k] for k in _CORE), props, dataset_id)

    def __repr__(self) -> str:
        return f"SystemDataset({self.name!r}, {len(self)} systems, {len(self.numbers)} atoms)"


def _column(values) -> np.ndarray:
    """One property column as a typed array (str, int64 or float64)."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, (bool, int, np.integer)) for v in present):
        return np.array([-1 if v is None else int(v) for v in values], dtype=np.int64)
    if present and all(isinstance(v, (int, float, np.number)) for v in present):
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return np.array(["" if v is None else str(v) for v in values], dtype=str)
