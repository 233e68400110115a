"""``adit.metastability``: crystals -> relaxation -> energies above hull -> stability rates.

Relaxation runs either

* the MLIP CalcJob ``adit.relax`` on the whole batch (default; inputs in the
  ``relax`` namespace), or
* any relaxation work chain that follows the aiida-common-workflows relax
  interface (``engine``: an entry point such as
  ``common_workflows.relax.quantum_espresso``, or ``module:Class``), one per
  structure: the work chain calls ``get_input_generator().get_builder(
  structure=..., **engine_inputs)`` and reads the common outputs
  ``relaxed_structure`` and ``total_energy`` (eV). So the same chain drives QE
  or VASP on a cluster; their energies must then be compared with a hull of
  the same kind (DFT entries given as ``hull``).

Each energy above hull is a :func:`~aiida_adit.workflows.functions.energy_above_hull`
calcfunction (relaxed structure + energy + hull node -> Float), copied into
the relaxed structure's extras (``e_above_hull``, ``stable``, ``metastable``)
for fast queries; the rates come from :func:`~aiida_adit.workflows.functions.stability_rates`.
"""

from __future__ import annotations

import importlib

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ToContext, WorkChain, if_

from aiida_adit.calculations.relax import AditRelaxCalculation
from aiida_adit.data.hull import ReferenceHullData
from aiida_adit.storage import ReturnLinksInBulk
from aiida_adit.workflows.functions import energy_above_hull, stability_rates


def load_engine(name: str):
    """The relax work chain class of ``name``: an ``aiida.workflows`` entry point or ``module:Class``."""
    if ":" in name and not name.startswith("common_workflows"):
        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)
    from aiida.plugins import WorkflowFactory

    return WorkflowFactory(name)


def validate_inputs(inputs, ctx) -> str | None:
    """Either the MLIP relaxation (``relax.code``) or a common-workflows ``engine``, not both.

    When exposed in a parent work chain without ``structures`` (``adit.generate``), the
    structures are checked where the parent fills them in.
    """
    has_code = "code" in (inputs.get("relax") or {})
    has_engine = "engine" in inputs
    if has_code == has_engine:
        return "give either `relax.code` (the adit relax CalcJob) or `engine` (+ `engine_inputs`), exactly one"
    if has_engine and "engine_inputs" not in inputs:
        return "`engine` needs `engine_inputs` (keyword arguments of the engine's input generator)"
    if "structures" in ctx and not inputs.get("structures"):
        return "give at least one structure in `structures`"
    return None


class AditMetastabilityWorkChain(ReturnLinksInBulk, WorkChain):
    """Relax crystals, compute their energies above a reference hull, and the stability rates."""

    @classmethod
    def define(cls, spec):
        """Inputs, outline, outputs and exit codes."""
        super().define(spec)
        spec.input_namespace(
            "structures",
            valid_type=orm.StructureData,
            dynamic=True,
            help="Crystals to assess; outputs use the same keys.",
        )
        spec.expose_inputs(
            AditRelaxCalculation,
            namespace="relax",
            exclude=("structures",),
            namespace_options={
                "required": False,
                "populate_defaults": False,
                "help": "Inputs of the MLIP relaxation CalcJob (default route).",
            },
        )
        spec.input(
            "engine",
            valid_type=orm.Str,
            required=False,
            help="A common-workflows relax work chain: entry point or `module:Class`.",
        )
        spec.input(
            "engine_inputs",
            valid_type=orm.Dict,
            required=False,
            help="Keyword arguments of the engine's `get_builder` (engines, protocol, relax_type, ...).",
        )
        spec.input(
            "hull",
            valid_type=ReferenceHullData,
            required=False,
            help="Reference hull (default: the offline CHGNet/MP-20 hull shipped with adit_torch).",
        )
        spec.input(
            "evaluation",
            valid_type=orm.Dict,
            required=False,
            help="`per_structure` of adit.evaluate on the same structures, in sorted-key order, for S.U.N.",
        )
        spec.input(
            "stable_threshold",
            valid_type=orm.Float,
            default=lambda: orm.Float(0.0),
            help="Stable when E_hull <= this (eV/atom).",
        )
        spec.input(
            "metastable_threshold",
            valid_type=orm.Float,
            default=lambda: orm.Float(0.1),
            help="Metastable when E_hull < this (eV/atom).",
        )
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            if_(cls.use_engine)(cls.run_engine).else_(cls.run_mlip),
            cls.inspect_relax,
            cls.compute_hull,
            cls.compute_rates,
        )
        spec.output_namespace(
            "relaxed_structures",
            valid_type=orm.StructureData,
            dynamic=True,
            help="Relaxed crystals under their input keys.",
        )
        spec.output_namespace(
            "e_above_hull", valid_type=orm.Float, dynamic=True, help="Energy above hull (eV/atom) per structure key."
        )
        spec.output("rates", valid_type=orm.Dict, help="Stable / metastable / S.U.N. rates, counts, conventions.")
        spec.output("hull", valid_type=ReferenceHullData, help="The reference hull used.")
        spec.exit_code(401, "ERROR_RELAXATION_FAILED", message="The relaxation failed: {error}")
        spec.exit_code(402, "ERROR_NO_STRUCTURE_RELAXED", message="No structure came out of the relaxation.")

    def setup(self):
        """Resolve the hull and the sorted structure keys."""
        self.ctx.hull = self.inputs.hull if "hull" in self.inputs else ReferenceHullData.offline()
        self.ctx.structure_keys = sorted(self.inputs.structures)

    def use_engine(self):
        """Whether a common-workflows engine relaxes the structures."""
        return "engine" in self.inputs

    def run_mlip(self):
        """One ``adit.relax`` CalcJob for the whole batch."""
        inputs = AttributeDict(self.exposed_inputs(AditRelaxCalculation, "relax"))
        inputs.structures = dict(self.inputs.structures)
        inputs.metadata = AttributeDict(inputs.get("metadata", {}))
        inputs.metadata.call_link_label = "relax"
        return ToContext(relax=self.submit(AditRelaxCalculation, **inputs))

    def run_engine(self):
        """One common-workflows relax work chain per structure, built by its input generator."""
        engine = load_engine(self.inputs.engine.value)
        kwargs = self.inputs.engine_inputs.get_dict()
        calls = {}
        for key in self.ctx.structure_keys:
            builder = engine.get_input_generator().get_builder(structure=self.inputs.structures[key], **kwargs)
            builder.metadata.call_link_label = f"relax_{key}"
            calls[f"relax_{key}"] = self.submit(builder)
        return ToContext(**calls)

    def inspect_relax(self):
        """Collect ``(relaxed structure, energy)`` per key from whichever route ran."""
        self.ctx.relaxed, self.ctx.energies = {}, {}
        if not self.use_engine():
            node = self.ctx.relax
            if not node.is_finished_ok:
                return self.exit_codes.ERROR_RELAXATION_FAILED.format(
                    error=f"{node.process_label}<{node.pk}> exit status {node.exit_status}: {node.exit_message}"
                )
            self.ctx.relaxed = dict(node.outputs.relaxed_structures)
            self.ctx.energies = dict(node.outputs.energies)
            self.ctx.potential = node.outputs.results.get("potential", {}).get("name")
        else:
            self.ctx.potential = self.inputs.engine.value
            for key in self.ctx.structure_keys:
                node = self.ctx[f"relax_{key}"]
                if not node.is_finished_ok:
                    self.report(f"relaxation of `{key}` ({node.process_label}<{node.pk}>) failed: {node.exit_status}")
                    continue
                outputs = node.outputs
                structure = outputs.relaxed_structure if "relaxed_structure" in outputs else self.inputs.structures[key]
                self.ctx.relaxed[key] = structure
                self.ctx.energies[key] = outputs.total_energy
        if not self.ctx.relaxed:
            return self.exit_codes.ERROR_NO_STRUCTURE_RELAXED
        self.out("relaxed_structures", self.ctx.relaxed)
        return None

    def compute_hull(self):
        """One provenance-tracked energy above hull per relaxed structure, copied into its extras."""
        hull, values = self.ctx.hull, {}
        elements = set(hull.base.attributes.get("elements", []))
        for key in sorted(self.ctx.relaxed):
            structure = self.ctx.relaxed[key]
            missing = sorted(structure.get_symbols_set() - elements)
            if missing:
                self.report(f"`{key}`: element(s) {missing} not in hull {hull.name}; no energy above hull")
                continue
            result = energy_above_hull(
                structure, self.ctx.energies[key], hull, metadata={"call_link_label": f"e_above_hull_{key}"}
            )
            value = result["e_above_hull"]
            values[key] = value
            structure.base.extras.set_many(
                {
                    "e_above_hull": value.value,
                    "stable": value.value <= self.inputs.stable_threshold.value,
                    "metastable": value.value < self.inputs.metastable_threshold.value,
                    "hull": hull.name,
                }
            )
        self.ctx.e_hull = values
        self.out("e_above_hull", values)
        self.out("hull", hull)

    def compute_rates(self):
        """Rates over every input structure (failures count as neither stable nor metastable)."""
        settings = orm.Dict(
            {
                "keys": self.ctx.structure_keys,
                "potential": self.ctx.potential,
                "hull": self.ctx.hull.name,
                "stable_threshold": self.inputs.stable_threshold.value,
                "metastable_threshold": self.inputs.metastable_threshold.value,
            }
        )
        extra = {"evaluation": self.inputs.evaluation} if "evaluation" in self.inputs else {}
        rates = stability_rates(settings, **extra, **self.ctx.e_hull, metadata={"call_link_label": "rates"})
        self.out("rates", rates)
        self.report(
            f"stable {rates['counts']['stable']}/{len(self.ctx.structure_keys)}, "
            f"metastable {rates['counts']['metastable']}/{len(self.ctx.structure_keys)} against {self.ctx.hull.name}"
        )
