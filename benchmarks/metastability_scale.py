"""``adit.metastability`` on 1,000 crystals through the daemon, with the daemon killed once in the middle.

What it checks, end to end, on a fresh profile of its own:

1. stores ``--structures`` real MP-20 crystals (the workplace's partial MP-20 test split);
2. starts the daemon (one worker) and submits ``adit.metastability`` with CHGNet
   (``adit.relax`` CalcJobs of ``--relax-batch-size`` crystals, ``--max-concurrent``
   in flight) against the offline hull, ``--hull-batch-size`` structures per
   ``energies_above_hull`` calcfunction;
3. as soon as the calcfunction of hull batch ``--kill-at-hull-batch`` exists, kills
   the daemon and its workers with SIGKILL (no clean shutdown: the step is cut off
   in the middle), then starts the daemon again;
4. when the work chain has finished: every structure has exactly one energy above
   hull, each relaxation unit and each hull batch has exactly one finished process,
   the extras are on every relaxed and generated structure, and nothing is missing.

    python benchmarks/metastability_scale.py --backend sqlite    # SQLite + ZeroMQ (the laptop set-up)
    python benchmarks/metastability_scale.py --backend postgres  # PostgreSQL + RabbitMQ on 127.0.0.1

The profile lives in a temporary AiiDA folder (``AIIDA_PATH``), so the user's own
profiles are never touched. The relaxation is cut to ``--steps`` FIRE steps: this
measures the work chain's scaling and fault path, not CHGNet (whose throughput is
in ``relax_speed.json``). Results are appended to ``results/metastability_scale.jsonl``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "metastability_scale.jsonl"
MACHINE = "2-core CPU, 24 GiB, no GPU"


def create_profile(backend: str, name: str) -> None:
    """A profile in this process's ``AIIDA_PATH``: SQLite + ZeroMQ (``verdi presto``), or PostgreSQL +
    RabbitMQ on 127.0.0.1 the way docs/install.md sets it up (the database created first: ``verdi presto
    --use-postgres`` asks PostgreSQL for the en_US.UTF-8 locale, which machines with only C.UTF-8 lack)."""
    verdi = str(pathlib.Path(sys.executable).parent / "verdi")
    if backend == "sqlite":
        subprocess.run([verdi, "presto", "--profile-name", name, "--use-zeromq"], check=True, env=os.environ.copy())
        return
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    repository = pathlib.Path(os.environ["AIIDA_PATH"]) / "repository"
    cmd = [verdi, "profile", "setup", "core.psql_dos", "-n", "--profile-name", name, "--email", "bench@localhost",
           "--first-name", "Bench", "--last-name", "Mark", "--institution", "aiida-adit", "--broker", "core.rabbitmq",
           "--database-hostname", "127.0.0.1", "--database-port", "5432", "--database-username", "postgres",
           "--database-password", "", "--database-name", name, "--repository-uri", repository.as_uri()]
    subprocess.run(cmd, check=True, env=os.environ.copy())
    # circus can answer slowly on a busy machine (docs/install.md)
    subprocess.run([verdi, "-p", name, "config", "set", "daemon.timeout", "30"], check=True, env=os.environ.copy())


def local_computer():
    """The ``localhost`` computer (core.local, core.direct), created when the profile has none."""
    import tempfile as _tempfile

    from aiida import orm
    from aiida.common.exceptions import NotExistent

    try:
        return orm.load_computer("localhost")
    except NotExistent:
        computer = orm.Computer(label="localhost", hostname="localhost", transport_type="core.local",
                                scheduler_type="core.direct", workdir=_tempfile.mkdtemp(prefix="adit-scale-work-"))
        computer.store()
        computer.configure()
        return computer


def daemon_pids(client) -> list[int]:
    """The daemon's circus process and its children (the workers)."""
    import psutil

    pid = client.get_daemon_pid()
    if pid is None:
        return []
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    return [pid] + [child.pid for child in parent.children(recursive=True)]


def crystals(count: int):
    """``count`` MP-20 test crystals as StructureData, keyed by material id."""
    from aiida import orm

    from adit_torch.datasets.mp20 import default_mp20_dir
    from adit_torch.io import read_systems

    folder = default_mp20_dir()
    systems = []
    for name in ("mp_20_biternary_test.csv.gz", "mp_20_pilot_test.csv.gz"):
        if (folder / name).is_file():
            systems += read_systems(folder / name)
        if len(systems) >= count:
            break
    if len(systems) < count:
        raise SystemExit(f"only {len(systems)} MP-20 test crystals under {folder}, asked for {count}")
    return {str(s.info["id"]).replace("-", "_"): orm.StructureData(ase=s.to_ase()) for s in systems[:count]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--structures", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=2, help="FIRE steps of the CHGNet relaxation")
    parser.add_argument("--relax-batch-size", type=int, default=250)
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--hull-batch-size", type=int, default=100)
    parser.add_argument("--kill-at-hull-batch", type=int, default=3, help="-1: never kill the daemon")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="adit-metastability-")
    os.environ["AIIDA_PATH"] = folder
    name = f"adit-scale-{args.backend}-{os.getpid()}"
    create_profile(args.backend, name)

    from aiida import load_profile, orm
    from aiida.engine import submit
    from aiida.engine.daemon.client import get_daemon_client

    from aiida_adit.data.hull import ReferenceHullData
    from aiida_adit.workflows.metastability import AditMetastabilityWorkChain

    profile = load_profile(name, allow_switch=True)
    computer = local_computer()
    computer.set_minimum_job_poll_interval(1.0)
    executable = pathlib.Path(sys.executable).parent / "adit"
    code = orm.InstalledCode(label="adit", computer=computer, filepath_executable=str(executable)).store()
    start = time.perf_counter()
    structures = crystals(args.structures)
    for node in structures.values():
        node.store()
    store_s = time.perf_counter() - start
    builder = AditMetastabilityWorkChain.get_builder()
    builder.structures = structures
    builder.hull = ReferenceHullData.offline()
    builder.relax_batch_size = orm.Int(args.relax_batch_size)
    builder.max_concurrent = orm.Int(args.max_concurrent)
    builder.hull_batch_size = orm.Int(args.hull_batch_size)
    builder.relax.code = code
    builder.relax.parameters = orm.Dict({"fmax": 0.1, "steps": args.steps})
    builder.relax.metadata.options = {
        "resources": {"num_machines": 1, "num_mpiprocs_per_machine": 1},
        "max_wallclock_seconds": 3600,
        "withmpi": False,
    }
    client = get_daemon_client(profile.name)
    client.start_daemon(number_workers=1)
    load_before = os.getloadavg()[0]
    killed_at = None
    try:
        start = time.perf_counter()
        node = submit(builder)
        kill_label = f"e_above_hull_{args.kill_at_hull_batch:04d}"
        while not node.is_terminated:
            if time.perf_counter() - start > args.timeout:
                raise SystemExit(f"timed out after {args.timeout} s; state {node.process_state}")
            if killed_at is None and args.kill_at_hull_batch >= 0:
                labels = {link.link_label for link in node.base.links.get_outgoing().all()}
                if kill_label in labels:
                    pids = daemon_pids(client)
                    for pid in pids:
                        os.kill(pid, signal.SIGKILL)
                    killed_at = {"after_s": round(time.perf_counter() - start, 1), "label": kill_label, "pids": pids}
                    print(f"killed the daemon ({pids}) when {kill_label} appeared", flush=True)
                    time.sleep(2)
                    for pid_file in (client.circus_pid_file, client.daemon_pid_file):
                        pathlib.Path(pid_file).unlink(missing_ok=True)  # a SIGKILLed circus leaves them
                    # A SIGKILLed ZeroMQ broker leaves broker.sockets naming its dead socket folder; a worker
                    # that reads it before the new broker rewrites it connects there and waits forever.
                    for stale in pathlib.Path(folder).glob(".aiida/broker/*/broker.sockets"):
                        stale.unlink()
                    client.start_daemon(number_workers=1)
            time.sleep(1.0)
        wall_s = time.perf_counter() - start
    finally:
        client.stop_daemon(wait=True)
    result = check(node, structures, args)
    result.update(
        {
            "machine": MACHINE,
            "date": datetime.date.today().isoformat(),
            "storage": profile.storage_backend,
            "broker": profile.process_control_backend,
            "structures": args.structures,
            "relax_steps": args.steps,
            "relax_batch_size": args.relax_batch_size,
            "max_concurrent": args.max_concurrent,
            "hull_batch_size": args.hull_batch_size,
            "killed": killed_at,
            "read_and_store_inputs_s": round(store_s, 1),
            "workchain_wall_s": round(wall_s, 1),
            "load_average_before": round(load_before, 2),
            "load_average_after": round(os.getloadavg()[0], 2),
        }
    )
    print(json.dumps(result, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as handle:
        handle.write(json.dumps(result) + "\n")
    if args.backend == "postgres":
        subprocess.run([str(pathlib.Path(sys.executable).parent / "verdi"), "profile", "delete", "--force", name])
    shutil.rmtree(folder, ignore_errors=True)
    if not result["ok"]:
        raise SystemExit("the checks failed: " + "; ".join(result["problems"]))


def check(node, structures: dict, args) -> dict:
    """Counts of what the finished work chain left, and every way it falls short of 'once each, all there'."""
    from collections import Counter

    from aiida.common.links import LinkType

    problems = []
    if not node.is_finished_ok:
        problems.append(f"work chain finished with {node.exit_status}: {node.exit_message}")
    calls = node.base.links.get_outgoing(link_type=(LinkType.CALL_CALC, LinkType.CALL_WORK)).all()
    finished = Counter(link.link_label for link in calls if link.node.is_finished_ok)
    unfinished = sorted(
        f"{link.link_label}<{link.node.pk}>:{link.node.process_state}" for link in calls if not link.node.is_finished_ok
    )
    duplicated = sorted(label for label, count in finished.items() if count > 1)
    if duplicated:
        problems.append(f"more than one finished process for {duplicated}")
    relax_units = -(-args.structures // args.relax_batch_size)
    relax_done = sum(1 for label in finished if label.startswith("relax"))
    if relax_done != relax_units:
        problems.append(f"{relax_done} finished relaxations, expected {relax_units}")
    e_hull = dict(node.outputs.e_above_hull) if "e_above_hull" in node.outputs else {}
    hull_batches = sum(1 for label in finished if label.startswith("e_above_hull_"))
    if hull_batches != -(-len(e_hull) // args.hull_batch_size):
        problems.append(f"{hull_batches} hull batches for {len(e_hull)} structures")
    relaxed = dict(node.outputs.relaxed_structures) if "relaxed_structures" in node.outputs else {}
    without = [
        k
        for k in e_hull
        if relaxed[k].base.extras.get("e_above_hull") != e_hull[k].value
        or structures[k].base.extras.get("e_above_hull") != e_hull[k].value
    ]
    if without:
        problems.append(f"{len(without)} structures without matching extras, e.g. {without[:3]}")
    rates = node.outputs.rates.get_dict() if "rates" in node.outputs else {}
    return {
        "ok": not problems,
        "problems": problems,
        "exit_status": node.exit_status,
        "relaxed": len(relaxed),
        "with_e_above_hull": len(e_hull),
        "finished_processes": dict(
            sorted(Counter(label.rstrip("0123456789_") for label in finished.elements()).items())
        ),
        "unfinished_processes": unfinished,
        "reused_after_restart": [line for line in _report(node) if "reusing" in line],
        "stable_rate": rates.get("stable_rate"),
        "metastable_rate": rates.get("metastable_rate"),
    }


def _report(node) -> list[str]:
    """The work chain's report messages."""
    from aiida.orm import Log

    return [entry.message for entry in Log.collection.get_logs_for(node)]


if __name__ == "__main__":
    main()
