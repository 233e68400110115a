"""Calculation functions of the metastability work chain: energies above hull and the rates, with provenance.

:func:`energies_above_hull` links a batch of relaxed structures, their total
energies and the reference hull node to one energy above hull per structure (one
process per batch, not one per structure); :func:`energy_above_hull` does the same
for a single structure; :func:`stability_rates` links every energy above hull
(and the evaluation records, when given) to the rates. All run in the work
chain's process, never on a remote computer.
"""

from __future__ import annotations

from aiida import orm
from aiida.engine import calcfunction

from aiida_adit.data.hull import ReferenceHullData


@calcfunction
def energy_above_hull(structure: orm.StructureData, energy: orm.Float, hull: ReferenceHullData) -> dict:
    """Energy above ``hull`` (eV/atom, negative below it) and formation energy (eV/atom) of ``structure``.

    ``energy`` is the structure's total energy in eV, from the same kind of
    calculation as the hull's entries (the hull node's ``potential`` attribute).
    """
    counts = _counts(structure)
    reference = hull.load()
    return {
        "e_above_hull": orm.Float(reference.e_above_hull(counts, energy.value)),
        "e_form_per_atom": orm.Float(reference.formation_energy_per_atom(counts, energy.value)),
    }


def _counts(structure: orm.StructureData) -> dict[str, int]:
    """Element symbol -> number of sites of ``structure``."""
    counts: dict[str, int] = {}
    for site in structure.sites:
        symbol = structure.get_kind(site.kind_name).symbol
        counts[symbol] = counts.get(symbol, 0) + 1
    return counts


@calcfunction
def energies_above_hull(hull: ReferenceHullData, **batch) -> dict:
    """Energy above ``hull`` and formation energy (both eV/atom) of every structure of a batch.

    :param batch: ``structures`` ({key: StructureData}) and the total energy (eV) of
        each, from the same kind of calculation as the hull's entries, as either
        ``energies`` ({key: Float}) or ``relax_results`` ({label: Dict}: the
        ``results`` of the ``adit.relax`` CalcJobs that relaxed them, whose
        ``structures.<key>.energy`` is the energy of the relaxed structure ``key``).
    :returns: ``e_above_hull`` and ``e_form_per_atom``, each {key: Float}, and ``summary``: one Dict
        with the same numbers (``{"e_above_hull": {key: value}, "e_form_per_atom": {...}}``), which
        :func:`stability_rates` takes instead of one Float input per structure.

    Each output Float is linked to this one process, whose inputs are the batch:
    the structure it belongs to is the input ``structures.<key>`` of the same key.
    Passing the relax records (one Dict per CalcJob) instead of one Float per
    structure halves the inputs; aiida-core links a process's inputs in a time
    that grows with the square of their number, so this matters at 100 per batch.
    """
    structures = dict(batch.get("structures") or {})
    if not structures:
        raise ValueError("energies_above_hull: give at least one structure in `structures`")
    energies: dict[str, float] = {k: v.value for k, v in (batch.get("energies") or {}).items()}
    for results in (batch.get("relax_results") or {}).values():
        for key, record in results.get_dict().get("structures", {}).items():
            if key in structures and record.get("energy") is not None:
                energies.setdefault(key, float(record["energy"]))
    missing = sorted(set(structures) - set(energies))
    if missing:
        raise ValueError(f"energies_above_hull: no total energy for structure(s) {missing[:5]} (of {len(missing)})")
    reference = hull.load()
    e_hull, e_form = {}, {}
    for key in sorted(structures):
        counts = _counts(structures[key])
        e_hull[key] = orm.Float(reference.e_above_hull(counts, energies[key]))
        e_form[key] = orm.Float(reference.formation_energy_per_atom(counts, energies[key]))
    summary = orm.Dict({"e_above_hull": {k: v.value for k, v in e_hull.items()},
                        "e_form_per_atom": {k: v.value for k, v in e_form.items()}})
    return {"e_above_hull": e_hull, "e_form_per_atom": e_form, "summary": summary}


@calcfunction
def stability_rates(settings: orm.Dict, evaluation: orm.Dict | None = None, **e_above_hull) -> orm.Dict:
    """Stable / metastable (and S.U.N. / M.S.U.N. with ``evaluation``) rates over ``settings['keys']``.

    :param settings: ``keys`` (every input structure, sorted; those without an
        energy above hull count as neither stable nor metastable), ``potential``,
        ``hull``, ``stable_threshold`` and ``metastable_threshold`` (eV/atom).
    :param evaluation: ``{"records": [...]}`` of ``adit.evaluate`` in the order of ``keys``.
    :param e_above_hull: the energies above hull (eV/atom), as one Float per structure key, or as
        the ``summary`` Dicts of :func:`energies_above_hull` (one per batch, any input name), or both.
        The Dicts keep the inputs to one per batch: aiida-core checks each new input link against
        every earlier one by value, so 1,000 Float inputs took over 5 minutes to link here.
    """
    from adit_torch.stability.rates import stability_rates as rates

    cfg = settings.get_dict()
    keys = list(cfg["keys"])
    known: dict[str, float] = {}
    for name, node in e_above_hull.items():
        if isinstance(node, orm.Dict):
            known.update({k: float(v) for k, v in node.get_dict()["e_above_hull"].items()})
        else:
            known[name] = node.value
    values = [known.get(k) for k in keys]
    records = None if evaluation is None else list(evaluation.get_dict()["records"])
    out = rates(
        values,
        records,
        potential=cfg.get("potential"),
        hull=cfg.get("hull"),
        stable_threshold=cfg.get("stable_threshold", 0.0),
        metastable_threshold=cfg.get("metastable_threshold", 0.1),
    )
    out["per_structure"] = {k: v for k, v in zip(keys, values, strict=True)}
    return orm.Dict(out)
