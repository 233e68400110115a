"""Atom and molecule stability of EDM (Hoogeboom et al., 2022), QM9 convention.

Bond orders come from interatomic distances alone: a pair of atoms is bonded
when its distance is below the tabulated single-bond length plus a margin;
double and triple bonds likewise with their own tables and margins (tables in
pm, margins 10 / 5 / 3 pm, values from EDM's ``bond_analyze``, which took them
from standard bond-length tables). An atom is stable when the sum of its bond
orders equals an allowed valence; a molecule is stable when all its atoms are.
Element pairs missing from the single-bond table never bond; elements without
an allowed valence are never stable.
"""

from __future__ import annotations

import numpy as np

from adit_torch.system import SYMBOLS, AtomicSystem

#: Margins (pm) added to the single, double and triple bond lengths.
MARGINS_PM = (10, 5, 3)

# Typical bond lengths in pm, one entry per unordered element pair.
_SINGLE = {
    ("H", "H"): 74, ("H", "C"): 109, ("H", "N"): 101, ("H", "O"): 96, ("H", "F"): 92, ("H", "B"): 119,
    ("H", "Si"): 148, ("H", "P"): 144, ("H", "As"): 152, ("H", "S"): 134, ("H", "Cl"): 127, ("H", "Br"): 141,
    ("H", "I"): 161,
    ("C", "C"): 154, ("C", "N"): 147, ("C", "O"): 143, ("C", "F"): 135, ("C", "Si"): 185, ("C", "P"): 184,
    ("C", "S"): 182, ("C", "Cl"): 177, ("C", "Br"): 194, ("C", "I"): 214,
    ("N", "N"): 145, ("N", "O"): 140, ("N", "F"): 136, ("N", "Cl"): 175, ("N", "Br"): 214, ("N", "S"): 168,
    ("N", "I"): 222, ("N", "P"): 177,
    ("O", "O"): 148, ("O", "F"): 142, ("O", "Br"): 172, ("O", "S"): 151, ("O", "P"): 163, ("O", "Si"): 163,
    ("O", "Cl"): 164, ("O", "I"): 194,
    ("F", "F"): 142, ("F", "S"): 158, ("F", "Si"): 160, ("F", "Cl"): 166, ("F", "Br"): 178, ("F", "P"): 156,
    ("F", "I"): 187,
    ("B", "Cl"): 175,
    ("Si", "Si"): 233, ("Si", "S"): 200, ("Si", "Cl"): 202, ("Si", "Br"): 215, ("Si", "I"): 243,
    ("Cl", "Cl"): 199, ("Cl", "P"): 203, ("Cl", "S"): 207, ("Cl", "Br"): 214,
    ("S", "S"): 204, ("S", "Br"): 225, ("S", "P"): 210, ("S", "I"): 234,
    ("Br", "Br"): 228, ("Br", "P"): 222,
    ("P", "P"): 221,
    ("I", "I"): 266,
}
_DOUBLE = {("C", "C"): 134, ("C", "N"): 129, ("C", "O"): 120, ("C", "S"): 160, ("N", "N"): 125, ("N", "O"): 121,
           ("O", "O"): 121, ("O", "P"): 150, ("P", "S"): 186}
_TRIPLE = {("C", "C"): 120, ("C", "N"): 116, ("C", "O"): 113, ("N", "N"): 110}

#: Allowed valences (sum of bond orders) per element.
ALLOWED_VALENCES: dict[str, tuple[int, ...]] = {
    "H": (1,), "C": (4,), "N": (3,), "O": (2,), "F": (1,), "B": (3,), "Al": (3,), "Si": (4,), "P": (3, 5),
    "S": (4,), "Cl": (1,), "As": (3,), "Br": (1,), "I": (1,), "Hg": (1, 2), "Bi": (3, 5),
}


def _table(pairs: dict[tuple[str, str], int], margin: int) -> np.ndarray:
    """Symmetric threshold matrix ``(Z+1, Z+1)`` in pm (bond length + margin); ``-inf`` where no bond exists."""
    size = len(SYMBOLS)
    out = np.full((size, size), -np.inf)
    index = {s: z for z, s in enumerate(SYMBOLS)}
    for (a, b), length in pairs.items():
        out[index[a], index[b]] = out[index[b], index[a]] = length + margin
    return out


_THRESHOLDS = tuple(_table(t, m) for t, m in zip((_SINGLE, _DOUBLE, _TRIPLE), MARGINS_PM))


def bond_orders(numbers: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """EDM bond orders ``(N, N)`` (0-3, zero diagonal) from atomic numbers ``(N,)`` and positions ``(N, 3)`` Å."""
    dist_pm = 100.0 * np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)
    zi, zj = numbers[:, None], numbers[None, :]
    single = dist_pm < _THRESHOLDS[0][zi, zj]
    double = single & (dist_pm < _THRESHOLDS[1][zi, zj])
    triple = double & (dist_pm < _THRESHOLDS[2][zi, zj])
    order = single.astype(np.int64) + double + triple
    np.fill_diagonal(order, 0)
    return order


def atom_stability(system: AtomicSystem) -> np.ndarray:
    """Per-atom EDM stability ``(N,)`` bool of a molecule (positions in Å)."""
    valences = bond_orders(system.numbers, system.positions).sum(axis=1)
    allowed = [ALLOWED_VALENCES.get(SYMBOLS[z], ()) if 0 < z < len(SYMBOLS) else () for z in system.numbers]
    return np.array([int(v) in a for v, a in zip(valences, allowed)], dtype=bool)


def molecule_stability(system: AtomicSystem) -> tuple[int, int, bool]:
    """``(stable_atoms, num_atoms, molecule_stable)`` of one molecule."""
    stable = atom_stability(system)
    return int(stable.sum()), int(len(stable)), bool(len(stable) > 0 and stable.all())
