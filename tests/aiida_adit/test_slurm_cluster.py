"""adit.sample and adit.train through a real Slurm scheduler (``core.slurm``) reached over SSH (``core.ssh``).

The cluster is the one-node Slurm of ``.ci/slurm-up`` (slurmctld, slurmd and munge on this
machine; an sshd of its own on 127.0.0.1). Marked ``slurm``: skipped, with the reason, when that
cluster does not answer over SSH. What runs for real:

- ``adit.sample`` submitted with ``sbatch`` over SSH, polled with ``squeue``, retrieved over SFTP;
- ``adit.train`` with a one-minute ``--time``: Slurm kills the job at its time limit (SIGTERM, then
  SIGKILL after ``KillWait``), the training saves its state on the SIGTERM, the parser reports the
  walltime (400), and ``AditTrainWorkChain`` resumes the run folder in new jobs until it finishes,
  with the same weights as one uninterrupted run.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch
from aiida import orm
from aiida.engine import run_get_node
from safetensors.torch import load_file

from aiida_adit.data.checkpoint import CheckpointData

pytestmark = pytest.mark.slurm

STATE = pathlib.Path(os.environ.get("ADIT_SLURM_DIR", "/tmp/adit-slurm"))
PORT = int(os.environ.get("ADIT_SLURM_SSH_PORT", "2222"))
KEY = STATE / "id_ed25519"
#: one thread on both sides, so the resumed run and the uninterrupted one add up in the same order
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _adit_executable() -> str:
    beside = pathlib.Path(sys.executable).parent / "adit"
    return str(beside) if beside.is_file() else (shutil.which("adit") or "adit")


def _cluster_answers() -> str | None:
    """None when the cluster's sshd and Slurm answer, else why not."""
    if not KEY.is_file():
        return f"no key {KEY}"
    cmd = ["ssh", "-q", "-p", str(PORT), "-i", str(KEY), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "root@127.0.0.1", "sinfo", "-h", "-o", "%t"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"ssh to 127.0.0.1:{PORT} failed: {exc}"
    states = done.stdout.split()
    if done.returncode != 0 or not any(s in ("idle", "mix", "alloc") for s in states):
        return f"`sinfo` over ssh to 127.0.0.1:{PORT} gave {done.returncode}: {(done.stdout + done.stderr).strip()!r}"
    return None


@pytest.fixture(scope="module")
def cluster():
    """Skip the module, with the reason, unless the one-node cluster answers."""
    reason = _cluster_answers()
    if reason is not None:
        pytest.skip(f"no one-node Slurm cluster ({reason}); start it with `bash .ci/slurm-up` (root, Debian)")


@pytest.fixture
def slurm_code(cluster, aiida_profile_clean, tmp_path):
    """The ``adit`` command on a ``core.slurm`` computer reached with ``core.ssh`` as root@127.0.0.1."""
    computer = orm.Computer(
        label="slurm-localhost",
        hostname="127.0.0.1",
        transport_type="core.ssh",
        scheduler_type="core.slurm",
        workdir=str(tmp_path / "slurm-work"),
    ).store()
    computer.configure(
        username="root",
        port=PORT,
        key_filename=str(KEY),
        look_for_keys=False,
        allow_agent=False,
        key_policy="AutoAddPolicy",
        safe_interval=0.5,
        timeout=30,
    )
    computer.set_minimum_job_poll_interval(1.0)
    return orm.InstalledCode(label="adit", computer=computer, filepath_executable=_adit_executable()).store()


def test_sample_is_submitted_with_sbatch_over_ssh_and_retrieved(slurm_code, fixture_folder):
    from aiida.plugins import CalculationFactory

    checkpoint = CheckpointData.get_or_create(fixture_folder("train_dit", "temporary") / "dit.safetensors")
    results, node = run_get_node(
        CalculationFactory("adit.sample"),
        code=slurm_code,
        checkpoint=checkpoint,
        num_samples=orm.Int(2),
        kind=orm.Str("molecule"),
        steps=orm.Int(3),
        metadata={"options": {"max_wallclock_seconds": 300, "environment_variables": ONE_THREAD}},
    )
    assert node.is_finished_ok, node.exit_message
    assert node.computer.scheduler_type == "core.slurm" and node.computer.transport_type == "core.ssh"
    assert node.get_job_id().isdigit()  # a Slurm job id, given by sbatch
    script = (pathlib.Path(node.get_remote_workdir()) / "_aiidasubmit.sh").read_text()
    assert "#SBATCH --time=00:05:00" in script
    assert len(results["structures"]) == 2


def _train_settings(max_steps: int, max_minutes: float) -> dict:
    return {
        "stage": "vae",
        "dataset": "qm9",
        "max_steps": max_steps,
        "max_minutes": max_minutes,
        "max_train_systems": 64,
        "batch_size": 16,
        "lr": 1e-3,
        "log_every": 10,
        "ckpt_every": 10**7,  # no periodic save: what the resume finds was saved on Slurm's SIGTERM
        "val_every": 0,
        "val_size": 0,
        "vae": {"d_model": 32, "num_layers": 1, "num_heads": 2},
    }


def _uninterrupted(tmp_path: pathlib.Path, minutes: float) -> tuple[dict, pathlib.Path]:
    """Train in one go on this machine for ``minutes`` (constant learning rate, so stopping at step S
    equals asking for S steps); returns the metrics and the run folder."""
    settings = _train_settings(10**7, minutes)
    flat = {k: v for k, v in settings.items() if k not in ("stage", "dataset", "max_steps", "max_minutes", "vae")}
    (tmp_path / "settings.json").write_text(json.dumps({"train": flat, "vae": settings["vae"]}))
    out = tmp_path / "uninterrupted"
    cmd = [_adit_executable(), "train-vae", "--dataset", "qm9", "--size", "XS", "--out-dir", str(out),
           "--settings", str(tmp_path / "settings.json"), "--max-steps", str(10**7), "--max-minutes", str(minutes),
           "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ONE_THREAD}, timeout=600)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "time_limit"
    return metrics, out


@pytest.mark.slow
def test_training_killed_at_the_slurm_time_limit_resumes_to_the_uninterrupted_result(slurm_code, tmp_path):
    from aiida_adit.workflows.train import AditTrainWorkChain

    # two minutes of training in one go; the same steps under a one-minute --time must be cut by Slurm
    reference, reference_dir = _uninterrupted(tmp_path, minutes=2.0)
    steps = reference["step"]

    builder = AditTrainWorkChain.get_builder()
    builder.train.code = slurm_code
    builder.train.settings = orm.Dict(_train_settings(steps, 30.0))  # no self-stop: the scheduler must stop it
    builder.train.metadata.options.max_wallclock_seconds = 60
    builder.train.metadata.options.environment_variables = ONE_THREAD
    builder.max_iterations = orm.Int(6)
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_message

    jobs = sorted(node.called, key=lambda n: n.ctime)
    assert len(jobs) >= 2
    first = jobs[0]
    assert first.exit_status == 400  # walltime, resumable
    assert "DUE TO TIME LIMIT" in first.get_scheduler_stderr()  # Slurm's own words: a real kill
    assert first.outputs.metrics["status"] == "interrupted" and first.outputs.metrics["signal"] == "SIGTERM"
    assert 0 < first.outputs.metrics["step"] < steps
    assert all(job.inputs.parent_folder.pk == before.outputs.remote_folder.pk for before, job in zip(jobs, jobs[1:]))
    assert jobs[-1].is_finished_ok and results["metrics"]["status"] == "completed"
    assert results["metrics"]["step"] == steps

    # the same weights as the uninterrupted run
    with results["checkpoint"].as_path() as path:
        resumed = load_file(path)
    uninterrupted = load_file(reference_dir / "vae.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        torch.testing.assert_close(resumed[key], uninterrupted[key], atol=1e-6, rtol=1e-5, msg=key)
