"""How long storing N generated structures as StructureData takes, on SQLite and PostgreSQL.

What the ``adit.sample`` parser and CalcJob do per sample: build a StructureData
from an extxyz frame (``aiida_adit.structures.atoms_to_structure``) and store it,
linked to the CalcJob. Measured here: build + store of N nodes, then writing the
evaluation extras on each (what ``adit.generate`` does), and one provenance query,
with the writes grouped as in ``--mode`` (see ``run``).
The frames are real MP-20 crystals and QM9 molecules, repeated to reach N.

    python benchmarks/aiida_store.py --profile PROFILE [--sizes 1000 10000] [--kind crystal]
        [--mode chunked] [--measure store]

PROFILE is an existing AiiDA profile (its storage backend is recorded). Results are
appended as one JSON line per run to ``benchmarks/results/aiida_store.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
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


MODES = ("per-node", "chunked", "transaction")


def run(size: int, kind: str, mode: str = "chunked") -> dict:
    """Store ``size`` structures under one CalcJobNode, set their extras, query them; timings in seconds.

    :param mode: ``per-node``: one commit per node, extras set after storing, one commit
        each (aiida-core's default, and this package before chunking); ``chunked``: what the
        ``adit`` CalcJobs and ``adit.generate`` do now (``kind``/``elements`` extras set
        before storing, nodes stored and evaluation extras written
        ``aiida_adit.storage.WRITES_PER_TRANSACTION`` per transaction); ``transaction``:
        everything in a single transaction (the lower bound).
    """
    import contextlib

    from aiida import orm
    from aiida.common import LinkType
    from aiida.manage import get_manager
    from aiida.plugins.entry_point import format_entry_point_string

    from aiida_adit.parsers.sample import structure_extras
    from aiida_adit.queries import generated_structures
    from aiida_adit.storage import WRITES_PER_TRANSACTION, set_extras, write_in_transactions
    from aiida_adit.structures import atoms_to_structure

    pool = frames(kind)
    calc = orm.CalcJobNode(process_type=format_entry_point_string("aiida.calculations", "adit.sample")).store()
    storage = get_manager().get_profile_storage()

    def scope():
        return storage.transaction() if mode == "transaction" else contextlib.nullcontext()

    def build(index):
        node = atoms_to_structure(pool[index % len(pool)])
        if mode != "per-node":
            node.base.extras.set_many(structure_extras(node, kind))
        return f"structures__sample_{index:05d}", node

    def store(pair):
        label, node = pair
        node.base.links.add_incoming(calc, link_type=LinkType.CREATE, link_label=label)
        node.store()

    start = time.perf_counter()
    pairs = [build(index) for index in range(size)]
    with scope():
        if mode == "chunked":
            write_in_transactions(pairs, store)
        else:
            for pair in pairs:
                store(pair)
    store_s = time.perf_counter() - start
    nodes = [node for _, node in pairs]
    evaluation = [(node, {"valid": index % 2 == 0, "formula": node.get_formula()}) for index, node in enumerate(nodes)]
    start = time.perf_counter()
    if mode == "per-node":
        for node, extras in evaluation:
            node.base.extras.set_many({**extras, **structure_extras(node, kind)})
    else:
        with scope():  # in one transaction, set_extras joins it
            set_extras(evaluation)
    extras_s = time.perf_counter() - start
    start = time.perf_counter()
    query = generated_structures(elements=["O"], kind=kind)
    query_rows = query.count()
    query_s = time.perf_counter() - start
    return {
        "structures": size,
        "kind": kind,
        "mode": mode,
        "writes_per_transaction": WRITES_PER_TRANSACTION if mode == "chunked" else (1 if mode == "per-node" else size),
        "atoms": sum(len(node.sites) for node in nodes),
        "store_s": round(store_s, 2),
        "store_ms_per_structure": round(1000 * store_s / size, 2),
        "extras_s": round(extras_s, 2),
        "query_elements_O_s": round(query_s, 3),
        "query_rows": query_rows,
    }


def run_returns(size: int, kind: str, mode: str = "chunked") -> dict:
    """Return ``size`` stored structures from a work flow node (what a work chain does with its outputs).

    :param mode: ``per-node``: one ``add_incoming`` (one commit) per link, as aiida-core's
        ``update_outputs`` does; ``chunked``: ``aiida_adit.storage.return_links``, what the
        ``adit`` work chains do now.
    """
    from aiida import orm
    from aiida.common import LinkType
    from aiida.plugins.entry_point import format_entry_point_string

    from aiida_adit.storage import return_links, write_in_transactions
    from aiida_adit.structures import atoms_to_structure

    pool = frames(kind)
    calc = orm.CalcJobNode(process_type=format_entry_point_string("aiida.calculations", "adit.sample")).store()
    pairs = [(f"structures__sample_{i:05d}", atoms_to_structure(pool[i % len(pool)])) for i in range(size)]

    def store(pair):
        pair[1].base.links.add_incoming(calc, link_type=LinkType.CREATE, link_label=pair[0])
        pair[1].store()

    write_in_transactions(pairs, store)
    workflow = orm.WorkflowNode().store()
    start = time.perf_counter()
    if mode == "per-node":
        for label, node in pairs:
            node.base.links.add_incoming(workflow, link_type=LinkType.RETURN, link_label=label)
    else:
        return_links(workflow, dict(pairs))
    return_s = time.perf_counter() - start
    linked = len(workflow.base.links.get_outgoing(link_type=LinkType.RETURN).all_link_labels())
    assert linked == size, f"{linked} RETURN links for {size} structures"
    return {
        "structures": size,
        "kind": kind,
        "mode": mode,
        "measure": "returns",
        "return_s": round(return_s, 2),
        "return_ms_per_structure": round(1000 * return_s / size, 3),
    }


def main() -> None:
    """Parse arguments, run each size, print and append the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True, help="AiiDA profile to store into (use a scratch one)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--kind", choices=["crystal", "molecule"], default="crystal")
    parser.add_argument("--mode", choices=MODES, default="chunked", help="how writes are grouped (see run())")
    parser.add_argument(
        "--measure", choices=["store", "returns"], default="store", help="store + extras + query, or RETURN links"
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    measure = run if args.measure == "store" else run_returns
    record_runs(args.profile, args.sizes, RESULTS, lambda size: measure(size, args.kind, args.mode))


def record_runs(profile_name: str, sizes: list[int], results: pathlib.Path, measure) -> None:
    """Load the AiiDA profile, call ``measure(size)`` for each size, print and append each result.

    Each JSON line gets the machine, the date, the storage backend and the load average
    before and after the run around what ``measure`` returns.
    """
    from aiida import load_profile

    profile = load_profile(profile_name)
    results.parent.mkdir(parents=True, exist_ok=True)
    for size in sizes:
        result = {
            "machine": MACHINE,
            "date": DATE,
            "storage": profile.storage_backend,
            "load_average_before": round(os.getloadavg()[0], 2),
            **measure(size),
            "load_average_after": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(result))
        with open(results, "a") as handle:
            handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
