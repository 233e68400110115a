"""Calculation functions of the metastability work chain: each energy above hull and the rates, with provenance.

:func:`energy_above_hull` links a relaxed structure, its total energy and the
reference hull node to the energy above hull it gives; :func:`stability_rates`
links every energy above hull (and the evaluation records, when given) to the
rates. Both run in the work chain's process, never on a remote computer.
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
    counts: dict[str, int] = {}
    for site in structure.sites:
        symbol = structure.get_kind(site.kind_name).symbol
        counts[symbol] = counts.get(symbol, 0) + 1
    reference = hull.load()
    return {
        "e_above_hull": orm.Float(reference.e_above_hull(counts, energy.value)),
        "e_form_per_atom": orm.Float(reference.formation_energy_per_atom(counts, energy.value)),
    }


@calcfunction
def stability_rates(settings: orm.Dict, evaluation: orm.Dict | None = None, **e_above_hull: orm.Float) -> orm.Dict:
    """Stable / metastable (and S.U.N. / M.S.U.N. with ``evaluation``) rates over ``settings['keys']``.

    :param settings: ``keys`` (every input structure, sorted; those without an
        energy above hull count as neither stable nor metastable), ``potential``,
        ``hull``, ``stable_threshold`` and ``metastable_threshold`` (eV/atom).
    :param evaluation: ``{"records": [...]}`` of ``adit.evaluate`` in the order of ``keys``.
    :param e_above_hull: one Float per structure key that has one (eV/atom).
    """
    from adit_torch.stability.rates import stability_rates as rates

    cfg = settings.get_dict()
    keys = list(cfg["keys"])
    values = [e_above_hull[k].value if k in e_above_hull else None for k in keys]
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
