"""Evaluation reports: the JSON layout of ``adit evaluate`` and a readable terminal table.

Layout (``docs/developer/contracts.md`` section 7): ``kind``, ``num_structures``,
the fractions (each in [0, 1], ``None`` when its denominator is zero), ``counts``
(the numerators and denominators behind every fraction), ``protocol``,
``reference`` and ``per_structure`` (input order).
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np


def fraction(num: int, den: int) -> float | None:
    """``num / den`` or ``None`` when ``den`` is 0."""
    return None if den == 0 else num / den


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float] | None:
    """Wilson score interval (default 95%) of a binomial proportion; ``None`` for ``n = 0``."""
    if n == 0:
        return None
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lower = 0.0 if successes == 0 else max(0.0, centre - half)  # exact bounds where rounding would miss them
    upper = 1.0 if successes == n else min(1.0, centre + half)
    return lower, upper


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose conventions the numbers depend on."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("aiida-adit", "pymatgen", "smact", "spglib", "rdkit", "openbabel-wheel", "posebusters", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def crystal_report(records, novel, protocol, reference, distributions) -> dict[str, Any]:
    """Assemble the crystal report from per-structure records and the novelty flag of each group."""
    n = len(records)
    n_struct = sum(r["structurally_valid"] for r in records)
    n_comp = sum(r["compositionally_valid"] for r in records)
    n_valid = sum(r["valid"] for r in records)
    n_failed = sum(bool(r["failed_decode"]) for r in records)
    checked = [r["cell_angles_in_range"] for r in records if r["cell_angles_in_range"] is not None]
    n_unique = int(len(novel))
    n_novel = sum(1 for v in novel if v)
    has_reference = reference is not None
    per_structure = [{"index": i, "kind": "crystal", **r} for i, r in enumerate(records)]
    return _jsonable({
        "kind": "crystal",
        "num_structures": n,
        "structural_validity": fraction(n_struct, n),
        "compositional_validity": fraction(n_comp, n),
        "validity": fraction(n_valid, n),
        "failed_decodes": fraction(n_failed, n),
        "cell_angles_in_range": fraction(sum(checked), n) if checked else None,
        "uniqueness": fraction(n_unique, n_valid),
        "novelty": fraction(n_novel, n_unique) if has_reference else None,
        "unique_and_novel_of_valid": fraction(n_novel, n_valid) if has_reference else None,
        "counts": {
            "structures": n, "structurally_valid": n_struct, "compositionally_valid": n_comp, "valid": n_valid,
            "failed_decodes": n_failed, "cell_angles_in_range": sum(checked) if checked else None,
            "unique": n_unique,
            "novel": n_novel if has_reference else None,
        },
        "distributions": distributions,
        "protocol": {**protocol, "libraries": library_versions()},
        "reference": reference,
        "per_structure": per_structure,
    })


def molecule_report(records, counts, fractions, protocol, reference, posebusters) -> dict[str, Any]:
    """Assemble the molecule report from per-structure records, counts and fractions."""
    per_structure = [{"index": i, "kind": "molecule", **r} for i, r in enumerate(records)]
    return _jsonable({
        "kind": "molecule",
        "num_structures": len(records),
        **fractions,
        "posebusters": posebusters,
        "counts": counts,
        "protocol": {**protocol, "libraries": library_versions()},
        "reference": reference,
        "per_structure": per_structure,
    })


def write_json(path: str | os.PathLike, report: dict[str, Any]) -> Path:
    """Write a report as JSON atomically (temporary name, then rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1, allow_nan=False)
            handle.write("\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _pct(value: float | None) -> str:
    return "   n/a" if value is None else f"{100 * value:6.2f}%"


def format_table(report: dict[str, Any]) -> str:
    """A readable summary of a report: one line per metric, percentage and the counts behind it."""
    c = report["counts"]
    n = report["num_structures"]
    if report["kind"] == "crystal":
        rows = [
            ("failed decodes (read-out)", report["failed_decodes"], f"{c['failed_decodes']}/{n}"),
            ("structural validity", report["structural_validity"], f"{c['structurally_valid']}/{n}"),
            (f"compositional validity ({report['protocol']['oxidation_states']})",
             report["compositional_validity"], f"{c['compositionally_valid']}/{n}"),
            ("validity (both)", report["validity"], f"{c['valid']}/{n}"),
            ("uniqueness (of valid)", report["uniqueness"], f"{c['unique']}/{c['valid']}"),
            ("novelty (of unique)", report["novelty"], f"{c['novel']}/{c['unique']}" if c["novel"] is not None else ""),
        ]
        if report["cell_angles_in_range"] is not None:
            rows.insert(1, ("cell as given: angles in (50°, 130°)", report["cell_angles_in_range"],
                            f"{c['cell_angles_in_range']}/{n}"))
    else:
        rows = [
            ("valid and connected (strict, one fragment)", report["validity_connected"],
             f"{c['valid_connected']}/{n}"),
            ("validity, strict (DetermineBonds)", report["validity_strict"], f"{c['valid_strict']}/{n}"),
            ("validity, ADiT route (fragments count)", report["validity"], f"{c['valid']}/{n}"),
            ("ADiT route and one fragment", report["validity_one_fragment"], f"{c['valid_one_fragment']}/{n}"),
            ("uniqueness (of valid)", report["uniqueness"], f"{c['unique']}/{c['valid']}"),
            ("novelty (of valid)", report["novelty"], f"{c['novel']}/{c['valid']}" if c["novel"] is not None else ""),
            ("atom stability (EDM)", report["atom_stability"], f"{c['stable_atoms']}/{c['atoms']}"),
            ("molecule stability (EDM)", report["molecule_stability"], f"{c['stable_molecules']}/{n}"),
        ]
        pb = report.get("posebusters")
        if pb:
            for name, entry in pb["checks"].items():
                rows.append((f"PoseBusters: {name}", entry["pass_rate"], f"{entry['passed']}/{entry['evaluated']}"))
            rows.append(("PoseBusters: all checks", pb["all_pass_rate"], f"{pb['all_passed']}/{pb['evaluated']}"))
    width = max(len(r[0]) for r in rows)
    lines = [f"{report['kind']} evaluation of {n} structures"
             + (f" (reference: {report['reference']['name']}, {report['reference']['size']})"
                if report.get("reference") else " (no reference)")]
    lines += [f"  {name:<{width}}  {_pct(value)}  {count}" for name, value, count in rows]
    dist = report.get("distributions")
    if dist:
        lines.append(f"  {'Wasserstein density (g/cm^3)':<{width}}  {dist['wasserstein_density']}")
        lines.append(f"  {'Wasserstein #elements':<{width}}  {dist['wasserstein_num_elements']}")
    return "\n".join(lines)
