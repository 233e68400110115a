"""``adit.train`` work chain: an ``adit.train`` CalcJob restarted until it finishes.

Handlers (highest priority first):

- 3xx (bad input, corrupt checkpoint, unreadable output): stop, a rerun would repeat it.
- out of memory (410): halve ``batch_size`` (from the size's default when unset) and
  start again; gives up below ``min_batch_size``.
- NaN loss (420): scale ``lr`` by ``lr_factor`` and resume from the run folder (the
  ``adit`` trainer keeps the last good state there).
- out of walltime (400): resume from the run folder (``state.safetensors``).
"""

from __future__ import annotations

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import BaseRestartWorkChain, ProcessHandlerReport, process_handler, while_

from aiida_adit.calculations.train import AditTrainCalculation


def default_train_value(size: str, key: str):
    """The training default ``key`` (e.g. ``batch_size``, ``lr``) of a registered model size."""
    from adit_torch.config import train_config

    return getattr(train_config(size), key)


def _train_value(settings: dict, key: str):
    """The effective training value ``key`` of ``settings``: flat key, ``train`` section, or the size default."""
    if key in settings:
        return settings[key]
    if key in settings.get("train", {}):
        return settings["train"][key]
    return default_train_value(settings.get("size", "XS"), key)


class AditTrainWorkChain(BaseRestartWorkChain):
    """Train one stage (VAE or DiT), recovering from out-of-memory, NaN loss and walltime."""

    _process_class = AditTrainCalculation

    @classmethod
    def define(cls, spec):
        """Inputs: the CalcJob's under ``train``, plus recovery knobs."""
        super().define(spec)
        spec.expose_inputs(AditTrainCalculation, namespace="train")
        spec.input(
            "lr_factor",
            valid_type=orm.Float,
            default=lambda: orm.Float(0.5),
            validator=lambda v, _: None if 0 < v.value < 1 else "`lr_factor` must lie in (0, 1)",
            help="Factor applied to the learning rate after a NaN loss.",
        )
        spec.input(
            "min_batch_size",
            valid_type=orm.Int,
            default=lambda: orm.Int(1),
            help="Smallest batch size tried after out-of-memory failures.",
        )
        spec.outline(
            cls.setup,
            while_(cls.should_run_process)(cls.run_process, cls.inspect_process),
            cls.results,
        )
        spec.expose_outputs(AditTrainCalculation)
        spec.exit_code(
            410, "ERROR_BATCH_TOO_SMALL", message="Out of memory even with the smallest batch size ({batch_size})."
        )
        spec.exit_code(
            300, "ERROR_UNRECOVERABLE", message="The training run failed unrecoverably with exit status {status}."
        )

    def setup(self):
        """Copy the CalcJob inputs into the context, where the handlers change them."""
        super().setup()
        self.ctx.inputs = AttributeDict(self.exposed_inputs(AditTrainCalculation, "train"))

    def _settings(self) -> dict:
        return self.ctx.inputs.settings.get_dict()

    def _set_settings(self, **changes) -> None:
        self.ctx.inputs.settings = orm.Dict({**self._settings(), **changes})

    @process_handler(priority=700)
    def handle_unrecoverable(self, node):
        """Stop at once on 3xx failures (bad input, corrupt checkpoint, unreadable output): a rerun repeats them."""
        if node.is_failed and 300 <= node.exit_status < 400:
            self.report(f"{self.ctx.process_name}<{node.pk}> failed unrecoverably: {node.exit_message}")
            return ProcessHandlerReport(True, self.exit_codes.ERROR_UNRECOVERABLE.format(status=node.exit_status))
        return None

    @process_handler(priority=600, exit_codes=AditTrainCalculation.exit_codes.ERROR_OUT_OF_MEMORY)
    def handle_out_of_memory(self, node):
        """Halve the batch size and start the run again."""
        settings = self._settings()
        batch = _train_value(settings, "batch_size")
        smaller = batch // 2
        if smaller < self.inputs.min_batch_size.value:
            self.report(f"{self.ctx.process_name}<{node.pk}> ran out of memory with batch size {batch}: giving up")
            return ProcessHandlerReport(True, self.exit_codes.ERROR_BATCH_TOO_SMALL.format(batch_size=batch))
        self._set_settings(batch_size=smaller)
        self.report(f"{self.ctx.process_name}<{node.pk}> ran out of memory: batch size {batch} -> {smaller}")
        return ProcessHandlerReport(True)

    @process_handler(priority=500, exit_codes=AditTrainCalculation.exit_codes.ERROR_NAN_LOSS)
    def handle_nan_loss(self, node):
        """Lower the learning rate and resume from the last good state in the run folder."""
        settings = self._settings()
        lr = _train_value(settings, "lr")
        lower = lr * self.inputs.lr_factor.value
        self._set_settings(lr=lower)
        self.ctx.inputs.parent_folder = node.outputs.remote_folder
        self.report(f"{self.ctx.process_name}<{node.pk}> hit a NaN loss: lr {lr:g} -> {lower:g}, resuming")
        return ProcessHandlerReport(True)

    @process_handler(priority=400, exit_codes=AditTrainCalculation.exit_codes.ERROR_OUT_OF_WALLTIME)
    def handle_out_of_walltime(self, node):
        """Resume from the training state left in the run folder."""
        self.ctx.inputs.parent_folder = node.outputs.remote_folder
        self.report(f"{self.ctx.process_name}<{node.pk}> ran out of walltime: resuming from its run folder")
        return ProcessHandlerReport(True)
