"""Wall time of the default molecule evaluation, cold and warm, and where it goes.

``adit evaluate`` on 200 real QM9 test molecules with default options (PoseBusters on,
novelty against the QM9 training split), run as a user runs it: a fresh process, first
with empty caches (``$ADIT_CACHE_DIR`` pointing at a new folder: the QM9 dataset cache and
the reference-SMILES cache are rebuilt), then again with the caches the first run left.
A phase breakdown follows, measured in one process on another fresh cache: loading the
QM9 training split, making its novelty keys, the per-molecule checks and PoseBusters.

Writes ``benchmarks/results/evaluate_default_time.json``. Usage::

    python benchmarks/evaluate_default_time.py [--num 200] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_command(path: Path, cache: Path, workers: int) -> dict:
    """One ``adit evaluate`` in a fresh process: wall seconds, CPU seconds of the process tree."""
    env = dict(os.environ, ADIT_CACHE_DIR=str(cache))
    cpu0, start = _cpu_children(), time.perf_counter()
    subprocess.run([ADIT, "evaluate", str(path), "--kind", "molecule",
                    "--workers", str(workers), "--json", str(path.with_suffix(".json")), "--quiet"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return {"wall_s": time.perf_counter() - start, "cpu_s": _cpu_children() - cpu0, "load_after": os.getloadavg()}


def phases(systems, workers: int) -> dict:
    """Seconds of each phase of the default evaluation, in this process (caches as they are)."""
    from adit_torch.datasets import load_dataset
    from adit_torch.evaluate.molecules import _map, check_molecule, reference_smiles
    from adit_torch.evaluate.posebusters import run_posebusters

    out = {}
    t = time.perf_counter()
    train = list(load_dataset("qm9", "train"))
    out["load_qm9_train_s"] = time.perf_counter() - t
    t = time.perf_counter()
    reference_smiles(train, workers)
    out["reference_keys_s"] = time.perf_counter() - t
    t = time.perf_counter()
    records = _map(check_molecule, systems, workers, False, "")
    out["checks_s"] = time.perf_counter() - t
    valid = [i for i, r in enumerate(records) if r["valid"]]
    t = time.perf_counter()
    run_posebusters(records, valid, workers=workers)
    out["posebusters_s"] = time.perf_counter() - t
    out["num_valid"] = len(valid)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "evaluate_default_time.json"))
    args = parser.parse_args()

    from adit_torch.datasets import load_dataset
    from adit_torch.io import write_systems

    systems = list(load_dataset("qm9", "test"))[: args.num]
    result = {"machine": MACHINE, "date": date.today().isoformat(), "num_molecules": len(systems),
              "workers": args.workers, "load_average_start": os.getloadavg(),
              "command": "adit evaluate FILE --kind molecule (defaults: PoseBusters on, novelty vs qm9:train)"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "qm9_test.extxyz"
        write_systems(path, systems)
        cache = Path(tmp) / "cache"
        result["cold"] = run_command(path, cache, args.workers)
        print("cold", result["cold"], flush=True)
        result["warm"] = run_command(path, cache, args.workers)
        print("warm", result["warm"], flush=True)
        fresh = Path(tmp) / "cache2"
        os.environ["ADIT_CACHE_DIR"] = str(fresh)
        result["phases_cold"] = phases(systems, args.workers)
        print("phases cold", result["phases_cold"], flush=True)
        result["phases_warm"] = phases(systems, args.workers)
        print("phases warm", result["phases_warm"], flush=True)
    result["load_average_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
