"""Score a batch of crystals: energies (from a relaxation or a static prediction), E_hull, rates.

:func:`score_structures` is what ``adit hull`` runs: it keeps every input in
order, records why a structure got no energy above hull, and assembles the
per-structure records and the :func:`~adit_torch.stability.rates.stability_rates`
summary into one JSON-serialisable report.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

from adit_torch.errors import AditError, InvalidSystemError
from adit_torch.stability.hull import ReferenceHull
from adit_torch.stability.potentials import Potential
from adit_torch.stability.rates import METASTABLE_THRESHOLD, STABLE_THRESHOLD, classify, stability_rates


def _file_energy(system) -> float | None:
    value = system.info.get("total_energy")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def e_above_hull_of(system, energy: float, hull: ReferenceHull) -> tuple[float, float]:
    """``(E_hull, E_form)`` in eV/atom of a crystal with total ``energy`` (eV) against ``hull``."""
    counts: dict[str, int] = {}
    for sym in system.symbols:
        counts[sym] = counts.get(sym, 0) + 1
    return hull.e_above_hull(counts, energy), hull.formation_energy_per_atom(counts, energy)


def score_structures(entries: Sequence, hull: ReferenceHull, potential: Potential, *,
                     relax_records: Sequence[dict] | None = None, evaluation: Sequence[dict] | None = None,
                     stable_threshold: float = STABLE_THRESHOLD, metastable_threshold: float = METASTABLE_THRESHOLD,
                     batch_size: int = 16, progress: bool = False) -> dict:
    """Energy above hull of every crystal and the stability rates.

    Args:
        entries: ``AtomicSystem`` objects or unreadable placeholders (with ``reason``), length K.
            An ``info['total_energy']`` (eV, as written by ``adit relax``) is used as is; otherwise the
            potential predicts a static energy (batched).
        hull: the reference hull.
        potential: used for structures without an energy.
        relax_records: the ``structures`` of an ``adit relax`` JSON (length M >= K). Then
            ``info['index']`` places each entry among the M inputs of the relaxation and
            failed relaxations count in the rates (as neither stable nor metastable).
        evaluation: per-structure evaluation records, length M (or K without relax records).
        stable_threshold / metastable_threshold: eV/atom.
        batch_size: static predictions per batch.
        progress: show a tqdm bar for the hull energies.

    Returns:
        ``{"per_structure": [...], "rates": {...}, "hull": {...}, "potential": {...}, "relaxed_with": [...]}``.
    """
    from tqdm import tqdm

    m = len(relax_records) if relax_records is not None else len(entries)
    records: list[dict] = []
    for i in range(m):
        rec = {"index": i, "id": None, "formula": None, "energy": None, "energy_per_atom": None,
               "energy_source": None, "e_above_hull": None, "e_form_per_atom": None, "reasons": []}
        if relax_records is not None:
            rr = relax_records[i]
            rec.update(id=rr.get("id"), formula=rr.get("formula"), relax_status=rr.get("status"),
                       converged=rr.get("converged"))
            if rr.get("status") not in ("converged", "unconverged"):
                rec["reasons"].append(f"relaxation {rr.get('status')}: {rr.get('reason')}")
        records.append(rec)

    placed: list[tuple[int, object]] = []
    for k, entry in enumerate(entries):
        info = getattr(entry, "info", {})
        i = int(info.get("index", k)) if relax_records is not None else k
        if not 0 <= i < m:
            raise InvalidSystemError(f"structure {k} has index {i} outside the {m} relaxation inputs")
        rec = records[i]
        rec["id"] = str(info.get("relaxed_from", info.get("id", rec["id"] or k)))
        if not hasattr(entry, "numbers"):
            rec["reasons"].append(f"unreadable: {entry.reason}")
            continue
        rec["formula"] = entry.formula
        placed.append((i, entry))

    static = []
    for i, system in placed:
        energy = _file_energy(system)
        if energy is not None:
            records[i].update(energy=energy, energy_source="file")
        else:
            try:
                potential.check(system)
                static.append((i, system))
            except InvalidSystemError as exc:
                records[i]["reasons"].append(str(exc))
    for start in range(0, len(static), batch_size):
        chunk = static[start:start + batch_size]
        try:
            preds = potential.predict([s for _, s in chunk], batch_size=batch_size)
        except AditError:  # find the culprit(s) one by one
            preds = []
            for i, s in chunk:
                try:
                    preds.extend(potential.predict([s]))
                except AditError as exc:
                    records[i]["reasons"].append(str(exc))
                    preds.append(None)
        for (i, _), pred in zip(chunk, preds, strict=True):
            if pred is not None:
                records[i].update(energy=pred.energy, energy_source=f"static {potential.name}")

    relaxed_with = sorted({str(s.info["potential"]) for _, s in placed if "potential" in s.info})
    for i, system in tqdm(placed, desc=f"E_hull ({hull.name})", unit="struct", file=sys.stderr,
                          disable=not progress):
        rec = records[i]
        if rec["energy"] is None:
            continue
        rec["energy_per_atom"] = rec["energy"] / system.num_atoms
        try:
            rec["e_above_hull"], rec["e_form_per_atom"] = e_above_hull_of(system, rec["energy"], hull)
        except (AditError, ValueError) as exc:
            rec["reasons"].append(f"{rec['id']}: {exc}")
    for rec in records:
        rec["stable"], rec["metastable"] = classify(rec["e_above_hull"], stable_threshold, metastable_threshold)

    if evaluation is not None and len(evaluation) != m:
        from adit_torch.errors import ConfigError

        raise ConfigError(f"the evaluation has {len(evaluation)} records but {m} structures were scored; "
                          "evaluate the same file that was relaxed")
    rates = stability_rates([r["e_above_hull"] for r in records], evaluation,
                            potential=", ".join(relaxed_with) or potential.name, hull=hull.name,
                            stable_threshold=stable_threshold, metastable_threshold=metastable_threshold)
    return {"rates": rates, "hull": hull.describe(), "potential": potential.describe(),
            "relaxed_with": relaxed_with, "num_structures": m, "per_structure": records}
