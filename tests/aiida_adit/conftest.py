"""Fixtures for the AiiDA plugin tests: codes, CalcJob inputs, parser folders, work chains.

Generic on purpose (any ``adit.*`` entry point):

- ``adit_code``: an InstalledCode for the installed ``adit`` command on localhost.
- ``make_checkpoint``: writes a small real safetensors checkpoint with an ``adit`` header.
- ``generate_calc_job``: runs ``prepare_for_submission`` of a CalcJob into a folder.
- ``generate_calc_job_node``: a stored CalcJobNode with inputs and a ``retrieved``
  folder made from a directory of real output files (see ``fixture_folder``).
- ``parse_folder``: runs the CalcJob's parser on such a node (temporary files too).
- ``generate_workchain``: instantiates a WorkChain with inputs, without running it.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "aiida"


@pytest.fixture
def fixture_folder():
    """Path of a folder of real output files under ``tests/fixtures/aiida/``."""

    def factory(*parts: str) -> pathlib.Path:
        path = FIXTURES.joinpath(*parts)
        if not path.is_dir():
            raise FileNotFoundError(f"no parser fixture folder {path}")
        return path

    return factory


@pytest.fixture
def adit_code(aiida_code_installed):
    """An InstalledCode for the ``adit`` executable on localhost (next to this Python, else on PATH)."""
    import sys

    beside = pathlib.Path(sys.executable).parent / "adit"
    executable = str(beside) if beside.is_file() else (shutil.which("adit") or "adit")

    def factory(entry_point: str = "adit.sample", label: str | None = None):
        return aiida_code_installed(
            label=label or f"adit-{entry_point.split('.')[-1]}",
            default_calc_job_plugin=entry_point,
            filepath_executable=executable,
        )

    return factory


@pytest.fixture
def make_checkpoint(tmp_path):
    """Write a small safetensors checkpoint whose ``adit`` header follows the contract (section 4).

    The tensors are tiny and random; the file is a real safetensors file, the kind of
    header ``adit`` writes. Returns the path.
    """
    from safetensors.numpy import save_file

    def factory(kind: str = "dit", size: str = "XS", name: str | None = None, seed: int = 0, dataset="mp20"):
        rng = np.random.default_rng(seed)
        tensors = {"blocks.0.weight": rng.standard_normal((4, 3)).astype(np.float32)}
        if kind == "dit":
            tensors["vae.encoder.weight"] = rng.standard_normal((2, 5)).astype(np.float32)
        header = {
            "kind": kind,
            "size": size,
            "config": {"dataset": dataset},
            "data": {"dataset": dataset},
            "library_version": "0.1.0",
            "created": "2026-11-25T00:00:00+00:00",
        }
        path = tmp_path / (name or f"{kind}-{seed}.safetensors")
        save_file(tensors, str(path), metadata={"adit": json.dumps(header)})
        return path

    return factory


@pytest.fixture
def generate_calc_job(tmp_path):
    """Run ``prepare_for_submission`` of the CalcJob ``entry_point`` with ``inputs``.

    Returns ``(folder_path, calc_info)``: the sandbox folder with the written files.
    """
    from aiida.common.folders import Folder
    from aiida.engine.utils import instantiate_process
    from aiida.manage.manager import get_manager
    from aiida.plugins import CalculationFactory

    def factory(entry_point: str, inputs: dict):
        folder_path = tmp_path / "sandbox"
        folder_path.mkdir(exist_ok=True)
        process = instantiate_process(get_manager().get_runner(), CalculationFactory(entry_point), **inputs)
        calc_info = process.prepare_for_submission(Folder(str(folder_path)))
        return folder_path, calc_info

    return factory


@pytest.fixture
def generate_calc_job_node(aiida_localhost):
    """A stored CalcJobNode of ``entry_point`` with ``inputs`` and a ``retrieved`` FolderData.

    :param folder: directory whose files (not sub-directories) become ``retrieved``; None
        gives no ``retrieved`` output.
    """
    from aiida import orm
    from aiida.common import LinkType
    from aiida.plugins.entry_point import format_entry_point_string

    def factory(entry_point: str, inputs: dict, folder: pathlib.Path | None = None, options: dict | None = None):
        node = orm.CalcJobNode(
            computer=aiida_localhost, process_type=format_entry_point_string("aiida.calculations", entry_point)
        )
        node.set_option("resources", {"num_machines": 1, "num_mpiprocs_per_machine": 1})
        node.set_option("max_wallclock_seconds", 1800)
        node.set_option("scheduler_stdout", "_scheduler-stdout.txt")
        node.set_option("scheduler_stderr", "_scheduler-stderr.txt")
        for key, value in (options or {}).items():
            node.set_option(key, value)
        for label, value in _flatten(inputs):
            if not value.is_stored:
                value.store()
            node.base.links.add_incoming(value, link_type=LinkType.INPUT_CALC, link_label=label)
        node.store()
        if folder is not None:
            retrieved = orm.FolderData()
            for path in sorted(pathlib.Path(folder).iterdir()):
                if path.is_file():
                    retrieved.base.repository.put_object_from_file(str(path), path.name)
            retrieved.base.links.add_incoming(node, link_type=LinkType.CREATE, link_label="retrieved")
            retrieved.store()
        return node

    return factory


def _flatten(inputs: dict, prefix: str = ""):
    """(link label, node) pairs of a nested input dict; namespaces joined by ``__``."""
    for key, value in inputs.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}__")
        else:
            yield f"{prefix}{key}", value


@pytest.fixture
def parse_folder():
    """Parse a CalcJobNode with the parser of its entry point; returns ``(results, calcfunction_node)``.

    :param temporary: directory handed to the parser as ``retrieved_temporary_folder``
        (files that the CalcJob fetches for the parser only); copied first, since
        parsing may delete it.
    """
    from aiida.plugins import ParserFactory

    def factory(node, entry_point: str, temporary: pathlib.Path | None = None, tmp_dir: pathlib.Path | None = None):
        temp_copy = None
        if temporary is not None:
            temp_copy = pathlib.Path(tmp_dir) / "retrieved_temporary"
            shutil.copytree(temporary, temp_copy, dirs_exist_ok=True)
        parser = ParserFactory(entry_point)
        return parser.parse_from_node(node, store_provenance=False, retrieved_temporary_folder=temp_copy)

    return factory


@pytest.fixture
def generate_workchain():
    """Instantiate the WorkChain ``entry_point`` with ``inputs`` (not run): for handler tests."""
    from aiida.engine.utils import instantiate_process
    from aiida.manage.manager import get_manager
    from aiida.plugins import WorkflowFactory

    def factory(entry_point: str, inputs: dict):
        return instantiate_process(get_manager().get_runner(), WorkflowFactory(entry_point), **inputs)

    return factory


# --------------------------------------------------------------------------- production services

POSTGRES = ("127.0.0.1", 5432)
RABBITMQ = ("127.0.0.1", 5672)


def service_reachable(address: tuple[str, int], timeout: float = 1.0) -> bool:
    """Whether a TCP service answers at ``address`` (host, port)."""
    import socket

    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_storage_config(tmp_path_factory):
    """A fresh PostgreSQL database on the local server (user ``postgres``, trust auth) for one test session.

    Skips with the reason when the server is unreachable; drops the database at the end.
    """
    if not service_reachable(POSTGRES):
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES[0]}:{POSTGRES[1]}")
    import secrets

    import psycopg

    name = f"adit_test_{secrets.token_hex(6)}"
    dsn = f"host={POSTGRES[0]} port={POSTGRES[1]} user=postgres dbname=postgres"
    try:
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        pytest.skip(f"cannot create a PostgreSQL database as user postgres: {exc}")
    yield {
        "database_engine": "postgresql_psycopg",
        "database_hostname": POSTGRES[0],
        "database_port": POSTGRES[1],
        "database_username": "postgres",
        "database_password": "",
        "database_name": name,
        "repository_uri": tmp_path_factory.mktemp("psql_repository").as_uri(),
    }
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def production_profile(aiida_config, postgres_storage_config):
    """A stored test profile on PostgreSQL + RabbitMQ (not loaded; see ``on_production_profile``)."""
    import secrets

    from aiida.manage.configuration import create_profile

    if not service_reachable(RABBITMQ):
        pytest.skip(f"RabbitMQ is not reachable at {RABBITMQ[0]}:{RABBITMQ[1]}")
    broker = {
        "broker_protocol": "amqp",
        "broker_username": "guest",
        "broker_password": "guest",
        "broker_host": RABBITMQ[0],
        "broker_port": RABBITMQ[1],
        "broker_virtual_host": "",
    }
    profile = create_profile(
        aiida_config,
        storage_backend="core.psql_dos",
        storage_config=postgres_storage_config,
        broker_backend="core.rabbitmq",
        broker_config=broker,
        name=f"adit-production-{secrets.token_hex(4)}",
        email="test@localhost",
        # not a test profile: for those, RabbitMQ task queues are auto-deleted when the last worker
        # disconnects, which would lose the tasks of a daemon restart (production queues are durable)
        is_test_profile=False,
    )
    profile.set_option("warnings.development_version", False)
    profile.set_option("daemon.timeout", 30)  # circus answers slowly on a busy 2-core machine
    aiida_config.update_profile(profile)
    aiida_config.store()
    yield profile


@pytest.fixture
def on_production_profile(production_profile):
    """Load the PostgreSQL + RabbitMQ profile for one test, emptied first; the SQLite test profile comes back after."""
    from aiida.manage import get_manager
    from aiida.manage.configuration import profile_context
    from aiida.orm import User

    with profile_context(production_profile, allow_switch=True) as profile:
        manager = get_manager()
        manager.get_profile_storage()._clear()
        manager.reset_profile()
        User(email=profile.default_user_email or "test@localhost").store()
        yield profile
