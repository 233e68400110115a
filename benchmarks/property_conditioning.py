"""Property-conditioned crystals: do the samples move towards the asked formation energy and hull energy?

A model trained with the property conditions (``dit.num_properties`` 3) samples ``--num-samples``
crystals unconditioned and under each task of :data:`TASKS` (same seed, solver and steps). The valid
ones (the evaluator's structural and SMACT checks) are relaxed with CHGNet (``--fmax``, at most
``--relax-steps`` FIRE steps, cell included) and scored against the offline CHGNet hull of partial
MP-20, which gives each its formation energy and its energy above the hull (eV/atom). The model was
trained on Materials Project's DFT values, so CHGNet stands in for DFT here: a shift of the
distribution is the measurement, not the exact value.

Reported per row: validity, the median and the quartiles of the formation energy and of E_hull, the
share within 0.25 eV/atom of a formation-energy target, and the share at or under 0.1 eV/atom
above the hull (metastable). The band gap has no predictor here and is not measured.

    python benchmarks/property_conditioning.py --model adit-xs-joint-cond --num-samples 100

Writes ``results/property_conditioning_<model>.json`` with the machine, date and load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
MACHINE = "2-core CPU, 24 GiB, no GPU"
#: (condition, guidance) rows after the unconditioned one.
TASKS = [("formation_energy_per_atom=-3.0", 2.0), ("formation_energy_per_atom=-0.5", 2.0),
         ("e_above_hull=0.0", 2.0)]


def quartiles(values) -> list[float] | None:
    """25th, 50th and 75th percentiles, or None without values."""
    values = [v for v in values if v is not None]
    return [round(float(q), 4) for q in np.percentile(values, [25, 50, 75])] if values else None


def score(systems, hull, potential, args, target: float | None) -> dict:
    """Validity, and CHGNet formation energies and hull energies of the valid samples after relaxation."""
    from adit_torch.errors import InvalidSystemError
    from adit_torch.evaluate.crystals import check_crystal
    from adit_torch.stability.relax import relax_systems
    from adit_torch.stability.scoring import e_above_hull_of

    valid = [s for s in systems if check_crystal(s)["valid"]]
    results = relax_systems(valid, potential, fmax=args.fmax, steps=args.relax_steps, progress=False)
    e_form, e_hull = [], []
    for result in results:
        if not result.ok:
            continue
        try:
            hull_energy, form = e_above_hull_of(result.system, result.energy, hull)
        except InvalidSystemError:  # an element the offline hull has no reference for
            continue
        e_form.append(form)
        e_hull.append(hull_energy)
    out = {"samples": len(systems), "valid": len(valid), "validity": len(valid) / max(1, len(systems)),
           "relaxed_and_scored": len(e_form), "formation_energy_quartiles": quartiles(e_form),
           "e_above_hull_quartiles": quartiles(e_hull),
           "metastable_share": sum(e <= 0.1 for e in e_hull) / max(1, len(e_hull)),
           "formation_energies": [round(e, 4) for e in e_form], "e_above_hull": [round(e, 4) for e in e_hull]}
    if target is not None:
        out["within_0.25_of_target"] = within(e_form, target)
    return out


def within(energies, target: float, tolerance: float = 0.25) -> float:
    """Share of ``energies`` within ``tolerance`` eV/atom of ``target``."""
    return sum(abs(e - target) <= tolerance for e in energies) / max(1, len(energies))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a registered model name or a DiT checkpoint file")
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--solver", default="heun")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fmax", type=float, default=0.1)
    parser.add_argument("--relax-steps", type=int, default=100)
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args()

    import torch

    from adit_torch.conditions import parse_conditions
    from adit_torch.pretrained import MODELS, pretrained_path
    from adit_torch.sample import sample_checkpoint
    from adit_torch.stability.hull import load_offline_hull
    from adit_torch.stability.potentials import get_potential

    torch.set_num_threads(2)
    path = pretrained_path(args.model) if args.model in MODELS else pathlib.Path(args.model)
    hull, potential = load_offline_hull(), get_potential("chgnet")
    common = dict(steps=args.steps, solver=args.solver, seed=args.seed, progress=False)
    load_before = os.getloadavg()[0]
    rows = []
    for condition, scale in [(None, None), *TASKS]:
        t0 = time.time()
        conditions = None
        target = None
        if condition is not None:
            key, value = condition.split("=")
            conditions = parse_conditions([condition], [f"{key}={scale}"])
            target = float(value) if key == "formation_energy_per_atom" else None
        systems, _ = sample_checkpoint(path, "crystal", args.num_samples, conditions=conditions, **common)
        rows.append({"condition": condition, "guidance": scale, **score(systems, hull, potential, args, target),
                     "seconds": round(time.time() - t0, 1)})
        print(json.dumps({k: v for k, v in rows[-1].items() if k not in ("formation_energies", "e_above_hull")}),
              flush=True)
    for row in rows[1:]:  # the same share for the unconditioned samples, side by side
        if row["condition"].startswith("formation_energy_per_atom"):
            target = float(row["condition"].split("=")[1])
            row["within_0.25_of_target_unconditioned"] = within(rows[0]["formation_energies"], target)
    result = {"machine": MACHINE, "date": datetime.date.today().isoformat(), "model": str(args.model),
              "num_samples": args.num_samples, "solver": args.solver, "steps": args.steps, "seed": args.seed,
              "relax": {"potential": "chgnet", "fmax": args.fmax, "steps": args.relax_steps},
              "hull": "offline CHGNet hull of partial MP-20 (adit_torch/resources/mp20_chgnet_hull.json.gz)",
              "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2),
              "mp20_note": "trained on the workplace's partial MP-20 (9,421 training crystals)",
              "band_gap": "not measured: no band-gap predictor is available offline", "rows": rows}
    name = pathlib.Path(str(args.model)).stem if args.model not in MODELS else args.model
    out = args.out or ROOT / "benchmarks" / "results" / f"property_conditioning_{name}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
