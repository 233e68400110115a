"""``adit.train``: one run of ``adit train-vae`` or ``adit train-dit`` as a CalcJob.

The run folder on the computer is ``run/``; the final checkpoint
``run/<stage>.safetensors`` is fetched for the parser only (it becomes a
:class:`~aiida_adit.data.checkpoint.CheckpointData` output, so its bytes are not
kept twice), ``run/metrics.json`` and ``run/log.csv`` are kept in ``retrieved``,
and ``run/state.safetensors`` (optimizer, EMA, RNG, step) stays on the computer
in ``remote_folder`` so a later run can resume from it (``parent_folder``).

Walltime: unless ``settings.max_minutes`` is given, the run is told to stop
(``--max-minutes``) a margin before ``max_wallclock_seconds``, so it saves a
checkpoint and its state and ends with ``status: time_limit``; the parser then
reports exit code 400 and the ``adit.train`` work chain resumes it.

Training data, in order of preference: a ``dataset`` FolderData (its files are
copied to ``data/``), a ``dataset_remote`` RemoteData (symlinked as ``data``),
or nothing: the dataset named in ``settings`` as found on the computer. For the
first two, ``ADIT_MP20_DIR`` points the run at ``data/`` (contracts, section 6).
"""

from __future__ import annotations

import io
import json
import numbers

from aiida import orm

from aiida_adit.calculations.base import AditCalculation, validate_checkpoint_kind
from aiida_adit.data.checkpoint import CheckpointData

STAGES = ("vae", "dit")
DATASETS = ("mp20", "qm9", "joint")
DEVICES = ("cpu", "cuda")
RUN_DIR = "run"
SETTINGS_NAME = "settings.json"
PARENT_NAME = "parent.safetensors"
#: Sections of ``settings.json`` passed through as they are (model and flow hyperparameters).
SECTIONS = ("train", "vae", "dit", "flow")
#: Keys of ``settings`` passed as command-line flags; every other key goes to ``settings.json``.
FLAG_KEYS = ("stage", "dataset", "size", "max_steps", "max_minutes", "device")
#: Seconds of the walltime kept free for writing the checkpoint when ``max_minutes`` is derived from it.
WALLTIME_MARGIN_S = 120
_POSITIVE_INTS = ("max_steps", "batch_size", "max_atoms_per_batch", "num_epochs", "epochs")
_POSITIVE_FLOATS = ("lr", "max_minutes")


def validate_settings(value: orm.Dict, _) -> str | None:
    """Reject impossible training settings before anything is submitted."""
    settings = value.get_dict()
    for section in SECTIONS:
        if section in settings and not isinstance(settings[section], dict):
            return f"`settings.{section}` is {settings[section]!r}; expected a mapping of {section} settings"
    stage = settings.get("stage")
    if stage not in STAGES:
        return f"`settings.stage` is {stage!r}; expected one of {', '.join(STAGES)}"
    dataset = settings.get("dataset")
    if dataset not in DATASETS:
        return f"`settings.dataset` is {dataset!r}; expected one of {', '.join(DATASETS)}"
    size = settings.get("size", "XS")
    if not isinstance(size, str) or not size:
        return f"`settings.size` is {size!r}; expected a size name such as XS, S, B or L"
    device = settings.get("device", "cpu")
    if device not in DEVICES:
        return f"`settings.device` is {device!r}; expected one of {', '.join(DEVICES)}"
    train = {**settings.get("train", {}), **settings}
    for key in _POSITIVE_INTS:
        if key in train:
            number = train[key]
            if isinstance(number, bool) or not isinstance(number, numbers.Integral) or number <= 0:
                return f"`settings.{key}` is {number!r}; expected a positive integer"
    for key in _POSITIVE_FLOATS:
        if key in train:
            number = train[key]
            if isinstance(number, bool) or not isinstance(number, numbers.Real) or not 0 < number < float("inf"):
                return f"`settings.{key}` is {number!r}; expected a positive number"
    return None


def validate_inputs(inputs, ctx) -> str | None:
    """Cross-input checks: one source of data, a VAE for a DiT run, matching checkpoint kinds.

    When a work chain exposes these inputs without ``parent_checkpoint`` (it provides the
    checkpoint itself), the checks that need it are skipped.
    """
    if "dataset" in inputs and "dataset_remote" in inputs:
        return "give either `dataset` (FolderData) or `dataset_remote` (RemoteData), not both"
    settings = inputs.get("settings")
    if settings is None or "parent_checkpoint" not in ctx:
        return None
    stage = settings.get("stage")
    parent = inputs.get("parent_checkpoint")
    if stage == "dit" and parent is None:
        return "`settings.stage` is `dit`: give the VAE checkpoint to train on as `parent_checkpoint`"
    if parent is not None:
        # a DiT checkpoint embeds its VAE: `train-vae --init DIT` fine-tunes that VAE, `train-dit --vae DIT
        # --init DIT` continues the DiT on the same latents
        return validate_checkpoint_kind(parent, ("vae", "dit"), "parent_checkpoint")
    return None


class AditTrainCalculation(AditCalculation):
    """Train the VAE (``stage: vae``) or the DiT (``stage: dit``) with ``adit train-*``."""

    @classmethod
    def define(cls, spec):
        """Inputs, outputs and exit codes of a training run."""
        super().define(spec)
        spec.input(
            "settings",
            valid_type=orm.Dict,
            validator=validate_settings,
            help="Training settings: `stage` (vae|dit), `dataset` (mp20|qm9|joint), `size` (XS...), `max_steps`, "
            "`max_minutes`, `device` (cpu|cuda) become flags; other keys (batch_size, lr, ...) go to the `train` "
            "section of settings.json; `train`, `vae`, `dit`, `flow` mappings are passed as sections.",
        )
        spec.input(
            "dataset",
            valid_type=orm.FolderData,
            required=False,
            help="Dataset files copied to `data/` (e.g. the MP-20 CSV files); ADIT_MP20_DIR points there.",
        )
        spec.input(
            "dataset_remote",
            valid_type=orm.RemoteData,
            required=False,
            help="A folder of dataset files already on the computer, symlinked as `data/`.",
        )
        spec.input(
            "parent_checkpoint",
            valid_type=CheckpointData,
            required=False,
            help="Stage dit: the VAE to train on (kind vae), or a DiT to fine-tune (kind dit). "
            "Stage vae: a VAE whose weights start the run (fine-tuning).",
        )
        spec.input(
            "parent_folder",
            valid_type=orm.RemoteData,
            required=False,
            help="The remote folder of an earlier run of the same stage to resume (`--resume`).",
        )
        spec.inputs.validator = validate_inputs
        spec.inputs["metadata"]["options"]["parser_name"].default = "adit.train"

        spec.output("checkpoint", valid_type=CheckpointData, help="The final checkpoint of the run.")
        spec.output("metrics", valid_type=orm.Dict, help="`metrics.json`: status, step, epoch, final_loss, ...")
        spec.output("curves", valid_type=orm.ArrayData, required=False, help="Columns of `log.csv` as arrays.")
        spec.default_output_node = "metrics"

        spec.exit_code(
            420, "ERROR_NAN_LOSS", invalidates_cache=True, message="The training loss became NaN or infinite: {error}"
        )

    def _minutes_from_walltime(self) -> float | None:
        """Training minutes that leave :data:`WALLTIME_MARGIN_S` (or 10%) of the walltime to save and exit."""
        walltime = self.node.get_option("max_wallclock_seconds")
        if not walltime:
            return None
        margin = max(WALLTIME_MARGIN_S, 0.1 * walltime)
        return round(max(walltime - margin, 0.5 * walltime) / 60.0, 2)

    def prepare_for_submission(self, folder):
        """Write ``settings.json`` and build the ``adit train-<stage>`` command line."""
        settings = self.inputs.settings.get_dict()
        stage = settings["stage"]
        file_settings = {key: settings[key] for key in SECTIONS if key in settings}
        flat = {key: value for key, value in settings.items() if key not in FLAG_KEYS and key not in SECTIONS}
        file_settings["train"] = {**file_settings.get("train", {}), **flat}
        handle = io.StringIO(json.dumps(file_settings, indent=2, sort_keys=True))
        folder.create_file_from_filelike(handle, SETTINGS_NAME, mode="w")

        cmdline = [
            f"train-{stage}",
            "--dataset",
            settings["dataset"],
            "--size",
            settings.get("size", "XS"),
            "--out-dir",
            RUN_DIR,
            "--settings",
            SETTINGS_NAME,
        ]
        if "max_steps" in settings:
            cmdline += ["--max-steps", settings["max_steps"]]
        max_minutes = settings.get("max_minutes", self._minutes_from_walltime())
        if max_minutes:
            cmdline += ["--max-minutes", f"{max_minutes:g}"]
        if "device" in settings:
            cmdline += ["--device", settings["device"]]

        local_copy_list, remote_copy_list, remote_symlink_list = [], [], []
        parent = self.inputs.get("parent_checkpoint")
        if parent is not None:
            local_copy_list.append(self.checkpoint_copy(parent, PARENT_NAME))
            if stage == "dit":
                cmdline += ["--vae", PARENT_NAME]
            if stage == "vae" or parent.kind == "dit":
                cmdline += ["--init", PARENT_NAME]
        if "parent_folder" in self.inputs:
            remote = self.inputs.parent_folder
            remote_copy_list.append((remote.computer.uuid, f"{remote.get_remote_path()}/{RUN_DIR}", RUN_DIR))
            cmdline.append("--resume")

        prepend_text = None
        if "dataset" in self.inputs:
            dataset = self.inputs.dataset
            local_copy_list.append((dataset.uuid, None, "data"))
            prepend_text = 'export ADIT_MP20_DIR="$PWD/data"'
        elif "dataset_remote" in self.inputs:
            remote = self.inputs.dataset_remote
            remote_symlink_list.append((remote.computer.uuid, remote.get_remote_path(), "data"))
            prepend_text = 'export ADIT_MP20_DIR="$PWD/data"'

        return self.make_calc_info(
            cmdline,
            retrieve=[f"{RUN_DIR}/metrics.json", f"{RUN_DIR}/log.csv"],
            retrieve_temporary=[f"{RUN_DIR}/{stage}.safetensors"],
            local_copy_list=local_copy_list,
            remote_copy_list=remote_copy_list,
            remote_symlink_list=remote_symlink_list,
            prepend_text=prepend_text,
        )
