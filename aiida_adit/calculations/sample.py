"""``adit.sample``: ``adit sample`` as a CalcJob; one StructureData per generated system.

The checkpoint (a DiT, which holds its VAE) is copied to ``model.safetensors``.
The run writes ``samples.extxyz``, ``samples.summary.json`` and ``samples_cif/``
(crystals) or ``samples.sdf`` (molecules). The summary is kept in ``retrieved``;
the extxyz is fetched for the parser only and becomes the ``samples`` output (a
SinglefileData holding every system, in order) next to one StructureData per
system in the ``structures`` namespace. CIF/SDF copies stay on the computer.

Same inputs and seed give the same structures, so the CalcJob is cacheable:
with caching enabled for ``aiida.calculations:adit.sample`` a second identical
run reuses the first.
"""

from __future__ import annotations

from aiida import orm

from aiida_adit.calculations.base import AditCalculation, validate_checkpoint_kind
from aiida_adit.data.checkpoint import CheckpointData

KINDS = ("crystal", "molecule")
MODEL_NAME = "model.safetensors"
OUTPUT_NAME = "samples.extxyz"
FRAGMENT_NAME = "fragment.extxyz"
SUMMARY_NAME = "samples.summary.json"
#: Most samples one CalcJob may ask for (each becomes a node; see docs/aiida.md on scaling).
MAX_SAMPLES = 100_000


def validate_num_samples(value: orm.Int, _) -> str | None:
    """``num_samples`` must be a positive integer not above :data:`MAX_SAMPLES`."""
    if value.value <= 0:
        return f"`num_samples` is {value.value}; expected a positive number of samples"
    if value.value > MAX_SAMPLES:
        return f"`num_samples` is {value.value}; split runs above {MAX_SAMPLES} samples into several CalcJobs"
    return None


def validate_kind(value: orm.Str, _) -> str | None:
    """``kind`` must be ``crystal`` or ``molecule``."""
    if value.value not in KINDS:
        return f"`kind` is {value.value!r}; expected one of {', '.join(KINDS)}"
    return None


def validate_steps(value: orm.Int, _) -> str | None:
    """``steps`` must be a positive number of Euler steps."""
    if value.value <= 0:
        return f"`steps` is {value.value}; expected a positive number of integration steps"
    return None


def validate_cfg_scale(value: orm.Float, _) -> str | None:
    """``cfg_scale`` must be a finite non-negative guidance scale."""
    if not 0 <= value.value < float("inf"):
        return f"`cfg_scale` is {value.value}; expected a finite number >= 0"
    return None


def validate_seed(value: orm.Int, _) -> str | None:
    """``seed`` must be a non-negative integer."""
    if value.value < 0:
        return f"`seed` is {value.value}; expected an integer >= 0"
    return None


def validate_positive(value: orm.Int, port) -> str | None:
    """A positive integer (``batch_size``, ``num_atoms``)."""
    if value.value <= 0:
        return f"`{port.name}` is {value.value}; expected a positive integer"
    return None


def validate_solver(value: orm.Str, _) -> str | None:
    """``solver`` must be one of ``adit sample --solver``."""
    from adit_torch.flow import SOLVERS

    if value.value not in SOLVERS:
        return f"`solver` is {value.value!r}; expected one of {', '.join(SOLVERS)}"
    return None


def validate_guidance_interval(value: orm.List, _) -> str | None:
    """``guidance_interval`` must be two times ``[lo, hi]`` with ``0 <= lo <= hi <= 1``."""
    from adit_torch.errors import ConfigError
    from adit_torch.sample import check_guidance_interval

    items = value.get_list()
    if len(items) != 2:
        return f"`guidance_interval` is {items!r}; expected two times [lo, hi] in [0, 1]"
    try:
        check_guidance_interval(items)
    except ConfigError as exc:
        return f"`guidance_interval`: {exc}"
    return None


def validate_time_grid(value: orm.Str, _) -> str | None:
    """``time_grid`` must be one of ``adit sample --time-grid``."""
    from adit_torch.flow import TIME_GRIDS

    if value.value not in TIME_GRIDS:
        return f"`time_grid` is {value.value!r}; expected one of {', '.join(TIME_GRIDS)}"
    return None


def validate_device(value: orm.Str, _) -> str | None:
    """``device`` must be ``cpu`` or ``cuda``."""
    if value.value not in ("cpu", "cuda"):
        return f"`device` is {value.value!r}; expected cpu or cuda"
    return None


def validate_checkpoint(value: CheckpointData, _) -> str | None:
    """Sampling needs a DiT checkpoint (it holds the VAE that decodes its latents)."""
    return validate_checkpoint_kind(value, ("dit",), "checkpoint")


def validate_precision(value: orm.Str, _) -> str | None:
    """``precision`` must be one of ``adit sample --precision``."""
    from adit_torch.sample import PRECISIONS

    if value.value not in PRECISIONS:
        return f"`precision` is {value.value!r}; expected one of {', '.join(PRECISIONS)}"
    return None


def validate_conditions(value, _) -> str | None:
    """``{"space_group": 225, "chemical_system": "Li-Fe-O", "guidance": {"space_group": 2.0}}``: the keys,
    values and scales of ``adit sample --condition`` / ``--guidance``, checked the way the command checks them."""
    from adit_torch.conditions import parse_conditions
    from adit_torch.errors import ConfigError

    try:
        parse_conditions(*condition_flags(value.get_dict()))
    except ConfigError as exc:
        return f"`conditions`: {exc}"
    except (TypeError, AttributeError) as exc:
        return f"`conditions`: expected {{key: value, 'guidance': {{key: scale}}}}: {exc}"
    return None


def condition_flags(conditions: dict) -> tuple[list[str], list[str]]:
    """``conditions`` Dict content -> the ``KEY=VALUE`` items of ``--condition`` and ``--guidance``."""
    items = [f"{key}={value}" for key, value in conditions.items() if key != "guidance"]
    scales = [f"{key}={value}" for key, value in (conditions.get("guidance") or {}).items()]
    return items, scales


def validate_fragment_inputs(inputs, _) -> str | None:
    """A fragment must be of the kind sampled and smaller than ``num_atoms`` when that is given; ``keep_lattice``
    needs a periodic fragment, ``exact_keep`` a fragment; ``symmetrize`` needs a ``space_group`` condition."""
    if inputs.get("symmetrize") is not None and "space_group" not in (
            inputs["conditions"].get_dict() if inputs.get("conditions") is not None else {}):
        return "`symmetrize` applies to a `space_group` condition, and `conditions` has none"
    fragment = inputs.get("fragment")
    if inputs.get("keep_lattice") is not None and inputs["keep_lattice"].value and (
            fragment is None or not any(fragment.pbc)):
        return "`keep_lattice` keeps the lattice of a periodic `fragment`: give one"
    if inputs.get("exact_keep") is not None and fragment is None:
        return "`exact_keep` is about the atoms of a `fragment`: give one"
    if fragment is None or "kind" not in inputs:
        return None
    periodic = any(fragment.pbc)
    if periodic != (inputs["kind"].value == "crystal"):
        return (f"`fragment` is {'periodic' if periodic else 'not periodic'} but `kind` is "
                f"{inputs['kind'].value!r}: crystals keep periodic fragments, molecules non-periodic ones")
    if "num_atoms" in inputs and inputs["num_atoms"].value <= len(fragment.sites):
        return (f"`num_atoms` is {inputs['num_atoms'].value}; samples need more atoms than the fragment's "
                f"{len(fragment.sites)}")
    return None


class AditSampleCalculation(AditCalculation):
    """Generate ``num_samples`` crystals or molecules from a DiT checkpoint."""

    @classmethod
    def define(cls, spec):
        """Inputs, outputs and exit codes of a sampling run."""
        super().define(spec)
        spec.input("checkpoint", valid_type=CheckpointData, validator=validate_checkpoint, help="A DiT checkpoint.")
        spec.input(
            "num_samples", valid_type=orm.Int, validator=validate_num_samples, help="How many systems to generate."
        )
        spec.input("kind", valid_type=orm.Str, validator=validate_kind, help="`crystal` or `molecule`.")
        spec.input(
            "steps",
            valid_type=orm.Int,
            default=lambda: orm.Int(100),
            validator=validate_steps,
            help="Solver steps of the flow ODE.",
        )
        spec.input(
            "cfg_scale",
            valid_type=orm.Float,
            default=lambda: orm.Float(2.0),
            validator=validate_cfg_scale,
            help="Classifier-free guidance scale (0 = unconditional).",
        )
        spec.input("seed", valid_type=orm.Int, default=lambda: orm.Int(0), validator=validate_seed, help="Random seed.")
        spec.input(
            "solver",
            valid_type=orm.Str,
            default=lambda: orm.Str("euler"),
            validator=validate_solver,
            help="ODE solver (`adit sample --solver`): euler, heun, midpoint or multistep. The summary records the "
            "network evaluations spent (`nfe`, and `forward_passes_per_sample` counting guidance).",
        )
        spec.input(
            "guidance_interval",
            valid_type=orm.List,
            required=False,
            validator=validate_guidance_interval,
            help="`[lo, hi]`: guide only at flow times lo <= t <= hi (0 = noise, 1 = data), one forward per sample "
            "elsewhere (`adit sample --guidance-interval`); by default every step is guided.",
        )
        spec.input(
            "time_grid",
            valid_type=orm.Str,
            default=lambda: orm.Str("uniform"),
            validator=validate_time_grid,
            help="Time grid (`adit sample --time-grid`): uniform, power (denser near the data) or reference.",
        )
        spec.input("device", valid_type=orm.Str, required=False, validator=validate_device, help="`cpu` or `cuda`.")
        spec.input(
            "precision",
            valid_type=orm.Str,
            required=False,
            validator=validate_precision,
            help="Network precision (`adit sample --precision`): fp32 (default) or bf16 autocast, for GPUs.",
        )
        spec.input(
            "batch_size",
            valid_type=orm.Int,
            required=False,
            validator=validate_positive,
            help="Most systems per forward pass (`adit sample --batch-size`; default 256). The restart work chain "
            "halves it after an out-of-memory failure (exit status 410).",
        )
        spec.input(
            "num_atoms",
            valid_type=orm.Int,
            required=False,
            validator=validate_positive,
            help="Atoms per generated system (`adit sample --num-atoms`); by default every sample draws its count "
            "from the model's training histogram.",
        )
        spec.input(
            "fragment",
            valid_type=orm.StructureData,
            required=False,
            help="Inpainting (`adit sample --keep`): atoms every sample keeps as its first atoms, the rest "
            "generated. A periodic structure keeps sites (types and fractional coordinates) for crystals; a "
            "non-periodic one keeps atoms (types and positions) for molecules. Samples need more atoms than it; "
            "the summary reports how well they kept it (`inpainting`).",
        )
        spec.input(
            "keep_lattice",
            valid_type=orm.Bool,
            required=False,
            help="With a periodic `fragment`: decode the samples of the last inpainting round into the fragment's "
            "lattice (`adit sample --keep-lattice`); set `num_atoms` to suit the cell's volume.",
        )
        spec.input(
            "exact_keep",
            valid_type=orm.Bool,
            required=False,
            help="With a `fragment`: True (the default) writes the fragment's own atoms into every sample, placed "
            "where the sample put them; False keeps the atoms as the decoder reproduced them "
            "(`adit sample --no-exact-keep`). The summary's `inpainting` reports the decoder's fidelity either way.",
        )
        spec.input(
            "conditions",
            valid_type=orm.Dict,
            required=False,
            validator=validate_conditions,
            help="Conditions the model was trained with (`adit sample --condition`), e.g. `{\"space_group\": 225, "
            "\"chemical_system\": \"Li-Fe-O\", \"guidance\": {\"space_group\": 2.0}}`. Copied into every "
            "generated structure's extra `conditions`, so a query finds all structures generated under one.",
        )
        spec.input(
            "symmetrize",
            valid_type=orm.Bool,
            required=False,
            help="With a `space_group` condition: snap each crystal onto the group when a symmetric structure lies "
            "within 1 Å, with atom counts drawn from the training crystals of the group (the default, True), or "
            "keep the crystals as decoded (False, `adit sample --no-symmetrize`).",
        )
        spec.inputs["metadata"]["options"]["parser_name"].default = "adit.sample"
        spec.inputs.validator = validate_fragment_inputs

        spec.output_namespace(
            "structures",
            valid_type=orm.StructureData,
            dynamic=True,
            help="One node per generated system, labelled `sample_00000`, ... in file order. Crystals are "
            "periodic; molecules have pbc False and a box cell 10 Å larger than the molecule.",
        )
        spec.output("samples", valid_type=orm.SinglefileData, help="All generated systems as one extxyz file.")
        spec.output("summary", valid_type=orm.Dict, help="`samples.summary.json` written by `adit sample`.")
        spec.default_output_node = "summary"

        spec.exit_code(
            500,
            "ERROR_FEWER_STRUCTURES",
            invalidates_cache=True,
            message="Only {found} of the {asked} structures asked for were generated.",
        )

    def prepare_for_submission(self, folder):
        """Copy the checkpoint and build the ``adit sample`` command line."""
        cmdline = [
            "sample",
            "--checkpoint",
            MODEL_NAME,
            "--kind",
            self.inputs.kind.value,
            "--num-samples",
            self.inputs.num_samples.value,
            "--steps",
            self.inputs.steps.value,
            "--cfg-scale",
            self.inputs.cfg_scale.value,
            "--seed",
            self.inputs.seed.value,
            "--solver",
            self.inputs.solver.value,
            "--time-grid",
            self.inputs.time_grid.value,
            "--out",
            OUTPUT_NAME,
        ]
        for port, flag in (("batch_size", "--batch-size"), ("num_atoms", "--num-atoms"), ("device", "--device"),
                           ("precision", "--precision")):
            if port in self.inputs:
                cmdline += [flag, self.inputs[port].value]
        if "fragment" in self.inputs:
            atoms = self.inputs.fragment.get_ase()
            if not any(self.inputs.fragment.pbc):
                atoms.set_cell(None)
                atoms.pbc = False
            with folder.open(FRAGMENT_NAME, "w") as handle:
                atoms.write(handle, format="extxyz")
            cmdline += ["--keep", FRAGMENT_NAME]
            if "keep_lattice" in self.inputs and self.inputs.keep_lattice.value:
                cmdline.append("--keep-lattice")
            if "exact_keep" in self.inputs and not self.inputs.exact_keep.value:
                cmdline.append("--no-exact-keep")
        if "conditions" in self.inputs:
            items, scales = condition_flags(self.inputs.conditions.get_dict())
            cmdline += [arg for item in items for arg in ("--condition", item)]
            cmdline += [arg for item in scales for arg in ("--guidance", item)]
        if "symmetrize" in self.inputs and not self.inputs.symmetrize.value:
            cmdline.append("--no-symmetrize")
        if "guidance_interval" in self.inputs:
            lo, hi = self.inputs.guidance_interval.get_list()
            cmdline += ["--guidance-interval", f"{float(lo)!r},{float(hi)!r}"]
        return self.make_calc_info(
            cmdline,
            retrieve=[SUMMARY_NAME],
            retrieve_temporary=[OUTPUT_NAME],
            local_copy_list=[self.checkpoint_copy(self.inputs.checkpoint, MODEL_NAME)],
        )
