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


def test_daemon_runs_generate_through_a_restart(on_production_profile, fixture_folder, tmp_path, monkeypatch):
    import pathlib
    import shutil
    import sys

    from aiida.engine.daemon.client import get_daemon_client

    assert on_production_profile.storage_backend == "core.psql_dos"
    assert on_production_profile.process_control_backend == "core.rabbitmq"
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
    checkpoint = CheckpointData.get_or_create(fixture_folder("train_dit", "temporary") / "dit.safetensors")
    overrides = {"sample": {"num_samples": 2, "steps": 3}}
    builder = AditGenerateWorkChain.get_builder_from_protocol(
        code, "train-fast", overrides=overrides, checkpoint=checkpoint
    )

    # The daemon passes this process's sys.path on as PYTHONPATH; pytest put `tests/` on it, where the
    # `tests/adit_torch` folder would shadow the real package in the jobs the daemon launches.
    tests_dir = str(pathlib.Path(__file__).resolve().parent.parent)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not p.startswith(tests_dir)])
    client = get_daemon_client(on_production_profile.name)
    client.start_daemon(number_workers=1)
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
