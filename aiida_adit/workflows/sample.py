"""``adit.sample`` work chain: an ``adit.sample`` CalcJob with failure handling.

Handlers: 3xx failures stop at once (bad input, wrong checkpoint, unreadable output:
a rerun repeats them); out of memory (410) halves ``batch_size``; fewer structures
than asked (500) keeps what was generated
when at least ``min_fraction`` of ``num_samples`` came out, otherwise samples again
with the next seed. Other failures abort (aiida-core's ``on_unhandled_failure``
input changes that).
"""

from __future__ import annotations

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import BaseRestartWorkChain, ProcessHandlerReport, process_handler, while_

from aiida_adit.calculations.sample import AditSampleCalculation
from aiida_adit.storage import ReturnLinksInBulk


class AditSampleWorkChain(ReturnLinksInBulk, BaseRestartWorkChain):
    """Sample a DiT checkpoint; keep partial results above ``min_fraction``."""

    _process_class = AditSampleCalculation

    @classmethod
    def define(cls, spec):
        """Inputs: the CalcJob's under ``sample``, plus ``min_fraction``."""
        super().define(spec)
        spec.expose_inputs(AditSampleCalculation, namespace="sample")
        spec.input(
            "min_fraction",
            valid_type=orm.Float,
            default=lambda: orm.Float(0.9),
            validator=lambda v, _: None if 0 <= v.value <= 1 else "`min_fraction` must lie in [0, 1]",
            help="Accept a run that produced at least this fraction of `num_samples`.",
        )
        spec.outline(
            cls.setup,
            while_(cls.should_run_process)(cls.run_process, cls.inspect_process),
            cls.results,
        )
        spec.expose_outputs(AditSampleCalculation)
        spec.exit_code(
            300, "ERROR_UNRECOVERABLE", message="The sampling run failed unrecoverably with exit status {status}."
        )

    def setup(self):
        """Copy the CalcJob inputs into the context."""
        super().setup()
        self.ctx.inputs = AttributeDict(self.exposed_inputs(AditSampleCalculation, "sample"))

    @process_handler(priority=700)
    def handle_unrecoverable(self, node):
        """Stop at once on 3xx failures."""
        if node.is_failed and 300 <= node.exit_status < 400:
            self.report(f"{self.ctx.process_name}<{node.pk}> failed unrecoverably: {node.exit_message}")
            return ProcessHandlerReport(True, self.exit_codes.ERROR_UNRECOVERABLE.format(status=node.exit_status))
        return None

    @process_handler(priority=600, exit_codes=AditSampleCalculation.exit_codes.ERROR_OUT_OF_MEMORY)
    def handle_out_of_memory(self, node):
        """Halve the systems per forward pass (from ``num_samples`` capped at 256, the command's default)."""
        current = (
            node.inputs.batch_size.value if "batch_size" in node.inputs else min(node.inputs.num_samples.value, 256)
        )
        if current <= 1:
            return ProcessHandlerReport(True, self.exit_codes.ERROR_UNRECOVERABLE.format(status=node.exit_status))
        self.ctx.inputs.batch_size = orm.Int(current // 2)
        self.report(f"{self.ctx.process_name}<{node.pk}> ran out of memory: batch size {current} -> {current // 2}")
        return ProcessHandlerReport(True)

    @process_handler(priority=500, exit_codes=AditSampleCalculation.exit_codes.ERROR_FEWER_STRUCTURES)
    def handle_fewer_structures(self, node):
        """Keep a run with enough structures; otherwise sample again with the next seed."""
        asked = node.inputs.num_samples.value
        found = len(node.outputs.structures) if "structures" in node.outputs else 0
        if found >= self.inputs.min_fraction.value * asked:
            self.report(f"{self.ctx.process_name}<{node.pk}> generated {found} of {asked} structures: keeping them")
            self.ctx.is_finished = True
            return ProcessHandlerReport(True)
        self.ctx.inputs.seed = orm.Int(node.inputs.seed.value + 1)
        self.report(f"{self.ctx.process_name}<{node.pk}> generated {found} of {asked}: sampling again with a new seed")
        return ProcessHandlerReport(True)
