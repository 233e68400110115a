"""A picture of generated structures: one panel per crystal or molecule, on a grid.

Each panel draws the atoms (jmol colours, radii scaled from the covalent radii) in a fixed
projection: crystals with ``ase.visualize.plot.plot_atoms`` and their unit cell; molecules with
their bonds (pairs closer than 1.2 times the sum of covalent radii) and, beside them,
a 2D depiction by RDKit of the bonds OpenBabel perceives (the graph the evaluator's ADiT route
reads; heavy atoms only). Each panel has a title:
the reduced formula, for crystals the spglib space group at the evaluator's tolerance
(:data:`adit_torch.conditions.SYMPREC`), and, when an evaluation report of ``adit evaluate --json``
is given, whether the structure is valid. What it shows is what the model wrote: nothing is
relaxed or repaired first.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from adit_torch.errors import ConfigError, DataFormatError
from adit_torch.io import atomic_write
from adit_torch.system import AtomicSystem

#: Figure formats :func:`render_gallery` writes (by the output's suffix).
FORMATS = ("png", "svg", "pdf")


def validity_of(report_path: str | Path, count: int) -> list[bool]:
    """Per-structure ``valid`` flags ``(count,)`` from an ``adit evaluate --json`` report of the same file."""
    report_path = Path(report_path)
    try:
        report = json.loads(report_path.read_text())
        records = report["per_structure"]  # a list in the report; {"records": [...]} in the AiiDA output
        records = records["records"] if isinstance(records, dict) else records
        flags = {int(r["index"]): bool(r["valid"]) for r in records}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataFormatError(f"{report_path}: not an `adit evaluate --json` report ({exc})") from None
    if len(flags) != count:
        raise DataFormatError(f"{report_path}: the report scores {len(flags)} structures, the file has {count}; "
                              "give the report of this file")
    return [flags[i] for i in range(count)]


def panel_title(system: AtomicSystem, valid: bool | None = None) -> str:
    """``Fe2O3 · SG 14 · valid``: formula (reduced for crystals, Hill for molecules), space group number
    for crystals (``no symmetry`` when spglib finds none), validity when known."""
    from pymatgen.core import Composition

    composition = Composition(dict(zip(*_symbol_counts(system), strict=True)))
    formula = composition.reduced_formula if system.is_periodic else composition.hill_formula.replace(" ", "")
    parts = [formula]
    if system.is_periodic:
        from adit_torch.conditions import SYMPREC
        from adit_torch.evaluate.crystals import spacegroup_number

        number = spacegroup_number(system, SYMPREC)
        parts.append(f"SG {number}" if number else "no symmetry")
    if valid is not None:
        parts.append("valid" if valid else "invalid")
    return " · ".join(parts)


def _symbol_counts(system: AtomicSystem) -> tuple[list[str], list[int]]:
    from ase.data import chemical_symbols

    symbols = [chemical_symbols[int(z)] for z in system.numbers]
    unique = sorted(set(symbols), key=symbols.index)
    return unique, [symbols.count(s) for s in unique]


#: Two atoms are drawn bonded when closer than this factor times the sum of their covalent radii.
BOND_FACTOR = 1.2


def molecule_bonds(system: AtomicSystem) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, of atoms closer than :data:`BOND_FACTOR` times the sum of their
    covalent radii (the drawn bonds of a 3D panel; not the evaluator's bond perception)."""
    import numpy as np
    from ase.data import covalent_radii

    radii = covalent_radii[system.numbers]
    distance = np.linalg.norm(system.positions[:, None] - system.positions[None], axis=-1)
    close = distance < BOND_FACTOR * (radii[:, None] + radii[None])
    return [(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(close, k=1)), strict=True)]


def depiction_2d(system: AtomicSystem, size: int = 220):
    """An RDKit 2D depiction ``(size, size, channels)`` array of a molecule's OpenBabel bond graph (heavy atoms,
    bond orders as perceived; not sanitised, so invalid molecules are drawn too), or None when no graph can be
    made."""
    import numpy as np
    from rdkit import Chem
    from rdkit.Chem import Draw, rdDepictor

    from adit_torch.evaluate.molecules import _quiet, pdb_block

    _quiet()
    try:
        mol = Chem.MolFromPDBBlock(pdb_block(system), sanitize=False, removeHs=False)
        if mol is None:
            return None
        mol.UpdatePropertyCache(strict=False)
        mol = Chem.RemoveHs(mol, sanitize=False)
        rdDepictor.Compute2DCoords(mol)
        return np.asarray(Draw.MolToImage(mol, size=(size, size)))
    except Exception:  # noqa: BLE001 - OpenBabel and RDKit fail in many ways on broken geometries
        return None


def _draw_molecule(ax, system: AtomicSystem, rotation: str) -> None:
    """Atoms as discs and bonds as lines, back to front, in the projection ``rotation`` (ASE's string)."""
    from ase.data import covalent_radii
    from ase.data.colors import jmol_colors
    from ase.utils import rotate
    from matplotlib.patches import Circle

    xyz = (system.positions - system.positions.mean(0)) @ rotate(rotation)
    radii = 0.35 * covalent_radii[system.numbers] + 0.1  # ball and stick: smaller than the crystals' spheres
    items = [(float(xyz[i, 2]), "atom", i) for i in range(len(xyz))]
    items += [(float(xyz[[i, j], 2].mean()) - 1e-3, "bond", (i, j)) for i, j in molecule_bonds(system)]
    for order, (_, what, index) in enumerate(sorted(items, key=lambda item: item[0])):
        if what == "bond":
            i, j = index
            ax.plot(xyz[[i, j], 0], xyz[[i, j], 1], color="0.35", lw=2.0, zorder=order, solid_capstyle="round")
        else:
            ax.add_patch(Circle(xyz[index, :2], radii[index], facecolor=jmol_colors[system.numbers[index]],
                                edgecolor="black", lw=0.6, zorder=order))
    pad = float(radii.max()) + 0.3
    ax.set_xlim(xyz[:, 0].min() - pad, xyz[:, 0].max() + pad)
    ax.set_ylim(xyz[:, 1].min() - pad, xyz[:, 1].max() + pad)
    ax.set_aspect("equal")


def render_gallery(systems: Sequence[AtomicSystem], out: str | Path, valid: Sequence[bool] | None = None,
                   columns: int = 4, rotation: str = "15x,-25y,0z", title: str | None = None,
                   panel_inches: float = 2.6, dpi: int = 110, depict_2d: bool = True) -> Path:
    """Draw ``systems`` on a grid and write the figure to ``out`` (png, svg or pdf) atomically.

    Args:
        systems: the structures, one panel each, in order (an entry that is not an
            :class:`AtomicSystem`, such as :class:`adit_torch.evaluate.inputs.Unreadable`, gets an
            empty panel with its reason).
        out: the figure file; its suffix picks the format (:data:`FORMATS`).
        valid: optional validity flags, one per system, shown in the titles.
        columns: panels per row.
        rotation: ASE rotation string of the projection (degrees about x, y, z).
        title: optional figure title.
        panel_inches: width and height of one panel (inches).
        dpi: resolution of a png.
        depict_2d: add the RDKit 2D depiction (:func:`depiction_2d`) to each molecule's panel.

    Returns:
        the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ase.data import covalent_radii
    from ase.visualize.plot import plot_atoms

    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ConfigError(f"{out}: the gallery is written as {', '.join(FORMATS)} (by the suffix), not {fmt!r}")
    if not systems:
        raise ConfigError("no structures to draw")
    if columns < 1:
        raise ConfigError(f"columns must be at least 1, got {columns}")
    if valid is not None and len(valid) != len(systems):
        raise ConfigError(f"{len(valid)} validity flags for {len(systems)} structures")
    columns = min(columns, len(systems))
    rows = math.ceil(len(systems) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(panel_inches * columns, panel_inches * rows + 0.4 * bool(title)),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, system in enumerate(systems):
        ax = axes.flat[i]
        if not isinstance(system, AtomicSystem):  # an entry `adit evaluate` could not read (Unreadable)
            ax.set_title(f"unreadable: {getattr(system, 'reason', system)}"[:48], fontsize=7)
            continue
        if system.is_periodic:
            atoms = system.to_ase()
            radii = [0.5 * covalent_radii[int(z)] + 0.15 for z in atoms.numbers]
            plot_atoms(atoms, ax, radii=radii, rotation=rotation, show_unit_cell=2)
        else:  # 3D ball and stick on the left, the 2D depiction on the right
            view = ax.inset_axes((0.0, 0.0, 0.62, 1.0)) if depict_2d else ax
            _draw_molecule(view, system, rotation)
            view.set_axis_off()
            if depict_2d:
                flat = ax.inset_axes((0.6, 0.15, 0.4, 0.7))
                flat.set_axis_off()
                image = depiction_2d(system)
                if image is not None:
                    flat.imshow(image)
                else:
                    flat.text(0.5, 0.5, "no bond graph", ha="center", va="center", fontsize=6)
        ax.set_axis_off()
        ax.set_title(panel_title(system, None if valid is None else bool(valid[i])), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()

    def write(tmp: Path) -> None:
        fig.savefig(tmp, format=fmt, dpi=dpi)

    try:
        return atomic_write(out, write)
    finally:
        plt.close(fig)
