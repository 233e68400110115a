"""Symmetry checks for models over atoms, shipped with the library so users can test their own models.

Each ``assert_*`` function takes ``fn(batch) -> tensor`` and raises
``AssertionError`` with the largest deviation when the symmetry does not hold.
Outputs shaped ``(B, N, ...)`` like the batch's atoms are treated as per-atom
(equivariant under permutation, compared on real atoms only); any other shape
as per-system (invariant).

What ADiT is and is not symmetric under: the VAE and DiT are permutation
equivariant; molecules are centred, so their translations are removed; a
crystal's representation does not depend on which periodic image an atom is
given in. The VAE is *not* rotation invariant by design (it learns from random
rotations instead), which :func:`rotation_sensitivity` measures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from adit_torch.augment import random_rotations, rotate_batch
from adit_torch.batching import Batch, collate
from adit_torch.system import AtomicSystem

BatchFn = Callable[[Batch], torch.Tensor]


def _per_atom(out: torch.Tensor, batch: Batch) -> bool:
    return out.dim() >= 2 and tuple(out.shape[:2]) == tuple(batch.mask.shape)


def _compare(a: torch.Tensor, b: torch.Tensor, batch: Batch, atol: float, what: str) -> float:
    if _per_atom(a, batch):
        m = batch.mask.view(*batch.mask.shape, *([1] * (a.dim() - 2)))
        a, b = a * m, b * m
    err = float((a - b).detach().abs().max()) if a.numel() else 0.0
    if not err <= atol:
        raise AssertionError(f"not {what}: largest deviation {err:.3g} > atol {atol:.3g}")
    return err


def permute_batch(batch: Batch, generator: torch.Generator | None = None) -> tuple[Batch, torch.Tensor]:
    """Shuffle the real atoms inside each system; returns the new batch and ``perm (B, N)`` with
    ``new[:, i] = old[:, perm[:, i]]`` (padding stays in place)."""
    bsz, n = batch.mask.shape
    perm = torch.arange(n).repeat(bsz, 1)
    for i in range(bsz):
        k = int(batch.num_atoms[i])
        perm[i, :k] = torch.randperm(k, generator=generator)
    perm = perm.to(batch.mask.device)

    def take(x):
        idx = perm.view(bsz, n, *([1] * (x.dim() - 2))).expand_as(x)
        return torch.gather(x, 1, idx)
    new = dataclasses.replace(batch, atom_types=take(batch.atom_types), pos=take(batch.pos), frac=take(batch.frac),
                              mask=take(batch.mask))
    return new, perm


def assert_permutation_equivariant(fn: BatchFn, batch: Batch, generator: torch.Generator | None = None,
                                   atol: float = 1e-5) -> float:
    """Per-atom outputs follow a permutation of the atoms; per-system outputs do not change."""
    out = fn(batch)
    new, perm = permute_batch(batch, generator)
    out_new = fn(new)
    if _per_atom(out, batch):
        idx = perm.view(*perm.shape, *([1] * (out.dim() - 2))).expand_as(out)
        out = torch.gather(out, 1, idx)
    return _compare(out_new, out, batch, atol, "permutation equivariant")


def assert_translation_invariant(fn: BatchFn, batch: Batch, generator: torch.Generator | None = None,
                                 atol: float = 1e-5, scale: float = 5.0) -> float:
    """Outputs do not change when every molecule is shifted rigidly (crystals are left as they are)."""
    shift = torch.randn(len(batch), 1, 3, generator=generator, dtype=batch.pos.dtype).to(batch.pos.device) * scale
    mol = (~batch.periodic).view(-1, 1, 1) & batch.mask.unsqueeze(-1)
    moved = dataclasses.replace(batch, pos=torch.where(mol, batch.pos + shift, batch.pos))
    return _compare(fn(moved), fn(batch), batch, atol, "translation invariant")


def assert_rotation_invariant(fn: BatchFn, batch: Batch, generator: torch.Generator | None = None,
                              atol: float = 1e-5) -> float:
    """Outputs do not change under a uniformly random rotation of every system."""
    rot = random_rotations(len(batch), generator, dtype=batch.pos.dtype, device=batch.pos.device)
    return _compare(fn(rotate_batch(batch, rot)), fn(batch), batch, atol, "rotation invariant")


def rotation_sensitivity(fn: BatchFn, batch: Batch, generator: torch.Generator | None = None) -> float:
    """Largest absolute change of the outputs under random rotations (0 for an invariant ``fn``)."""
    rot = random_rotations(len(batch), generator, dtype=batch.pos.dtype, device=batch.pos.device)
    a, b = fn(rotate_batch(batch, rot)), fn(batch)
    if _per_atom(a, batch):
        m = batch.mask.view(*batch.mask.shape, *([1] * (a.dim() - 2)))
        a, b = a * m, b * m
    return float((a - b).detach().abs().max())


def shift_periodic_images(systems: Sequence[AtomicSystem], generator: torch.Generator | None = None,
                          max_shift: int = 2) -> list[AtomicSystem]:
    """Copies of ``systems`` with each crystal atom moved by a random integer lattice vector
    (the same crystal); molecules are returned unchanged."""
    out = []
    for s in systems:
        c = s.copy()
        if s.is_periodic:
            k = torch.randint(-max_shift, max_shift + 1, (s.num_atoms, 3), generator=generator).double().numpy()
            c.positions = s.positions + k @ s.lattice
        out.append(c)
    return out


def assert_periodic_image_invariant(fn: BatchFn, systems: Sequence[AtomicSystem],
                                    generator: torch.Generator | None = None, atol: float = 1e-4,
                                    dtype: torch.dtype = torch.float64) -> float:
    """Batching a crystal with atoms given in other periodic images yields the same outputs."""
    batch = collate(list(systems), dtype=dtype)
    moved = collate(shift_periodic_images(systems, generator), dtype=dtype)
    return _compare(fn(moved), fn(batch), batch, atol, "invariant to the choice of periodic images")
