"""``adit-torchrun``: ``adit`` under ``torchrun``, as an ordinary executable.

Data-parallel training needs one process per GPU, started by ``torchrun``. Making
``torchrun`` a computer's ``mpirun_command`` (with ``withmpi``) works, but then every
MPI code on that computer, the DFT engines of ``adit.metastability`` included, is
launched by ``torchrun`` too. ``adit-torchrun`` leaves the computer alone: set it as
the *code's* executable (``withmpi`` stays off) and it starts ``torchrun`` itself::

    adit-torchrun train-dit --dataset joint ...   # = torchrun --standalone --nnodes=1
                                                  #   --nproc_per_node=N --local-addr=127.0.0.1
                                                  #   --no-python adit train-dit ...

On one node the processes meet over the loopback address: torchrun would otherwise
publish the host's fully qualified name, and on a host whose name does not resolve
the workers cannot reach their store and wait until they time out.

Processes per node, first found:

1. ``$ADIT_NPROC_PER_NODE``;
2. Slurm's ``$SLURM_GPUS_ON_NODE``, then ``$SLURM_NTASKS_PER_NODE``;
3. the CUDA devices torch sees (when there are any);
4. 1.

In a Slurm allocation of several nodes (``$SLURM_NNODES`` > 1) it starts one
``torchrun`` per node with ``srun`` and a c10d rendezvous on the first node of
the allocation (``$ADIT_RDZV_HOST`` overrides it; port ``$ADIT_RDZV_PORT``, default
29500). The launcher replaces itself with that command (``exec``), so Slurm's
signals (walltime) reach ``torchrun`` directly, and each worker writes its own status
file as under any launcher.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from adit_torch.errors import ConfigError

#: Rendezvous port on the first node of a multi-node allocation (``$ADIT_RDZV_PORT`` overrides).
RDZV_PORT = 29500


def _positive_int(env: Mapping[str, str], name: str) -> int | None:
    """``int(env[name])`` when set; ConfigError naming the variable when it is not a positive integer."""
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    # Slurm writes e.g. SLURM_NTASKS_PER_NODE=4(x2) on heterogeneous allocations: the count before '('
    value = raw.split("(")[0].split(",")[0]
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"${name}={raw!r} is not a whole number of processes") from None
    if number < 1:
        raise ConfigError(f"${name}={raw!r}: need at least 1 process")
    return number


def nproc_per_node(env: Mapping[str, str] | None = None) -> int:
    """Processes to start on this node (see the module docstring for the order)."""
    env = os.environ if env is None else env
    for name in ("ADIT_NPROC_PER_NODE", "SLURM_GPUS_ON_NODE", "SLURM_NTASKS_PER_NODE"):
        number = _positive_int(env, name)
        if number is not None:
            return number
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            return torch.cuda.device_count()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return 1


def _first_slurm_host(env: Mapping[str, str]) -> str:
    """The first host of ``$SLURM_JOB_NODELIST`` (expanded by ``scontrol show hostnames``)."""
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise ConfigError("a multi-node run needs $SLURM_JOB_NODELIST or $ADIT_RDZV_HOST for the rendezvous")
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def launch_command(
    args: Sequence[str], adit: str, torchrun: Sequence[str], env: Mapping[str, str] | None = None
) -> list[str]:
    """The command ``adit-torchrun args`` runs: ``torchrun ... --no-python adit args``, via ``srun`` on several nodes.

    :param args: the ``adit`` command line (``train-dit ...``).
    :param adit: path of the ``adit`` executable.
    :param torchrun: the launcher (``["torchrun"]`` or ``[python, "-m", "torch.distributed.run"]``).
    """
    env = os.environ if env is None else env
    nproc = nproc_per_node(env)
    nnodes = _positive_int(env, "SLURM_NNODES") or 1
    if nnodes == 1:
        return [*torchrun, "--standalone", "--nnodes=1", f"--nproc_per_node={nproc}", "--local-addr=127.0.0.1",
                "--no-python", adit, *args]
    host = env.get("ADIT_RDZV_HOST") or _first_slurm_host(env)
    port = _positive_int(env, "ADIT_RDZV_PORT") or RDZV_PORT
    job = env.get("SLURM_JOB_ID", "adit")
    return [
        "srun",
        f"--nodes={nnodes}",
        f"--ntasks={nnodes}",
        "--ntasks-per-node=1",
        *torchrun,
        f"--nnodes={nnodes}",
        f"--nproc_per_node={nproc}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={host}:{port}",
        f"--rdzv-id={job}",
        "--no-python",
        adit,
        *args,
    ]


def _executables() -> tuple[str, list[str]]:
    """``adit`` and ``torchrun`` of this environment (next to this Python first, then on PATH)."""
    here = Path(sys.executable).parent
    adit = here / "adit"
    adit_path = str(adit) if adit.is_file() else shutil.which("adit")
    if adit_path is None:
        raise ConfigError(f"the `adit` command is neither next to {sys.executable} nor on PATH")
    torchrun = shutil.which("torchrun", path=str(here)) or shutil.which("torchrun")
    return adit_path, [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]


def main(argv: Sequence[str] | None = None) -> None:
    """Replace this process with ``torchrun ... adit ARGS`` (exit status 2 with a message on bad settings)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if args else 2)
    try:
        adit, torchrun = _executables()
        command = launch_command(args, adit, torchrun)
    except (ConfigError, subprocess.CalledProcessError, OSError) as exc:
        print(f"adit-torchrun: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    sys.stdout.flush()
    os.execvp(command[0], command)
