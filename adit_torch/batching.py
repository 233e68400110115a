"""Padded, masked batches of atomic systems and a size-bucketing batch sampler.

Batches are padded to the largest system in the batch. Sorting systems into
buckets of similar atom count keeps the padded share of the compute small;
:func:`padding_fraction` measures it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from adit_torch.errors import ConfigError, InvalidSystemError
from adit_torch.system import MAX_ATOMIC_NUMBER, AtomicSystem

#: Dataset ids used in batches and conditioning.
DATASET_IDS = {"mp20": 0, "qm9": 1}


@dataclass
class Batch:
    """A padded batch of B systems with at most N atoms.

    Attributes:
        atom_types: ``(B, N)`` long, atomic numbers, 0 = padding.
        pos: ``(B, N, 3)`` Å; centred for molecules, Cartesian for crystals.
        frac: ``(B, N, 3)`` fractional coordinates in [0, 1); zeros for molecules.
        lengths: ``(B, 3)`` lattice lengths in Å divided by N^(1/3); zeros for molecules.
        angles: ``(B, 3)`` lattice angles in radians; zeros for molecules.
        lattice: ``(B, 3, 3)`` lattice vectors as rows, Å; zeros for molecules.
        mask: ``(B, N)`` bool, True on real atoms.
        num_atoms: ``(B,)`` long.
        periodic: ``(B,)`` bool, True for crystals.
        dataset: ``(B,)`` long, 0 = MP-20, 1 = QM9.
    """

    atom_types: torch.Tensor
    pos: torch.Tensor
    frac: torch.Tensor
    lengths: torch.Tensor
    angles: torch.Tensor
    lattice: torch.Tensor
    mask: torch.Tensor
    num_atoms: torch.Tensor
    periodic: torch.Tensor
    dataset: torch.Tensor

    def to(self, device) -> Batch:
        """The same batch on ``device``."""
        return Batch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def __len__(self) -> int:
        return int(self.atom_types.shape[0])


def dataset_id(system: AtomicSystem) -> int:
    """Dataset id of a system: ``info['dataset']`` when given, else 0 for crystals and 1 for molecules."""
    name = system.info.get("dataset")
    if isinstance(name, str) and name in DATASET_IDS:
        return DATASET_IDS[name]
    if isinstance(name, int) and name in DATASET_IDS.values():
        return name
    return 0 if system.is_periodic else 1


def collate(systems: Sequence[AtomicSystem], dtype: torch.dtype = torch.float32) -> Batch:
    """Pad ``systems`` into one :class:`Batch` (see its attributes for shapes and units)."""
    if len(systems) == 0:
        raise InvalidSystemError("cannot collate an empty list of systems")
    bsz = len(systems)
    n_max = max(s.num_atoms for s in systems)
    types = np.zeros((bsz, n_max), dtype=np.int64)
    pos = np.zeros((bsz, n_max, 3))
    frac = np.zeros((bsz, n_max, 3))
    lengths = np.zeros((bsz, 3))
    angles = np.zeros((bsz, 3))
    lattice = np.zeros((bsz, 3, 3))
    mask = np.zeros((bsz, n_max), dtype=bool)
    periodic = np.zeros(bsz, dtype=bool)
    dataset = np.zeros(bsz, dtype=np.int64)
    for i, s in enumerate(systems):
        n = s.num_atoms
        if n == 0:
            raise InvalidSystemError(f"{s.label}: no atoms")
        if (s.numbers < 1).any() or (s.numbers > MAX_ATOMIC_NUMBER).any():
            raise InvalidSystemError(f"{s.label}: atomic numbers outside 1..{MAX_ATOMIC_NUMBER}")
        types[i, :n] = s.numbers
        mask[i, :n] = True
        dataset[i] = dataset_id(s)
        if s.is_periodic:
            periodic[i] = True
            # round away float noise first so an atom on a cell face maps to 0, whichever image it came from
            f = np.mod(np.round(s.frac_coords, 8), 1.0)
            f[f >= 1.0] = 0.0
            frac[i, :n] = f
            lattice[i] = s.lattice
            pos[i, :n] = f @ s.lattice
            lengths[i] = s.lengths / n ** (1.0 / 3.0)
            angles[i] = np.radians(s.angles)
        else:
            pos[i, :n] = s.positions - s.positions.mean(axis=0)
    as_f = lambda a: torch.as_tensor(a, dtype=dtype)
    return Batch(
        atom_types=torch.as_tensor(types), pos=as_f(pos), frac=as_f(frac), lengths=as_f(lengths),
        angles=as_f(angles), lattice=as_f(lattice), mask=torch.as_tensor(mask),
        num_atoms=torch.as_tensor(mask.sum(1)), periodic=torch.as_tensor(periodic),
        dataset=torch.as_tensor(dataset),
    )


class BucketBatchSampler:
    """Yields lists of indices whose systems have similar atom counts.

    Indices are sorted by atom count (ties broken at random), cut into batches
    of ``batch_size`` systems, or of at most ``max_atoms_per_batch`` padded
    atoms, and the batch order is shuffled. The order is a pure function of
    ``(seed, epoch)``, so a resumed run sees the same batches. With
    ``world_size > 1`` each rank takes every ``world_size``-th batch.

    Args:
        num_atoms: ``(M,)`` atom count of each system.
        batch_size: systems per batch (ignored when ``max_atoms_per_batch`` is set).
        max_atoms_per_batch: cap on ``B * N_max`` per batch (0 = off).
        shuffle: shuffle within equal sizes and the batch order.
        seed: base seed of the order.
        drop_last: drop a trailing short batch.
    """

    def __init__(self, num_atoms, batch_size: int = 0, max_atoms_per_batch: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, rank: int = 0, world_size: int = 1):
        self.num_atoms = np.asarray(num_atoms, dtype=np.int64).reshape(-1)
        if batch_size <= 0 and max_atoms_per_batch <= 0:
            raise ConfigError("BucketBatchSampler needs a positive batch_size or max_atoms_per_batch")
        if max_atoms_per_batch > 0 and len(self.num_atoms) and max_atoms_per_batch < self.num_atoms.max():
            raise ConfigError(f"max_atoms_per_batch={max_atoms_per_batch} is smaller than the largest system "
                              f"({self.num_atoms.max()} atoms)")
        self.batch_size = batch_size
        self.max_atoms = max_atoms_per_batch
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration yields."""
        self.epoch = int(epoch)

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of one epoch for this rank, in order."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch])
        tie = rng.random(len(self.num_atoms)) if self.shuffle else np.arange(len(self.num_atoms))
        order = np.lexsort((tie, self.num_atoms))
        out: list[list[int]] = []
        cur: list[int] = []
        for idx in order:
            n_new = max(int(self.num_atoms[idx]), int(self.num_atoms[cur[-1]]) if cur else 0)
            full = (self.max_atoms > 0 and n_new * (len(cur) + 1) > self.max_atoms) or (
                self.max_atoms <= 0 and len(cur) == self.batch_size)
            if full:
                out.append(cur)
                cur = []
            cur.append(int(idx))
        if cur and not (self.drop_last and self.max_atoms <= 0 and len(cur) < self.batch_size):
            out.append(cur)
        if self.shuffle:
            perm = rng.permutation(len(out))
            out = [out[i] for i in perm]
        if self.world_size > 1:
            usable = len(out) - len(out) % self.world_size  # every rank takes the same number of steps
            out = out[self.rank:usable:self.world_size]
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


def padding_fraction(num_atoms, batches: Sequence[Sequence[int]]) -> float:
    """Share of padded slots, ``1 - sum(N_i) / sum(B * N_max)``, over ``batches`` of indices into ``num_atoms``."""
    num_atoms = np.asarray(num_atoms)
    real = padded = 0
    for b in batches:
        counts = num_atoms[list(b)]
        real += int(counts.sum())
        padded += int(counts.max()) * len(counts)
    return 0.0 if padded == 0 else 1.0 - real / padded
