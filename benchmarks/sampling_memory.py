"""Peak memory of ``adit sample``: against the batch size, and against the number of samples.

Each point is one ``adit sample`` process (the shipped model, molecules, 2 Euler steps unless
``--steps``: the memory of a forward pass does not depend on how many are made), whose peak
resident memory (``ru_maxrss`` of the child, MiB) and wall time are recorded together with the
size of the files it wrote:

* batch sizes ``--batch-sizes`` at ``--num-samples`` samples: the memory the forward passes need;
* sample counts ``--counts`` at the default batch: the command makes and writes its samples
  :data:`adit_torch.cli.sample.CHUNK` at a time, so past one chunk the files keep growing while
  the memory should not (the atom counts, 16 bytes per sample, are all that is kept for every
  sample; the initial noise is drawn a block at a time, :class:`adit_torch.sample_plan.SampleNoise`);
* ``--trace N``: one ``adit sample`` of N samples run in a child through the command's own entry
  point, recording after every chunk written the resident memory (``VmRSS``), the peak since the
  previous chunk (``VmHWM``, reset through ``/proc/self/clear_refs`` after each reading) and the
  size of the structures output (SDF file or CIF folder) so far. A process's overall peak is the
  largest of these per-chunk peaks, so it rises in steps with the number of chunks while the
  per-chunk values stay in one band: the trace shows whether that band moves.

Writes ``benchmarks/results/sampling_memory.json`` (``--trace``: ``sampling_memory_trace.json``
and ``.png``). Usage::

    python benchmarks/sampling_memory.py [--batch-sizes 64 256 1024] [--counts 1000 10000 40000] [--steps 2]
    python benchmarks/sampling_memory.py --trace 100000 [--kind molecule]
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


TRACER = r"""
import json, os, sys, time
from adit_torch import io as adit_io
from adit_torch.cli import main

log, structures = open(sys.argv[1], "w"), ("sdf", "cif")
t0, written = time.perf_counter(), [0]
write = adit_io.StreamWriter.write


def status():
    with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) / 1024 for k, v in (line.split(":", 1) for line in f) if k in ("VmRSS", "VmHWM")}


def traced(self, systems):
    systems = list(systems)
    write(self, systems)
    if self.kind in structures:  # the second writer of a chunk: the chunk is out
        written[0] += len(systems)
        mem = status()
        out = os.path.getsize(self.tmp) if self.tmp.is_file() else sum(p.stat().st_size for p in self.tmp.iterdir())
        log.write(json.dumps({"samples": written[0], "rss_mib": mem["VmRSS"], "chunk_peak_mib": mem["VmHWM"],
                              "output_mib": out / 2**20, "wall_s": time.perf_counter() - t0}) + "\n")
        log.flush()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS


adit_io.StreamWriter.write = traced
sys.exit(main(sys.argv[2:]))
"""


def run_trace(num: int, kind: str, steps: int, solver: str, out_json: Path) -> dict:
    """One streamed ``adit sample`` run of ``num`` samples, traced chunk by chunk (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "trace.jsonl"
        out = Path(tmp) / "s.extxyz"
        cmd = [sys.executable, "-c", TRACER, str(log), "sample", "--kind", kind, "--num-samples", str(num),
               "--steps", str(steps), "--solver", solver, "--out", str(out), "--quiet"]
        load_start = os.getloadavg()
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        rows = [json.loads(line) for line in log.read_text().splitlines()]
    half = len(rows) // 2
    first, second = rows[1 if half > 1 else 0:half], rows[half:]  # the first chunk also holds the start-up

    def band(part, key):
        vals = [r[key] for r in part]
        return {"min": min(vals), "median": float(sorted(vals)[len(vals) // 2]), "max": max(vals)}

    result = {"machine": MACHINE, "date": date.today().isoformat(), "model": "adit-xs-joint (shipped)",
              "kind": kind, "steps": steps, "solver": solver, "num_samples": num, "load_average_start": load_start,
              "load_average_end": os.getloadavg(), "chunks": rows,
              "first_half": {"rss_mib": band(first, "rss_mib"), "chunk_peak_mib": band(first, "chunk_peak_mib")},
              "second_half": {"rss_mib": band(second, "rss_mib"), "chunk_peak_mib": band(second, "chunk_peak_mib")},
              "process_peak_mib": max(r["chunk_peak_mib"] for r in rows)}
    out_json.write_text(json.dumps(result, indent=1) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return result
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = [r["samples"] for r in rows]
    ax.plot(x, [r["chunk_peak_mib"] for r in rows], ".", label="peak within the chunk")
    ax.plot(x, [r["rss_mib"] for r in rows], "-", label="resident after the chunk")
    ax2 = ax.twinx()
    ax2.plot(x, [r["output_mib"] for r in rows], "k--", lw=1, label="output written")
    ax.set_xlabel(f"{kind}s written"), ax.set_ylabel("memory (MiB)"), ax2.set_ylabel("output (MiB)")
    ax.set_ylim(0, None), ax2.set_ylim(0, None)
    ax.legend(loc="lower right", fontsize=8), ax2.legend(loc="upper left", fontsize=8)
    ax.set_title(f"adit sample --num-samples {num}: memory while streaming", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_json.with_suffix(".png"), dpi=120)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--num-samples", type=int, default=2048, help="samples per batch-size point")
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000, 40000])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--solver", default="euler")
    parser.add_argument("--out", type=Path, default=RESULTS / "sampling_memory.json")
    parser.add_argument("--trace", type=int, metavar="N", help="trace one streamed run of N samples instead")
    parser.add_argument("--kind", choices=("molecule", "crystal"), default="molecule", help="with --trace")
    args = parser.parse_args()
    if args.trace:
        out = args.out if args.out != RESULTS / "sampling_memory.json" else RESULTS / "sampling_memory_trace.json"
        result = run_trace(args.trace, args.kind, args.steps, args.solver, out)
        print(json.dumps({k: result[k] for k in ("first_half", "second_half", "process_peak_mib")}, indent=1))
        return
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
