"""One representation for molecules and crystals: :class:`AtomicSystem`.

A system of N atoms is its atomic numbers ``(N,)``, Cartesian positions
``(N, 3)`` in Å and, for crystals only, a lattice ``(3, 3)`` in Å whose *rows*
are the lattice vectors. Everything else (fractional coordinates, lengths,
angles, volume, formula) is derived. Converters to and from ASE, pymatgen and
RDKit live here too; file readers and writers are in :mod:`adit_torch.io`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adit_torch.errors import InvalidSystemError

#: Chemical symbols indexed by atomic number (index 0 is a placeholder).
SYMBOLS: tuple[str, ...] = (
    "X", "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P",
    "S", "Cl", "Ar", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn",
    "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh",
    "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd",
    "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re",
    "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th",
    "Pa", "U", "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr",
)
#: Largest atomic number the model vocabulary covers.
MAX_ATOMIC_NUMBER = len(SYMBOLS) - 1
_NUMBER = {s: z for z, s in enumerate(SYMBOLS) if z > 0}

#: Two atoms closer than this (Å, periodic images included) are "overlapping".
MIN_DISTANCE = 0.5


def _plain_info(info) -> dict[str, Any]:
    """The entries of ``info`` that are plain JSON scalars (numpy scalars converted)."""
    out = {}
    for key, value in info.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, (str, int, float, bool)):
            out[str(key)] = value
    return out


def atomic_number(symbol: str) -> int:
    """Atomic number of a chemical symbol such as ``"Fe"``; raises on unknown symbols."""
    try:
        return _NUMBER[symbol.strip().capitalize()]
    except KeyError:
        raise InvalidSystemError(f"unknown element symbol {symbol!r}") from None


def lattice_from_parameters(lengths, angles) -> np.ndarray:
    """Lattice matrix ``(3, 3)`` (rows = vectors, Å) from lengths (Å) and angles (degrees).

    Uses the standard convention: ``a`` along x, ``b`` in the xy plane (the one
    pymatgen's ``Lattice.from_parameters`` uses, so round trips agree).
    """
    a, b, c = (float(x) for x in lengths)
    al, be, ga = (math.radians(float(x)) for x in angles)
    cos_al, cos_be, cos_ga = math.cos(al), math.cos(be), math.cos(ga)
    val = (cos_al * cos_be - cos_ga) / (math.sin(al) * math.sin(be))
    val = max(-1.0, min(1.0, val))
    gamma_star = math.acos(val)
    va = [a * math.sin(be), 0.0, a * cos_be]
    vb = [-b * math.sin(al) * math.cos(gamma_star), b * math.sin(al) * math.sin(gamma_star), b * cos_al]
    vc = [0.0, 0.0, float(c)]
    return np.array([va, vb, vc], dtype=np.float64)


@dataclass
class AtomicSystem:
    """Atoms of a molecule (``lattice is None``) or a crystal.

    Attributes:
        numbers: atomic numbers, shape ``(N,)``, int64.
        positions: Cartesian coordinates, shape ``(N, 3)``, Å.
        lattice: lattice vectors as rows, shape ``(3, 3)``, Å; ``None`` for molecules.
        info: free-form metadata (``id``, ``source``, properties); JSON-serialisable values.
    """

    numbers: np.ndarray
    positions: np.ndarray
    lattice: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.numbers = np.asarray(self.numbers, dtype=np.int64).reshape(-1)
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        if self.lattice is not None:
            self.lattice = np.asarray(self.lattice, dtype=np.float64).reshape(3, 3)
        if len(self.numbers) != len(self.positions):
            raise InvalidSystemError(
                f"{self.label}: {len(self.numbers)} atomic numbers but {len(self.positions)} positions"
            )
        # Fractional coordinates a crystal was built from, kept exactly (see ``frac_coords``):
        # (frac (N, 3), the positions and the lattice they gave), or None.
        self._given_frac: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ basics
    @property
    def label(self) -> str:
        """A human-readable name for error messages (``info['id']`` when present)."""
        return str(self.info.get("id", "<system>"))

    @property
    def num_atoms(self) -> int:
        """Number of atoms N."""
        return int(len(self.numbers))

    def __len__(self) -> int:
        return self.num_atoms

    @property
    def is_periodic(self) -> bool:
        """True for crystals (a lattice is set), False for molecules."""
        return self.lattice is not None

    @property
    def symbols(self) -> list[str]:
        """Chemical symbols, length N."""
        return [SYMBOLS[z] if 0 < z <= MAX_ATOMIC_NUMBER else "X" for z in self.numbers]

    @property
    def formula(self) -> str:
        """Hill-ordered formula of the cell/molecule as given (not reduced), e.g. ``"C2H6O"``."""
        counts = Counter(self.symbols)
        if "C" in counts:
            order = ["C"] + (["H"] if "H" in counts else []) + sorted(k for k in counts if k not in ("C", "H"))
        else:
            order = sorted(counts)
        return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in order)

    # --------------------------------------------------------------- periodic
    def _require_lattice(self) -> np.ndarray:
        if self.lattice is None:
            raise InvalidSystemError(f"{self.label}: a molecule has no lattice")
        return self.lattice

    @property
    def volume(self) -> float:
        """Cell volume in Å^3 (crystals only)."""
        return float(abs(np.linalg.det(self._require_lattice())))

    @property
    def frac_coords(self) -> np.ndarray:
        """Fractional coordinates ``(N, 3)`` (crystals only; not wrapped).

        A crystal built by :meth:`from_fractional` returns the fractional
        coordinates it was given, bit for bit, for as long as its positions and
        lattice are the ones they produced; otherwise (or once either changes,
        in place or by assignment) they are solved from the Cartesian positions.
        Solving ``frac @ lattice`` back is exact only to round-off, which
        turns a wrapped 0.0 into -1e-34 and breaks ``[0, 1)``.
        """
        lat = self._require_lattice()
        given = self._given_frac
        if given is not None and np.array_equal(given[1], self.positions) and np.array_equal(given[2], lat):
            return given[0].copy()
        return np.linalg.solve(lat.T, self.positions.T).T

    @property
    def lengths(self) -> np.ndarray:
        """Lattice lengths a, b, c in Å, shape ``(3,)``."""
        return np.linalg.norm(self._require_lattice(), axis=1)

    @property
    def angles(self) -> np.ndarray:
        """Lattice angles alpha, beta, gamma in degrees, shape ``(3,)``."""
        lat = self._require_lattice()
        a, b, c = lat
        def ang(u, v):
            cos = np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))
            return math.degrees(math.acos(max(-1.0, min(1.0, cos))))
        return np.array([ang(b, c), ang(a, c), ang(a, b)])

    @classmethod
    def from_fractional(cls, numbers, frac_coords, lattice, info=None) -> AtomicSystem:
        """Build a crystal from fractional coordinates ``(N, 3)`` and a lattice ``(3, 3)`` (Å)."""
        lattice = np.asarray(lattice, dtype=np.float64).reshape(3, 3)
        frac = np.array(frac_coords, dtype=np.float64).reshape(-1, 3)
        system = cls(numbers, frac @ lattice, lattice, dict(info or {}))
        system._given_frac = (frac, system.positions.copy(), system.lattice.copy())
        return system

    @classmethod
    def from_parameters(cls, numbers, frac_coords, lengths, angles, info=None) -> AtomicSystem:
        """Build a crystal from fractional coordinates, lengths (Å) and angles (degrees)."""
        return cls.from_fractional(numbers, frac_coords, lattice_from_parameters(lengths, angles), info)

    def copy(self) -> AtomicSystem:
        """A deep copy (fractional coordinates given at construction included)."""
        out = AtomicSystem(
            self.numbers.copy(), self.positions.copy(),
            None if self.lattice is None else self.lattice.copy(), dict(self.info),
        )
        out._given_frac = self._given_frac  # immutable by use: never written in place
        return out

    # ------------------------------------------------------------- validation
    def validate(self, max_atoms: int | None = None, min_distance: float = MIN_DISTANCE) -> AtomicSystem:
        """Raise :class:`InvalidSystemError` naming the problem, or return ``self``.

        Checks: at least one atom, known elements, finite coordinates, a
        non-singular lattice, no two atoms closer than ``min_distance`` Å
        (periodic images included) and at most ``max_atoms`` atoms.
        """
        where = self.label
        if self.num_atoms == 0:
            raise InvalidSystemError(f"{where}: no atoms")
        if max_atoms is not None and self.num_atoms > max_atoms:
            raise InvalidSystemError(f"{where}: {self.num_atoms} atoms exceeds the limit of {max_atoms}")
        bad = (self.numbers < 1) | (self.numbers > MAX_ATOMIC_NUMBER)
        if bad.any():
            raise InvalidSystemError(f"{where}: unknown atomic number(s) {sorted(set(self.numbers[bad].tolist()))}")
        if not np.isfinite(self.positions).all():
            raise InvalidSystemError(f"{where}: NaN or infinite coordinates")
        if self.lattice is not None:
            if not np.isfinite(self.lattice).all():
                raise InvalidSystemError(f"{where}: NaN or infinite lattice")
            if abs(np.linalg.det(self.lattice)) < 1e-6:
                raise InvalidSystemError(f"{where}: singular lattice (volume {np.linalg.det(self.lattice):.3g} Å^3)")
        dmin = self.min_distance()
        if dmin < min_distance:
            raise InvalidSystemError(f"{where}: overlapping atoms (closest pair {dmin:.3f} Å < {min_distance} Å)")
        return self

    def distance_matrix(self) -> np.ndarray:
        """All pairwise distances ``(N, N)`` in Å; minimum image over neighbouring cells for crystals.

        For crystals the diagonal holds the distance of each atom to its own
        nearest periodic image (the shortest lattice vector considered).
        """
        pos = self.positions
        if self.lattice is None:
            d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
            np.fill_diagonal(d, np.inf)
            return d
        from adit_torch._geometry import periodic_distance_matrix

        return periodic_distance_matrix(self.frac_coords, self.lattice)

    def min_distance(self) -> float:
        """Smallest interatomic distance in Å (periodic images included); ``inf`` for one atom alone."""
        if self.num_atoms == 0:
            return math.inf
        return float(self.distance_matrix().min())

    # ---------------------------------------------------------- canonicalise
    def canonical(self) -> AtomicSystem:
        """Crystal canonical form of the reference pipeline.

        Niggli-reduced cell, lattice rebuilt from its lengths and angles (a
        along x), fractional coordinates wrapped to ``[0, 1)``. Molecules are
        returned centred at their centroid.
        """
        if self.lattice is None:
            out = self.copy()
            out.positions = out.positions - out.positions.mean(axis=0, keepdims=True)
            return out
        from pymatgen.core import Lattice

        niggli = Lattice(self.lattice).get_niggli_reduced_lattice()
        frac = np.linalg.solve(niggli.matrix.T, self.positions.T).T
        lat = lattice_from_parameters(niggli.abc, niggli.angles)
        frac = np.mod(frac, 1.0)
        frac[frac >= 1.0 - 1e-12] = 0.0
        return AtomicSystem.from_fractional(self.numbers, frac, lat, self.info)

    # ------------------------------------------------------------ converters
    def to_ase(self):
        """Convert to ``ase.Atoms`` (``pbc`` set for crystals; ``info`` copied)."""
        from ase import Atoms

        if self.lattice is None:
            atoms = Atoms(numbers=self.numbers, positions=self.positions, pbc=False)
        else:
            atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.lattice, pbc=True)
        atoms.info.update(_plain_info(self.info))
        return atoms

    @classmethod
    def from_ase(cls, atoms, info=None) -> AtomicSystem:
        """Build from ``ase.Atoms``; periodic when all three directions are periodic."""
        pbc = np.asarray(atoms.pbc)
        if pbc.any() and not pbc.all():
            where = (info or {}).get("id", "<atoms>")
            raise InvalidSystemError(f"{where}: partially periodic systems are not supported")
        lattice = np.asarray(atoms.cell[:]) if pbc.all() else None
        meta = _plain_info(atoms.info)
        meta.update(info or {})
        return cls(atoms.numbers, atoms.positions, lattice, meta)

    def to_pymatgen(self):
        """Convert to pymatgen ``Structure`` (crystals) or ``Molecule`` (molecules)."""
        from pymatgen.core import Lattice, Molecule, Structure

        species = self.numbers.tolist()
        if self.lattice is None:
            return Molecule(species, self.positions)
        return Structure(Lattice(self.lattice), species, self.positions, coords_are_cartesian=True)

    @classmethod
    def from_pymatgen(cls, obj, info=None) -> AtomicSystem:
        """Build from a pymatgen ``Structure`` or ``Molecule`` (ordered sites only)."""
        if not obj.is_ordered:
            raise InvalidSystemError(f"{(info or {}).get('id', '<structure>')}: disordered sites are not supported")
        numbers = [site.specie.Z for site in obj]
        lattice = obj.lattice.matrix if hasattr(obj, "lattice") else None
        return cls(numbers, obj.cart_coords, lattice, dict(info or {}))

    def to_rdkit(self):
        """RDKit ``Mol`` with one 3D conformer and no bonds (molecules only).

        Bond perception is a separate, convention-laden step; see
        :mod:`adit_torch.evaluate` for the conventions used in evaluation.
        """
        if self.lattice is not None:
            raise InvalidSystemError(f"{self.label}: crystals cannot be converted to an RDKit molecule")
        from rdkit import Chem
        from rdkit.Geometry import Point3D

        rw = Chem.RWMol()
        for z in self.numbers:
            rw.AddAtom(Chem.Atom(int(z)))
        conf = Chem.Conformer(self.num_atoms)
        for i, p in enumerate(self.positions):
            conf.SetAtomPosition(i, Point3D(*map(float, p)))
        mol = rw.GetMol()
        mol.AddConformer(conf, assignId=True)
        return mol

    @classmethod
    def from_rdkit(cls, mol, conf_id: int = -1, info=None) -> AtomicSystem:
        """Build a molecule from an RDKit ``Mol`` with a 3D conformer (hydrogens as present)."""
        if mol.GetNumConformers() == 0:
            raise InvalidSystemError(f"{(info or {}).get('id', '<mol>')}: RDKit molecule has no conformer")
        pos = mol.GetConformer(conf_id).GetPositions()
        numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
        return cls(numbers, pos, None, dict(info or {}))

    def __repr__(self) -> str:
        kind = "crystal" if self.is_periodic else "molecule"
        return f"AtomicSystem({self.formula}, {kind}, N={self.num_atoms}, id={self.info.get('id')!r})"
