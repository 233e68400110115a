"""adit.generate submitted to the daemon of a PostgreSQL + RabbitMQ profile, across a daemon restart.

Marked ``production``: skipped, with the reason, when PostgreSQL (127.0.0.1:5432, user
postgres) or RabbitMQ (127.0.0.1:5672, guest) is unreachable. The DiT checkpoint is the
tiny one of the parser fixtures, so only sampling and evaluation run (about a minute).
"""

import time

import pytest
from aiida import orm
from aiida.engine import submit

from aiida_adit.data.checkpoint import CheckpointData
from aiida_adit.workflows.generate import AditGenerateWorkChain

pytestmark = pytest.mark.production


def _wait(condition, timeout: float, what: str, node, client) -> None:
    """Poll ``condition`` until true; fail with the daemon log's tail after ``timeout`` seconds."""
    import pathlib

    start = time.monotonic()
    while not condition():
        if node.is_excepted:
            raise AssertionError(f"{node.process_label}<{node.pk}> excepted: {node.exception}")
        if time.monotonic() - start > timeout:
            log = pathlib.Path(client.daemon_log_file)
            tail = log.read_text()[-4000:] if log.exists() else "(no daemon log)"
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; state {node.process_state}\n{tail}")
        time.sleep(0.5)


def _local_adit_code(tmp_path) -> orm.InstalledCode:
    """The ``adit`` command on a local computer (direct scheduler) of the loaded profile."""
    import pathlib
    import shutil
    import sys

    computer = orm.Computer(
        label="localhost",
        hostname="localhost",
        transport_type="core.local",
        scheduler_type="core.direct",
        workdir=str(tmp_path / "runs"),
    ).store()
    computer.set_minimum_job_poll_interval(0.5)
    computer.configure()
    beside = pathlib.Path(sys.executable).parent / "adit"
    executable = str(beside) if beside.is_file() else shutil.which("adit")
    code = orm.InstalledCode(label="adit", computer=computer, filepath_executable=executable).store()
    return code


def _start_daemon(profile, monkeypatch):
    """Start the profile's daemon with one worker; returns its client.

    The daemon passes this process's sys.path on as PYTHONPATH; pytest put `tests/` on it, where the
    `tests/adit_torch` folder would shadow the real package in the jobs the daemon launches.
    """
    import pathlib
    import sys

    from aiida.engine.daemon.client import get_daemon_client

    tests_dir = str(pathlib.Path(__file__).resolve().parent.parent)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not p.startswith(tests_dir)])
    client = get_daemon_client(profile.name)
    client.start_daemon(number_workers=1)
    return client


def test_daemon_runs_generate_through_a_restart(on_production_profile, fixture_folder, tmp_path, monkeypatch):


    assert on_production_profile.storage_backend == "core.psql_dos"
    assert on_production_profile.process_control_backend == "core.rabbitmq"
    code = _local_adit_code(tmp_path)
    checkpoint = CheckpointData.get_or_create(fixture_folder("train_dit", "temporary") / "dit.safetensors")
    overrides = {"sample": {"num_samples": 2, "steps": 3}}
    builder = AditGenerateWorkChain.get_builder_from_protocol(
        code, "train-fast", overrides=overrides, checkpoint=checkpoint
    )

    client = _start_daemon(on_production_profile, monkeypatch)
    try:
        node = submit(builder)

        def sampling_job_submitted():
            calcs = [c for c in node.called_descendants if c.process_type == "aiida.calculations:adit.sample"]
            return any(c.get_job_id() is not None for c in calcs)

        _wait(sampling_job_submitted, 180, "the sampling job to reach the scheduler", node, client)
        # the daemon goes away completely mid-run; the work chain's state lives in PostgreSQL and RabbitMQ
        client.stop_daemon(wait=True)
        assert not node.is_terminated
        client.start_daemon(number_workers=1)
        _wait(lambda: node.is_terminated, 300, "the work chain to terminate", node, client)
    finally:
        client.stop_daemon(wait=True)

    if not node.is_finished_ok:
        from aiida.cmdline.utils.common import get_calcjob_report, get_workchain_report

        calcs = [c for c in node.called_descendants if isinstance(c, orm.CalcJobNode)]
        details = "\n".join([get_workchain_report(node, "REPORT"), *(get_calcjob_report(c) for c in calcs)])
        raise AssertionError(f"{node.exit_message}\n{details}")
    generated = node.outputs.structures
    assert len(generated) == 2
    assert all(s.base.extras.get("kind") == "molecule" and "valid" in s.base.extras.all for s in generated.values())
    assert node.outputs.evaluation["num_structures"] == 2
    # the queries on PostgreSQL, on the extras this real run wrote
    from aiida_adit.queries import generated_structures, structures

    def pks(**filters):
        return {n.pk for n in structures(generated_structures(workchain=node, **filters))}

    records = {r["index"]: r for r in node.outputs.evaluation.creator.outputs.per_structure["records"]}
    by_label = {label: records[int(label.split("_")[-1])] for label in generated}
    assert pks(kind="molecule") == {n.pk for n in generated.values()} and pks(kind="crystal") == set()
    assert pks(valid=True) == {generated[k].pk for k, r in by_label.items() if r["valid_connected"]}
    label, first = sorted(generated.items())[0]
    formula = by_label[label]["formula"]
    assert pks(formula=formula) == {generated[k].pk for k, r in by_label.items() if r["formula"] == formula}
    symbol = sorted(first.get_symbols_set())[0]
    assert pks(elements=[symbol]) == {n.pk for n in generated.values() if symbol in n.get_symbols_set()}


def test_metastability_survives_a_daemon_killed_in_the_middle_of_a_step(
    on_production_profile, tmp_path, monkeypatch
):
    """SIGKILL of the daemon and its worker while the hull step runs; after a restart the run finishes
    with one finished process per relaxation unit and per hull batch, and every structure scored once."""
    import collections
    import os
    import pathlib
    import signal

    import psutil
    from aiida.common.links import LinkType

    from aiida_adit.data.hull import ReferenceHullData
    from aiida_adit.workflows.metastability import AditMetastabilityWorkChain
    from tests.aiida_adit.test_metastability import _crystals

    structures = _crystals("mp-1185360", "mp-972454", "mp-30033", "mp-1217917")
    builder = AditMetastabilityWorkChain.get_builder()
    builder.structures = structures
    builder.hull = ReferenceHullData.offline()
    builder.relax_batch_size = orm.Int(2)
    builder.max_concurrent = orm.Int(1)
    builder.hull_batch_size = orm.Int(1)
    builder.relax.code = _local_adit_code(tmp_path)
    builder.relax.parameters = orm.Dict({"fmax": 0.1, "steps": 2})
    builder.relax.metadata.options = {
        "resources": {"num_machines": 1, "num_mpiprocs_per_machine": 1},
        "max_wallclock_seconds": 600,
    }

    client = _start_daemon(on_production_profile, monkeypatch)
    try:
        node = submit(builder)

        def second_batch_started():
            return "e_above_hull_0001" in node.base.links.get_outgoing().all_link_labels()

        _wait(second_batch_started, 300, "the second hull batch", node, client)
        circus = psutil.Process(client.get_daemon_pid())
        for process in [circus, *circus.children(recursive=True)]:
            os.kill(process.pid, signal.SIGKILL)  # no clean shutdown: the step is cut off where it is
        for pid_file in (client.circus_pid_file, client.daemon_pid_file):
            pathlib.Path(pid_file).unlink(missing_ok=True)
        assert not node.is_terminated
        client.start_daemon(number_workers=1)
        _wait(lambda: node.is_terminated, 300, "the work chain to terminate", node, client)
    finally:
        client.stop_daemon(wait=True)

    assert node.is_finished_ok, node.exit_message
    calls = node.base.links.get_outgoing(link_type=(LinkType.CALL_CALC, LinkType.CALL_WORK)).all()
    finished = collections.Counter(link.link_label for link in calls if link.node.is_finished_ok)
    expected = ["e_above_hull_0000", "e_above_hull_0001", "e_above_hull_0002", "e_above_hull_0003"]
    assert sorted(finished) == sorted(["relax_0000", "relax_0001", "rates", *expected])
    assert set(finished.values()) == {1}  # nothing ran twice to the end
    # anything cut off is marked, not left running
    assert all(link.node.is_terminated for link in calls)
    assert sorted(node.outputs.e_above_hull) == sorted(structures)
    for key, value in node.outputs.e_above_hull.items():
        assert structures[key].base.extras.get("e_above_hull") == value.value
