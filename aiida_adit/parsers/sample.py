"""Parser of ``adit.sample``: one StructureData per generated system, the extxyz file and the summary."""

from __future__ import annotations

import json
import math
import os

from aiida import orm

from adit_torch.errors import DataFormatError
from aiida_adit.calculations.sample import OUTPUT_NAME, SUMMARY_NAME
from aiida_adit.parsers.base import AditParser
from aiida_adit.structures import atoms_to_structure, read_frames


def output_label(index: int) -> str:
    """The link label of the ``index``-th generated system (``sample_00000``, zero-based, file order)."""
    return f"sample_{index:05d}"


class AditSampleParser(AditParser):
    """Turn ``samples.extxyz`` into ``structures.sample_*`` nodes plus ``samples`` and ``summary``.

    Exit codes: 300/301 missing or unreadable outputs, 302 bad input, 310 bad checkpoint,
    400 walltime, 410 out of memory, 500 fewer structures than asked (the ones generated
    are still attached, so a work chain can keep them).
    """

    def parse(self, **kwargs):
        """Parse the summary (retrieved) and the extxyz (fetched to ``retrieved_temporary_folder``)."""
        status = self.exit_status()
        if status is None:
            killed = self.exit_for_killed()
            if killed is not None:
                return killed
        elif status not in (0, 6):
            return self.exit_for_status(status)

        summary_text = self.read_text(SUMMARY_NAME)
        if summary_text is not None:
            try:
                summary = json.loads(summary_text)
            except json.JSONDecodeError as exc:
                return self.exit_codes.ERROR_UNREADABLE_OUTPUT.format(filename=SUMMARY_NAME, error=str(exc))
            if not isinstance(summary, dict):
                return self.exit_codes.ERROR_UNREADABLE_OUTPUT.format(filename=SUMMARY_NAME, error="not an object")
            finite = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}
            self.out("summary", orm.Dict(finite))
        elif status == 0:
            return self.exit_codes.ERROR_MISSING_OUTPUT.format(filename=SUMMARY_NAME)

        temporary = kwargs.get("retrieved_temporary_folder")
        path = os.path.join(temporary, OUTPUT_NAME) if temporary else None
        if path is None or not os.path.isfile(path):
            return self.exit_codes.ERROR_MISSING_OUTPUT.format(filename=OUTPUT_NAME)
        try:
            structures = [atoms_to_structure(atoms) for atoms in read_frames(path)]
        except DataFormatError as exc:
            return self.exit_codes.ERROR_UNREADABLE_OUTPUT.format(filename=OUTPUT_NAME, error=str(exc))

        self.out("samples", orm.SinglefileData(file=path, filename=OUTPUT_NAME))
        kind = self.node.inputs.kind.value
        for index, structure in enumerate(structures):
            structure.label = f"{kind} {output_label(index)}"
            self.out(f"structures.{output_label(index)}", structure)

        asked = self.node.inputs.num_samples.value
        if len(structures) < asked or status == 6:
            return self.exit_codes.ERROR_FEWER_STRUCTURES.format(found=len(structures), asked=asked)
        return None
