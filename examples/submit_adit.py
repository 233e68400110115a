"""Generate crystals and molecules with ADiT through AiiDA, end to end, and show what came out.

    verdi presto --use-zeromq              # once: a profile on SQLite, no services needed
    verdi run examples/submit_adit.py                        # the shipped joint model: crystals and molecules
    verdi run examples/submit_adit.py --kind molecule        # one kind only
    verdi run examples/submit_adit.py --protocol train-fast  # train a tiny model from scratch instead
    verdi run examples/submit_adit.py --checkpoint dit.safetensors --kind crystal   # sample your own DiT

On first use the script registers the installed ``adit`` command as the code
``adit@localhost`` (and the ``localhost`` computer if the profile has none). It
runs the ``adit.generate`` work chain in this process (no daemon needed) once
per kind: sample the default shipped model (``adit models``), evaluate the
samples and, for crystals, relax them with CHGNet and compute their energies
above the offline hull. It then prints one row per generated structure and the
summary, and the QueryBuilder query that finds them again later.
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
    """The ``adit.generate`` builder: sample ``checkpoint``, the protocol's pretrained model, or train."""
    overrides: dict = {}
    if kind:
        overrides["kind"] = kind
    if num_samples:
        overrides["sample"] = {"num_samples": num_samples}
    node = CheckpointData.get_or_create(checkpoint) if checkpoint else None
    return AditGenerateWorkChain.get_builder_from_protocol(
        code, protocol=protocol, overrides=overrides, checkpoint=node
    )


def _flag(value) -> str:
    return "-" if value is None else str(value)


def table(workchain: orm.WorkflowNode) -> str:
    """One line per generated structure, then the summary scores with their conventions named.

    Molecules: ``valid`` = strictly valid (DetermineBonds, neutral) and in one piece; ``ADiT`` = the
    reference evaluator's route, which counts a molecule in fragments as valid (``frags`` says how many).
    Crystals: ``valid`` = structurally and compositionally (smact14) valid; ``E_hull`` (eV/atom) after
    CHGNet relaxation against the offline hull.
    """
    e_hull = {}
    if "metastability" in workchain.outputs and "e_above_hull" in workchain.outputs.metastability:
        e_hull = {key: node.value for key, node in workchain.outputs.metastability.e_above_hull.items()}
    nodes = structures(generated_structures(workchain=workchain))
    molecules = bool(nodes) and not any(nodes[0].pbc)
    head = f"{'structure':<16} {'pk':>6} {'formula':<14} {'atoms':>5} {'valid':>6}"
    head += f" {'ADiT':>6} {'frags':>5}" if molecules else f" {'E_hull':>8}"
    rows = [head]
    for node in nodes:
        extras = node.base.extras.all
        key = node.label.split()[-1]
        row = (f"{key:<16} {node.pk:>6} {str(extras.get('formula', node.get_formula())):<14} "
               f"{len(node.sites):>5} {_flag(extras.get('valid')):>6}")
        if molecules:
            row += f" {_flag(extras.get('valid_adit')):>6} {_flag(extras.get('fragments')):>5}"
        else:
            row += f" {e_hull[key]:>8.3f}" if key in e_hull else f" {'-':>8}"
        rows.append(row)
    if "evaluation" in workchain.outputs:
        scores = workchain.outputs.evaluation.get_dict()
        keys = [k for k, v in scores.items() if isinstance(v, float)]
        rows.append("")
        rows.extend(f"{key:<28} {scores[key]:.3f}" for key in keys if scores[key] is not None)
        protocol = scores.get("protocol") or {}
        headline = "validity_connected" if molecules else "validity"
        if headline in protocol:
            rows.append(f"  {headline}: {protocol[headline]}")
        if molecules and "validity" in protocol:
            rows.append(f"  validity: {protocol['validity']}")
    if "metastability" in workchain.outputs and "rates" in workchain.outputs.metastability:
        rates = workchain.outputs.metastability.rates.get_dict()
        rows.append("")
        rows.extend(f"{key:<28} {value:.3f}" for key, value in rates.items() if isinstance(value, float))
    return "\n".join(rows)


def run_one(code, args, kind: str | None) -> orm.WorkflowNode:
    """Run one ``adit.generate`` for ``kind`` and print its table; returns the work chain node."""
    builder = build(code, args.checkpoint, kind, args.protocol, args.num_samples)
    _, node = engine.run_get_node(builder)
    print(f"\n{node.process_label}<{node.pk}> ({builder.sample.sample.kind.value}s) finished with exit status "
          f"{node.exit_status}")
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


def main(argv: list[str]) -> list[orm.WorkflowNode]:
    """Parse ``argv``, run the work chain(s), print the tables and the queries; returns the work chain nodes."""
    parser = argparse.ArgumentParser(prog="verdi run examples/submit_adit.py", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a DiT checkpoint (.safetensors) to sample instead of the shipped model")
    parser.add_argument("--kind", choices=["crystal", "molecule"],
                        help="what to generate (default: both with the shipped model, else the protocol's kind)")
    parser.add_argument("--protocol", default="fast", choices=sorted(AditGenerateWorkChain.get_available_protocols()))
    parser.add_argument("--num-samples", type=int, help="how many systems to generate (per kind)")
    args = parser.parse_args(argv)

    code = get_code(get_computer())
    shipped = args.checkpoint is None and AditGenerateWorkChain.get_protocol_inputs(args.protocol).get("pretrained")
    kinds = [args.kind] if args.kind else (["crystal", "molecule"] if shipped else [None])
    return [run_one(code, args, kind) for kind in kinds]


if __name__ == "__main__":
    main(sys.argv[1:])
