"""Distribution metrics of generated crystals against a reference set (CDVAE style).

CDVAE reports the Wasserstein distance between the generated and the reference
distributions of mass density (g/cm^3) and of the number of distinct elements
per structure. Added here: the same for the atom count per cell, and the total
variation distance between element, atom-count and space-group histograms.
Everything is computed over the *valid* generated structures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from adit_torch.system import SYMBOLS, AtomicSystem


def total_variation(p: Counter, q: Counter) -> float:
    """Total variation distance (in [0, 1]) between two histograms given as counters."""
    np_, nq = sum(p.values()), sum(q.values())
    if np_ == 0 or nq == 0:
        return float("nan")
    keys = set(p) | set(q)
    return 0.5 * float(sum(abs(p.get(k, 0) / np_ - q.get(k, 0) / nq) for k in keys))


def _wasserstein(a: Sequence[float], b: Sequence[float]) -> float | None:
    from scipy.stats import wasserstein_distance

    if len(a) == 0 or len(b) == 0:
        return None
    return float(wasserstein_distance(np.asarray(a, dtype=float), np.asarray(b, dtype=float)))


def _normalised(counter: Counter, top: int | None = None) -> dict[str, float]:
    total = sum(counter.values())
    items = counter.most_common(top)
    return {str(k): v / total for k, v in items} if total else {}


def crystal_distributions(generated: Sequence[AtomicSystem], records: Sequence[dict],
                          reference: Sequence[AtomicSystem]) -> dict[str, Any]:
    """Distribution distances of valid generated crystals against reference crystals.

    Args:
        generated: the valid generated crystals.
        records: their check records (``density`` g/cm^3, ``num_elements``, ``spacegroup``).
        reference: reference crystals (``info['spacegroup']`` used when present, else spglib).

    Returns:
        ``wasserstein_density`` (g/cm^3), ``wasserstein_num_elements``,
        ``wasserstein_num_atoms``, ``tv_elements``, ``tv_num_atoms``,
        ``tv_spacegroup`` (each in [0, 1]) and the normalised histograms
        (``element_fractions``, ``num_atoms_fractions``, ``spacegroup_fractions``, top 20).
    """
    from adit_torch.evaluate.crystals import density, spacegroup_number

    ref_density = [density(s) for s in reference]
    ref_nelem = [len(np.unique(s.numbers)) for s in reference]
    ref_natoms = [s.num_atoms for s in reference]
    ref_elements = Counter(SYMBOLS[z] for s in reference for z in s.numbers.tolist())
    ref_sg = Counter(
        int(s.info["spacegroup"]) if "spacegroup" in s.info else spacegroup_number(s) for s in reference
    )
    gen_elements = Counter(SYMBOLS[z] for s in generated for z in s.numbers.tolist())
    gen_sg = Counter(r["spacegroup"] for r in records)
    gen_natoms = Counter(s.num_atoms for s in generated)
    return {
        "num_generated_valid": len(generated),
        "num_reference": len(reference),
        "wasserstein_density": _wasserstein([r["density"] for r in records], ref_density),
        "wasserstein_num_elements": _wasserstein([r["num_elements"] for r in records], ref_nelem),
        "wasserstein_num_atoms": _wasserstein([s.num_atoms for s in generated], ref_natoms),
        "tv_elements": total_variation(gen_elements, ref_elements),
        "tv_num_atoms": total_variation(gen_natoms, Counter(ref_natoms)),
        "tv_spacegroup": total_variation(gen_sg, ref_sg),
        "element_fractions": {"generated": _normalised(gen_elements, 20), "reference": _normalised(ref_elements, 20)},
        "num_atoms_fractions": {"generated": _normalised(gen_natoms), "reference": _normalised(Counter(ref_natoms))},
        "spacegroup_fractions": {"generated": _normalised(gen_sg, 20), "reference": _normalised(ref_sg, 20)},
    }
