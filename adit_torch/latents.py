"""Per-atom VAE latents cached once for DiT training, and their batches.

Encoding the training set with the frozen VAE's latent mean once, instead of
at every DiT step, removes the VAE encoder from the DiT training loop (the
main cost on a CPU). Latents are normalised per dimension with the mean and
standard deviation of the cache; the statistics travel in the DiT checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from tqdm.auto import tqdm

from adit_torch.batching import BucketBatchSampler, collate


@dataclass
class LatentBatch:
    """A padded batch of latent sets.

    Attributes:
        z: ``(B, N, D)`` normalised latents, zero on padding.
        mask: ``(B, N)`` bool.
        periodic: ``(B,)`` bool.
        dataset: ``(B,)`` long.
        space_group: ``(B,)`` long condition label 1..230, 0 = none (conditioned training only).
        elements: ``(B, num_element_types)`` float multi-hot chemical system (conditioned training only).
        properties: ``(B, P)`` float normalised property targets (property-conditioned training only).
        properties_mask: ``(B, P)`` bool, False where a system has no value.
    """

    z: torch.Tensor
    mask: torch.Tensor
    periodic: torch.Tensor
    dataset: torch.Tensor
    space_group: torch.Tensor | None = None
    elements: torch.Tensor | None = None
    properties: torch.Tensor | None = None
    properties_mask: torch.Tensor | None = None

    def to(self, device) -> LatentBatch:
        """The same batch on ``device``."""
        return LatentBatch(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                              for f in fields(self)})

    def __len__(self) -> int:
        return int(self.z.shape[0])


class LatentSet(Sequence):
    """Latents of M systems in one flat array with offsets; ``latents[i]`` is ``(z (N_i, D), periodic, dataset)``."""

    def __init__(self, z: np.ndarray, offsets: np.ndarray, periodic: np.ndarray, dataset: np.ndarray):
        self.z = np.asarray(z, dtype=np.float32)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.periodic = np.asarray(periodic, dtype=bool)
        self.dataset = np.asarray(dataset, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.z[a:b], bool(self.periodic[i]), int(self.dataset[i])

    @property
    def num_atoms(self) -> np.ndarray:
        """Atoms per system ``(M,)``."""
        return np.diff(self.offsets)

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension mean and standard deviation ``(D,)`` over all atoms."""
        return self.z.mean(0), self.z.std(0) + 1e-6

    def normalised(self, mean: np.ndarray, std: np.ndarray) -> LatentSet:
        """A copy with ``(z - mean) / std``."""
        return LatentSet((self.z - mean) / std, self.offsets, self.periodic, self.dataset)


def collate_latents(items: Sequence[tuple[np.ndarray, bool, int]]) -> LatentBatch:
    """Pad ``(z (N_i, D), periodic, dataset)`` items into a :class:`LatentBatch`."""
    n_max = max(len(z) for z, _, _ in items)
    dim = items[0][0].shape[1]
    z = np.zeros((len(items), n_max, dim), dtype=np.float32)
    mask = np.zeros((len(items), n_max), dtype=bool)
    for i, (zi, _, _) in enumerate(items):
        z[i, :len(zi)] = zi
        mask[i, :len(zi)] = True
    return LatentBatch(torch.from_numpy(z), torch.from_numpy(mask),
                       torch.tensor([p for _, p, _ in items]), torch.tensor([d for _, _, d in items]))


@torch.no_grad()
def encode_dataset(vae, systems, batch_size: int = 256, device="cpu", progress: bool = True) -> LatentSet:
    """Encode every system of ``systems`` (a sequence with ``num_atoms``) with the VAE latent mean.

    Systems are batched by size (little padding); the result keeps the input order.
    """
    vae.eval()
    num_atoms = np.asarray(systems.num_atoms)
    offsets = np.concatenate([[0], np.cumsum(num_atoms)])
    z = np.zeros((int(offsets[-1]), vae.cfg.latent_dim), dtype=np.float32)
    periodic = np.zeros(len(num_atoms), dtype=bool)
    dataset = np.zeros(len(num_atoms), dtype=np.int64)
    batches = BucketBatchSampler(num_atoms, batch_size=batch_size, shuffle=False).batches(0)
    for idx in tqdm(batches, desc="encoding latents", disable=not progress, unit="batch"):
        batch = collate([systems[i] for i in idx]).to(device)
        mean, _ = vae.encode(batch)
        mean = mean.float().cpu().numpy()
        for row, i in enumerate(idx):
            n = int(num_atoms[i])
            z[offsets[i]:offsets[i] + n] = mean[row, :n]
            periodic[i] = bool(batch.periodic[row])
            dataset[i] = int(batch.dataset[row])
    return LatentSet(z, offsets, periodic, dataset)


class ConditionedLatents(Sequence):
    """A :class:`LatentSet` with per-system condition labels: ``item = (z, periodic, dataset, space_group,
    elements)``, plus ``(properties, properties_mask)`` when ``labels`` has ``properties`` (already
    normalised); ``labels`` from :func:`adit_torch.conditions.condition_labels` (same order)."""

    def __init__(self, latents: LatentSet, labels: dict[str, np.ndarray]):
        if any(len(v) != len(latents) for v in labels.values()):
            raise ValueError("condition labels and latents differ in length")
        self.latents, self.labels = latents, labels
        self.with_properties = "properties" in labels

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, i):
        z, periodic, dataset = self.latents[i]
        item = (z, periodic, dataset, int(self.labels["space_group"][i]), self.labels["elements"][i])
        if self.with_properties:
            item += (self.labels["properties"][i], self.labels["properties_mask"][i])
        return item

    @property
    def num_atoms(self) -> np.ndarray:
        """Atoms per system ``(M,)``."""
        return self.latents.num_atoms


def collate_conditioned(items) -> LatentBatch:
    """Pad ``(z, periodic, dataset, space_group, elements[, properties, properties_mask])`` items into a
    :class:`LatentBatch` with labels."""
    batch = collate_latents([item[:3] for item in items])
    batch.space_group = torch.tensor([item[3] for item in items], dtype=torch.long)
    batch.elements = torch.from_numpy(np.stack([item[4] for item in items]).astype(np.float32))
    if len(items[0]) > 5:
        batch.properties = torch.from_numpy(np.stack([item[5] for item in items]).astype(np.float32))
        batch.properties_mask = torch.from_numpy(np.stack([item[6] for item in items]).astype(bool))
    return batch
