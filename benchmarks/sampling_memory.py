"""Peak memory of ``adit sample``: against the batch size, and against the number of samples.

Each point is one ``adit sample`` process (the shipped model, molecules, 2 Euler steps unless
``--steps``: the memory of a forward pass does not depend on how many are made), whose peak
resident memory (``ru_maxrss`` of the child, MiB) and wall time are recorded together with the
size of the files it wrote:

* batch sizes ``--batch-sizes`` at ``--num-samples`` samples: the memory the forward passes need;
* sample counts ``--counts`` at the default batch: the command makes and writes its samples
  :data:`adit_torch.cli.sample.CHUNK` at a time, so past one chunk the files keep growing while
  the peak memory should not (the atom counts and the noise of every sample, drawn up front, are
  the part that still grows: 0.6 KB per molecule).

Writes ``benchmarks/results/sampling_memory.json``. Usage::

    python benchmarks/sampling_memory.py [--batch-sizes 64 256 1024] [--counts 1000 10000 40000] [--steps 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
#: The ``adit`` command of this environment.
ADIT = str(Path(sys.executable).parent / "adit")
MACHINE = "2-core CPU, 24 GiB, no GPU"
PROBE = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


def run_point(num: int, batch: int, steps: int, solver: str) -> dict:
    """One ``adit sample`` run: peak RSS (MiB), wall seconds, output bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "s.extxyz"
        cmd = [sys.executable, "-c", PROBE, ADIT, "sample", "--kind", "molecule",
               "--num-samples", str(num), "--batch-size", str(batch), "--steps", str(steps), "--solver", solver,
               "--out", str(out), "--quiet"]
        start = time.perf_counter()
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
        peak_kib = int(done.stdout.strip().splitlines()[-1])
        size = sum(p.stat().st_size for p in Path(tmp).iterdir() if p.is_file())
    return {"num_samples": num, "batch_size": batch, "peak_rss_mib": peak_kib / 1024, "wall_s": wall,
            "output_mib": size / 2**20, "load_after": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--num-samples", type=int, default=2048, help="samples per batch-size point")
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000, 40000])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--solver", default="euler")
    parser.add_argument("--out", type=Path, default=RESULTS / "sampling_memory.json")
    args = parser.parse_args()
    result = {"machine": MACHINE, "date": date.today().isoformat(), "model": "adit-xs-joint (shipped)",
              "kind": "molecule", "steps": args.steps, "solver": args.solver, "load_average_start": os.getloadavg(),
              "by_batch_size": [], "by_num_samples": []}
    for batch in args.batch_sizes:
        result["by_batch_size"].append(run_point(args.num_samples, batch, args.steps, args.solver))
        print(json.dumps(result["by_batch_size"][-1]), flush=True)
    for num in args.counts:
        result["by_num_samples"].append(run_point(num, 256, args.steps, args.solver))
        print(json.dumps(result["by_num_samples"][-1]), flush=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
