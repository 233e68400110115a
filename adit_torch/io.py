"""Read and write :class:`~adit_torch.system.AtomicSystem` lists: extxyz, CIF, CSV (CDVAE) and SDF.

Every reader validates what it reads (:meth:`AtomicSystem.validate`) and names
the file and the structure (frame, row, data block or record) in its errors.
With ``skip_invalid=True`` bad structures are skipped instead, and the returned
:class:`SystemList` lists each skipped one in ``.skipped`` (a warning is logged
too): nothing is dropped silently. Writers write to a temporary name and then
rename, so a failed write never leaves a half-written file behind.

Formats (chosen by suffix, or by ``kind``):

* ``extxyz`` (``.extxyz``, ``.xyz``): ASE's extended XYZ, molecules and crystals.
* ``cif`` (``.cif`` or a folder of ``*.cif`` files): crystals; one system per data block.
* ``csv`` (``.csv``, ``.csv.gz``): a table with a ``cif`` column, CDVAE/MP-20 layout
  (``material_id``, ``spacegroup.number``, ``e_above_hull``, ... are kept in ``info``).
* ``sdf`` (``.sdf``): molecules, hydrogens kept; written without bonds unless
  ``perceive_bonds=True`` (then RDKit's ``DetermineBonds`` with charge 0).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from adit_torch.errors import DataFormatError, InvalidSystemError
from adit_torch.system import AtomicSystem

LOGGER = logging.getLogger(__name__)

#: Largest system (atoms) the readers accept unless told otherwise.
MAX_ATOMS = 512

#: CDVAE/MP-20 CSV columns copied into ``info`` (column -> (key, type)).
CSV_COLUMNS = {
    "material_id": ("id", str),
    "spacegroup.number": ("spacegroup", int),
    "e_above_hull": ("e_above_hull", float),
    "formation_energy_per_atom": ("formation_energy_per_atom", float),
    "band_gap": ("band_gap", float),
    "pretty_formula": ("pretty_formula", str),
}

_SUFFIXES = {".extxyz": "extxyz", ".xyz": "extxyz", ".cif": "cif", ".csv": "csv", ".sdf": "sdf"}


@dataclass(frozen=True)
class Skipped:
    """One structure left out by a reader with ``skip_invalid=True``.

    Attributes:
        source: the file read.
        where: position in the file, e.g. ``"row 12"``, ``"frame 3"``, ``"record 0"``.
        reason: the error message that made it invalid.
    """

    source: str
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.where}: {self.reason}"


class SystemList(list):
    """A ``list[AtomicSystem]`` with ``.skipped``: the :class:`Skipped` entries left out while reading."""

    def __init__(self, systems=(), skipped=()):
        super().__init__(systems)
        self.skipped: list[Skipped] = list(skipped)


def detect_kind(path: str | os.PathLike) -> str:
    """File kind (``extxyz``, ``cif``, ``csv``, ``sdf``) from a path's suffix; a folder means ``cif``."""
    path = Path(path)
    if path.is_dir():
        return "cif"
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _SUFFIXES:
        return _SUFFIXES[suffixes[-1]]
    raise DataFormatError(f"{path}: cannot tell the file kind from its name; use one of {sorted(_SUFFIXES)} or kind=")


def open_text(path: str | os.PathLike):
    """Open a text file for reading, transparently gunzipping ``*.gz``."""
    path = Path(path)
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


# ------------------------------------------------------------------ reading
def read_systems(
    path: str | os.PathLike, kind: str | None = None, skip_invalid: bool = False, max_atoms: int = MAX_ATOMS
) -> SystemList:
    """Read every system of a file (or of a folder of CIF files).

    Args:
        path: the file or folder.
        kind: ``"extxyz"``, ``"cif"``, ``"csv"`` or ``"sdf"``; by default from the suffix.
        skip_invalid: skip structures that do not parse or fail validation
            (listed in the result's ``.skipped``) instead of raising.
        max_atoms: structures with more atoms are invalid.

    Returns:
        a :class:`SystemList` of :class:`AtomicSystem`, in file order; ``info['source']`` is the file.

    Raises:
        DataFormatError: missing/empty file, unknown kind, unparseable content.
        InvalidSystemError: a structure fails :meth:`AtomicSystem.validate`.
    """
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"{path}: no such file or folder")
    kind = (kind or detect_kind(path)).lower()
    readers: dict[str, Callable[[Path], Iterator]] = {
        "extxyz": _iter_extxyz, "cif": _iter_cif, "csv": _iter_csv, "sdf": _iter_sdf,
    }
    if kind not in readers:
        raise DataFormatError(f"{path}: unknown kind {kind!r}; expected one of {sorted(readers)}")
    if path.is_file() and path.stat().st_size == 0:
        raise DataFormatError(f"{path}: empty file")
    out = SystemList()
    for source, where, build in readers[kind](path):
        try:
            system = build()
            system.info.setdefault("source", str(source))
            system.validate(max_atoms=max_atoms)
        except (DataFormatError, InvalidSystemError) as exc:
            if not skip_invalid:
                raise type(exc)(f"{source}: {where}: {exc}") from None
            out.skipped.append(Skipped(str(source), where, str(exc)))
            continue
        out.append(system)
    if out.skipped:
        LOGGER.warning("%s: skipped %d invalid structure(s): %s", path, len(out.skipped),
                       "; ".join(str(s) for s in out.skipped[:5]) + (" ..." if len(out.skipped) > 5 else ""))
    if not out and not out.skipped:
        raise DataFormatError(f"{path}: no structures found")
    return out


def parse_cif(text: str, info: dict | None = None) -> AtomicSystem:
    """The first structure of a CIF string as a crystal (pymatgen's parser, no symmetry reduction).

    Raises :class:`DataFormatError` when it does not parse and :class:`InvalidSystemError`
    for unknown elements or disordered sites.
    """
    from pymatgen.io.cif import CifParser

    return _cif_structures(text, CifParser, info)[0]


def _cif_structures(text: str, parser_cls, info: dict | None = None) -> list[AtomicSystem]:
    info = dict(info or {})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parser = parser_cls.from_str(text)
            structures = parser.parse_structures(primitive=False, on_error="raise")
            names = list(parser.as_dict())
        except Exception as exc:  # pymatgen raises many kinds; report them as one
            unknown = [str(w.message) for w in caught if "not a valid Element" in str(w.message)]
            raise DataFormatError(f"CIF does not parse ({unknown[0] if unknown else exc})") from None
    unknown = [str(w.message) for w in caught if "not a valid Element" in str(w.message)]
    out = []
    for block, structure in enumerate(structures):
        meta = dict(info)
        if len(names) == len(structures) and names[block].strip() and "id" not in meta:
            meta["id"] = names[block].strip()
        if not structure.is_ordered:
            raise InvalidSystemError(f"{meta.get('id', 'CIF')}: disordered (partially occupied) sites")
        bad = sorted({str(site.specie) for site in structure if not hasattr(site.specie, "Z") or site.specie.Z < 1})
        if bad or unknown:
            raise InvalidSystemError(f"{meta.get('id', 'CIF')}: unknown element(s) {bad or unknown}")
        out.append(AtomicSystem.from_pymatgen(structure, meta))
    return out


def _iter_cif(path: Path):
    from pymatgen.io.cif import CifParser

    files = sorted(path.glob("*.cif")) if path.is_dir() else [path]
    if not files:
        raise DataFormatError(f"{path}: folder holds no *.cif files")
    for file in files:
        text = file.read_text(encoding="utf-8", errors="replace")
        if not text.strip():
            yield file, "data block 0", _raiser(DataFormatError("empty file"))
            continue
        try:
            systems = _cif_structures(text, CifParser)
        except (DataFormatError, InvalidSystemError) as exc:
            yield file, "data block 0", _raiser(exc)
            continue
        for i, system in enumerate(systems):
            system.info.setdefault("id", f"{file.stem}:{i}")
            yield file, f"data block {i} ({system.label})", (lambda s=system: s)


def _raiser(exc: Exception) -> Callable[[], AtomicSystem]:
    def build():
        raise exc
    return build


def iter_csv_rows(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(row_number, row)`` of a CSV (plain or .gz), rows numbered from 1 after the header.

    Raises :class:`DataFormatError` when the file has no ``cif`` column.
    """
    csv.field_size_limit(1 << 28)
    with open_text(path) as handle:
        try:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None:
                raise DataFormatError(f"{path}: empty file")
            if "cif" not in reader.fieldnames:
                raise DataFormatError(f"{path}: no 'cif' column (columns: {reader.fieldnames})")
            yield from enumerate(reader, start=1)
        except (csv.Error, UnicodeDecodeError, EOFError, OSError) as exc:
            raise DataFormatError(f"{path}: not a readable CSV file ({exc})") from None


def csv_row_info(row: dict[str, str], number: int) -> dict:
    """``info`` of a CDVAE-layout CSV row: id (``material_id`` or ``row<N>``) and known property columns."""
    info: dict = {"id": f"row{number}"}
    for column, (key, cast) in CSV_COLUMNS.items():
        value = row.get(column)
        if value not in (None, ""):
            try:
                info[key] = cast(value)
            except ValueError:
                raise DataFormatError(f"column {column!r} holds {value!r}, not a {cast.__name__}") from None
    return info


def _iter_csv(path: Path):
    from pymatgen.io.cif import CifParser

    for number, row in iter_csv_rows(path):
        def build(row=row, number=number):
            info = csv_row_info(row, number)
            return _cif_structures(row["cif"] or "", CifParser, info)[0]

        yield path, f"row {number} ({row.get('material_id') or 'no material_id'})", build


def _split_xyz_frames(path: Path) -> Iterator[tuple[int, int, str]]:
    """Yield ``(frame_index, first_line_number, text)`` of each XYZ frame, checking the atom-count lines."""
    with open_text(path) as handle:
        lines = handle.read().splitlines()
    i, frame = 0, 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        try:
            n = int(lines[i].split()[0])
        except ValueError:
            where = f"frame {frame} (line {i + 1})"
            raise DataFormatError(f"{path}: {where}: expected an atom count, got {lines[i]!r}") from None
        if n < 0 or i + 2 + n > len(lines):
            raise DataFormatError(f"{path}: frame {frame} (line {i + 1}): file ends before its {n} atoms")
        yield frame, i + 1, "\n".join(lines[i:i + 2 + n]) + "\n"
        i += 2 + n
        frame += 1


def _iter_extxyz(path: Path):
    from ase.io import read as ase_read

    for frame, line, text in _split_xyz_frames(path):
        def build(text=text, frame=frame):
            try:
                atoms = ase_read(io.StringIO(text), format="extxyz")
            except KeyError as exc:  # ASE's symbol lookup
                raise InvalidSystemError(f"unknown element symbol {exc}") from None
            except Exception as exc:  # ASE raises KeyError/ValueError/IndexError for bad frames
                raise DataFormatError(f"does not parse ({type(exc).__name__}: {exc})") from None
            info = {"id": str(atoms.info.get("id", f"frame{frame}"))}
            return AtomicSystem.from_ase(atoms, info)

        yield path, f"frame {frame} (line {line})", build


def _iter_sdf(path: Path):
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    try:
        supplier = Chem.SDMolSupplier(str(path), sanitize=False, removeHs=False)
        for index in range(len(supplier)):
            def build(index=index):
                mol = supplier[index]
                if mol is None:
                    raise DataFormatError("record does not parse")
                info = {k: v for k, v in mol.GetPropsAsDict().items() if isinstance(v, (str, int, float, bool))}
                name = mol.GetProp("_Name") if mol.HasProp("_Name") else ""
                info["id"] = str(info.get("id") or name or f"record{index}")
                return AtomicSystem.from_rdkit(mol, info=info)

            yield path, f"record {index}", build
    finally:
        RDLogger.EnableLog("rdApp.*")


# ------------------------------------------------------------------ writing
def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file to ``path``; the temp file is removed on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_systems(
    path: str | os.PathLike, systems, kind: str | None = None, perceive_bonds: bool = False
) -> list[Path]:
    """Write systems to ``path``; returns the files written.

    ``kind`` defaults to the suffix. ``cif``: a ``.cif`` path takes exactly one
    system; a folder path (no ``.cif`` suffix) gets one ``NNNNN.cif`` file per
    system (numbered files left by an earlier write that are not among the new names are
    removed; other files are left alone). ``sdf``: molecules only, no bonds unless ``perceive_bonds``.
    ``extxyz``: anything. Each file is written atomically.
    """
    path = Path(path)
    systems = list(systems)
    if path.suffix.lower() == ".gz":
        raise DataFormatError(f"{path}: compressed output is not supported; write the plain file")
    if kind is None:
        kind = "cif" if path.is_dir() or not path.suffix else detect_kind(path)
    kind = kind.lower()
    if kind == "cif" and path.suffix.lower() == ".cif":
        for s in systems:
            if not s.is_periodic:
                raise InvalidSystemError(f"{path}: {s.label}: a molecule cannot be written as CIF")
        if len(systems) != 1:
            raise DataFormatError(f"{path}: a .cif file holds one system, got {len(systems)}; give a folder path")
        return [atomic_write(path, lambda tmp: tmp.write_text(_cif_text(systems[0]), encoding="utf-8"))]
    if kind not in ("extxyz", "sdf", "cif"):
        raise DataFormatError(f"{path}: cannot write kind {kind!r}; expected extxyz, cif or sdf")
    with StreamWriter(path, kind, perceive_bonds) as writer:
        writer.write(systems)
    return [path / cif_file_name(i, len(systems)) for i in range(len(systems))] if kind == "cif" else [path]


def cif_file_name(index: int, count: int) -> str:
    """The name of CIF ``index`` of a folder of ``count``: zero-padded to 5 digits, or to as many as
    ``count - 1`` has, so that the names sort in sample order (``00000.cif``; ``000000.cif`` past 100,000)."""
    return f"{index:0{max(5, len(str(max(count - 1, 0))))}d}.cif"


def _cif_text(system: AtomicSystem) -> str:
    from pymatgen.io.cif import CifWriter

    text = str(CifWriter(system.to_pymatgen()))
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in system.label)
    lines = text.splitlines()
    for i, line in enumerate(lines):  # name the data block after the system id
        if line.startswith("data_"):
            lines[i] = f"data_{name}"
            break
    return "\n".join(lines) + "\n"


def _ase_frames(systems) -> list:
    frames = []
    for s in systems:
        atoms = s.to_ase()
        atoms.info = {k: v for k, v in s.info.items() if isinstance(v, (str, int, float, bool)) and k != "source"}
        frames.append(atoms)
    return frames


def _sdf_mol(s: AtomicSystem, perceive_bonds: bool):
    mol = s.to_rdkit()
    if perceive_bonds:
        mol = _with_bonds(mol)
    mol.SetProp("_Name", s.label)
    for key, value in s.info.items():
        if key != "source" and isinstance(value, (str, int, float, bool)):
            mol.SetProp(str(key), str(value))
    return mol


class StreamWriter:
    """Write systems to ``path`` as they come (extxyz, SDF or a folder of numbered CIFs), in order.

    Everything goes to a temporary file (or folder) beside ``path``, which replaces ``path`` when the
    writer closes normally; after an error (used as a context manager) it is removed, so ``path`` is
    either complete or untouched, never half-written. Memory holds one batch, not the whole output.
    A CIF folder gets ``00000.cif``, ... (:func:`cif_file_name`) moved in one by one at the end;
    numbered files left by an earlier write that are not among the new names are removed; other files
    in it are left alone.

    Args:
        path: output file, or folder for ``kind="cif"``.
        kind: ``"extxyz"``, ``"sdf"`` (molecules) or ``"cif"`` (crystals).
        perceive_bonds: SDF only: bonds from the 3D coordinates (none by default).
    """

    def __init__(self, path: str | os.PathLike, kind: str, perceive_bonds: bool = False):
        self.path, self.kind, self.count, self.perceive_bonds = Path(path), kind, 0, perceive_bonds
        if kind not in ("extxyz", "sdf", "cif"):
            raise DataFormatError(f"{path}: cannot stream kind {kind!r}; expected extxyz, sdf or cif")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        if kind == "extxyz":
            self._handle = open(self.tmp, "w", encoding="utf-8")
        elif kind == "sdf":
            from rdkit import Chem

            self._handle = Chem.SDWriter(str(self.tmp))
        else:
            self.tmp.mkdir(parents=True, exist_ok=False)

    def write(self, systems) -> None:
        """Append ``systems`` (in order) to the output."""
        systems = list(systems)
        if self.kind == "extxyz":
            from ase.io import write as ase_write

            ase_write(self._handle, _ase_frames(systems), format="extxyz")
        elif self.kind == "sdf":
            for s in systems:
                self._handle.write(_sdf_mol(s, self.perceive_bonds))
        else:
            for i, s in enumerate(systems, start=self.count):
                if not s.is_periodic:
                    raise InvalidSystemError(f"{self.path}: {s.label}: a molecule cannot be written as CIF")
                (self.tmp / f"{i:05d}.cif").write_text(_cif_text(s), encoding="utf-8")
        self.count += len(systems)

    def close(self) -> Path:
        """Finish: the temporary output replaces ``path``; returns ``path``."""
        if self.kind in ("extxyz", "sdf"):
            self._handle.close()
            os.replace(self.tmp, self.path)
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            names = {cif_file_name(i, self.count) for i in range(self.count)}
            for i in range(self.count):
                os.replace(self.tmp / f"{i:05d}.cif", self.path / cif_file_name(i, self.count))
            self.tmp.rmdir()
            for old in self.path.glob("[0-9][0-9][0-9][0-9][0-9]*.cif"):  # left by an earlier write
                if old.stem.isdigit() and old.name not in names:
                    old.unlink()
        return self.path

    def abort(self) -> None:
        """Drop the temporary output; ``path`` is left as it was."""
        if self.kind in ("extxyz", "sdf"):
            self._handle.close()
            self.tmp.unlink(missing_ok=True)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> StreamWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _with_bonds(mol):
    """Bonds from 3D coordinates with RDKit (orders when possible, connectivity otherwise)."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    try:
        trial = Chem.Mol(mol)
        rdDetermineBonds.DetermineBonds(trial, charge=0)
        return trial
    except Exception:  # orders cannot be assigned: keep single-bond connectivity
        trial = Chem.Mol(mol)
        rdDetermineBonds.DetermineConnectivity(trial)
        return trial


__all__ = [
    "MAX_ATOMS", "Skipped", "SystemList", "atomic_write", "csv_row_info", "detect_kind",
    "iter_csv_rows", "open_text", "parse_cif", "read_systems", "write_systems",
]
