"""Parser of ``adit.evaluate``: the evaluation JSON (contracts, section 7) as two Dicts."""

from __future__ import annotations

from aiida import orm
from aiida.engine import ExitCode

from aiida_adit.calculations.evaluate import JSON_NAME
from aiida_adit.parsers.base import AditParser


class AditEvaluateParser(AditParser):
    """Split ``evaluation.json`` into ``results`` (everything but the records) and ``per_structure``.

    Exit codes: 300 missing JSON, 301 unreadable JSON or no ``per_structure`` list,
    302 bad input, 400 walltime, 410 out of memory.
    """

    def parse(self, **kwargs):
        """Parse ``evaluation.json`` from ``retrieved``."""
        failed = self.exit_for_run()
        if failed is not None:
            return failed

        payload = self.read_json(JSON_NAME, required=True, required_list="per_structure")
        if isinstance(payload, ExitCode):
            return payload
        records = payload.pop("per_structure")
        self.out("results", orm.Dict(payload))
        self.out("per_structure", orm.Dict({"records": records}))
        return None
