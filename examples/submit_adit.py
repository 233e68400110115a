"""Generate molecules (or crystals) with ADiT through AiiDA, end to end, and show what came out.

    verdi presto --use-zeromq              # once: a profile on SQLite, no services needed
    verdi run examples/submit_adit.py                       # train a tiny model (minutes, CPU), sample, evaluate
    verdi run examples/submit_adit.py --checkpoint dit.safetensors --kind crystal   # sample a trained DiT

On first use the script registers the installed ``adit`` command as the code
``adit@localhost`` (and the ``localhost`` computer if the profile has none). It
runs the ``adit.generate`` work chain in this process (no daemon needed), then
prints one row per generated structure (formula, atoms, periodicity, validity)
and the QueryBuilder query that finds them again later.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from aiida import engine, orm
from aiida.common.exceptions import NotExistent

from aiida_adit.data.checkpoint import CheckpointData
from aiida_adit.queries import generated_structures, structures
from aiida_adit.workflows.generate import AditGenerateWorkChain

CODE_LABEL = "adit"


def get_computer(label: str = "localhost") -> orm.Computer:
    """The computer ``label``; created (local transport, direct scheduler) when the profile has none."""
    try:
        return orm.load_computer(label)
    except NotExistent:
        workdir = Path(tempfile.gettempdir()) / "aiida-adit-runs"
        computer = orm.Computer(
            label=label,
            hostname="localhost",
            description="this machine",
            transport_type="core.local",
            scheduler_type="core.direct",
            workdir=str(workdir),
        ).store()
        computer.set_minimum_job_poll_interval(1.0)
        computer.set_default_mpiprocs_per_machine(1)
        computer.configure()
        return computer


def get_code(computer: orm.Computer) -> orm.InstalledCode:
    """The ``adit`` code on ``computer``; registered from the ``adit`` on PATH when missing."""
    query = orm.QueryBuilder().append(orm.Computer, filters={"id": computer.pk}, tag="computer")
    query.append(orm.InstalledCode, with_computer="computer", filters={"label": CODE_LABEL})
    found = query.first(flat=True)
    if found is not None:
        return found
    beside = Path(sys.executable).parent / "adit"  # the adit of this environment, even when not activated
    executable = str(beside) if beside.is_file() else shutil.which("adit")
    if executable is None:
        raise SystemExit("the `adit` command is not on PATH: install aiida-adit (pip install -e .) in this environment")
    return orm.InstalledCode(
        label=CODE_LABEL,
        computer=computer,
        filepath_executable=executable,
        default_calc_job_plugin="adit.sample",
        description="the adit command line of aiida-adit",
    ).store()


def build(code, checkpoint: str | None, kind: str | None, protocol: str, num_samples: int | None):
    """The ``adit.generate`` builder: train with ``protocol`` or sample ``checkpoint``."""
    overrides: dict = {}
    if kind:
        overrides["kind"] = kind
    if num_samples:
        overrides["sample"] = {"num_samples": num_samples}
    node = CheckpointData.get_or_create(checkpoint) if checkpoint else None
    return AditGenerateWorkChain.get_builder_from_protocol(
        code, protocol=protocol, overrides=overrides, checkpoint=node
    )


def table(workchain: orm.WorkflowNode) -> str:
    """One line per generated structure: label, formula, atoms, periodic, valid; then the scores."""
    rows = [f"{'structure':<16} {'pk':>6} {'formula':<16} {'atoms':>5} {'periodic':>8} {'valid':>6}"]
    for node in structures(generated_structures(workchain=workchain)):
        extras = node.base.extras.all
        rows.append(
            f"{node.label.split()[-1]:<16} {node.pk:>6} {str(extras.get('formula', node.get_formula())):<16} "
            f"{len(node.sites):>5} {str(all(node.pbc)):>8} {str(extras.get('valid', '-')):>6}"
        )
    if "evaluation" in workchain.outputs:
        scores = workchain.outputs.evaluation.get_dict()
        keys = [k for k, v in scores.items() if isinstance(v, float) or (k.endswith("validity") and v is not None)]
        rows.append("")
        rows.extend(f"{key:<28} {scores[key]:.3f}" for key in keys if scores[key] is not None)
    return "\n".join(rows)


def main(argv: list[str]) -> orm.WorkflowNode:
    """Parse ``argv``, run the work chain, print the table and the query; returns the work chain node."""
    parser = argparse.ArgumentParser(prog="verdi run examples/submit_adit.py", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a DiT checkpoint (.safetensors) to sample instead of training")
    parser.add_argument("--kind", choices=["crystal", "molecule"], help="what to generate (default: the protocol's)")
    parser.add_argument("--protocol", default="fast", choices=sorted(AditGenerateWorkChain.get_available_protocols()))
    parser.add_argument("--num-samples", type=int, help="how many systems to generate")
    args = parser.parse_args(argv)

    code = get_code(get_computer())
    builder = build(code, args.checkpoint, args.kind, args.protocol, args.num_samples)
    _, node = engine.run_get_node(builder)
    print(f"\n{node.process_label}<{node.pk}> finished with exit status {node.exit_status}")
    if not node.is_finished_ok:
        print(f"  {node.exit_message}; see `verdi process report {node.pk}`")
        return node
    print(table(node))
    print(
        "\nFind these structures again (verdi shell):\n"
        "    from aiida_adit.queries import generated_structures, structures\n"
        f"    structures(generated_structures(workchain={node.pk}, valid=True))\n"
        f"or the group: verdi group show {node.base.extras.get('group_label')}"
    )
    return node


if __name__ == "__main__":
    main(sys.argv[1:])
