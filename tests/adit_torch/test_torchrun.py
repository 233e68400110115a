"""The ``adit`` trainer launched by the real ``torchrun`` binary, as a multi-node Slurm job runs it.

Two torchrun launchers on this machine stand for two nodes: each starts one process
and both meet at a c10d rendezvous, exactly the command line docs/aiida.md gives for
several nodes (less ``srun``, which starts one launcher per node on a cluster).
Each "node" gives ``--local-addr=127.0.0.1``: without it torchrun publishes the host's
fully qualified name as the node address, and on a host whose name does not resolve
(as on the CI machine) the rank-0 launcher cannot open its store and the other one
fails with a RendezvousConnectionError.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TINY = {"vae": {"d_model": 32, "num_layers": 1, "num_heads": 4},
        "train": {"batch_size": 4, "val_every": 0, "val_size": 4, "val_samples": 0, "log_every": 1}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launcher() -> list[str]:
    found = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    return [found] if found else [sys.executable, "-m", "torch.distributed.run"]


def _tiny_run(tmp_path: Path, **extra_env: str) -> tuple[Path, dict[str, str]]:
    """The tiny settings file and the environment (fixture data, one thread, ``extra_env``) of a training run."""
    settings = tmp_path / "tiny.json"
    settings.write_text(json.dumps(TINY))
    env = {**os.environ, "ADIT_MP20_DIR": str(FIXTURES / "mp20"), "ADIT_CACHE_DIR": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1", **extra_env}
    return settings, env


@pytest.mark.slow
def test_two_nodes_meet_at_a_c10d_rendezvous_and_train_as_one(tmp_path):
    adit = Path(sys.executable).parent / "adit"
    if not adit.exists():
        pytest.skip(f"the `adit` console script is not installed next to {sys.executable}")
    settings, env = _tiny_run(tmp_path)
    nodes = 2
    command = [*_launcher(), f"--nnodes={nodes}", "--nproc_per_node=1", "--rdzv-backend=c10d",
               f"--rdzv-endpoint=127.0.0.1:{_free_port()}", "--rdzv-id=adit-test", "--local-addr=127.0.0.1",
               "--no-python",
               str(adit), "train-vae", "--dataset", "mp20", "--out-dir", "run", "--settings", str(settings),
               "--max-steps", "3", "--quiet"]
    launchers = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for _ in range(nodes)]
    outputs = []
    try:
        for launcher in launchers:
            outputs.append(launcher.communicate(timeout=300)[0])
    finally:
        for launcher in launchers:
            launcher.kill()
    report = "\n".join(f"--- node {i}: exit {launcher.returncode}\n{output[-3000:]}"
                       for i, (launcher, output) in enumerate(zip(launchers, outputs, strict=True)))
    assert all(launcher.returncode == 0 for launcher in launchers), report
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == nodes and metrics["step"] == 3 and metrics["status"] == "completed"
    assert (tmp_path / "run" / "vae.safetensors").is_file()


# ----------------------------------------------------------------------------- adit-torchrun
def test_processes_per_node_follow_the_documented_order():
    from adit_torch.cli.launch import nproc_per_node

    env = {"ADIT_NPROC_PER_NODE": "3", "SLURM_GPUS_ON_NODE": "4", "SLURM_NTASKS_PER_NODE": "8"}
    assert nproc_per_node(env) == 3
    del env["ADIT_NPROC_PER_NODE"]
    assert nproc_per_node(env) == 4
    del env["SLURM_GPUS_ON_NODE"]
    assert nproc_per_node(env) == 8
    assert nproc_per_node({"SLURM_NTASKS_PER_NODE": "4(x2)"}) == 4  # Slurm's repeated-count notation
    assert nproc_per_node({}) == 1  # no GPU on this machine


@pytest.mark.parametrize("value", ["two", "0", "-1"])
def test_a_bad_process_count_names_the_variable(value):
    from adit_torch.cli.launch import nproc_per_node
    from adit_torch.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\$ADIT_NPROC_PER_NODE"):
        nproc_per_node({"ADIT_NPROC_PER_NODE": value})


def test_several_slurm_nodes_get_one_torchrun_each_through_srun():
    from adit_torch.cli.launch import launch_command

    env = {"SLURM_NNODES": "2", "SLURM_GPUS_ON_NODE": "4", "SLURM_JOB_ID": "77", "ADIT_RDZV_HOST": "gpu01"}
    command = launch_command(["train-dit", "--dataset", "joint"], "/opt/adit/bin/adit", ["torchrun"], env)
    assert command == [
        "srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1",
        "torchrun", "--nnodes=2", "--nproc_per_node=4", "--rdzv-backend=c10d", "--rdzv-endpoint=gpu01:29500",
        "--rdzv-id=77", "--no-python", "/opt/adit/bin/adit", "train-dit", "--dataset", "joint",
    ]


def test_one_node_meets_over_the_loopback_address():
    """One node: --standalone and the loopback address, not the host name (which may not resolve)."""
    from adit_torch.cli.launch import launch_command

    command = launch_command(["train-vae"], "/opt/adit/bin/adit", ["torchrun"], {"ADIT_NPROC_PER_NODE": "2"})
    assert command == ["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=2", "--local-addr=127.0.0.1",
                       "--no-python", "/opt/adit/bin/adit", "train-vae"]


@pytest.mark.slow
def test_adit_torchrun_trains_with_the_processes_it_was_told(tmp_path):
    """The real launcher: two processes on this machine train as one (world size 2), no MPI launcher anywhere."""
    launcher = Path(sys.executable).parent / "adit-torchrun"
    if not launcher.exists():
        pytest.skip(f"the `adit-torchrun` console script is not installed next to {sys.executable}")
    settings, env = _tiny_run(tmp_path, ADIT_NPROC_PER_NODE="2", ADIT_STATUS_FILE=str(tmp_path / "status"))
    env.pop("SLURM_NNODES", None)
    result = subprocess.run(
        [str(launcher), "train-vae", "--dataset", "mp20", "--out-dir", "run", "--settings", str(settings),
         "--max-steps", "3", "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    # a failing rank's own error comes before torchrun's long report: keep both in the message
    errors = "\n".join(line for line in result.stderr.splitlines() if "Error" in line or "error:" in line)
    assert result.returncode == 0, errors[-3000:] + "\n" + result.stdout[-1000:] + result.stderr[-1500:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["step"] == 3 and metrics["status"] == "completed"
    assert (tmp_path / "status").read_text().strip() == "0"  # rank 0 wrote its own status


def test_adit_torchrun_refuses_a_bad_count_before_starting_anything(tmp_path):
    launcher = Path(sys.executable).parent / "adit-torchrun"
    if not launcher.exists():
        pytest.skip(f"the `adit-torchrun` console script is not installed next to {sys.executable}")
    result = subprocess.run([str(launcher), "train-vae"], env={**os.environ, "ADIT_NPROC_PER_NODE": "many"},
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert "adit-torchrun: error: $ADIT_NPROC_PER_NODE='many'" in result.stderr
    assert "Traceback" not in result.stderr
