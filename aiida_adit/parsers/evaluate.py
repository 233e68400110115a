"""Parser of ``adit.evaluate``: the evaluation JSON (contracts, section 7) as two Dicts."""

from __future__ import annotations

import json

from aiida import orm

from aiida_adit.calculations.evaluate import JSON_NAME
from aiida_adit.parsers.base import AditParser, finite_json


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

        text = self.read_text(JSON_NAME)
        if text is None:
            return self.exit_codes.ERROR_MISSING_OUTPUT.format(filename=JSON_NAME)
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            return self.exit_codes.ERROR_UNREADABLE_OUTPUT.format(filename=JSON_NAME, error=str(exc))
        if not isinstance(payload, dict) or not isinstance(payload.get("per_structure"), list):
            return self.exit_codes.ERROR_UNREADABLE_OUTPUT.format(
                filename=JSON_NAME, error="expected an object with a `per_structure` list"
            )
        records = payload.pop("per_structure")
        self.out("results", orm.Dict(finite_json(payload)))
        self.out("per_structure", orm.Dict({"records": finite_json(records)}))
        return None
