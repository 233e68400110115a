"""The whole ``adit.sample`` CalcJob at 1,000 and 10,000 samples: run, parse, store.

Where ``aiida_store.py`` times only the node writes, this runs the real CalcJob
in-process (``run_get_node``) on a local computer with the tiny DiT of the test
fixtures, so every cost a user pays is in: the ``adit sample`` command, retrieval
of the extxyz, the parser (reading the frames, building StructureData, extras),
and the engine storing and linking the outputs (chunked transactions,
``aiida_adit.storage.StoreOutputsInChunks``). The parser and the output storing are timed
separately by wrapping them; then putting the structures in a Group (what
``adit.generate`` does next) is timed too.

    python benchmarks/aiida_sample_calcjob.py --profile PROFILE [--sizes 1000 10000] [--kind molecule]

Results are appended as JSON lines to ``benchmarks/results/aiida_sample_calcjob.jsonl``.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "aiida_sample_calcjob.jsonl"
CHECKPOINT = ROOT / "tests" / "fixtures" / "aiida" / "train_dit" / "temporary" / "dit.safetensors"


def _example():
    """``examples/submit_adit.py`` as a module (its local computer and code helpers)."""
    spec = importlib.util.spec_from_file_location("submit_adit", ROOT / "examples" / "submit_adit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(size: int, kind: str, steps: int) -> dict:
    """Run one ``adit.sample`` CalcJob of ``size`` samples; returns timings in seconds."""
    from aiida import orm
    from aiida.engine import run_get_node
    from aiida.plugins import CalculationFactory

    from aiida_adit.calculations.base import AditCalculation
    from aiida_adit.data.checkpoint import CheckpointData
    from aiida_adit.parsers.sample import AditSampleParser

    timers = {"parse_s": 0.0, "store_outputs_s": 0.0}

    def timed(function, key):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timers[key] += time.perf_counter() - start

        return wrapper

    parse, update = AditSampleParser.parse, AditCalculation.update_outputs
    AditSampleParser.parse = timed(parse, "parse_s")
    AditCalculation.update_outputs = timed(update, "store_outputs_s")
    try:
        example = _example()
        code = example.get_code(example.get_computer())
        inputs = {
            "code": code,
            "checkpoint": CheckpointData.get_or_create(CHECKPOINT),
            "num_samples": orm.Int(size),
            "kind": orm.Str(kind),
            "steps": orm.Int(steps),
            "seed": orm.Int(size),
            "metadata": {"options": {"max_wallclock_seconds": 3600}},
        }
        start = time.perf_counter()
        _, node = run_get_node(CalculationFactory("adit.sample"), **inputs)
        total_s = time.perf_counter() - start
    finally:
        AditSampleParser.parse, AditCalculation.update_outputs = parse, update
    if not node.is_finished_ok:
        raise SystemExit(f"adit.sample<{node.pk}> failed: {node.exit_status} {node.exit_message}")
    summary = node.outputs.summary.get_dict()
    structures = list(node.outputs.structures.values())
    start = time.perf_counter()
    group = orm.Group(label=f"benchmark/adit.sample/{node.pk}").store()
    group.add_nodes(structures)  # what adit.generate's make_group does
    group_s = time.perf_counter() - start
    return {
        "structures": len(structures),
        "kind": kind,
        "steps": steps,
        "calcjob_pk": node.pk,
        "total_s": round(total_s, 2),
        "adit_sample_s": round(summary["timing"]["load_s"] + summary["timing"]["sample_s"], 2),
        "parse_s": round(timers["parse_s"], 2),
        "store_outputs_s": round(timers["store_outputs_s"], 2),
        "group_add_s": round(group_s, 2),
        "parse_and_store_ms_per_structure": round(1000 * (timers["parse_s"] + timers["store_outputs_s"]) / size, 2),
    }


def main() -> None:
    """Parse arguments, run each size, print and append the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True, help="AiiDA profile to run in (use a scratch one)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--kind", choices=["crystal", "molecule"], default="molecule")
    parser.add_argument("--steps", type=int, default=3, help="sampler steps (the model is tiny; 3 keeps it short)")
    args = parser.parse_args()

    from aiida_store import record_runs  # benchmarks/ is on sys.path when run as a script

    record_runs(args.profile, args.sizes, RESULTS, lambda size: run(size, args.kind, args.steps))

if __name__ == "__main__":
    main()
