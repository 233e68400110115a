"""Hit rates of conditioned sampling against the same model sampled without the condition.

For each task, ``--num-samples`` systems are sampled from ``--model`` (a registered name or a
file) with the same seed, solver and steps, once unconditioned and once per guidance scale, and
scored by the evaluator's own checks (``check_crystal`` / ``check_molecule``):

- ``chemical_system``: the share of valid samples whose elements all lie in the target set
  (MatterGen's metric; its leak is about 10%), by guidance alone (``restrict_elements`` off)
  and with decoding kept to the set (the default);
- ``formula``: the share of valid samples with exactly the target's reduced formula (the
  sampler assigns types with its counts, so the question is what that costs in validity);
- ``num_atoms``: the share of samples with exactly that many atoms, and their validity;
- ``space_group``: the share of valid crystals whose spglib number (symprec 0.1 Å, the
  evaluator's) equals the target, as decoded (``symmetrize`` off: atom counts from all training
  crystals), as decoded with the group's atom counts, and with the default symmetry-aware decoding
  (those counts, element counts the group's sites hold, each crystal snapped onto it when a
  symmetric structure lies within 1 Å, :mod:`adit_torch.symmetry`), with the largest atom
  displacement of the snaps;
- validity itself, so that a hit rate bought with invalid structures shows.

    python benchmarks/conditioning.py --model runs/cond/dit.safetensors --num-samples 200
    python benchmarks/conditioning.py --model adit-xs-joint-cond --keys space_group \
        --space-groups 225 139 12 62 194 166 221 --scales 2.0

Results go to ``results/conditioning_<model>.json`` with the machine, date and load; ``--keys``
reruns some tasks into an existing file (rows of those conditions are replaced).
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
TASKS = [
    ("crystal", "chemical_system=Li-Fe-O"),
    ("crystal", "chemical_system=Mg-O"),
    ("crystal", "space_group=225"),
    ("crystal", "space_group=194"),
    ("molecule", "chemical_system=C-H-O"),
    ("crystal", "formula=LiFeO2"),
    ("crystal", "formula=MgO"),
    ("crystal", "formula=LiFePO4"),
    ("crystal", "num_atoms=8"),
    ("molecule", "num_atoms=12"),
]


def score(systems, kind: str, condition: str | None) -> dict:
    """Validity and, for ``condition`` (``key=value``), the hit rate among the valid samples."""
    from ase.data import atomic_numbers

    from adit_torch.evaluate.crystals import check_crystal, spacegroup_number
    from adit_torch.evaluate.molecules import check_molecule

    check = check_crystal if kind == "crystal" else check_molecule
    valid = [s for s in systems if check(s)["valid"]]
    out = {"samples": len(systems), "valid": len(valid), "validity": len(valid) / max(1, len(systems))}
    if condition is None:
        return out
    key, value = condition.split("=")
    if key == "chemical_system":
        allowed = {atomic_numbers[sym] for sym in value.split("-")}
        hits = [set(s.numbers.tolist()) <= allowed for s in valid]
    elif key == "formula":
        from adit_torch.conditions import parse_formula, reduced_formula_of

        target = parse_formula(value)
        hits = [reduced_formula_of(s.numbers) == target for s in valid]
    elif key == "num_atoms":
        hits = [s.num_atoms == int(value) for s in valid]
        out["exact_of_all"] = sum(s.num_atoms == int(value) for s in systems) / max(1, len(systems))
    else:
        hits = [spacegroup_number(s) == int(value) for s in valid]
        loose = [spacegroup_number(s, 0.5) for s in valid]  # raw samples are rarely symmetric to 0.1 Å
        out.update({"hit_rate_of_valid_symprec_0.5": sum(g == int(value) for g in loose) / max(1, len(valid)),
                    "not_p1_of_valid_symprec_0.5": sum(g not in (None, 1) for g in loose) / max(1, len(valid))})
        if any("symmetrized" in s.info for s in systems):
            shifts = [s.info["symmetrize_max_shift"] for s in valid if s.info.get("symmetrized")]
            out.update({"symmetrized": sum(bool(s.info.get("symmetrized")) for s in systems),
                        "symmetrized_valid": len(shifts),
                        "max_shift_quartiles_A": ([round(float(q), 3) for q in np.percentile(shifts, [25, 50, 75])]
                                                  if shifts else None)})
    out.update({"hits": int(sum(hits)), "hit_rate_of_valid": sum(hits) / max(1, len(valid)),
                "hit_rate_of_all": sum(hits) / max(1, len(systems))})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a registered model name or a DiT checkpoint file")
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--solver", default="heun")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keys", nargs="+", help="run only the tasks of these condition keys (e.g. space_group) "
                        "and replace their rows in the existing results file")
    parser.add_argument("--space-groups", type=int, nargs="+", default=[225, 194],
                        help="the space_group tasks (international numbers)")
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args()
    tasks = [t for t in TASKS if not t[1].startswith("space_group=")]
    tasks[2:2] = [("crystal", f"space_group={n}") for n in args.space_groups]
    if args.keys:
        tasks = [t for t in tasks if t[1].split("=")[0] in args.keys]

    import torch

    from adit_torch.checkpoint import read_metadata
    from adit_torch.conditions import parse_conditions
    from adit_torch.pretrained import MODELS, pretrained_path
    from adit_torch.sample import sample_checkpoint
    from adit_torch.sample_plan import draw_sizes_and_noise

    torch.set_num_threads(2)
    path = pretrained_path(args.model) if args.model in MODELS else pathlib.Path(args.model)
    stats = read_metadata(path)["data"]
    common = dict(steps=args.steps, solver=args.solver, seed=args.seed, progress=False)
    load_before = os.getloadavg()[0]
    rows, base = [], {}
    for kind, condition in tasks:
        if kind not in base:
            t0 = time.time()
            systems, _ = sample_checkpoint(path, kind, args.num_samples, **common)
            base[kind] = (systems, time.time() - t0)
        systems, seconds = base[kind]
        rows.append({"kind": kind, "condition": condition, "guidance": None, "seconds": round(seconds, 1),
                     **score(systems, kind, condition)})
        key = condition.split("=")[0]
        runs = [(None, True)] if key == "num_atoms" else [(scale, True) for scale in args.scales]
        if key == "chemical_system":  # the condition alone, then with its decoding
            runs = [(scale, False) for scale in args.scales] + runs
        if key == "space_group":  # as decoded; with the group's atom counts; and snapped as well (the default)
            runs = [(scale, mode) for scale in args.scales for mode in ("raw", "sizes", "snap")]
        for scale, decoding in runs:
            conditions = parse_conditions([condition], [f"{key}={scale}"] if scale is not None else None)
            conditions.restrict_elements = bool(decoding)
            conditions.symmetrize = decoding == "snap"
            sizes = None
            if decoding == "sizes":  # the counts the snapped run draws (the sampler's own draw), without the snap
                sizes = draw_sizes_and_noise(stats, kind, args.num_samples, 1, args.seed,
                                             space_group=int(condition.split("=")[1]))[0].tolist()
            t0 = time.time()
            systems, _ = sample_checkpoint(path, kind, args.num_samples, conditions=conditions, num_atoms=sizes,
                                           **common)
            if key == "space_group":
                label = {"raw": "as decoded", "sizes": "as decoded, atom counts of the group",
                         "snap": "snapped onto the group, atom and element counts of the group"}[decoding]
            else:
                label = "restricted to the set" if conditions.allowed_elements() else "free"
            rows.append({"kind": kind, "condition": condition, "guidance": scale, "decoding": label,
                         "date": datetime.date.today().isoformat(),
                         "seconds": round(time.time() - t0, 1), **score(systems, kind, condition)})
            print(json.dumps(rows[-1]), flush=True)
    name = pathlib.Path(str(args.model)).stem if args.model not in MODELS else args.model
    out = args.out or ROOT / "benchmarks" / "results" / f"conditioning_{name}.json"
    if args.keys and out.exists():  # keep the other tasks' rows, in their order
        old = json.loads(out.read_text())
        redone = {r["condition"] for r in rows}
        rows = [r for r in old["rows"] if r["condition"] not in redone] + rows
    result = {"machine": MACHINE, "date": datetime.date.today().isoformat(), "model": str(args.model),
              "num_samples": args.num_samples, "solver": args.solver, "steps": args.steps, "seed": args.seed,
              "base_guidance": "the model's cfg_scale", "torch_threads": 2,
              "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2),
              "mp20_note": "the crystal model was trained on the workplace's partial MP-20 (9,421 training crystals)",
              "rows": rows}
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
