"""How long storing N generated structures as StructureData takes, on SQLite and PostgreSQL.

What the ``adit.sample`` parser does per sample: build a StructureData from an
extxyz frame (``aiida_adit.structures.atoms_to_structure``) and store it, linked
to the CalcJob. Measured here: build + store of N nodes (one transaction per node,
as the engine stores parser outputs), then setting the ``kind``/``elements``
extras on each (what ``adit.generate`` does), and one provenance query.
The frames are real MP-20 crystals and QM9 molecules, repeated to reach N.

    python benchmarks/aiida_store.py --profile PROFILE [--sizes 1000 10000] [--kind crystal] [--transaction]

PROFILE is an existing AiiDA profile (its storage backend is recorded). Results are
appended as one JSON line per run to ``benchmarks/results/aiida_store.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "aiida_store.jsonl"
MACHINE = "2-core CPU, 24 GiB, no GPU"
DATE = "2026-11-25"


def frames(kind: str) -> list:
    """Real systems as ase.Atoms: MP-20 crystals or QM9 molecules from the test fixtures."""
    from adit_torch.io import read_systems

    if kind == "crystal":
        systems = []
        for path in sorted((ROOT / "tests" / "fixtures" / "mp20").glob("*.csv.gz")):
            systems += read_systems(path)
    else:
        systems = read_systems(ROOT / "tests" / "fixtures" / "evaluate" / "molecules_reference.extxyz")
    return [system.to_ase() for system in systems]


def run(size: int, kind: str, transaction: bool = False) -> dict:
    """Store ``size`` structures under one CalcJobNode; returns timings in seconds.

    :param transaction: store all nodes in one database transaction instead of one each.
    """
    import contextlib

    from aiida import orm
    from aiida.common import LinkType
    from aiida.manage import get_manager
    from aiida.plugins.entry_point import format_entry_point_string

    from aiida_adit.queries import generated_structures
    from aiida_adit.structures import atoms_to_structure

    pool = frames(kind)
    calc = orm.CalcJobNode(process_type=format_entry_point_string("aiida.calculations", "adit.sample")).store()
    nodes = []
    scope = get_manager().get_profile_storage().transaction() if transaction else contextlib.nullcontext()
    start = time.perf_counter()
    with scope:
        for index in range(size):
            node = atoms_to_structure(pool[index % len(pool)])
            node.base.links.add_incoming(calc, link_type=LinkType.CREATE, link_label=f"structures__sample_{index:05d}")
            nodes.append(node.store())
    store_s = time.perf_counter() - start
    start = time.perf_counter()
    for node in nodes:
        node.base.extras.set_many({"kind": kind, "elements": sorted(node.get_symbols_set())})
    extras_s = time.perf_counter() - start
    start = time.perf_counter()
    query = generated_structures(elements=["O"], kind=kind)
    query_rows = query.count()
    query_s = time.perf_counter() - start
    atoms = sum(len(node.sites) for node in nodes)
    return {
        "structures": size,
        "kind": kind,
        "one_transaction": transaction,
        "atoms": atoms,
        "store_s": round(store_s, 2),
        "store_ms_per_structure": round(1000 * store_s / size, 2),
        "extras_s": round(extras_s, 2),
        "query_elements_O_s": round(query_s, 3),
        "query_rows": query_rows,
    }


def main() -> None:
    """Parse arguments, run each size, print and append the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True, help="AiiDA profile to store into (use a scratch one)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--kind", choices=["crystal", "molecule"], default="crystal")
    parser.add_argument("--transaction", action="store_true", help="store all nodes in one transaction")
    args = parser.parse_args()

    import torch
    from aiida import load_profile

    torch.set_num_threads(1)
    profile = load_profile(args.profile)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for size in args.sizes:
        result = {
            "machine": MACHINE,
            "date": DATE,
            "storage": profile.storage_backend,
            **run(size, args.kind, args.transaction),
        }
        print(json.dumps(result))
        with open(RESULTS, "a") as handle:
            handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
