"""Symmetry checks for models over atoms, shipped with the library so users can test their own models.

Each ``assert_*`` function takes ``fn(batch) -> tensor`` and raises
``AssertionError`` with the largest deviation when the symmetry does not hold.
Outputs shaped ``(B, N, ...)`` like the batch's atoms are treated as per-atom
(equivariant under permutation, compared on real atoms only); any other shape
as per-system (invariant).

What ADiT is and is not symmetric under: the VAE and DiT are permutation
equivariant; molecules are centred, so their translations are removed; a
crystal's representation does not depend on which periodic image an atom is
given in. The Transformer VAE is *not* rotation invariant by design (it learns
from random rotations instead), which :func:`rotation_sensitivity` measures;
the equivariant encoder (:mod:`adit_torch.equivariant`) is invariant to
rotations and to translations of molecules and crystals alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from adit_torch.augment import random_rotations, rotate_batch, translate_batch
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


def assert_crystal_translation_invariant(fn: BatchFn, batch: Batch, generator: torch.Generator | None = None,
                                         atol: float = 1e-5) -> float:
    """Outputs do not change when every crystal is moved rigidly inside its cell (fractional coordinates shifted by
    one random vector and wrapped, Cartesian positions following: :func:`adit_torch.augment.translate_batch`,
    molecules left where they are)."""
    moved = translate_batch(batch, generator, scale=0.0)
    return _compare(fn(moved), fn(batch), batch, atol, "crystal translation invariant")


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


# ------------------------------------------------------- whole systems (evaluators)
def random_unimodular(rng, steps: int = 4, max_factor: int = 1):
    """A random integer ``(3, 3)`` matrix with determinant +-1 (a change of lattice basis), built from
    ``steps`` elementary row operations (add +-k times one row to another) and a random row order."""
    import numpy as np

    u = np.eye(3, dtype=np.int64)
    for _ in range(steps):
        i, j = rng.choice(3, size=2, replace=False)
        u[i] += int(rng.integers(1, max_factor + 1)) * int(rng.choice([-1, 1])) * u[j]
    return u[rng.permutation(3)]


def cell_transforms(system: AtomicSystem, rng) -> dict[str, AtomicSystem]:
    """The same structure written down differently, one way per entry.

    ``basis`` (a random unimodular change of lattice basis, crystals only), ``unwrapped`` (each atom
    moved by a random lattice vector, crystals only), ``permuted`` (atom order), ``rotated`` (a random
    proper rotation of atoms and cell) and ``translated`` (a random shift of all atoms). Anything
    that scores structures (validity, matching, energies) should give the same answer for each.

    Args:
        system: a crystal or a molecule.
        rng: a ``numpy.random.Generator``.
    """
    import numpy as np
    from scipy.spatial.transform import Rotation

    out: dict[str, AtomicSystem] = {}
    if system.is_periodic:
        out["basis"] = AtomicSystem(system.numbers, system.positions, random_unimodular(rng) @ system.lattice,
                                    dict(system.info))
        shift = rng.integers(-2, 3, size=(system.num_atoms, 3))
        out["unwrapped"] = AtomicSystem(system.numbers, system.positions + shift @ system.lattice, system.lattice,
                                        dict(system.info))
    order = rng.permutation(system.num_atoms)
    out["permuted"] = AtomicSystem(system.numbers[order], system.positions[order], system.lattice,
                                   dict(system.info))
    rot = Rotation.random(random_state=int(rng.integers(2 ** 31))).as_matrix()
    out["rotated"] = AtomicSystem(system.numbers, system.positions @ rot.T,
                                  None if system.lattice is None else system.lattice @ rot.T, dict(system.info))
    out["translated"] = AtomicSystem(system.numbers, system.positions + rng.normal(scale=5.0, size=3),
                                     system.lattice, dict(system.info))
    return {name: s for name, s in out.items() if np.isfinite(s.positions).all()}


def assert_cell_invariant(score: Callable[[AtomicSystem], dict], systems: Sequence[AtomicSystem], rng,
                          exact: Sequence[str], close: Sequence[str] = (), rtol: float = 1e-6) -> int:
    """``score`` gives the same record for every system under every :func:`cell_transforms`.

    Args:
        score: ``system -> record`` (a dict), e.g. :func:`adit_torch.evaluate.crystals.check_crystal`.
        systems: the structures to transform.
        rng: a ``numpy.random.Generator``.
        exact: record keys that must be equal.
        close: numeric record keys equal up to ``rtol`` (None must stay None).

    Returns:
        the number of (system, transform) pairs compared; raises ``AssertionError`` naming the
        first system, transform and key that differ.
    """
    import math

    count = 0
    for system in systems:
        base = score(system)
        for name, other in cell_transforms(system, rng).items():
            got = score(other)
            for key in exact:
                if got[key] != base[key]:
                    raise AssertionError(f"{system.label}: {key} changes under {name}: {base[key]!r} -> {got[key]!r}")
            for key in close:
                a, b = base[key], got[key]
                if (a is None) != (b is None) or (a is not None and not math.isclose(a, b, rel_tol=rtol, abs_tol=1e-9)):
                    raise AssertionError(f"{system.label}: {key} changes under {name}: {a!r} -> {b!r}")
            count += 1
    return count
