"""Generated systems as AiiDA nodes: extxyz frames to StructureData.

Crystals keep their lattice and periodicity. Molecules get ``pbc`` False and an
orthorhombic box cell ``vacuum`` Å larger than the molecule on every side
(StructureData always has a cell; a box that encloses the molecule keeps
visualisers and converters sane); the molecule is centred in the box.
"""

from __future__ import annotations

import os

import numpy as np
from aiida import orm

from adit_torch.errors import DataFormatError

#: Empty space (Å) added on each side of a molecule's bounding box to make its cell.
MOLECULE_VACUUM = 5.0


def read_frames(path: str | os.PathLike) -> list:
    """All frames of an extxyz file as ``ase.Atoms`` (possibly empty).

    :raises DataFormatError: the file cannot be parsed; the message names the file.
    """
    from ase.io import read

    if os.path.getsize(path) == 0:
        return []
    try:
        return list(read(os.fspath(path), index=":", format="extxyz"))
    except Exception as exc:  # ase raises many exception types for malformed files
        raise DataFormatError(f"{path}: not a readable extxyz file ({type(exc).__name__}: {exc})") from exc


def atoms_to_structure(atoms, vacuum: float = MOLECULE_VACUUM) -> orm.StructureData:
    """One ``ase.Atoms`` as an unstored StructureData.

    :param atoms: a crystal (all three directions periodic) or a molecule (no periodic
        direction; any cell is replaced by a box). A degenerate crystal (e.g. a singular
        lattice from a poorly trained model) is kept as it is: judging it is evaluation's job.
    :param vacuum: Å of empty space on each side of a molecule's box.
    :raises DataFormatError: the system has no atoms, non-finite positions or cell, or
        partial periodicity (none of which a StructureData can hold faithfully).
    """
    positions = np.asarray(atoms.get_positions(), dtype=float)
    ident = atoms.info.get("id", "?")
    if len(atoms) == 0:
        raise DataFormatError(f"system {ident}: no atoms")
    if not np.isfinite(positions).all():
        raise DataFormatError(f"system {ident}: non-finite positions")
    pbc = tuple(bool(flag) for flag in atoms.pbc)
    if all(pbc):
        if not np.isfinite(np.asarray(atoms.cell)).all():
            raise DataFormatError(f"system {ident}: non-finite lattice")
        return orm.StructureData(ase=atoms)
    if any(pbc):
        raise DataFormatError(f"system {ident}: partial periodicity {pbc} is not supported")
    low, high = positions.min(axis=0), positions.max(axis=0)
    box = (high - low) + 2.0 * vacuum
    shifted = positions - (low + high) / 2.0 + box / 2.0
    boxed = atoms.copy()
    boxed.set_cell(np.diag(box))
    boxed.set_positions(shifted)
    boxed.pbc = False
    return orm.StructureData(ase=boxed)
