"""Inpainting with a shipped model: do the kept atoms survive, and are the completions valid?

Fragments come from real held-out structures:

* ``molecule: heavy atoms``: the heavy-atom skeleton of a QM9 test molecule (>= 12 atoms);
  the model adds the hydrogens (samples have the molecule's atom count);
* ``molecule: half``: the first half of a QM9 test molecule's atoms (file order);
* ``crystal: half the sites``: the first half of the sites of an MP-20 test crystal (Niggli
  cell, types and fractional coordinates); the model generates the other sites and the lattice;
* ``crystal: half the sites and the lattice``: the same fragments with ``keep_lattice`` (the
  completions are decoded into the original lattice).

Each fragment is completed ``--per-fragment`` times (Heun, ``--steps`` steps, guidance 2), with
1, 2 and 3 rounds (``inpaint_rounds``: from the second round the kept atoms' latents are encoded
inside the previous completion). Reported per task and number of rounds: the fraction of samples
whose kept atoms keep their elements, the median
and 90th-percentile RMSD of the kept part (Å; best rigid alignment for molecules, best common
translation of fractional coordinates for crystals), and the validity of the completions with
the evaluator's per-structure checks (molecules: strict and connected, and the ADiT route;
crystals: structural, compositional and both). The same atom counts sampled without a fragment
give the unconditional baseline, and encoding then decoding the whole original structure (the
VAE's reconstruction) gives the floor of the RMSD. CPU seconds are the process's, per setting.

The samples are drawn with ``exact_keep=False``, so that the figures above are the decoder's own.
Also reported: the share of completions that keep the fragment's elements within 0.1 Å
(:data:`WITHIN`) and their validity, and the validity of the same completions with the fragment's
own atoms written in (:func:`adit_torch.inpaint.keep_exactly`, what ``adit sample --keep`` writes
by default).

Writes ``benchmarks/results/inpainting_<model>.json``; with ``--tasks``, only those tasks are run and
replaced in an existing file. Usage::

    python benchmarks/inpainting.py [--model adit-xs-joint] [--fragments 40] [--per-fragment 4] [--tasks ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from adit_torch.batching import collate
from adit_torch.datasets import load_dataset
from adit_torch.evaluate.crystals import check_crystal
from adit_torch.evaluate.molecules import check_molecule
from adit_torch.inpaint import keep_exactly, kept_fidelity
from adit_torch.pretrained import load_pretrained
from adit_torch.sample import sample_systems
from adit_torch.system import AtomicSystem

RESULTS = Path(__file__).resolve().parent / "results"
#: The tasks: name -> (kind, keep the lattice).
TASKS = {"molecule: heavy atoms": ("molecule", False), "molecule: half": ("molecule", False),
         "crystal: half the sites": ("crystal", False), "crystal: half the sites and the lattice": ("crystal", True)}
MACHINE = "2-core CPU, 24 GiB, no GPU"
#: Kept-part RMSD (Å) under which a completion counts as keeping the fragment (the issue's threshold).
WITHIN = 0.1


def fragments(task: str, structures: list[AtomicSystem]) -> list[tuple[AtomicSystem, AtomicSystem]]:
    """``(original, fragment)`` pairs of a task."""
    out = []
    for s in structures:
        if task == "molecule: heavy atoms":
            keep = np.flatnonzero(s.numbers > 1)
        else:
            keep = np.arange(s.num_atoms // 2)
        if 0 < len(keep) < s.num_atoms:
            if s.is_periodic:
                frag = AtomicSystem.from_fractional(s.numbers[keep], s.frac_coords[keep], s.lattice)
            else:
                frag = AtomicSystem(s.numbers[keep], s.positions[keep])
            out.append((s, frag))
    return out


def validity(systems: list[AtomicSystem], kind: str) -> dict[str, float]:
    """Per-structure validity rates of ``systems`` (percent)."""
    if kind == "crystal":
        records = [check_crystal(s) for s in systems]
        keys = {"structural": "structurally_valid", "compositional": "compositionally_valid", "both": "valid"}
    else:
        records = [check_molecule(s) for s in systems]
        keys = {"strict_connected": "valid_connected", "adit_route": "valid"}
    return {name: 100.0 * float(np.mean([bool(r[key]) for r in records])) for name, key in keys.items()}


def reconstruction_rmsd(vae, originals: list[AtomicSystem]) -> float:
    """Median RMSD (Å) between each original and its VAE reconstruction (posterior mean)."""
    with torch.no_grad():
        recon = vae.reconstruct(collate(originals))
    return float(np.median([kept_fidelity(o, r)["rmsd"] for o, r in zip(originals, recon)
                            if kept_fidelity(o, r)["rmsd"] is not None]))


def run_task(task: str, pairs, models, args) -> dict:
    """Complete every fragment of a task at each number of rounds; baseline and reconstruction floor."""
    dit, vae, flow_cfg, meta = models
    kind, keep_lattice = TASKS[task]
    per_rounds = {}
    for rounds in args.rounds:
        samples, exact, kept, rmsds, close = [], [], [], [], []
        start = time.process_time()
        for original, frag in pairs:
            out = sample_systems(dit, vae, flow_cfg, meta["data"], kind, args.per_fragment, steps=args.steps,
                                 solver="heun", seed=args.seed, num_atoms=original.num_atoms, progress=False,
                                 fragment=frag, inpaint_rounds=rounds, keep_lattice=keep_lattice, exact_keep=False)
            samples += out
            exact += [keep_exactly(frag, s) for s in out]  # what the default (exact_keep) writes
            kept += [bool(s.info["kept_types"]) for s in out]
            rmsds += [s.info["kept_rmsd"] for s in out if "kept_rmsd" in s.info]
            close += [bool(s.info["kept_types"]) and s.info.get("kept_rmsd", np.inf) <= WITHIN for s in out]
        seconds = time.process_time() - start
        within = [s for s, c in zip(samples, close) if c]
        per_rounds[str(rounds)] = {
            "types_kept_percent": 100.0 * float(np.mean(kept)),
            "kept_rmsd_median": float(np.median(rmsds)), "kept_rmsd_p90": float(np.percentile(rmsds, 90)),
            f"kept_within_{WITHIN}A_percent": 100.0 * float(np.mean(close)),
            "validity_inpainted": validity(samples, kind),
            f"validity_of_kept_within_{WITHIN}A": validity(within, kind) if within else None,
            "validity_exact_keep": validity(exact, kind),
            "cpu_seconds": seconds,
        }
        print(task, rounds, json.dumps(per_rounds[str(rounds)]), flush=True)
    counts = [o.num_atoms for o, _ in pairs for _ in range(args.per_fragment)]
    baseline = sample_systems(dit, vae, flow_cfg, meta["data"], kind, len(counts), steps=args.steps, solver="heun",
                              seed=args.seed, num_atoms=counts, progress=False)
    return {
        "fragments": len(pairs), "samples_per_setting": len(counts),
        "mean_kept_atoms": float(np.mean([f.num_atoms for _, f in pairs])),
        "mean_atoms": float(np.mean([o.num_atoms for o, _ in pairs])),
        "by_rounds": per_rounds,
        "reconstruction_rmsd_median": reconstruction_rmsd(vae, [o for o, _ in pairs]),
        "validity_unconditional_same_sizes": validity(baseline, kind),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="adit-xs-joint")
    parser.add_argument("--fragments", type=int, default=40, help="fragments per task")
    parser.add_argument("--per-fragment", type=int, default=4, help="completions per fragment")
    parser.add_argument("--steps", type=int, default=10, help="Heun steps (19 network evaluations at 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, nargs="+", default=[1, 2, 3], help="inpainting rounds to compare")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS),
                        help="tasks to run (default: all); others already in --out are kept")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = load_pretrained(args.model)
    molecules = [s for s in load_dataset("qm9", "test") if s.num_atoms >= 12][: args.fragments]
    crystals = [s.canonical() for s in list(load_dataset("mp20", "test"))[: args.fragments] if s.num_atoms >= 2]
    result = {"machine": MACHINE, "date": date.today().isoformat(), "load_average_start": os.getloadavg(),
              "model": args.model, "solver": "heun", "steps": args.steps, "cfg_scale": models[2].cfg_scale,
              "seed": args.seed, "per_fragment": args.per_fragment, "threads": args.threads,
              "data": "QM9 test split; MP-20 test split of the workplace's partial MP-20 (about 38% of MP-20)",
              "tasks": {}}
    for task in args.tasks:
        pool = crystals if TASKS[task][0] == "crystal" else molecules
        result["tasks"][task] = {**run_task(task, fragments(task, pool), models, args), "date": result["date"],
                                 "rounds": args.rounds}
    result["load_average_end"] = os.getloadavg()
    out = args.out or RESULTS / f"inpainting_{args.model}.json"
    if set(args.tasks) != set(TASKS) and out.is_file():  # replace these tasks, keep the others' results
        earlier = json.loads(out.read_text())
        earlier["tasks"].update(result["tasks"])
        earlier.setdefault("runs", []).append({k: v for k, v in result.items() if k != "tasks"} |
                                              {"tasks": args.tasks})
        result = earlier
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
