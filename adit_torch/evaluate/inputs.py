"""Turn whatever the user passes into a list of systems, keeping broken entries in place.

The evaluation must score every input, in input order: a structure that cannot
be read or that is degenerate (no atoms, NaN, singular lattice, overlapping
atoms) is an *invalid* sample with a recorded reason, never a crash and never a
silent drop. :class:`Unreadable` stands in for an entry with no usable atoms.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adit_torch.errors import AditError, DataFormatError
from adit_torch.system import AtomicSystem


@dataclass
class Unreadable:
    """Placeholder for an input entry that yielded no atoms.

    Attributes:
        reason: why it could not be read.
        info: metadata such as ``id`` (JSON-serialisable).
    """

    reason: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """A name for reports (``info['id']`` or ``"<unreadable>"``)."""
        return str(self.info.get("id", "<unreadable>"))


def as_system(obj: Any, index: int = 0) -> AtomicSystem | Unreadable:
    """Convert an ``AtomicSystem``, ASE ``Atoms``, pymatgen ``Structure``/``Molecule`` or RDKit ``Mol``.

    Anything else (or a conversion error) gives an :class:`Unreadable` naming the problem.
    """
    if isinstance(obj, (AtomicSystem, Unreadable)):
        return obj
    info = {"id": f"input{index}"}
    try:
        module = type(obj).__module__
        if module.startswith("ase"):
            return AtomicSystem.from_ase(obj, {**info, **{k: v for k, v in obj.info.items() if k == "id"}})
        if module.startswith("pymatgen"):
            props = getattr(obj, "properties", None) or {}
            if "id" in props:
                info["id"] = str(props["id"])
            return AtomicSystem.from_pymatgen(obj, info)
        if module.startswith("rdkit"):
            if obj.HasProp("_Name") and obj.GetProp("_Name"):
                info["id"] = obj.GetProp("_Name")
            return AtomicSystem.from_rdkit(obj, info=info)
    except (AditError, ValueError, TypeError, KeyError, IndexError) as exc:
        return Unreadable(f"cannot convert {type(obj).__name__}: {exc}", info)
    return Unreadable(f"unsupported input type {type(obj).__name__}", info)


def as_systems(objs) -> list[AtomicSystem | Unreadable]:
    """:func:`as_system` applied to every entry of an iterable."""
    return [as_system(obj, i) for i, obj in enumerate(objs)]


def degeneracy(system: AtomicSystem) -> str:
    """Why a system cannot be scored (no atoms, unknown element, NaN, singular lattice); ``""`` if fine."""
    from adit_torch.system import MAX_ATOMIC_NUMBER

    if system.num_atoms == 0:
        return "no atoms"
    if ((system.numbers < 1) | (system.numbers > MAX_ATOMIC_NUMBER)).any():
        return f"unknown atomic number(s) {sorted(set(system.numbers.tolist()))}"
    if not np.isfinite(system.positions).all():
        return "NaN or infinite coordinates"
    if system.lattice is not None:
        if not np.isfinite(system.lattice).all():
            return "NaN or infinite lattice"
        if abs(np.linalg.det(system.lattice)) < 1e-8:
            return "singular lattice (zero volume)"
    return ""


# ------------------------------------------------------------------ files
_WHERE = re.compile(r"^(row|frame|record|data block) (\d+)")


def read_for_evaluation(path, kind: str | None = None) -> list[AtomicSystem | Unreadable]:
    """Every entry of a file (extxyz, CSV with ``cif``, folder of CIFs, SDF) in file order.

    Entries the reader rejects are read again without validation (overlapping
    atoms are a property to score, not a reading error); entries that still
    give no atoms become :class:`Unreadable` with the reader's message.

    Raises:
        DataFormatError: the file itself is missing, empty or of an unknown kind.
    """
    from adit_torch import io

    reader_log = io.LOGGER.level
    io.LOGGER.setLevel(logging.ERROR)  # rejected entries are re-read below, not skipped: no warning
    try:
        systems = io.read_systems(path, kind=kind, skip_invalid=True, max_atoms=10**7)
    finally:
        io.LOGGER.setLevel(reader_log)
    by_source: dict[str, list] = {}
    order: list[str] = []
    for system in systems:
        source = str(system.info.get("source", path))
        if source not in by_source:
            by_source[source] = []
            order.append(source)
        by_source[source].append(system)
    skipped_by_source: dict[str, list] = {}
    for skipped in systems.skipped:
        skipped_by_source.setdefault(skipped.source, []).append(skipped)
        if skipped.source not in by_source:
            by_source[skipped.source] = []
            order.append(skipped.source)
    if len(order) > 1:
        order.sort()  # a folder of CIFs is read in sorted file order
    out: list[AtomicSystem | Unreadable] = []
    for source in order:
        out.extend(_interleave(source, by_source[source], skipped_by_source.get(source, [])))
    return out


def _interleave(source: str, readable: list, skipped: list) -> list:
    """Put the re-read skipped entries of one file back at their positions among the readable ones."""
    if not skipped:
        return list(readable)
    slots: dict[int, AtomicSystem | Unreadable] = {}
    base = 0
    for entry in skipped:
        match = _WHERE.match(entry.where)
        if match is None:
            raise DataFormatError(f"{source}: cannot place the rejected entry {entry.where!r}")
        base = 1 if match.group(1) == "row" else 0
        position = int(match.group(2))
        slots[position] = _reread(Path(source), match.group(1), position, entry.reason)
    total = len(readable) + len(skipped)
    it = iter(readable)
    return [slots[p] if p in slots else next(it) for p in range(base, base + total)]


def _reread(path: Path, unit: str, position: int, reason: str) -> AtomicSystem | Unreadable:
    """Read one rejected entry without validation; an :class:`Unreadable` when it has no usable atoms."""
    from adit_torch import io

    info = {"id": f"{path.name}:{unit.replace(' ', '_')}{position}", "source": str(path)}
    try:
        if unit == "frame":
            from ase.io import read as ase_read

            atoms = ase_read(path, index=position, format="extxyz")
            return AtomicSystem.from_ase(atoms, {**info, "id": str(atoms.info.get("id", f"frame{position}"))})
        if unit == "row":
            for number, row in io.iter_csv_rows(path):
                if number == position:
                    row_info = {**info, **io.csv_row_info(row, number)}
                    return io.parse_cif(row["cif"] or "", row_info)
        if unit == "data block" and position == 0:
            return io.parse_cif(path.read_text(encoding="utf-8", errors="replace"), {**info, "id": path.stem})
        if unit == "record":
            from rdkit import Chem

            mol = Chem.SDMolSupplier(str(path), sanitize=False, removeHs=False)[position]
            if mol is not None:
                return AtomicSystem.from_rdkit(mol, info=info)
    except Exception as exc:  # a second reader error: keep the first message, which names the problem
        return Unreadable(reason, {**info, "reread_error": f"{type(exc).__name__}: {exc}"})
    return Unreadable(reason, info)
