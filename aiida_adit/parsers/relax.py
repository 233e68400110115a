"""Parser of ``adit.relax``: relaxed crystals and energies under their input keys, records as a Dict.

Each relaxed frame of ``relaxed.extxyz`` carries ``relaxed_from`` (the key of
its input, written as the frame ``id`` by the CalcJob); the parser uses it,
not the frame order, to pair outputs with inputs, and sets the extras
``relaxed_from`` (input uuid), ``converged``, ``relax_status`` and ``energy``
(eV) on every relaxed StructureData. Structures that failed or exploded get
no output node; their reason is in ``results``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from aiida import orm
from aiida.engine import ExitCode

from aiida_adit.calculations.relax import JSON_NAME, OUTPUT_NAME
from aiida_adit.parsers.base import AditParser

#: ``adit`` exit status when no structure could be kept.
STATUS_NONE_KEPT = 6



class AditRelaxParser(AditParser):
    """Turn ``relax.json`` and ``relaxed.extxyz`` into ``results``, ``relaxed_structures`` and ``energies``.

    Exit codes: 300 missing output, 301 unreadable output, 302 bad input,
    400 walltime, 410 out of memory, 420 no structure relaxed.
    """

    def parse(self, **kwargs):
        """Parse the retrieved files of an ``adit relax`` run."""
        from aiida_adit.structures import atoms_to_structure, read_frames

        if self.exit_status() == STATUS_NONE_KEPT:
            return self.exit_codes.ERROR_NO_STRUCTURE_RELAXED.format(error=self.error_line())
        failed = self.exit_for_run()
        if failed is not None:
            return failed

        payload = self.read_json(JSON_NAME, required=True, required_list="structures")
        if isinstance(payload, ExitCode):
            return payload
        records = payload["structures"]

        inputs = dict(self.node.inputs.structures)
        frames_text = self.read_text(OUTPUT_NAME)
        frames = []
        if frames_text:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / OUTPUT_NAME
                path.write_text(frames_text)
                try:
                    frames = read_frames(path)
                except Exception as exc:  # noqa: BLE001 - any reader error means an unreadable file
                    return self.exit_codes.ERROR_UNREADABLE_OUTPUT.format(filename=OUTPUT_NAME, error=str(exc))
        kept_records = sum(r.get("status") in ("converged", "unconverged") for r in records)
        if kept_records and not frames:
            return self.exit_codes.ERROR_MISSING_OUTPUT.format(filename=OUTPUT_NAME)

        relaxed, energies = {}, {}
        for atoms in frames:
            key = str(atoms.info.get("relaxed_from", atoms.info.get("id")))
            if key not in inputs:
                return self.exit_codes.ERROR_UNREADABLE_OUTPUT.format(
                    filename=OUTPUT_NAME, error=f"frame for unknown input key {key!r}"
                )
            try:
                energy = float(atoms.info["total_energy"])
            except (KeyError, TypeError, ValueError):
                return self.exit_codes.ERROR_UNREADABLE_OUTPUT.format(
                    filename=OUTPUT_NAME, error=f"the frame of {key!r} has no numeric `total_energy`"
                )
            structure = atoms_to_structure(atoms)
            structure.base.extras.set_many(
                {
                    "relaxed_from": inputs[key].uuid,
                    "converged": bool(atoms.info.get("converged", False)),
                    "relax_status": str(atoms.info.get("relax_status")),
                    "energy": energy,
                    "potential": str(atoms.info.get("potential")),
                }
            )
            relaxed[key], energies[key] = structure, orm.Float(energy)
        self.out("relaxed_structures", relaxed)
        self.out("energies", energies)
        by_key = {}
        for rec in records:
            key = str(rec.get("id"))
            by_key[key] = {k: v for k, v in rec.items() if k != "stress"}
        results = {k: v for k, v in payload.items() if k != "structures"}
        results["structures"] = by_key
        self.out("results", orm.Dict(results))
        return None
