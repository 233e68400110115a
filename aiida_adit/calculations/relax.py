"""``adit.relax``: ``adit relax`` on a batch of crystals as one CalcJob.

The crystals come as a namespace of StructureData (``structures.<key>``) and
are written to ``input.extxyz`` in the order of their sorted keys, each frame
with ``id`` = its key. The parser returns, for every structure that was kept,
``relaxed_structures.<key>`` and ``energies.<key>`` under the *same key* as its
input, plus ``results`` (a Dict with one record per input: status,
convergence, steps, reason). A CalcJob links every input to every output, so
the one-to-one mapping is carried by the key and by the relaxed structure's
extra ``relaxed_from`` (the uuid of its input StructureData).
"""

from __future__ import annotations

from aiida import orm

from aiida_adit.calculations.base import AditCalculation
from aiida_adit.calculations.evaluate import write_extxyz

INPUT_NAME = "input.extxyz"
OUTPUT_NAME = "relaxed.extxyz"
JSON_NAME = "relax.json"

#: Parameters accepted in ``parameters`` and their ``adit relax`` flags.
PARAMETERS = {
    "fmax": "--fmax",
    "steps": "--steps",
    "optimizer": "--optimizer",
    "potential": "--potential",
    "device": "--device",
    "max_atoms": "--max-atoms",
    "max_volume_ratio": "--max-volume-ratio",
    "fixed_cell": "--fixed-cell",
}


def validate_parameters(value: orm.Dict, _) -> str | None:
    """Only known keys; ``fmax`` > 0 and ``steps`` >= 0 when given."""
    if value is None:
        return None
    params = value.get_dict()
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        return f"`parameters`: unknown key(s) {unknown}; known: {sorted(PARAMETERS)}"
    if "fmax" in params and not float(params["fmax"]) > 0:
        return f"`parameters.fmax` must be > 0, got {params['fmax']}"
    if "steps" in params and int(params["steps"]) < 0:
        return f"`parameters.steps` must be >= 0, got {params['steps']}"
    return None


def validate_structures(value, _) -> str | None:
    """At least one structure, each periodic in all three directions."""
    if not value:
        return "give at least one structure in `structures`"
    for key, node in value.items():
        if not all(node.pbc):
            return f"`structures.{key}` is not periodic in all directions; only crystals can be relaxed"
    return None


def command_line(parameters: dict) -> list[str]:
    """``adit relax`` arguments for ``parameters`` (see :data:`PARAMETERS`)."""
    cmd = ["relax", INPUT_NAME, "--out", OUTPUT_NAME, "--json", JSON_NAME, "--quiet"]
    for key, flag in PARAMETERS.items():
        if key not in parameters:
            continue
        if key == "fixed_cell":
            if parameters[key]:
                cmd.append(flag)
        else:
            cmd += [flag, str(parameters[key])]
    return cmd


class AditRelaxCalculation(AditCalculation):
    """Relax crystals (positions and cell) with a machine-learned potential (CHGNet by default)."""

    @classmethod
    def define(cls, spec):
        """Inputs, outputs and exit codes of a relaxation run."""
        super().define(spec)
        spec.input_namespace(
            "structures",
            valid_type=orm.StructureData,
            dynamic=True,
            validator=validate_structures,
            help="Crystals to relax; outputs use the same keys.",
        )
        spec.input(
            "parameters",
            valid_type=orm.Dict,
            required=False,
            validator=validate_parameters,
            help="fmax (eV/Å), steps, optimizer (FIRE|BFGS|LBFGS), potential, device, max_atoms, "
            "max_volume_ratio, fixed_cell.",
        )
        spec.inputs["metadata"]["options"]["parser_name"].default = "adit.relax"
        spec.output_namespace(
            "relaxed_structures",
            valid_type=orm.StructureData,
            dynamic=True,
            help="Relaxed crystals, under the key of their input (converged or flagged).",
        )
        spec.output_namespace(
            "energies",
            valid_type=orm.Float,
            dynamic=True,
            help="Final total energies (eV) of the relaxed crystals, same keys.",
        )
        spec.output(
            "results",
            valid_type=orm.Dict,
            help="`structures`: {key: record} for every input (status, converged, steps, energy, reason); "
            "`counts`, `potential`, `settings`.",
        )
        spec.default_output_node = "results"
        spec.exit_code(
            420, "ERROR_NO_STRUCTURE_RELAXED", invalidates_cache=True, message="No structure could be relaxed: {error}"
        )

    def prepare_for_submission(self, folder):
        """Write the crystals in sorted-key order and build the ``adit relax`` command line."""
        with folder.open(INPUT_NAME, "w") as handle:
            write_extxyz(dict(self.inputs.structures), handle)
        params = self.inputs.parameters.get_dict() if "parameters" in self.inputs else {}
        return self.make_calc_info(command_line(params), retrieve=[OUTPUT_NAME, JSON_NAME])
