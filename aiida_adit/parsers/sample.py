"""Parser of ``adit.sample``: one StructureData per generated system, the extxyz file and the summary."""

from __future__ import annotations

import os

from aiida import orm
from aiida.engine import ExitCode

from adit_torch.errors import DataFormatError
from aiida_adit.calculations.sample import OUTPUT_NAME, SUMMARY_NAME
from aiida_adit.parsers.base import AditParser
from aiida_adit.structures import atoms_to_structure, read_frames


def output_label(index: int) -> str:
    """The link label of frame ``index`` of ``samples.extxyz`` (``sample_00000``, zero-based).

    Labels follow frame indices, so a frame that could not be stored leaves a gap and the
    records of ``adit evaluate`` (by frame index) still map onto the right nodes.
    """
    return f"sample_{index:05d}"


def structure_extras(structure: orm.StructureData, kind: str, info: dict | None = None,
                     conditions: dict | None = None) -> dict:
    """The extras every generated structure carries: ``kind`` and ``elements`` (sorted symbols), plus
    ``decode_failed`` (the read-out's reason) for a crystal whose decode failed (a flagged placeholder),
    and ``conditions`` (the ``conditions`` input without its guidance scales) when it was sampled under some."""
    extras = {"kind": kind, "elements": sorted(structure.get_symbols_set())}
    if conditions:
        extras["conditions"] = canonical_conditions(conditions)
    if info and info.get("decode_failed"):
        extras["decode_failed"] = str(info["decode_failed"])
    return extras


def canonical_conditions(conditions: dict) -> dict:
    """The condition values in one spelling (space group as an int, a chemical system as its symbols in
    order of atomic number, ``Li-O-Fe``), without guidance scales: what the extras hold and queries match."""
    from adit_torch.conditions import parse_conditions
    from aiida_adit.calculations.sample import condition_flags

    items, _ = condition_flags(conditions)
    canonical = parse_conditions(items).as_dict()
    canonical.pop("guidance", None)
    return canonical


class AditSampleParser(AditParser):
    """Turn ``samples.extxyz`` into ``structures.sample_*`` nodes plus ``samples`` and ``summary``.

    Each structure gets the extras of :func:`structure_extras` before it is stored.

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

        summary = self.read_json(SUMMARY_NAME, required=status == 0)  # a partial run (6) may lack it
        if isinstance(summary, ExitCode):
            return summary

        temporary = kwargs.get("retrieved_temporary_folder")
        path = os.path.join(temporary, OUTPUT_NAME) if temporary else None
        if path is None or not os.path.isfile(path):
            return self.exit_codes.ERROR_MISSING_OUTPUT.format(filename=OUTPUT_NAME)
        try:
            frames = read_frames(path)
        except DataFormatError as exc:
            return self.exit_codes.ERROR_UNREADABLE_OUTPUT.format(filename=OUTPUT_NAME, error=str(exc))

        self.out("samples", orm.SinglefileData(file=path, filename=OUTPUT_NAME))
        kind = self.node.inputs.kind.value
        conditions = self.node.inputs.conditions.get_dict() if "conditions" in self.node.inputs else None
        stored, skipped = 0, []
        for index, atoms in enumerate(frames):
            try:
                structure = atoms_to_structure(atoms)
            except DataFormatError as exc:
                # Kept out of the nodes (a StructureData cannot hold it) but never dropped silently.
                self.logger.warning(f"{OUTPUT_NAME} frame {index}: not stored: {exc}")
                skipped.append({"index": index, "reason": str(exc)})
                continue
            structure.label = f"{kind} {output_label(index)}"
            # set before storing: written with the node, no extra commit per structure
            structure.base.extras.set_many(structure_extras(structure, kind, atoms.info, conditions))
            self.out(f"structures.{output_label(index)}", structure)
            stored += 1
        # always an output (a work chain that keeps a partial run exposes it): a partial run without its
        # summary file gets the counts this parser knows, marked as such
        summary = summary if summary is not None else {"summary_file": f"{SUMMARY_NAME} missing (partial run)"}
        self.out("summary", orm.Dict({**summary, "num_stored": stored, "not_stored": skipped}))

        asked = self.node.inputs.num_samples.value
        if stored < asked or status == 6:
            return self.exit_codes.ERROR_FEWER_STRUCTURES.format(found=stored, asked=asked)
        return None
