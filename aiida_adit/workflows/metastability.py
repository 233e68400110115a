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

At scale (thousands of crystals):

* relaxations go out in waves of at most ``max_concurrent`` processes, the MLIP
  route with at most ``relax_batch_size`` crystals per CalcJob;
* energies above hull are computed by one
  :func:`~aiida_adit.workflows.functions.energies_above_hull` calcfunction per
  ``hull_batch_size`` (default :data:`HULL_BATCH`) structures (relaxed structures + their energies + hull ->
  one Float per structure), not one process per structure, and copied into the
  extras (``e_above_hull``, ``stable``, ``metastable``, ``hull``) of both the
  relaxed structure and the structure it was relaxed from (the generated one,
  which :func:`aiida_adit.queries.generated_structures` filters), 100 nodes per
  database transaction;
* every step that launches processes first looks for the ones it already
  launched (same call link label): a daemon killed in the middle of a step reruns
  the step on restart, and that rerun reuses what is there instead of launching
  it twice. The extras writes are idempotent.

The rates come from :func:`~aiida_adit.workflows.functions.stability_rates`.
"""

from __future__ import annotations

import importlib

from aiida import orm
from aiida.common import AttributeDict
from aiida.common.links import LinkType
from aiida.engine import ProcessState, ToContext, WorkChain, while_

from aiida_adit.calculations.relax import AditRelaxCalculation
from aiida_adit.data.hull import ReferenceHullData
from aiida_adit.storage import ReturnLinksInBulk, chunks, set_extras
from aiida_adit.workflows.functions import energies_above_hull, stability_rates

#: Default structures per :func:`energies_above_hull` process (input ``hull_batch_size``).
#: aiida-core links a process's inputs and outputs in a time that grows with the square of
#: their number (about 7 s for 100 structures on SQLite here, 43 s for 400), so 100.
HULL_BATCH = 100


def called(node: orm.ProcessNode, label: str) -> list[orm.ProcessNode]:
    """The processes ``node`` already called with call link label ``label``, oldest first."""
    links = node.base.links.get_outgoing(
        link_type=(LinkType.CALL_CALC, LinkType.CALL_WORK), link_label_filter=label
    ).all()
    return sorted((link.node for link in links), key=lambda n: n.pk)


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
            "relax_batch_size",
            valid_type=orm.Int,
            default=lambda: orm.Int(250),
            validator=lambda value, _: None if value.value >= 1 else "`relax_batch_size` must be at least 1",
            help="MLIP route: at most this many crystals per adit.relax CalcJob.",
        )
        spec.input(
            "max_concurrent",
            valid_type=orm.Int,
            default=lambda: orm.Int(8),
            validator=lambda value, _: None if value.value >= 1 else "`max_concurrent` must be at least 1",
            help="Relaxation processes (adit.relax CalcJobs, or engine work chains) submitted per wave; "
            "the next wave goes out when this one has finished.",
        )
        spec.input(
            "hull_batch_size",
            valid_type=orm.Int,
            default=lambda: orm.Int(HULL_BATCH),
            validator=lambda value, _: None if value.value >= 1 else "`hull_batch_size` must be at least 1",
            help="Structures per energies_above_hull calcfunction (one process per batch, not per structure).",
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
            while_(cls.relaxations_left)(cls.submit_relaxations),
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
        """Resolve the hull, the sorted structure keys and the relaxation units (label -> keys)."""
        self.ctx.hull = self.inputs.hull if "hull" in self.inputs else ReferenceHullData.offline()
        self.ctx.structure_keys = sorted(self.inputs.structures)
        if self.use_engine():
            self.ctx.units = [(f"relax_{key}", [key]) for key in self.ctx.structure_keys]
        else:
            size = self.inputs.relax_batch_size.value
            batches = list(chunks(self.ctx.structure_keys, size))
            labels = ["relax"] if len(batches) == 1 else [f"relax_{i:04d}" for i in range(len(batches))]
            self.ctx.units = list(zip(labels, batches))
        self.ctx.next_unit = 0

    def use_engine(self):
        """Whether a common-workflows engine relaxes the structures."""
        return "engine" in self.inputs

    def relaxations_left(self):
        """Whether some relaxation unit has not been submitted yet."""
        return self.ctx.next_unit < len(self.ctx.units)

    def submit_relaxations(self):
        """Submit the next wave of at most ``max_concurrent`` relaxations, reusing any already submitted."""
        wave = self.ctx.units[self.ctx.next_unit : self.ctx.next_unit + self.inputs.max_concurrent.value]
        calls = {}
        for label, keys in wave:
            done = called(self.node, label)
            if done:  # this step ran before a daemon restart: the process exists and goes on by itself
                self.report(f"reusing {done[0].process_label}<{done[0].pk}> submitted before a restart as `{label}`")
                calls[label] = done[0]
            else:
                process, inputs = self._relax_inputs(label, keys)
                calls[label] = self.submit(process, **inputs)
        self.ctx.next_unit += len(wave)
        return ToContext(**calls)

    def _relax_inputs(self, label: str, keys: list[str]):
        """``(process, inputs)`` of one relaxation unit: an adit.relax CalcJob on ``keys``, or one engine work chain."""
        if self.use_engine():
            engine = load_engine(self.inputs.engine.value)
            kwargs = self.inputs.engine_inputs.get_dict()
            builder = engine.get_input_generator().get_builder(structure=self.inputs.structures[keys[0]], **kwargs)
            builder.metadata.call_link_label = label
            return builder, {}
        inputs = AttributeDict(self.exposed_inputs(AditRelaxCalculation, "relax"))
        inputs.structures = {key: self.inputs.structures[key] for key in keys}
        inputs.metadata = AttributeDict(inputs.get("metadata", {}))
        inputs.metadata.call_link_label = label
        return AditRelaxCalculation, inputs

    def inspect_relax(self):
        """Collect ``(relaxed structure, energy)`` per key from every relaxation unit."""
        self.ctx.relaxed, self.ctx.energies, self.ctx.relax_results = {}, {}, {}
        failures = []
        for label, keys in self.ctx.units:
            node = self.ctx[label]
            if not node.is_finished_ok:
                failures.append(f"{node.process_label}<{node.pk}> exit status {node.exit_status}: {node.exit_message}")
                self.report(f"relaxation `{label}` of {len(keys)} structure(s) failed: {failures[-1]}")
                continue
            outputs = node.outputs
            if self.use_engine():
                key = keys[0]
                self.ctx.relaxed[key] = (
                    outputs.relaxed_structure if "relaxed_structure" in outputs else self.inputs.structures[key]
                )
                self.ctx.energies[key] = outputs.total_energy
            else:
                self.ctx.relaxed.update(dict(outputs.relaxed_structures))
                self.ctx.relax_results[label] = outputs.results
                self.ctx.potential = outputs.results.get("potential", {}).get("name")
        if self.use_engine():
            self.ctx.potential = self.inputs.engine.value
        elif failures and len(failures) == len(self.ctx.units):
            return self.exit_codes.ERROR_RELAXATION_FAILED.format(error="; ".join(failures[:3]))
        if not self.ctx.relaxed:
            return self.exit_codes.ERROR_NO_STRUCTURE_RELAXED
        self.out("relaxed_structures", self.ctx.relaxed)
        return None

    def compute_hull(self):
        """Energies above hull, ``hull_batch_size`` structures per calcfunction, copied into extras.

        Idempotent: a batch whose calcfunction (same call link label) already finished
        is read back, not computed again; one that was cut off by a dead daemon is
        marked killed and computed again.
        """
        hull, values = self.ctx.hull, {}
        rates_inputs = {}  # per batch its summary Dict (older runs' batches have none: their Floats)
        elements = set(hull.base.attributes.get("elements", []))
        keys = []
        for key in sorted(self.ctx.relaxed):
            missing = sorted(self.ctx.relaxed[key].get_symbols_set() - elements)
            if missing:
                self.report(f"`{key}`: element(s) {missing} not in hull {hull.name}; no energy above hull")
            else:
                keys.append(key)
        for index, batch in enumerate(chunks(keys, self.inputs.hull_batch_size.value)):
            label = f"e_above_hull_{index:04d}"
            before = called(self.node, label)
            for stale in (n for n in before if not n.is_terminated):
                # it ran in this work chain's process, which died: mark it, so the graph has no live orphan
                stale.set_process_state(ProcessState.KILLED)
                stale.set_process_status(f"killed: the daemon stopped during {label}; the batch was computed again")
                stale.seal()
                self.report(f"{label}: {stale.process_label}<{stale.pk}> died with the daemon; marked killed")
            done = [n for n in before if n.is_finished_ok]
            if done:
                outputs = done[0].outputs.e_above_hull
                self.report(f"reusing {label} ({done[0].process_label}<{done[0].pk}>) from before a restart")
                values.update({key: outputs[key] for key in batch})
                if "summary" in done[0].outputs:
                    rates_inputs[f"batch_{index:04d}"] = done[0].outputs.summary
                else:
                    rates_inputs.update({key: outputs[key] for key in batch})
                continue
            inputs = {"structures": {key: self.ctx.relaxed[key] for key in batch}}
            if self.use_engine():
                inputs["energies"] = {key: self.ctx.energies[key] for key in batch}
            else:
                inputs["relax_results"] = {
                    label: results
                    for label, unit_keys in self.ctx.units
                    if (results := self.ctx.relax_results.get(label)) is not None and set(unit_keys) & set(batch)
                }
            result = energies_above_hull(hull, **inputs, metadata={"call_link_label": label})
            values.update(result["e_above_hull"])
            rates_inputs[f"batch_{index:04d}"] = result["summary"]
        self._write_extras(values)
        self.ctx.rates_inputs = rates_inputs
        self.out("e_above_hull", values)
        self.out("hull", hull)

    def _write_extras(self, values: dict) -> None:
        """Copy each energy above hull into the relaxed structure's and the input structure's extras."""
        stable, metastable = self.inputs.stable_threshold.value, self.inputs.metastable_threshold.value
        pairs = []
        for key, value in values.items():
            extras = {
                "e_above_hull": value.value,
                "stable": value.value <= stable,
                "metastable": value.value < metastable,
                "hull": self.ctx.hull.name,
            }
            relaxed = self.ctx.relaxed[key]
            pairs.append((relaxed, extras))
            if self.inputs.structures[key].uuid != relaxed.uuid:
                pairs.append((self.inputs.structures[key], {**extras, "relaxed_structure": relaxed.uuid}))
        set_extras(pairs)

    def compute_rates(self):
        """Rates over every input structure (failures count as neither stable nor metastable)."""
        done = [n for n in called(self.node, "rates") if n.is_finished_ok]
        if done:
            self.out("rates", done[0].outputs.result)
            return
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
        rates = stability_rates(settings, **extra, **self.ctx.rates_inputs, metadata={"call_link_label": "rates"})
        self.out("rates", rates)
        self.report(
            f"stable {rates['counts']['stable']}/{len(self.ctx.structure_keys)}, "
            f"metastable {rates['counts']['metastable']}/{len(self.ctx.structure_keys)} against {self.ctx.hull.name}"
        )
