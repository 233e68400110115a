"""The ``adit`` trainer launched by the real ``torchrun`` binary, as a multi-node Slurm job runs it.

Two torchrun launchers on this machine stand for two nodes: each starts one process
and both meet at a c10d rendezvous, exactly the command line docs/aiida.md gives for
several nodes (less ``srun``, which starts one launcher per node on a cluster).
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


@pytest.mark.slow
def test_two_nodes_meet_at_a_c10d_rendezvous_and_train_as_one(tmp_path):
    adit = Path(sys.executable).parent / "adit"
    if not adit.exists():
        pytest.skip(f"the `adit` console script is not installed next to {sys.executable}")
    settings = tmp_path / "tiny.json"
    settings.write_text(json.dumps(TINY))
    env = {**os.environ, "ADIT_MP20_DIR": str(FIXTURES / "mp20"), "ADIT_CACHE_DIR": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    nodes = 2
    command = [*_launcher(), f"--nnodes={nodes}", "--nproc_per_node=1", "--rdzv-backend=c10d",
               f"--rdzv-endpoint=127.0.0.1:{_free_port()}", "--rdzv-id=adit-test", "--no-python",
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
    for launcher, output in zip(launchers, outputs, strict=True):
        assert launcher.returncode == 0, output[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == nodes and metrics["step"] == 3 and metrics["status"] == "completed"
    assert (tmp_path / "run" / "vae.safetensors").is_file()
