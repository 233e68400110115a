"""Restart handlers of adit.train and adit.sample, exercised on failed CalcJob nodes (no run)."""

import pytest
from aiida import orm
from aiida.common import LinkType
from aiida.engine import ProcessState

from aiida_adit.data.checkpoint import CheckpointData


def _failed(node, status: int, aiida_localhost, remote_path="/scratch/run-1"):
    """Mark ``node`` finished with ``status`` and give it a remote_folder output."""
    remote = orm.RemoteData(computer=aiida_localhost, remote_path=remote_path)
    remote.base.links.add_incoming(node, link_type=LinkType.CREATE, link_label="remote_folder")
    remote.store()
    node.set_process_state(ProcessState.FINISHED)
    node.set_exit_status(status)
    return node


@pytest.fixture
def train_process(adit_code, generate_workchain):
    def factory(settings):
        inputs = {"train": {"code": adit_code("adit.train"), "settings": orm.Dict(settings)}}
        process = generate_workchain("adit.train", inputs)
        process.setup()
        return process

    return factory


def _inspect(process, node):
    process.ctx.children = [node]
    process.ctx.iteration = 1
    return process.inspect_process()


def test_out_of_memory_halves_the_batch(train_process, generate_calc_job_node, aiida_localhost):
    settings = {"stage": "vae", "dataset": "mp20", "batch_size": 48}
    process = train_process(settings)
    node = _failed(generate_calc_job_node("adit.train", {"settings": orm.Dict(settings)}), 410, aiida_localhost)
    assert _inspect(process, node).status == 0
    assert process.ctx.inputs.settings["batch_size"] == 24
    assert "parent_folder" not in process.ctx.inputs


def test_out_of_memory_without_batch_starts_from_the_size_default(
    train_process, generate_calc_job_node, aiida_localhost
):
    from adit_torch.config import train_config

    settings = {"stage": "vae", "dataset": "qm9", "size": "XS"}
    process = train_process(settings)
    node = _failed(generate_calc_job_node("adit.train", {"settings": orm.Dict(settings)}), 410, aiida_localhost)
    _inspect(process, node)
    assert process.ctx.inputs.settings["batch_size"] == train_config("XS").batch_size // 2


def test_out_of_memory_gives_up_below_the_smallest_batch(train_process, generate_calc_job_node, aiida_localhost):
    settings = {"stage": "vae", "dataset": "mp20", "batch_size": 1}
    process = train_process(settings)
    node = _failed(generate_calc_job_node("adit.train", {"settings": orm.Dict(settings)}), 410, aiida_localhost)
    result = _inspect(process, node)
    assert result.status == process.exit_codes.ERROR_BATCH_TOO_SMALL.status


def test_walltime_resumes_from_the_remote_folder(train_process, generate_calc_job_node, aiida_localhost):
    settings = {"stage": "vae", "dataset": "mp20", "lr": 1e-3}
    process = train_process(settings)
    node = _failed(generate_calc_job_node("adit.train", {"settings": orm.Dict(settings)}), 400, aiida_localhost)
    assert _inspect(process, node).status == 0
    assert process.ctx.inputs.parent_folder.get_remote_path() == "/scratch/run-1"
    assert process.ctx.inputs.settings["lr"] == 1e-3


def test_nan_loss_lowers_the_learning_rate_and_resumes(train_process, generate_calc_job_node, aiida_localhost):
    settings = {"stage": "vae", "dataset": "mp20", "lr": 1e-3}
    process = train_process(settings)
    node = _failed(generate_calc_job_node("adit.train", {"settings": orm.Dict(settings)}), 420, aiida_localhost)
    assert _inspect(process, node).status == 0
    assert process.ctx.inputs.settings["lr"] == pytest.approx(5e-4)
    assert process.ctx.inputs.parent_folder.pk == node.outputs.remote_folder.pk


def test_bad_input_stops_without_a_rerun(train_process, generate_calc_job_node, aiida_localhost):
    settings = {"stage": "vae", "dataset": "mp20"}
    process = train_process(settings)
    node = _failed(generate_calc_job_node("adit.train", {"settings": orm.Dict(settings)}), 302, aiida_localhost)
    result = _inspect(process, node)
    assert result.status == process.exit_codes.ERROR_UNRECOVERABLE.status


@pytest.mark.parametrize(("found", "finished"), [(9, True), (3, False)])
def test_sample_keeps_enough_structures_or_samples_again(
    adit_code, generate_workchain, generate_calc_job_node, aiida_localhost, make_checkpoint, found, finished
):
    from ase.build import molecule

    from aiida_adit.structures import atoms_to_structure

    dit = CheckpointData(file=str(make_checkpoint("dit"))).store()
    sample = {"code": adit_code(), "checkpoint": dit, "num_samples": orm.Int(10), "kind": orm.Str("molecule")}
    process = generate_workchain("adit.sample", {"sample": sample})
    process.setup()
    node = generate_calc_job_node("adit.sample", {"num_samples": orm.Int(10), "seed": orm.Int(0)})
    for index in range(found):
        structure = atoms_to_structure(molecule("CH4"))
        structure.base.links.add_incoming(node, link_type=LinkType.CREATE, link_label=f"structures__sample_{index:05d}")
        structure.store()
    _failed(node, 500, aiida_localhost)
    assert _inspect(process, node).status == 0
    assert process.ctx.is_finished is finished
    if not finished:
        assert process.ctx.inputs.seed.value == 1


def test_sample_out_of_memory_halves_the_batch(
    adit_code, generate_workchain, generate_calc_job_node, aiida_localhost, make_checkpoint
):
    dit = CheckpointData(file=str(make_checkpoint("dit"))).store()
    sample = {"code": adit_code(), "checkpoint": dit, "num_samples": orm.Int(1000), "kind": orm.Str("crystal")}
    process = generate_workchain("adit.sample", {"sample": sample})
    process.setup()
    node = _failed(generate_calc_job_node("adit.sample", {"num_samples": orm.Int(1000)}), 410, aiida_localhost)
    assert _inspect(process, node).status == 0
    assert process.ctx.inputs.batch_size.value == 128
    # the resubmission's inputs are valid inputs of the CalcJob (until 0.2 `batch_size` was no port of it)
    from aiida.plugins import CalculationFactory

    ports = CalculationFactory("adit.sample").spec().inputs
    for name, value in process.ctx.inputs.items():
        if name != "metadata":
            assert name in ports, f"the work chain resubmits `{name}`, which adit.sample does not declare"
            assert ports[name].validate(value) is None


@pytest.mark.parametrize("group", ["aiida.calculations", "aiida.workflows"])
def test_no_process_defines_an_exit_status_twice(group):
    """One status, one meaning: a plugin's exit code must not reuse a status of its parent class
    (``BaseRestartWorkChain`` holds 301, 302, 401 and 402; ``CalcJob`` 100-160)."""
    from importlib.metadata import entry_points

    classes = [ep.load() for ep in entry_points(group=group) if ep.name.startswith("adit.")]
    assert len(classes) >= 4
    for cls in classes:
        labels: dict[int, list[str]] = {}
        for label, code in cls.spec().exit_codes.items():
            labels.setdefault(code.status, []).append(label)
        twice = {status: names for status, names in labels.items() if len(names) > 1}
        assert not twice, f"{cls.__name__} defines exit statuses twice: {twice}"
