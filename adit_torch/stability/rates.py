"""Stability rates: stable, metastable, S.U.N. and M.S.U.N. with their conventions written out.

Per structure: *stable* when ``E_hull <= stable_threshold`` (0 eV/atom),
*metastable* when ``E_hull < metastable_threshold`` (0.1 eV/atom). A
structure without an energy above hull (relaxation failed or exploded,
element outside the hull) is neither. With evaluation records from
:func:`adit_torch.evaluate.evaluate_crystals` (``valid``, ``unique_group``,
``novel``), S.U.N. counts the distinct structure groups that are novel and
hold at least one valid stable member (each group once, so duplicates never
count twice); M.S.U.N. likewise with metastable members. Every rate is
divided by the number of input structures.
"""

from __future__ import annotations

from collections.abc import Sequence

STABLE_THRESHOLD = 0.0
METASTABLE_THRESHOLD = 0.1


def _fraction(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def _interval(num: int, den: int):
    from adit_torch.evaluate.report import wilson_interval

    ci = wilson_interval(num, den)
    return None if ci is None else [round(ci[0], 6), round(ci[1], 6)]


def classify(e_hull: float | None, stable_threshold: float = STABLE_THRESHOLD,
             metastable_threshold: float = METASTABLE_THRESHOLD) -> tuple[bool, bool]:
    """``(stable, metastable)`` flags of one energy above hull (eV/atom; ``None`` gives both False)."""
    if e_hull is None:
        return False, False
    return e_hull <= stable_threshold, e_hull < metastable_threshold


def stability_rates(e_hull: Sequence[float | None], evaluation: Sequence[dict] | None = None, *,
                    potential: str | None = None, hull: str | None = None,
                    stable_threshold: float = STABLE_THRESHOLD,
                    metastable_threshold: float = METASTABLE_THRESHOLD) -> dict:
    """Rates over M structures, with counts, 95% Wilson intervals and the conventions used.

    Args:
        e_hull: energies above hull, eV/atom, length M (``None`` where unavailable).
        evaluation: per-structure records of the evaluation suite in the same
            order (length M), or ``None`` to skip S.U.N./M.S.U.N.
        potential: name of the potential that relaxed the structures.
        hull: name of the reference hull.
        stable_threshold: stable when ``E_hull <= stable_threshold`` (eV/atom).
        metastable_threshold: metastable when ``E_hull < metastable_threshold`` (eV/atom).

    Returns:
        a JSON-serialisable dict: ``stable_rate``, ``metastable_rate``,
        ``sun_rate``, ``msun_rate`` (``None`` without evaluation), ``counts``,
        ``intervals``, ``thresholds``, ``potential``, ``hull`` and ``convention``.
    """
    m = len(e_hull)
    if evaluation is not None and len(evaluation) != m:
        from adit_torch.errors import ConfigError

        raise ConfigError(f"{len(evaluation)} evaluation records for {m} energies above hull; they must match")
    flags = [classify(e, stable_threshold, metastable_threshold) for e in e_hull]
    n_scored = sum(e is not None for e in e_hull)
    n_stable = sum(s for s, _ in flags)
    n_meta = sum(ms for _, ms in flags)
    counts = {"structures": m, "with_e_hull": n_scored, "stable": n_stable, "metastable": n_meta,
              "sun": None, "msun": None}
    if evaluation is not None:
        sun_groups, msun_groups = set(), set()
        for (stable, meta), rec in zip(flags, evaluation, strict=True):
            if not rec.get("valid") or rec.get("unique_group") is None or rec.get("novel") is not True:
                continue
            if stable:
                sun_groups.add(rec["unique_group"])
            if meta:
                msun_groups.add(rec["unique_group"])
        counts["sun"], counts["msun"] = len(sun_groups), len(msun_groups)
    rates = {
        "stable_rate": _fraction(n_stable, m),
        "metastable_rate": _fraction(n_meta, m),
        "sun_rate": None if counts["sun"] is None else _fraction(counts["sun"], m),
        "msun_rate": None if counts["msun"] is None else _fraction(counts["msun"], m),
    }
    intervals = {k: None if counts[c] is None else _interval(counts[c], m)
                 for k, c in (("stable_rate", "stable"), ("metastable_rate", "metastable"),
                              ("sun_rate", "sun"), ("msun_rate", "msun"))}
    return {
        **rates,
        "counts": counts,
        "intervals": intervals,
        "thresholds": {"stable_e_hull_max_ev_per_atom": stable_threshold,
                       "metastable_e_hull_below_ev_per_atom": metastable_threshold},
        "potential": potential,
        "hull": hull,
        "convention": "rates over all input structures; failed/exploded relaxations and structures without an "
                      "energy above hull count as neither stable nor metastable; stable: E_hull <= "
                      f"{stable_threshold}, metastable: E_hull < {metastable_threshold} eV/atom; S.U.N./M.S.U.N.: "
                      "distinct StructureMatcher groups (evaluation suite) that are novel and hold a valid "
                      "(meta)stable member, each group counted once",
    }
