"""Energy above the convex hull with pymatgen's ``PhaseDiagram``, over pluggable reference hulls.

A :class:`ReferenceHull` is a set of reference entries (composition + total
energy in eV, from one potential or DFT) and answers
:meth:`ReferenceHull.e_above_hull` for a composition and an energy. Phase
diagrams are built lazily per chemical system from the entries whose elements
lie inside it, so the hull covers any number of elements cheaply.

Reference hulls (see :func:`load_reference_hull`):

* ``"offline"``: shipped in ``adit_torch/resources``; CHGNet energies of the
  MP-20 structures of the workplace copy plus CHGNet elemental references,
  built by ``scripts/build_reference_hull.py`` (self-consistent with CHGNet
  relaxations, but incomplete: see ``docs/stability.md``);
* ``"mp2023"``: the Materials Project hull of 2023-02-07 used by Matbench
  Discovery (needs the optional ``matbench-discovery`` package and network on
  first use; see :mod:`adit_torch.stability.mp2023`);
* a path: our hull file, a JSON list of pymatgen ``ComputedEntry`` dicts
  (optionally gzip) or a CSV with ``formula`` and ``energy`` (total eV of that
  formula) or ``energy_per_atom`` columns.

Energies above the hull are in eV/atom and may be negative (a structure
below the reference hull), as in Matbench Discovery.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
from collections.abc import Iterable, Mapping
from functools import cached_property
from itertools import combinations
from pathlib import Path

from adit_torch.errors import ConfigError, DataFormatError, InvalidSystemError

#: Identifier of the hull file format written by ``scripts/build_reference_hull.py``.
HULL_FORMAT = "adit-reference-hull/1"
_RESOURCE = "mp20_chgnet_hull.json.gz"


def default_hull_path() -> Path:
    """Path of the offline reference hull shipped with the package."""
    return Path(__file__).resolve().parent.parent / "resources" / _RESOURCE


def _open_text(path: Path):
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", encoding="utf-8") if gz else open(path, encoding="utf-8")


class ReferenceHull:
    """Reference entries with energies from one source, and energies above their hull.

    Args:
        entries: pymatgen ``ComputedEntry`` objects (total energies, eV); entry ids name them.
        name: short name written into every output (e.g. ``"offline-mp20-chgnet"``).
        metadata: JSON-serialisable description (potential, how it was built, limits).
    """

    def __init__(self, entries: Iterable, name: str, metadata: Mapping | None = None):
        self.entries = list(entries)
        self.name = str(name)
        self.metadata = dict(metadata or {})
        self._by_chemsys: dict[frozenset, list] = {}
        for entry in self.entries:
            key = frozenset(el.symbol for el in entry.composition.elements)
            self._by_chemsys.setdefault(key, []).append(entry)
        self._diagrams: dict[frozenset, object] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"ReferenceHull({self.name!r}, {len(self)} entries, {len(self.elements)} elements)"

    @cached_property
    def elements(self) -> frozenset[str]:
        """Elements that have an elemental reference entry (only those can be scored)."""
        return frozenset(next(iter(k)) for k in self._by_chemsys if len(k) == 1)

    def describe(self) -> dict:
        """Name, entry count and metadata (without bulky fields) for outputs."""
        meta = {k: v for k, v in self.metadata.items() if k not in ("entries", "elements", "build")}
        return {"name": self.name, "num_entries": len(self), "num_elements": len(self.elements), **meta}

    # ------------------------------------------------------------ queries
    def phase_diagram(self, elements: Iterable[str]):
        """pymatgen ``PhaseDiagram`` of the chemical system ``elements`` (cached per system)."""
        from pymatgen.analysis.phase_diagram import PhaseDiagram

        key = frozenset(elements)
        missing = sorted(key - self.elements)
        if missing:
            raise InvalidSystemError(f"element(s) {', '.join(missing)} have no reference entry in hull {self.name!r}")
        if key not in self._diagrams:
            entries = []
            for k in range(1, len(key) + 1):
                for sub in combinations(sorted(key), k):
                    entries.extend(self._by_chemsys.get(frozenset(sub), ()))
            self._diagrams[key] = PhaseDiagram(entries)
        return self._diagrams[key]

    def e_above_hull(self, composition, energy: float) -> float:
        """Energy above the hull in eV/atom of a phase with total ``energy`` (eV) and ``composition``.

        ``composition`` is anything pymatgen's ``Composition`` accepts (a
        formula string, a dict of counts). Negative values mean below the
        reference hull. Raises :class:`InvalidSystemError` when an element
        has no reference.
        """
        from pymatgen.core import Composition
        from pymatgen.entries.computed_entries import ComputedEntry

        comp = Composition(composition)
        if comp.num_atoms <= 0:
            raise InvalidSystemError(f"empty composition {composition!r}")
        diagram = self.phase_diagram(el.symbol for el in comp.elements)
        entry = ComputedEntry(comp, float(energy), entry_id="query")
        _, e_hull = diagram.get_decomp_and_e_above_hull(entry, allow_negative=True, check_stable=False)
        return float(e_hull)

    def formation_energy_per_atom(self, composition, energy: float) -> float:
        """Formation energy in eV/atom relative to this hull's elemental references."""
        from pymatgen.core import Composition

        comp = Composition(composition)
        diagram = self.phase_diagram(el.symbol for el in comp.elements)
        refs = diagram.el_refs
        return (float(energy) - sum(n * refs[el].energy_per_atom for el, n in comp.items())) / comp.num_atoms

    def excluding(self, ids: Iterable[str]) -> ReferenceHull:
        """A copy without the entries whose ``entry_id`` is in ``ids`` (leave-one-out checks)."""
        drop = set(ids)
        return ReferenceHull([e for e in self.entries if e.entry_id not in drop], self.name, self.metadata)

    # ------------------------------------------------------------ files
    def to_dict(self) -> dict:
        """Serialisable form in the hull file format (compact rows ``[id, composition, energy]``)."""
        rows = [[e.entry_id, {el.symbol: float(n) for el, n in e.composition.items()}, float(e.energy)]
                for e in self.entries]
        return {"format": HULL_FORMAT, "name": self.name, **self.metadata, "entries": rows, "elements": {}}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the hull as gzip JSON atomically (temporary name, then rename); returns the path."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with gzip.open(tmp, "wt", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, separators=(",", ":"))
        os.replace(tmp, path)
        return path

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "<dict>") -> ReferenceHull:
        """Build from the hull file format (see :meth:`to_dict`)."""
        from pymatgen.core import Composition
        from pymatgen.entries.computed_entries import ComputedEntry

        if data.get("format") != HULL_FORMAT:
            raise DataFormatError(f"{source}: not a reference hull file (format {data.get('format')!r})")
        entries = []
        for el, ref in (data.get("elements") or {}).items():
            entries.append(ComputedEntry(Composition({el: 1}), float(ref["energy_per_atom"]), entry_id=f"{el}-ref"))
        for i, row in enumerate(data.get("entries") or []):
            try:
                entries.append(ComputedEntry(Composition(row[1]), float(row[2]), entry_id=str(row[0])))
            except (IndexError, TypeError, ValueError) as exc:
                raise DataFormatError(f"{source}: entry {i} is malformed ({exc})") from None
        meta = {k: v for k, v in data.items() if k not in ("format", "name", "entries", "elements")}
        return cls(entries, data.get("name", Path(source).name), meta)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ReferenceHull:
        """Read a hull file, a JSON list of ``ComputedEntry`` dicts or a ``formula,energy`` CSV (plain or gzip)."""
        path = Path(path)
        if not path.is_file():
            raise DataFormatError(f"{path}: reference hull file not found")
        name = path.name.removesuffix(".gz")
        if name.endswith(".csv"):
            return cls._from_csv(path)
        try:
            with _open_text(path) as fh:
                data = json.load(fh)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataFormatError(f"{path}: cannot read reference hull JSON ({exc})") from None
        if isinstance(data, dict) and data.get("format") == HULL_FORMAT:
            return cls.from_dict(data, str(path))
        if isinstance(data, dict):  # {id: entry dict}, as in the MP elemental reference file
            data = list(data.values())
        if not isinstance(data, list):
            raise DataFormatError(f"{path}: expected a list of ComputedEntry dicts or an adit hull file")
        from pymatgen.entries.computed_entries import ComputedEntry

        entries = []
        for i, item in enumerate(data):
            try:
                entries.append(ComputedEntry.from_dict(item))
            except (KeyError, TypeError, ValueError) as exc:
                raise DataFormatError(f"{path}: item {i} is not a ComputedEntry dict ({exc})") from None
        return cls(entries, name, {"source": str(path)})

    @classmethod
    def _from_csv(cls, path: Path) -> ReferenceHull:
        from pymatgen.core import Composition
        from pymatgen.entries.computed_entries import ComputedEntry

        entries = []
        with _open_text(path) as fh:
            reader = csv.DictReader(fh)
            cols = set(reader.fieldnames or ())
            if "formula" not in cols or not cols & {"energy", "energy_per_atom"}:
                raise DataFormatError(f"{path}: CSV needs a 'formula' column and 'energy' or 'energy_per_atom'")
            for line, row in enumerate(reader, start=2):
                try:
                    comp = Composition(row["formula"])
                    if row.get("energy") not in (None, ""):
                        energy = float(row["energy"])
                    else:
                        energy = float(row["energy_per_atom"]) * comp.num_atoms
                except (ValueError, KeyError) as exc:
                    raise DataFormatError(f"{path}: line {line}: bad formula or energy ({exc})") from None
                entries.append(ComputedEntry(comp, energy, entry_id=row.get("id") or f"{path.name}:{line}"))
        return cls(entries, path.name, {"source": str(path)})


_OFFLINE_CACHE: dict[str, ReferenceHull] = {}


def load_offline_hull() -> ReferenceHull:
    """The offline CHGNet/MP-20 reference hull shipped with the package (loaded once)."""
    path = default_hull_path()
    if str(path) not in _OFFLINE_CACHE:
        if not path.is_file():
            raise ConfigError(f"the offline reference hull {path} is missing; build it with "
                              "scripts/build_reference_hull.py")
        _OFFLINE_CACHE[str(path)] = ReferenceHull.from_file(path)
    return _OFFLINE_CACHE[str(path)]


def load_reference_hull(spec: str | os.PathLike | ReferenceHull = "offline") -> ReferenceHull:
    """Resolve a hull specification: ``"offline"``, ``"mp2023"``, a file path, or a hull (returned as is)."""
    if isinstance(spec, ReferenceHull):
        return spec
    text = str(spec)
    if text == "offline":
        return load_offline_hull()
    if text == "mp2023":
        from adit_torch.stability.mp2023 import load_mp2023_hull

        return load_mp2023_hull()
    path = Path(text)
    if not path.exists():
        raise ConfigError(f"unknown reference hull {text!r}: use 'offline', 'mp2023' or an existing file path")
    return ReferenceHull.from_file(path)
