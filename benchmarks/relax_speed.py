"""Speed of CHGNet relaxation and static prediction on MP-20-sized cells (CPU).

Takes ``--num`` MP-20 crystals drawn with a fixed seed from the workplace
MP-20 files (1-20 atoms per cell), rattles their positions by a Gaussian of
``--rattle`` Å (so the optimiser has real work, as a generated sample would),
relaxes them with the library defaults (FIRE + FrechetCellFilter, fmax 0.05
eV/Å, at most 500 steps) and reports structures relaxed per minute, steps per
structure and seconds per step; then times batched static predictions
(energies only, and energies + forces + stress) over the same crystals. Also
records the CPU time of the process so a shared machine's load can be read
off. Writes ``--out`` (JSON). Usage::

    OMP_NUM_THREADS=1 python benchmarks/relax_speed.py --num 20 --out benchmarks/results/relax_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from adit_torch.io import read_systems
from adit_torch.stability.potentials import get_potential
from adit_torch.stability.relax import relax_systems, summarize

MP20 = Path(__file__).resolve().parents[2] / "shared" / "data" / "mp20"


def main(argv=None) -> int:
    """Run the benchmark and write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=20)
    parser.add_argument("--rattle", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/relax_speed.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    pool = list(read_systems(MP20 / "mp_20_pilot_test.csv.gz"))
    rng = np.random.default_rng(args.seed)
    picked = [pool[i].copy() for i in rng.choice(len(pool), size=args.num, replace=False)]
    for s in picked:
        s.positions = s.positions + rng.normal(0.0, args.rattle, s.positions.shape)
    potential = get_potential("chgnet")
    potential.predict(picked[:1])  # load and warm up outside the timings

    cpu0, t0 = time.process_time(), time.perf_counter()
    results = relax_systems(picked, potential, fmax=0.05, steps=500, progress=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    kept = [r for r in results if r.ok]
    steps = [r.steps for r in kept]

    timings = {}
    for task in ("e", "efs"):
        t = time.perf_counter()
        if task == "e":
            potential.predict_energies(picked, batch_size=16)
        else:
            potential.predict(picked, batch_size=16)
        timings[task] = time.perf_counter() - t

    atoms = [s.num_atoms for s in picked]
    payload = {
        "machine": "2-core CPU, 24 GiB, no GPU", "date": "2026-11-25",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(), "torch": torch.__version__, "torch_threads": args.threads,
        "load_average_1min_at_end": os.getloadavg()[0],
        "potential": potential.describe(),
        "structures": args.num, "atoms_per_cell_mean": float(np.mean(atoms)), "atoms_per_cell_max": int(max(atoms)),
        "rattle_angstrom": args.rattle, "fmax": 0.05, "max_steps": 500, "optimizer": "FIRE + FrechetCellFilter",
        "relax": {
            **summarize(results),
            "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
            "structures_per_minute_wall": round(60 * args.num / wall, 2),
            "structures_per_minute_cpu": round(60 * args.num / cpu, 2),
            "steps_mean": float(np.mean(steps)) if steps else None,
            "steps_median": float(np.median(steps)) if steps else None,
            "seconds_per_step_wall": round(wall / max(1, sum(r.steps + 1 for r in results)), 4),
        },
        "static_batched": {
            "energies_only_structures_per_second": round(args.num / timings["e"], 2),
            "energy_forces_stress_structures_per_second": round(args.num / timings["efs"], 2),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, args.out)
    print(json.dumps(payload["relax"], indent=1), json.dumps(payload["static_batched"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
