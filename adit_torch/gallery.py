"""A picture of generated structures: one panel per crystal or molecule, on a grid.

Each panel draws the atoms (jmol colours, radii scaled from the covalent radii) in a fixed
projection with ``ase.visualize.plot.plot_atoms``, the unit cell for crystals, and a title:
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


def render_gallery(systems: Sequence[AtomicSystem], out: str | Path, valid: Sequence[bool] | None = None,
                   columns: int = 4, rotation: str = "15x,-25y,0z", title: str | None = None,
                   panel_inches: float = 2.6, dpi: int = 110) -> Path:
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
        atoms = system.to_ase()
        radii = [0.5 * covalent_radii[int(z)] + 0.15 for z in atoms.numbers]
        plot_atoms(atoms, ax, radii=radii, rotation=rotation, show_unit_cell=2 if system.is_periodic else 0)
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
