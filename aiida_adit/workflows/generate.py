"""``adit.generate``: (train VAE -> train DiT ->) sample -> evaluate -> a Group of structures.

Training is optional: give a DiT ``checkpoint`` to sample it directly, a
``vae_checkpoint`` to train only the DiT, or neither to train both stages.
Every generated StructureData carries the extras ``kind`` (``crystal``/``molecule``)
and ``elements`` (sorted symbols; set by the sample parser) and, after evaluation, ``valid`` (bool) and
``formula`` (str) copied from the evaluation records (for molecules ``valid`` means strictly valid and
in one piece; the ADiT route's flag is ``valid_adit``, its fragment count ``fragments``), and all of
them are put in one Group (``group_label``, default ``adit/generate/<pk>``) whose label is also the
extra ``group_label`` of the work chain node.

Crystals can go on into ``adit.metastability`` (relaxation -> energy above hull ->
stable / metastable / S.U.N. rates): fill the ``metastability`` namespace (``relax.code``
for the MLIP CalcJob, or ``engine`` + ``engine_inputs`` for a common-workflows relax
work chain). Its relaxed structures, energies above hull and rates become outputs of
this work chain too, and each energy above hull is copied into the extras of the
relaxed structure (see docs/stability.md).
"""

from __future__ import annotations

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ToContext, WorkChain, if_

from aiida_adit.calculations.base import validate_checkpoint_kind
from aiida_adit.calculations.evaluate import AditEvaluateCalculation
from aiida_adit.data.checkpoint import CheckpointData
from aiida_adit.parsers.sample import output_label, structure_extras
from aiida_adit.storage import ReturnLinksInBulk, set_extras
from aiida_adit.workflows.metastability import AditMetastabilityWorkChain
from aiida_adit.workflows.protocols import ProtocolMixin
from aiida_adit.workflows.sample import AditSampleWorkChain
from aiida_adit.workflows.train import AditTrainWorkChain

#: Extras copied from each evaluation record onto its structure.
EXTRA_KEYS = ("valid", "formula")
#: Molecules: the extra ``valid`` is the strict route with one fragment (the record's ``valid_connected``);
#: the ADiT route, which counts a molecule in fragments as valid, is kept as ``valid_adit`` beside ``fragments``.
MOLECULE_EXTRAS = {"valid": "valid_connected", "valid_adit": "valid", "fragments": "fragments", "formula": "formula"}


#: The steps of adit.generate, as named in the protocols and in ``codes`` / ``STEP.options``.
STEPS = ("train_vae", "train_dit", "sample", "evaluate", "metastability")


def record_extras(record: dict) -> dict:
    """The extras of one evaluated structure from its evaluation record (see :data:`MOLECULE_EXTRAS`)."""
    if record.get("kind") == "molecule":
        return {extra: record.get(key) for extra, key in MOLECULE_EXTRAS.items()}
    return {key: record.get(key) for key in EXTRA_KEYS}


def _given(inputs, namespace: str, inner: str) -> bool:
    """Whether the exposed namespace ``namespace`` holds a ``code`` for its ``inner`` CalcJob namespace."""
    return "code" in (inputs.get(namespace, {}) or {}).get(inner, {})


def validate_inputs(inputs, _) -> str | None:
    """One route to a DiT: a checkpoint, or training inputs; the right checkpoint kinds; relax crystals only."""
    metastability = inputs.get("metastability") or {}
    if "engine" in metastability or "code" in (metastability.get("relax") or {}):
        kind = ((inputs.get("sample") or {}).get("sample") or {}).get("kind")
        if kind is not None and kind.value != "crystal":
            return f"`metastability` relaxes crystals, but `sample.sample.kind` is `{kind.value}`"
    checkpoint, vae = inputs.get("checkpoint"), inputs.get("vae_checkpoint")
    train_vae, train_dit = _given(inputs, "train_vae", "train"), _given(inputs, "train_dit", "train")
    if checkpoint is not None:
        if train_vae or train_dit or vae is not None:
            return "`checkpoint` (a DiT) was given: do not give `train_vae`, `train_dit` or `vae_checkpoint` too"
        return validate_checkpoint_kind(checkpoint, ("dit",), "checkpoint")
    if not train_dit:
        return "give a DiT `checkpoint` to sample, or `train_dit` inputs (and `train_vae` or `vae_checkpoint`)"
    if vae is not None:
        if train_vae:
            return "give either `vae_checkpoint` or `train_vae`, not both"
        return validate_checkpoint_kind(vae, ("vae",), "vae_checkpoint")
    if not train_vae:
        return "`train_dit` needs a VAE: give `train_vae` inputs or a `vae_checkpoint`"
    return None


def _check_pretrained_conditions(pretrained: str | None, conditions: dict) -> None:
    """ValueError when ``conditions`` do not parse, or ask for one the ``pretrained`` model was not trained with."""
    from adit_torch.conditions import parse_conditions
    from adit_torch.errors import ConfigError
    from adit_torch.pretrained import get_model
    from aiida_adit.calculations.sample import condition_flags

    try:
        asked = parse_conditions(*condition_flags(conditions)).keys()
    except ConfigError as exc:
        raise ValueError(f"sample.conditions: {exc}") from None
    if pretrained is None:
        return  # a trained or given checkpoint: the sample command checks it against the model
    supported = get_model(pretrained).conditions
    missing = [key for key in asked if key not in supported]
    if missing:
        raise ValueError(f"sample.conditions: the pretrained model {pretrained!r} was not trained with "
                         f"{', '.join(missing)}; it supports {', '.join(supported) or 'no condition'} "
                         "(adit-xs-joint-cond has every condition: `adit models`)")


class AditGenerateWorkChain(ReturnLinksInBulk, ProtocolMixin, WorkChain):
    """Train (optionally), sample, evaluate and group generated crystals or molecules."""

    _protocol_file = "generate"

    @classmethod
    def define(cls, spec):
        """Inputs, outline, outputs and exit codes of the generation pipeline."""
        super().define(spec)

        def optional(**extra):
            # a fresh dict for every namespace: `expose_inputs` consumes the options it is given
            return {"required": False, "populate_defaults": False, **extra}

        parents = ("train.parent_checkpoint", "train.parent_folder")
        for stage in ("train_vae", "train_dit"):
            spec.expose_inputs(
                AditTrainWorkChain,
                namespace=stage,
                exclude=parents,
                namespace_options=optional(help=f"Inputs of the {stage[6:].upper()} training; leave out to skip it."),
            )
        spec.expose_inputs(AditSampleWorkChain, namespace="sample", exclude=("sample.checkpoint",))
        spec.expose_inputs(
            AditEvaluateCalculation,
            namespace="evaluate",
            exclude=("samples", "structures", "kind"),
            namespace_options=optional(help="Inputs of the evaluation; leave out to skip it."),
        )
        spec.input("checkpoint", valid_type=CheckpointData, required=False, help="A DiT checkpoint to sample.")
        spec.input("vae_checkpoint", valid_type=CheckpointData, required=False, help="A VAE to train the DiT on.")
        spec.input("group_label", valid_type=orm.Str, required=False, help="Group for the generated structures.")
        spec.expose_inputs(
            AditMetastabilityWorkChain,
            namespace="metastability",
            exclude=("structures", "evaluation"),
            namespace_options=optional(
                help="Inputs of adit.metastability (crystals only): relax the generated crystals and compute "
                "their energies above hull; leave out to skip it."
            ),
        )
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            if_(cls.should_train_vae)(cls.run_train_vae, cls.inspect_train_vae),
            if_(cls.should_train_dit)(cls.run_train_dit, cls.inspect_train_dit),
            cls.run_sample,
            cls.inspect_sample,
            if_(cls.should_evaluate)(cls.run_evaluate, cls.inspect_evaluate),
            cls.make_group,
            if_(cls.should_relax)(cls.run_metastability, cls.inspect_metastability),
            cls.results,
        )
        spec.output("checkpoint", valid_type=CheckpointData, help="The DiT checkpoint that was sampled.")
        spec.output("vae_checkpoint", valid_type=CheckpointData, required=False, help="The VAE trained here.")
        spec.output_namespace("structures", valid_type=orm.StructureData, dynamic=True, help="Generated systems.")
        spec.output("samples", valid_type=orm.SinglefileData, help="All generated systems as one extxyz file.")
        spec.output("summary", valid_type=orm.Dict, required=False, help="The sampling summary.")
        spec.output("evaluation", valid_type=orm.Dict, required=False, help="Evaluation fractions and counts.")
        spec.exit_code(401, "ERROR_TRAINING_VAE_FAILED", message="Training the VAE failed.")
        spec.exit_code(402, "ERROR_TRAINING_DIT_FAILED", message="Training the DiT failed.")
        spec.exit_code(403, "ERROR_SAMPLING_FAILED", message="Sampling failed.")
        spec.exit_code(404, "ERROR_EVALUATION_FAILED", message="Evaluation failed.")
        spec.exit_code(405, "ERROR_METASTABILITY_FAILED", message="The metastability work chain failed.")
        spec.expose_outputs(
            AditMetastabilityWorkChain,
            namespace="metastability",
            exclude=("hull",),
            namespace_options={"required": False, "help": "Relaxed structures, energies above hull and rates."},
        )

    @classmethod
    def get_builder_from_protocol(
        cls,
        code: orm.AbstractCode,
        protocol: str | None = None,
        overrides: dict | None = None,
        checkpoint: CheckpointData | None = None,
        vae_checkpoint: CheckpointData | None = None,
        evaluate: bool = True,
        reference: orm.Data | None = None,
        codes: dict[str, orm.AbstractCode] | None = None,
    ):
        """A builder filled from ``protocol`` (fast | moderate | precise) and ``overrides``.

        :param code: the ``adit`` code used by every CalcJob unless ``codes`` names another for its step.
        :param overrides: nested dict merged over the protocol (keys as in the YAML file:
            ``kind``, ``pretrained``, ``train_vae.settings``, ``train_dit.settings``, ``sample``
            (``sample.conditions``: the ``adit.sample`` ``conditions``, e.g. ``{"chemical_system":
            "Li-Fe-O", "guidance": {"chemical_system": 2.0}}``, with a ``pretrained`` model trained on
            them such as ``adit-xs-joint-cond``; ``sample.symmetrize``: False keeps space-group-conditioned
            crystals as decoded; ``sample.solver``, ``sample.time_grid`` and ``sample.guidance_interval``
            as the ``adit.sample`` inputs), ``evaluate``, ``metastability.relax``, ``options``,
            and per step ``STEP.options`` merged over ``options``).
        :param checkpoint: a DiT checkpoint: no training, sample it. Without one, a protocol that
            names a ``pretrained`` model (``fast``) samples that model's node
            (:meth:`CheckpointData.from_pretrained`, stored once); the others train.
        :param vae_checkpoint: a VAE: train only the DiT.
        :param evaluate: run ``adit evaluate`` on the samples.
        :param reference: reference set for novelty (SinglefileData or Str); default: the
            protocol's ``evaluate.reference``, else ``adit evaluate``'s own default.
        :param codes: a code per step (keys of :data:`STEPS`), for example an ``adit`` installed on a GPU
            partition for ``train_vae``, ``train_dit`` and ``sample`` while ``evaluate`` and
            ``metastability`` keep ``code``.

        Besides ``options``, a protocol (or an override) may set per restart step (``train_vae``,
        ``train_dit``, ``sample``) ``max_iterations``: how many walltime slices a long training may be
        resumed over; and at the top level ``clean_workdir``: empty the remote folders of the
        trainings and of the sampling when their work chains end (what they produced is stored).
        """
        unknown = sorted(set(codes or {}) - set(STEPS))
        if unknown:
            raise ValueError(f"codes: unknown step(s) {unknown}; the steps are {list(STEPS)}")
        values = cls.get_protocol_inputs(protocol, overrides)
        base_options = values.get("options", {})

        def code_of(step: str) -> orm.AbstractCode:
            return (codes or {}).get(step, code)

        def restart_settings(namespace, step: str) -> None:
            """``max_iterations`` of the step and the protocol's ``clean_workdir`` on a restart work chain."""
            if (values.get(step) or {}).get("max_iterations") is not None:
                namespace.max_iterations = orm.Int(values[step]["max_iterations"])
            if values.get("clean_workdir") is not None:
                namespace.clean_workdir = orm.Bool(values["clean_workdir"])

        def options_of(step: str) -> dict:
            """The protocol's ``options`` with the step's own ``options`` on top (e.g. a GPU request for
            training and sampling only: evaluation and relaxation never hold a GPU)."""
            return {**base_options, **((values.get(step) or {}).get("options") or {})}

        builder = cls.get_builder()
        pretrained = None  # the registered model sampled, when one is
        if checkpoint is None and vae_checkpoint is None and values.get("pretrained"):
            pretrained = values["pretrained"]
            checkpoint = CheckpointData.from_pretrained(pretrained)
        if checkpoint is not None:
            builder.checkpoint = checkpoint
        else:
            stages = ("train_dit",) if vae_checkpoint is not None else ("train_vae", "train_dit")
            if vae_checkpoint is not None:
                builder.vae_checkpoint = vae_checkpoint
            for stage in stages:
                namespace = builder[stage]
                namespace.train.code = code_of(stage)
                namespace.train.settings = orm.Dict(values[stage]["settings"])
                namespace.train.metadata.options = options_of(stage)
                restart_settings(namespace, stage)
        sample = values["sample"]
        builder.sample.sample.code = code_of("sample")
        restart_settings(builder.sample, "sample")
        builder.sample.sample.kind = orm.Str(values["kind"])
        builder.sample.sample.num_samples = orm.Int(sample["num_samples"])
        builder.sample.sample.steps = orm.Int(sample.get("steps", 100))
        builder.sample.sample.cfg_scale = orm.Float(sample.get("cfg_scale", 2.0))
        builder.sample.sample.seed = orm.Int(sample.get("seed", 0))
        if "device" in sample:
            builder.sample.sample.device = orm.Str(sample["device"])
        for key in ("solver", "time_grid"):
            if key in sample:
                builder.sample.sample[key] = orm.Str(sample[key])
        if sample.get("conditions"):
            _check_pretrained_conditions(pretrained, sample["conditions"])
            builder.sample.sample.conditions = orm.Dict(sample["conditions"])
        if "symmetrize" in sample:
            builder.sample.sample.symmetrize = orm.Bool(sample["symmetrize"])
        if sample.get("guidance_interval") is not None:
            builder.sample.sample.guidance_interval = orm.List(list(sample["guidance_interval"]))
        builder.sample.sample.metadata.options = options_of("sample")
        if evaluate:
            settings = values.get("evaluate", {})
            builder.evaluate.code = code_of("evaluate")
            builder.evaluate.metadata.options = options_of("evaluate")
            if reference is None and "reference" in settings:
                reference = orm.Str(settings["reference"])
            if reference is not None:
                builder.evaluate.reference = reference
            if settings.get("parameters"):
                builder.evaluate.parameters = orm.Dict(settings["parameters"])
        relax = (values.get("metastability") or {}).get("relax")
        if relax is not None and values["kind"] == "crystal":
            from aiida_adit.data.hull import ReferenceHullData

            builder.metastability.relax.code = code_of("metastability")
            builder.metastability.relax.parameters = orm.Dict(relax)
            builder.metastability.relax.metadata.options = options_of("metastability")
            builder.metastability.hull = ReferenceHullData.offline()
        return builder

    def setup(self):
        """Start from the given checkpoints, if any."""
        self.ctx.checkpoint = self.inputs.get("checkpoint")
        self.ctx.vae = self.inputs.get("vae_checkpoint")

    def should_train_vae(self):
        """Train the VAE when neither a DiT nor a VAE checkpoint was given."""
        return self.ctx.checkpoint is None and self.ctx.vae is None

    def run_train_vae(self):
        """Submit the VAE training work chain."""
        inputs = AttributeDict(self.exposed_inputs(AditTrainWorkChain, "train_vae"))
        inputs.metadata = {"call_link_label": "train_vae"}
        return ToContext(train_vae=self.submit(AditTrainWorkChain, **inputs))

    def inspect_train_vae(self):
        """Keep the trained VAE."""
        node = self.ctx.train_vae
        if not node.is_finished_ok:
            self.report(f"VAE training {node.process_label}<{node.pk}> failed with status {node.exit_status}")
            return self.exit_codes.ERROR_TRAINING_VAE_FAILED
        self.ctx.vae = node.outputs.checkpoint
        self.out("vae_checkpoint", self.ctx.vae)
        return None

    def should_train_dit(self):
        """Train the DiT when no DiT checkpoint was given."""
        return self.ctx.checkpoint is None

    def run_train_dit(self):
        """Submit the DiT training work chain on the VAE."""
        inputs = AttributeDict(self.exposed_inputs(AditTrainWorkChain, "train_dit"))
        inputs.train = AttributeDict(inputs.train)
        inputs.train.parent_checkpoint = self.ctx.vae
        inputs.metadata = {"call_link_label": "train_dit"}
        return ToContext(train_dit=self.submit(AditTrainWorkChain, **inputs))

    def inspect_train_dit(self):
        """Keep the trained DiT."""
        node = self.ctx.train_dit
        if not node.is_finished_ok:
            self.report(f"DiT training {node.process_label}<{node.pk}> failed with status {node.exit_status}")
            return self.exit_codes.ERROR_TRAINING_DIT_FAILED
        self.ctx.checkpoint = node.outputs.checkpoint
        return None

    def run_sample(self):
        """Submit the sampling work chain on the DiT."""
        inputs = AttributeDict(self.exposed_inputs(AditSampleWorkChain, "sample"))
        inputs.sample = AttributeDict(inputs.sample)
        inputs.sample.checkpoint = self.ctx.checkpoint
        inputs.metadata = {"call_link_label": "sample"}
        return ToContext(sample=self.submit(AditSampleWorkChain, **inputs))

    def inspect_sample(self):
        """Attach the generated structures and the extxyz file."""
        node = self.ctx.sample
        if not node.is_finished_ok:
            self.report(f"sampling {node.process_label}<{node.pk}> failed with status {node.exit_status}")
            return self.exit_codes.ERROR_SAMPLING_FAILED
        self.ctx.kind = self.inputs.sample.sample.kind.value
        self.out("structures", dict(node.outputs.structures))
        self.out("samples", node.outputs.samples)
        if "summary" in node.outputs:
            self.out("summary", node.outputs.summary)
        return None

    def should_evaluate(self):
        """Evaluate when evaluation inputs were given."""
        return "code" in self.inputs.get("evaluate", {})

    def run_evaluate(self):
        """Submit ``adit evaluate`` on the extxyz file of the samples."""
        inputs = AttributeDict(self.exposed_inputs(AditEvaluateCalculation, "evaluate"))
        inputs.samples = self.ctx.sample.outputs.samples
        inputs.kind = orm.Str(self.ctx.kind)
        inputs.metadata = AttributeDict(inputs.get("metadata", {}))
        inputs.metadata.call_link_label = "evaluate"
        return ToContext(evaluate=self.submit(AditEvaluateCalculation, **inputs))

    def inspect_evaluate(self):
        """Copy ``valid``/``formula`` of each record, and ``kind``, into the structures' extras."""
        node = self.ctx.evaluate
        if not node.is_finished_ok:
            self.report(f"evaluation {node.process_label}<{node.pk}> failed with status {node.exit_status}")
            return self.exit_codes.ERROR_EVALUATION_FAILED
        records = node.outputs.per_structure.get("records")
        structures = self.ctx.sample.outputs.structures
        frames = self.ctx.sample.outputs.samples
        if len(records) < len(structures):
            self.report(f"evaluation has {len(records)} records for {len(structures)} structures of {frames.filename}")
            return self.exit_codes.ERROR_EVALUATION_FAILED
        # frames that could not be stored have no node (see the sample parser)
        pairs = (
            (structures[output_label(record["index"])], record_extras(record))
            for record in records
            if output_label(record["index"]) in structures
        )
        set_extras(pairs)
        self.out("evaluation", node.outputs.results)
        return None

    def make_group(self):
        """Put every generated structure in one Group; fill in ``kind``/``elements`` extras where missing."""
        label = self.inputs.group_label.value if "group_label" in self.inputs else f"adit/generate/{self.node.pk}"
        group, _ = orm.Group.collection.get_or_create(label=label)
        nodes = list(self.ctx.sample.outputs.structures.values())
        # the sample parser sets them; structures of runs parsed by an older version may lack them
        set_extras(
            (node, structure_extras(node, self.ctx.kind)) for node in nodes if "elements" not in node.base.extras.keys()
        )
        group.add_nodes(nodes)
        self.node.base.extras.set("group_label", label)
        self.report(f"{len(self.ctx.sample.outputs.structures)} structures in group `{label}`")

    def should_relax(self):
        """Whether the metastability work chain was asked for (a relaxation route given)."""
        inputs = self.inputs.get("metastability", {})
        return "engine" in inputs or "code" in inputs.get("relax", {})

    def run_metastability(self):
        """Submit ``adit.metastability`` on the generated structures (with their evaluation records for S.U.N.)."""
        inputs = AttributeDict(self.exposed_inputs(AditMetastabilityWorkChain, "metastability"))
        structures = dict(self.ctx.sample.outputs.structures)
        inputs.structures = structures
        if "evaluate" in self.ctx:
            per_structure = self.ctx.evaluate.outputs.per_structure
            # records are in frame order, which is the sorted order of the `sample_NNNNN` keys; when a frame
            # could not be stored the two no longer line up, and S.U.N. is left out rather than misassigned
            if len(per_structure.get("records")) == len(structures):
                inputs.evaluation = per_structure
            else:
                self.report("some frames have no structure node: S.U.N. rates are left out")
        inputs.metadata = AttributeDict(inputs.get("metadata", {}))
        inputs.metadata.call_link_label = "metastability"
        return ToContext(metastability=self.submit(AditMetastabilityWorkChain, **inputs))

    def inspect_metastability(self):
        """Expose the relaxed structures, energies above hull and rates."""
        node = self.ctx.metastability
        if not node.is_finished_ok:
            self.report(f"metastability {node.process_label}<{node.pk}> failed with status {node.exit_status}")
            return self.exit_codes.ERROR_METASTABILITY_FAILED
        self.out_many(self.exposed_outputs(node, AditMetastabilityWorkChain, namespace="metastability"))
        return None

    def results(self):
        """Attach the DiT checkpoint that was sampled."""
        self.out("checkpoint", self.ctx.checkpoint)
