"""The submission script of a dry run on a Slurm GPU computer set up as docs/aiida.md describes."""

from aiida import orm
from aiida.engine import run_get_node

TORCHRUN = ["torchrun", "--standalone", "--nnodes={num_machines}", "--nproc_per_node={num_mpiprocs_per_machine}"]


def _slurm_code(tmp_path, label, mpirun, use_double_quotes=False, prepend=None):
    """The ``adit`` code on a Slurm computer (local transport) with ``mpirun`` as its mpirun command."""
    computer = orm.Computer(
        label=label,
        hostname="localhost",
        transport_type="core.local",
        scheduler_type="core.slurm",
        workdir=str(tmp_path / "scratch"),
    ).store()
    computer.set_mpirun_command(mpirun)
    computer.set_use_double_quotes(use_double_quotes)
    if prepend:
        computer.set_prepend_text(prepend)
    computer.configure()
    return orm.InstalledCode(label="adit", computer=computer, filepath_executable="/opt/adit/bin/adit").store()


def test_dry_run_script_has_gpu_requests_and_torchrun(aiida_profile_clean, tmp_path, monkeypatch, make_checkpoint):
    from aiida.plugins import CalculationFactory

    from aiida_adit.data.checkpoint import CheckpointData

    monkeypatch.chdir(tmp_path)
    code = _slurm_code(tmp_path, "gpu-cluster", [*TORCHRUN, "--no-python"])

    builder = CalculationFactory("adit.train").get_builder()
    builder.code = code
    builder.settings = orm.Dict({"stage": "dit", "dataset": "joint", "size": "S", "device": "cuda"})
    builder.parent_checkpoint = CheckpointData(file=str(make_checkpoint("vae"))).store()
    builder.metadata.options = {
        "resources": {"num_machines": 1, "num_mpiprocs_per_machine": 4},
        "withmpi": True,
        "max_wallclock_seconds": 12 * 3600,
        "queue_name": "gpu",
        "account": "proj42",
        "custom_scheduler_commands": "#SBATCH --gres=gpu:4\n#SBATCH --cpus-per-task=8",
    }
    builder.metadata.dry_run = True
    builder.metadata.store_provenance = False
    _, node = run_get_node(builder)

    script = (tmp_path / node.dry_run_info["folder"] / "_aiidasubmit.sh").read_text()
    sbatch = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    for expected in (
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj42",
        "#SBATCH --time=12:00:00",
        "#SBATCH --gres=gpu:4",
        "#SBATCH --cpus-per-task=8",
    ):
        assert expected in sbatch, f"{expected} missing from {sbatch}"
    run_line = next(line for line in script.splitlines() if "train-dit" in line)
    assert run_line.startswith(
        "'torchrun' '--standalone' '--nnodes=1' '--nproc_per_node=4' '--no-python' '/opt/adit/bin/adit' 'train-dit'"
    )
    assert "'--device' 'cuda'" in run_line and "'--vae' 'parent.safetensors'" in run_line
    # 12 h walltime less 10% kept to save the checkpoint: the run stops itself at 648 minutes
    assert "'--max-minutes' '648'" in run_line
    assert run_line.endswith("> 'adit.out' 2> 'adit.err'")
    lines = script.splitlines()
    assert lines[lines.index(run_line) + 1 :].count("echo $? > _adit_exit_status") == 1


#: docs/aiida.md, "Several nodes": one torchrun per node (srun), c10d rendezvous on the first node.
MULTINODE = [
    "srun",
    "--nodes={num_machines}",
    "--ntasks={num_machines}",
    "--ntasks-per-node=1",
    "torchrun",
    "--nnodes={num_machines}",
    "--nproc_per_node={num_mpiprocs_per_machine}",
    "--rdzv-backend=c10d",
    "--rdzv-endpoint=$ADIT_RDZV_HOST:29500",
    "--rdzv-id=$SLURM_JOB_ID",
    "--no-python",
]
RDZV_PREPEND = 'export ADIT_RDZV_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'


def test_multinode_script_expands_the_rendezvous_variables(aiida_profile_clean, tmp_path, monkeypatch, make_checkpoint):
    """Two nodes x 4 GPUs: one torchrun per node, and the endpoint variables left for bash to expand."""
    from aiida.plugins import CalculationFactory

    monkeypatch.chdir(tmp_path)
    code = _slurm_code(tmp_path, "gpu-cluster-multinode", MULTINODE, use_double_quotes=True, prepend=RDZV_PREPEND)

    builder = CalculationFactory("adit.train").get_builder()
    builder.code = code
    builder.settings = orm.Dict({"stage": "vae", "dataset": "mp20", "size": "B", "device": "cuda"})
    builder.metadata.options = {
        "resources": {"num_machines": 2, "num_mpiprocs_per_machine": 4},
        "withmpi": True,
        "max_wallclock_seconds": 24 * 3600,
        "custom_scheduler_commands": "#SBATCH --gres=gpu:4",
    }
    builder.metadata.dry_run = True
    builder.metadata.store_provenance = False
    _, node = run_get_node(builder)

    lines = (tmp_path / node.dry_run_info["folder"] / "_aiidasubmit.sh").read_text().splitlines()
    assert "#SBATCH --nodes=2" in lines and "#SBATCH --gres=gpu:4" in lines
    run_line = next(line for line in lines if "train-vae" in line)
    # the prepend text (computer) comes before the run line, so the variable is set when bash expands it
    assert lines.index(RDZV_PREPEND) < lines.index(run_line)
    assert run_line.startswith(
        '"srun" "--nodes=2" "--ntasks=2" "--ntasks-per-node=1" "torchrun" "--nnodes=2" "--nproc_per_node=4" '
        '"--rdzv-backend=c10d" "--rdzv-endpoint=$ADIT_RDZV_HOST:29500" "--rdzv-id=$SLURM_JOB_ID" "--no-python"'
    )


def test_adit_torchrun_as_the_code_leaves_the_computers_mpi_launcher_to_mpi_codes(
    aiida_profile_clean, tmp_path, monkeypatch, make_checkpoint
):
    """docs/aiida.md, "A launcher that does not block the computer": the computer keeps `mpirun` for real MPI
    codes (a DFT engine of adit.metastability); training runs `adit-torchrun`, which starts torchrun itself."""
    from aiida.plugins import CalculationFactory

    from aiida_adit.data.checkpoint import CheckpointData

    monkeypatch.chdir(tmp_path)
    adit = _slurm_code(tmp_path, "shared-cluster", ["mpirun", "-np", "{tot_num_mpiprocs}"])
    computer = adit.computer
    launcher = orm.InstalledCode(
        label="adit-torchrun", computer=computer, filepath_executable="/opt/adit/bin/adit-torchrun"
    ).store()
    options = {
        "resources": {"num_machines": 1, "num_mpiprocs_per_machine": 4},
        "max_wallclock_seconds": 3600,
        "custom_scheduler_commands": "#SBATCH --gres=gpu:4",
    }
    builder = CalculationFactory("adit.train").get_builder()
    builder.code = launcher
    builder.settings = orm.Dict({"stage": "dit", "dataset": "joint", "size": "S", "device": "cuda"})
    builder.parent_checkpoint = CheckpointData(file=str(make_checkpoint("vae"))).store()
    builder.metadata.options = options  # withmpi stays off (the adit CalcJobs' default)
    builder.metadata.dry_run = True
    builder.metadata.store_provenance = False
    _, node = run_get_node(builder)
    script = (tmp_path / node.dry_run_info["folder"] / "_aiidasubmit.sh").read_text()
    run_line = next(line for line in script.splitlines() if "train-dit" in line)
    assert run_line.startswith("'/opt/adit/bin/adit-torchrun' 'train-dit'"), run_line
    assert "mpirun" not in script
    assert "#SBATCH --ntasks-per-node=4" in script  # what adit-torchrun reads as $SLURM_NTASKS_PER_NODE

    # an MPI code on the same computer still gets the computer's launcher
    bash = orm.InstalledCode(label="pw", computer=computer, filepath_executable="/opt/qe/bin/pw.x").store()
    add = CalculationFactory("core.arithmetic.add").get_builder()
    add.code, add.x, add.y = bash, orm.Int(1), orm.Int(2)
    add.metadata.options = {**options, "withmpi": True}
    add.metadata.dry_run = True
    add.metadata.store_provenance = False
    monkeypatch.chdir(tmp_path)
    _, other = run_get_node(add)
    other_script = (tmp_path / other.dry_run_info["folder"] / "_aiidasubmit.sh").read_text()
    assert "'mpirun' '-np' '4' '/opt/qe/bin/pw.x'" in other_script
