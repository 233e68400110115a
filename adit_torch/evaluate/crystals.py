"""Crystal evaluation: validity, uniqueness, novelty and distributions (MP-20 conventions).

Conventions (CDVAE, FlowMM, ADiT; see ``docs/evaluation.md``):

* **failed decodes**: the reference counts a *decoded* cell with a lattice
  angle outside (50°, 130°), a non-positive or NaN length or atom types out of
  range as a failed decode, invalid both structurally and compositionally.
  That is a rule of the model's read-out, applied where the sample is made
  (:func:`adit_torch.vae.decode_failure`), which records it in the sample's
  ``info["decode_failed"]``; the evaluator counts such samples invalid.
* **every other input is scored independently of its cell setting**: the
  checks run on the Niggli-reduced cell (:meth:`AtomicSystem.canonical`), so
  any unimodular change of basis, wrapping, atom order, rotation or translation
  gives the same record. ``cell_angle_check=True`` (``--check-cell-angles``)
  applies the (50°, 130°) rule to the cell *as given* as well, on request.
* **structural validity**: every pairwise distance between distinct atoms,
  minimum image over periodic copies, >= 0.5 Å and cell volume >= 0.1 Å^3.
* **compositional validity**: :mod:`adit_torch.evaluate.smact_validity`.
* **valid** = both; **uniqueness** = groups among valid / valid; **novelty** =
  novel groups / groups (:mod:`adit_torch.evaluate.matching`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adit_torch.evaluate.inputs import Unreadable, as_systems, degeneracy
from adit_torch.evaluate.matching import MATCHER_SETTINGS, ReferenceIndex, unique_and_novel
from adit_torch.evaluate.smact_validity import composition_validity
from adit_torch.system import AtomicSystem

#: Closest allowed distance between two atoms (Å) and smallest allowed cell volume (Å^3).
MIN_DISTANCE, MIN_VOLUME = 0.5, 0.1
#: Open interval of lattice angles (degrees) the reference pipeline accepts.
ANGLE_RANGE = (50.0, 130.0)


def check_crystal(system: AtomicSystem | Unreadable, oxidation_states: str = "smact14",
                  cell_angle_check: bool = False, missing_electronegativity: str = "pass") -> dict[str, Any]:
    """Validity checks of one crystal, on its Niggli-reduced cell.

    Args:
        system: the crystal (or an unreadable entry).
        oxidation_states: ``"smact14"`` or ``"icsd24"``.
        missing_electronegativity: ``"pass"`` (CDVAE) or ``"fail"`` (SMACT 2.6, the ADiT reference's
            pin), see :mod:`adit_torch.evaluate.smact_validity`.
        cell_angle_check: also count the crystal invalid when a lattice angle of the cell *as
            given* lies outside (50°, 130°) (off by default: validity does not depend on the cell).

    Returns:
        a record with ``formula``, ``num_atoms``, ``structurally_valid``,
        ``compositionally_valid``, ``valid``, ``failed_decode`` (the read-out's
        reason, or None), ``cell_angles_in_range`` (only with ``cell_angle_check``,
        else None), ``min_distance`` (Å), ``volume`` (Å^3), ``density`` (g/cm^3),
        ``num_elements``, ``spacegroup`` (``None`` here; filled in by
        :func:`evaluate_crystals` for valid crystals when distributions are
        computed) and ``reasons`` (list of str, empty when valid).
    """
    record: dict[str, Any] = {
        "id": system.info.get("id"), "formula": None, "num_atoms": 0, "valid": False,
        "structurally_valid": False, "compositionally_valid": False, "failed_decode": None,
        "cell_angles_in_range": None, "min_distance": None, "volume": None, "density": None, "num_elements": 0,
        "spacegroup": None, "reasons": [],
    }
    if isinstance(system, Unreadable):
        record["reasons"].append(f"unreadable: {system.reason}")
        return record
    record["formula"] = system.formula
    record["num_atoms"] = system.num_atoms
    record["num_elements"] = int(len(np.unique(system.numbers)))
    failed = system.info.get("decode_failed")
    if failed:
        record["failed_decode"] = str(failed)
        record["reasons"].append(f"failed decode: {failed}")
        return record
    if system.lattice is None:
        record["reasons"].append("not a crystal (no lattice)")
        return record
    problem = degeneracy(system)
    if problem:
        record["reasons"].append(problem)
        return record

    gate = True
    if cell_angle_check:
        angles = system.angles
        gate = record["cell_angles_in_range"] = bool(np.all((angles > ANGLE_RANGE[0]) & (angles < ANGLE_RANGE[1])))
        if not gate:
            record["reasons"].append(
                f"lattice angle(s) of the cell as given outside ({ANGLE_RANGE[0]:g}°, {ANGLE_RANGE[1]:g}°): "
                + ", ".join(f"{a:.1f}" for a in angles)
            )
    try:
        system = system.canonical()  # from here on nothing depends on the cell setting
    except Exception as exc:  # noqa: BLE001 - pymatgen's Niggli reduction raises several kinds on flat cells
        record["reasons"].append(f"the cell cannot be Niggli-reduced ({type(exc).__name__}: {exc})")
        return record

    comp_ok, comp_reason = composition_validity(system.numbers, oxidation_states, missing_electronegativity)
    record["compositionally_valid"] = bool(comp_ok and gate)
    if not comp_ok:
        record["reasons"].append(f"composition: {comp_reason}")

    volume = system.volume
    record["volume"] = volume
    structure = system.to_pymatgen()
    record["density"] = density(system)
    dmin = math.inf
    if system.num_atoms > 1:
        dist = structure.distance_matrix
        np.fill_diagonal(dist, np.inf)
        dmin = float(dist.min())
    record["min_distance"] = None if math.isinf(dmin) else dmin
    struct_ok = True
    if dmin < MIN_DISTANCE:
        struct_ok = False
        record["reasons"].append(f"overlapping atoms: closest pair {dmin:.3f} Å < {MIN_DISTANCE} Å")
    if volume < MIN_VOLUME:
        struct_ok = False
        record["reasons"].append(f"cell volume {volume:.3g} Å^3 < {MIN_VOLUME} Å^3")
    record["structurally_valid"] = bool(struct_ok and gate)
    record["valid"] = record["structurally_valid"] and record["compositionally_valid"]
    return record


def density(system: AtomicSystem) -> float:
    """Mass density in g/cm^3 (atomic masses from ASE, cell volume in Å^3)."""
    from ase.data import atomic_masses

    return float(atomic_masses[system.numbers].sum() * 1.66053906660 / system.volume)


def spacegroup_number(system: AtomicSystem, symprec: float = 0.1) -> int | None:
    """International space-group number (1-230) from spglib at ``symprec`` (Å), ``None`` when spglib
    finds none or refuses the cell. spglib's own notices (warnings, and its C library's lines on
    stderr) are silenced: a generated cell's failed symmetry search is a ``None``, not a message."""
    import spglib

    from adit_torch.symmetry import quiet_spglib

    cell = (system.lattice, np.mod(system.frac_coords, 1.0), system.numbers)
    data = quiet_spglib(spglib.get_symmetry_dataset, cell, symprec=symprec)
    return None if data is None else int(data.number)


def _spacegroup_task(system: AtomicSystem) -> int | None:
    return spacegroup_number(system)


def _check_task(args):
    system, oxidation_states, cell_angle_check, missing = args
    return check_crystal(system, oxidation_states, cell_angle_check, missing)


def _pool_map(func, tasks, workers, progress, desc) -> list:
    """``[func(t) for t in tasks]``, in a process pool when there is enough work; tqdm bar when ``progress``."""
    from tqdm.auto import tqdm

    if workers <= 1 or len(tasks) < 256:
        return [func(t) for t in tqdm(tasks, desc=desc, disable=not progress, unit="crystal")]
    import multiprocessing as mp

    with mp.get_context("fork").Pool(workers) as pool:
        it = pool.imap(func, tasks, chunksize=64)
        return list(tqdm(it, total=len(tasks), desc=desc, disable=not progress, unit="crystal"))


#: The partial MP-20 training split (9,421 crystals) that the shipped models were trained on, packaged
#: so that novelty works on a fresh install with no MP-20 copy (built by scripts/build_novelty_reference.py).
PACKAGED_REFERENCE = Path(__file__).resolve().parents[1] / "resources" / "mp20_partial_train.csv.gz"


def default_crystal_reference() -> tuple[list[AtomicSystem], str]:
    """The MP-20 training split as the novelty reference, and its name.

    Where no MP-20 copy is found (``$ADIT_MP20_DIR`` or the workplace copy), the packaged
    partial training split (:data:`PACKAGED_REFERENCE`, what the shipped models saw) is used
    and named as such in the report, with a warning on stderr.
    """
    from adit_torch.datasets import load_dataset
    from adit_torch.datasets.mp20 import default_mp20_dir
    from adit_torch.errors import DataFormatError
    from adit_torch.io import read_systems

    try:
        default_mp20_dir()
    except DataFormatError as exc:
        if not PACKAGED_REFERENCE.is_file():
            raise
        print(f"adit evaluate: {exc}; novelty is measured against the packaged partial MP-20 training split "
              f"({PACKAGED_REFERENCE.name}), the crystals the shipped models were trained on", file=sys.stderr)
        return list(read_systems(PACKAGED_REFERENCE)), "mp20-partial:train (packaged)"
    return list(load_dataset("mp20", "train")), "mp20:train"


def evaluate_crystals(
    systems: Sequence[Any],
    reference: Sequence[Any] | ReferenceIndex | bool | None = None,
    *,
    reference_name: str | None = None,
    oxidation_states: str = "smact14",
    cell_angle_check: bool = False,
    missing_electronegativity: str = "pass",
    with_distributions: bool = True,
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate generated crystals; every input is scored, in input order.

    Args:
        systems: ``AtomicSystem``, ASE ``Atoms`` or pymatgen ``Structure`` objects (length M).
        reference: reference crystals for novelty and distributions: a sequence,
            a prebuilt :class:`ReferenceIndex`, ``None`` for the MP-20 training
            split, or ``False`` to skip novelty and distributions.
        reference_name: how to name the reference in the report.
        oxidation_states: ``"smact14"`` (published convention) or ``"icsd24"``.
        missing_electronegativity: a composition with an element that has no Pauling
            electronegativity: ``"pass"`` (CDVAE's convention, default) or ``"fail"`` (SMACT 2.6,
            which the ADiT reference pins; with it our compositional validity equals the reference
            evaluator's, see ``benchmarks/results/reference_evaluator.md``).
        cell_angle_check: also count crystals whose cell *as given* has a lattice angle outside
            (50°, 130°) invalid. Off by default: samples whose read-out failed (the reference's rule)
            carry ``info["decode_failed"]`` and are invalid anyway; other inputs are scored on
            their reduced cell, whatever cell they come in.
        with_distributions: compare density, element, atom-count and space-group
            (spglib, symprec 0.1) distributions of the valid crystals with the reference.
        workers: processes for matching and checks (default: all cores).
        progress: show tqdm bars.

    Returns:
        the evaluation report (see :func:`adit_torch.evaluate.report.crystal_report`).
    """
    import os

    from adit_torch.evaluate.distributions import crystal_distributions
    from adit_torch.evaluate.report import crystal_report

    workers = workers or os.cpu_count() or 1
    items = as_systems(systems)
    tasks = [(s, oxidation_states, cell_angle_check, missing_electronegativity) for s in items]
    records = _pool_map(_check_task, tasks, workers, progress,
                        "validity")
    valid_idx = [i for i, r in enumerate(records) if r["valid"]]

    index: ReferenceIndex | None = None
    ref_systems: list[AtomicSystem] = []
    if isinstance(reference, ReferenceIndex):
        index = reference
        ref_systems = reference.systems
    elif reference is not False:
        if reference is None:
            ref_systems, default_name = default_crystal_reference()
            reference_name = reference_name or default_name
        else:
            ref_systems = [s for s in as_systems(reference) if isinstance(s, AtomicSystem) and s.is_periodic]
        index = ReferenceIndex(ref_systems, reference_name or "user reference")

    group, novel = unique_and_novel([items[i] for i in valid_idx], index, workers, progress)
    seen: set[int] = set()
    for rank, i in enumerate(valid_idx):
        g = int(group[rank])
        records[i]["unique_group"] = g
        records[i]["novel"] = novel[g]
        records[i]["first_of_group"] = g not in seen
        seen.add(g)
    distributions = None
    if with_distributions and index is not None and ref_systems:
        groups = _pool_map(_spacegroup_task, [items[i] for i in valid_idx], workers, progress, "space groups")
        for i, number in zip(valid_idx, groups):
            records[i]["spacegroup"] = number
        distributions = crystal_distributions([items[i] for i in valid_idx], [records[i] for i in valid_idx],
                                              ref_systems)
    protocol = {
        "structural_validity": f"all distinct-atom distances (minimum image) >= {MIN_DISTANCE} Å "
                               f"and cell volume >= {MIN_VOLUME} Å^3",
        "min_distance_angstrom": MIN_DISTANCE,
        "min_volume_angstrom3": MIN_VOLUME,
        "cell": "checks run on the Niggli-reduced cell: invariant to the cell setting, wrapping, atom order "
                "and rigid motions",
        "failed_decodes": "samples the read-out flagged (info decode_failed: a decoded lattice angle outside "
                          f"({ANGLE_RANGE[0]:g}°, {ANGLE_RANGE[1]:g}°), a non-positive or non-finite length) "
                          "count invalid structurally and compositionally, as in the ADiT/FlowMM pipeline",
        "lattice_angle_range_deg": list(ANGLE_RANGE),
        "cell_angle_check": bool(cell_angle_check),
        "compositional_validity": "CDVAE smact_validity (gcd-reduced; single element valid; all-metal valid; "
                                  "else charge neutral + Pauling test, missing electronegativity = pass)",
        "oxidation_states": oxidation_states,
        "missing_electronegativity": missing_electronegativity,
        "matcher": {"class": "pymatgen StructureMatcher", **MATCHER_SETTINGS},
        "uniqueness": "groups among valid / valid (greedy grouping in input order)",
        "novelty": "novel groups / groups; a group is novel when its first member matches no reference crystal",
        "spacegroup_symprec": 0.1,
    }
    return crystal_report(records, novel, protocol,
                          None if index is None else {"name": index.name, "size": index.size}, distributions)
