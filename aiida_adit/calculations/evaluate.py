"""``adit.evaluate``: ``adit evaluate`` as a CalcJob; the evaluation JSON becomes Dicts.

The systems to evaluate come either as one extxyz file (``samples``, e.g. the
``samples`` output of ``adit.sample``: one node however many systems) or as a
namespace of StructureData (``structures``) that is written to ``input.extxyz``
in the order of its (sorted) labels. ``reference`` is optional: a file copied to
the run folder, or a name/path the ``adit evaluate`` command understands.
"""

from __future__ import annotations

from aiida import orm

from aiida_adit.calculations.base import AditCalculation
from aiida_adit.calculations.sample import KINDS, validate_kind

INPUT_NAME = "input.extxyz"
JSON_NAME = "evaluation.json"
#: ``parameters`` keys passed to ``adit evaluate`` as flags, with the type each takes (bool = switch).
PARAMETERS = {
    "workers": int,
    "oxidation_states": str,
    "check_cell_angles": bool,
    "posebusters_subset": int,
    "no_posebusters": bool,
    "seed": int,
    "quiet": bool,
}


def validate_parameters(value: orm.Dict, _) -> str | None:
    """Only known ``adit evaluate`` options, each with a value of the right type."""
    for key, item in value.get_dict().items():
        if key not in PARAMETERS:
            return f"`parameters.{key}` is not an `adit evaluate` option; known: {', '.join(sorted(PARAMETERS))}"
        expected = PARAMETERS[key]
        if expected is int and (isinstance(item, bool) or not isinstance(item, int) or item <= 0):
            return f"`parameters.{key}` is {item!r}; expected a positive integer"
        if not isinstance(item, expected):
            return f"`parameters.{key}` is {item!r}; expected a {expected.__name__}"
    return None


def parameter_flags(parameters: dict) -> list[str]:
    """``{"workers": 2, "no_posebusters": True}`` -> ``["--no-posebusters", "--workers", "2"]`` (sorted keys)."""
    flags: list[str] = []
    for key in sorted(parameters):
        flag = "--" + key.replace("_", "-")
        if isinstance(parameters[key], bool):
            flags += [flag] if parameters[key] else []
        else:
            flags += [flag, str(parameters[key])]
    return flags


def validate_inputs(inputs, ctx) -> str | None:
    """Exactly one of ``samples`` and ``structures`` must be given (unless a work chain provides them)."""
    if "samples" not in ctx or "structures" not in ctx:
        return None
    has_file = "samples" in inputs
    has_structures = bool(inputs.get("structures"))
    if has_file == has_structures:
        return "give the systems to evaluate either as `samples` (an extxyz file) or as `structures`, not both"
    return None


def write_extxyz(structures: dict[str, orm.StructureData], handle) -> list[str]:
    """Write ``structures`` (sorted by key) to an open text ``handle`` as extxyz; returns the keys in order.

    Periodicity is taken from each node's ``pbc``; a non-periodic node is written without a cell.
    """
    from ase.io import write

    keys = sorted(structures)
    frames = []
    for key in keys:
        atoms = structures[key].get_ase()
        if not any(atoms.pbc):
            atoms.set_cell(None)
        atoms.info["id"] = key
        frames.append(atoms)
    write(handle, frames, format="extxyz")
    return keys


class AditEvaluateCalculation(AditCalculation):
    """Score generated systems: validity, uniqueness, novelty (and PoseBusters for molecules)."""

    @classmethod
    def define(cls, spec):
        """Inputs, outputs and exit codes of an evaluation run."""
        super().define(spec)
        spec.input("samples", valid_type=orm.SinglefileData, required=False, help="An extxyz file of systems.")
        spec.input_namespace(
            "structures",
            valid_type=orm.StructureData,
            dynamic=True,
            required=False,
            help="Systems to evaluate, written in the order of their sorted labels.",
        )
        spec.input("kind", valid_type=orm.Str, validator=validate_kind, help=f"One of {', '.join(KINDS)}.")
        spec.input(
            "reference",
            valid_type=(orm.SinglefileData, orm.Str),
            required=False,
            help="Reference set for novelty: a file, or a name/path passed as is to `--reference`.",
        )
        spec.input(
            "parameters",
            valid_type=orm.Dict,
            required=False,
            validator=validate_parameters,
            help="Further `adit evaluate` options, e.g. {'workers': 1, 'no_posebusters': True}.",
        )
        spec.inputs.validator = validate_inputs
        spec.inputs["metadata"]["options"]["parser_name"].default = "adit.evaluate"

        spec.output("results", valid_type=orm.Dict, help="Fractions, counts, protocol and reference.")
        spec.output(
            "per_structure",
            valid_type=orm.Dict,
            help="`{'records': [...]}`: one record per system in input order (index, id, formula, valid, reasons).",
        )
        spec.default_output_node = "results"

    def prepare_for_submission(self, folder):
        """Write or copy the systems and build the ``adit evaluate`` command line."""
        local_copy_list = []
        if "samples" in self.inputs:
            samples = self.inputs.samples
            local_copy_list.append((samples.uuid, samples.filename, INPUT_NAME))
        else:
            with folder.open(INPUT_NAME, "w") as handle:
                write_extxyz(dict(self.inputs.structures), handle)
        cmdline = ["evaluate", INPUT_NAME, "--kind", self.inputs.kind.value, "--json", JSON_NAME]
        reference = self.inputs.get("reference")
        if isinstance(reference, orm.SinglefileData):
            local_copy_list.append((reference.uuid, reference.filename, reference.filename))
            cmdline += ["--reference", reference.filename]
        elif reference is not None:
            cmdline += ["--reference", reference.value]
        if "parameters" in self.inputs:
            cmdline += parameter_flags(self.inputs.parameters.get_dict())
        return self.make_calc_info(cmdline, retrieve=[JSON_NAME], local_copy_list=local_copy_list)
