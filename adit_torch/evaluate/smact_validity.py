"""Compositional validity of crystals: CDVAE's ``smact_validity`` convention.

A composition (atomic numbers of one cell) is reduced by the gcd of its
counts, then judged valid when

1. it has a single element, or
2. every element is a metal (SMACT's metal list: alloys), or
3. some assignment of one oxidation state per element is charge neutral for
   the reduced counts (SMACT ``neutral_ratios`` with the stoichiometry fixed to
   the reduced counts and ``threshold`` = the largest count) *and* passes the
   Pauling electronegativity test (cations less electronegative than anions).

A missing Pauling electronegativity (Pm, noble gases, ...) is handled by one of two
conventions (``missing_electronegativity``):

* ``"pass"`` (default): CDVAE's ``smact_validity`` ran against a SMACT whose
  ``eneg_states_test`` compared the values and raised ``TypeError`` on ``None``, which
  CDVAE catches as a pass; so a cation/anion pair lacking data makes the test pass.
* ``"fail"``: SMACT 2.6, the version the ADiT reference pins in its ``requirements.txt``,
  returns False as soon as any pair of the composition lacks data, so every composition
  with such an element fails unless it is a single element or all metals. Measured on 1,000
  samples of the shipped model, this is the only difference from the reference evaluator's
  compositional validity (``benchmarks/results/reference_evaluator.md``).

SMACT 4's own ``eneg_states_test`` behaves as ``"fail"``; the test is written here so that
both conventions are available whatever SMACT is installed.

Oxidation states: ``"smact14"`` (SMACT's original full set, the one the
published numbers used; default) or ``"icsd24"`` (SMACT 4's default).
"""

from __future__ import annotations

import itertools
import math
from functools import cache, lru_cache

import numpy as np

from adit_torch.errors import ConfigError
from adit_torch.system import SYMBOLS

#: Oxidation-state sets offered, mapped to the SMACT ``Element`` attribute holding them.
OXIDATION_STATE_SETS = {"smact14": "oxidation_states_smact14", "icsd24": "oxidation_states_icsd24"}


def reduced_composition(numbers) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Elements (atomic numbers, ascending) and their gcd-reduced counts for atomic numbers ``(N,)``."""
    values, counts = np.unique(np.asarray(numbers, dtype=np.int64), return_counts=True)
    if len(values) == 0:
        return (), ()
    g = int(np.gcd.reduce(counts))
    return tuple(int(v) for v in values), tuple(int(c) // g for c in counts)


@cache
def _element(z: int, oxidation_states: str) -> tuple[tuple[int, ...], float | None] | None:
    """Oxidation states and Pauling electronegativity of element ``z``; ``None`` when SMACT has no data."""
    import smact

    try:
        element = smact.Element(SYMBOLS[z])
    except Exception:  # SMACT raises NameError/KeyError for elements it does not know
        return None
    states = getattr(element, OXIDATION_STATE_SETS[oxidation_states]) or []
    eneg = element.pauling_eneg
    if eneg is not None and not math.isfinite(eneg):  # some data sources give NaN for "none"
        eneg = None
    return tuple(int(s) for s in states), eneg


@lru_cache(maxsize=1)
def _metals() -> frozenset[str]:
    import smact

    return frozenset(smact.metals)


#: Conventions for a missing Pauling electronegativity (see the module docstring).
MISSING_ELECTRONEGATIVITY = ("pass", "fail")


def pauling_test(states, enegs, missing: str = "pass") -> bool:
    """Pauling electronegativity test over element pairs (in order).

    Args:
        states: one oxidation state per element.
        enegs: Pauling electronegativities (``None`` = missing) in the same order.
        missing: ``"pass"``: CDVAE's semantics (a compared cation/anion pair lacking data makes the
            test pass); ``"fail"``: SMACT 2.6's (any pair lacking data fails it).

    Returns:
        False at the first cation/anion pair whose cation is at least as
        electronegative as its anion; with ``missing="pass"``, True when a compared
        pair lacks data; with ``missing="fail"``, False at the first pair lacking data.
    """
    for (ox1, e1), (ox2, e2) in itertools.combinations(zip(states, enegs), 2):
        if missing == "fail" and (e1 is None or e2 is None):
            return False
        if ox1 > 0 and ox2 < 0:
            if e1 is None or e2 is None:
                return True
            if e1 >= e2:
                return False
        elif ox1 < 0 and ox2 > 0:
            if e1 is None or e2 is None:
                return True
            if e1 <= e2:
                return False
    return True


def _neutral_combinations(states_per_element, counts) -> np.ndarray:
    """Indices ``(M, n_elements)`` of charge-neutral oxidation-state choices, in ``itertools.product`` order."""
    grids = np.meshgrid(*[np.arange(len(s)) for s in states_per_element], indexing="ij")
    idx = np.stack([g.reshape(-1) for g in grids], axis=1)
    charge = np.zeros(len(idx), dtype=np.int64)
    for k, (states, count) in enumerate(zip(states_per_element, counts)):
        charge += np.asarray(states, dtype=np.int64)[idx[:, k]] * int(count)
    return idx[charge == 0]


@lru_cache(maxsize=65536)
def smact_validity(
    elements: tuple[int, ...],
    counts: tuple[int, ...],
    oxidation_states: str = "smact14",
    use_pauling_test: bool = True,
    include_alloys: bool = True,
    missing_electronegativity: str = "pass",
) -> tuple[bool, str]:
    """CDVAE's compositional validity of a reduced composition.

    Args:
        elements: atomic numbers, ascending (as :func:`reduced_composition` returns them).
        counts: gcd-reduced counts, same length.
        oxidation_states: ``"smact14"`` or ``"icsd24"``.
        use_pauling_test: apply the electronegativity test.
        include_alloys: all-metal compositions are valid.
        missing_electronegativity: ``"pass"`` (CDVAE) or ``"fail"`` (SMACT 2.6, the ADiT reference's pin).

    Returns:
        ``(valid, reason)``; ``reason`` is empty when valid, else a short explanation.
    """
    if oxidation_states not in OXIDATION_STATE_SETS:
        raise ConfigError(f"oxidation_states must be one of {sorted(OXIDATION_STATE_SETS)}, not {oxidation_states!r}")
    if missing_electronegativity not in MISSING_ELECTRONEGATIVITY:
        raise ConfigError(f"missing_electronegativity must be one of {MISSING_ELECTRONEGATIVITY}, "
                          f"not {missing_electronegativity!r}")
    if len(elements) == 0:
        return False, "no atoms"
    if len(elements) == 1:
        return True, ""
    symbols = [SYMBOLS[z] for z in elements]
    if include_alloys and all(s in _metals() for s in symbols):
        return True, ""
    data = [_element(z, oxidation_states) for z in elements]
    missing = [s for s, d in zip(symbols, data) if d is None or not d[0]]
    if missing:
        return False, f"no {oxidation_states} oxidation states for {', '.join(missing)}"
    states_per_element = [d[0] for d in data]
    enegs = [d[1] for d in data]
    # SMACT's neutral_ratios(states, stoichs=[(c,) for c in counts], threshold=max(counts)) tries
    # exactly one stoichiometry, the reduced counts, so it reduces to the charge sum tested here.
    if math.prod(len(s) for s in states_per_element) == 0:
        return False, "no oxidation states"
    neutral = _neutral_combinations(states_per_element, counts)
    if len(neutral) == 0:
        return False, f"no charge-neutral combination of {oxidation_states} oxidation states"
    if not use_pauling_test:
        return True, ""
    for row in neutral:
        states = [states_per_element[k][i] for k, i in enumerate(row)]
        if pauling_test(states, enegs, missing_electronegativity):
            return True, ""
    return False, f"charge-neutral {oxidation_states} oxidation states all fail the Pauling electronegativity test"


def composition_validity(numbers, oxidation_states: str = "smact14",
                         missing_electronegativity: str = "pass") -> tuple[bool, str]:
    """:func:`smact_validity` of the atomic numbers ``(N,)`` of one cell; returns ``(valid, reason)``."""
    elements, counts = reduced_composition(numbers)
    return smact_validity(elements, counts, oxidation_states,
                          missing_electronegativity=missing_electronegativity)
