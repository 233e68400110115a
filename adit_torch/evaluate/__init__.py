"""Evaluation of generated crystals and molecules with the published conventions.

Python API: :func:`evaluate_crystals` and :func:`evaluate_molecules` take
``AtomicSystem``, ASE ``Atoms`` or pymatgen objects and return a report dict
(see :mod:`adit_torch.evaluate.report`); ``adit evaluate`` wraps them.
"""

from adit_torch.evaluate.crystals import check_crystal, evaluate_crystals
from adit_torch.evaluate.inputs import Unreadable, read_for_evaluation
from adit_torch.evaluate.molecules import check_molecule, evaluate_molecules
from adit_torch.evaluate.report import format_table, wilson_interval, write_json
from adit_torch.evaluate.smact_validity import composition_validity, smact_validity

__all__ = [
    "Unreadable",
    "check_crystal",
    "check_molecule",
    "composition_validity",
    "evaluate_crystals",
    "evaluate_molecules",
    "format_table",
    "read_for_evaluation",
    "smact_validity",
    "wilson_interval",
    "write_json",
]
