"""Training-time augmentation: uniform random rotations and translations of batches.

Rotations are drawn uniformly (Haar measure) over SO(3) from unit quaternions
with Gaussian components. For crystals the lattice rotates with the atoms, the
translation is drawn in fractional coordinates and wrapped, and the Cartesian
positions are rebuilt from the wrapped fractions so both stay consistent.
"""

from __future__ import annotations

import dataclasses

import torch

from adit_torch.batching import Batch


def random_rotations(n: int, generator: torch.Generator | None = None, dtype=torch.float32,
                     device=None) -> torch.Tensor:
    """``n`` rotation matrices ``(n, 3, 3)`` drawn uniformly from SO(3).

    A 4D standard normal vector normalised to unit length is a uniform unit
    quaternion, whose rotation matrix is Haar-distributed.
    """
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64, device=device)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    rot = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=1).reshape(n, 3, 3)
    return rot.to(dtype)


def rotation_angle(rot: torch.Tensor) -> torch.Tensor:
    """Rotation angle in radians ``(...,)`` of rotation matrices ``(..., 3, 3)``."""
    tr = rot.diagonal(dim1=-2, dim2=-1).sum(-1)
    return torch.arccos(((tr - 1) / 2).clamp(-1.0, 1.0))


def rotate_batch(batch: Batch, rot: torch.Tensor) -> Batch:
    """Rotate every system of ``batch`` by its matrix ``rot (B, 3, 3)`` (column-vector convention).

    Positions become ``pos @ R^T``; lattice rows likewise. Fractional
    coordinates, lengths and angles are unchanged.
    """
    rot = rot.to(batch.pos.dtype)
    rt = rot.transpose(1, 2)
    return dataclasses.replace(batch, pos=batch.pos @ rt, lattice=batch.lattice @ rt)


def translate_batch(batch: Batch, generator: torch.Generator | None = None, scale: float = 1.0) -> Batch:
    """Randomly translate each system.

    Crystals: a uniform shift in [0, 1)^3 of the fractional coordinates, wrapped
    back to [0, 1), and Cartesian positions rebuilt as ``frac @ lattice``.
    Molecules: a Gaussian shift of ``scale`` Å (the model centres molecules,
    so this only checks that it does).
    """
    bsz = len(batch)
    dev, dt = batch.pos.device, batch.pos.dtype
    per = batch.periodic.view(bsz, 1, 1)
    m = batch.mask.unsqueeze(-1).to(dt)
    shift_f = torch.rand(bsz, 1, 3, generator=generator, device=dev, dtype=dt)
    frac = torch.remainder(batch.frac + shift_f, 1.0)
    frac = torch.where(frac >= 1.0, torch.zeros_like(frac), frac) * m
    pos_cryst = frac @ batch.lattice
    shift_c = torch.randn(bsz, 1, 3, generator=generator, device=dev, dtype=dt) * scale
    pos_mol = (batch.pos + shift_c) * m
    return dataclasses.replace(
        batch, frac=torch.where(per, frac, batch.frac), pos=torch.where(per, pos_cryst, pos_mol)
    )


def augment_batch(batch: Batch, generator: torch.Generator | None = None) -> Batch:
    """A uniformly random rotation and a random translation of every system in ``batch``."""
    rot = random_rotations(len(batch), generator, dtype=batch.pos.dtype, device=batch.pos.device)
    return translate_batch(rotate_batch(batch, rot), generator)
