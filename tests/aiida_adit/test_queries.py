"""Provenance queries on real MP-20 structures, on SQLite and (when reachable) PostgreSQL.

The graph mirrors the links adit.generate leaves: two adit.sample CalcJobs (one per
checkpoint) creating StructureData, a work chain returning the first one's
structures and a group holding the second one's. Only the joins (work chain,
checkpoint, group) are checked here, on both backends; the filters on extras
(``valid``, ``formula``, ``elements``, ``kind``, ``max_e_above_hull``) are checked on
the nodes of real runs, never on extras a test sets: ``test_generate.py`` (a real
``adit.generate`` with metastability on SQLite) and ``test_production.py``
(PostgreSQL + RabbitMQ, through the daemon).
"""

import pathlib

import pytest
from aiida import orm
from aiida.common import LinkType
from aiida.plugins.entry_point import format_entry_point_string

from adit_torch.errors import ConfigError
from adit_torch.io import read_systems
from aiida_adit.data.checkpoint import CheckpointData
from aiida_adit.queries import generated_structures, structures
from aiida_adit.structures import atoms_to_structure

MP20 = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "mp20"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request):
    """Run on the SQLite test profile, then on a PostgreSQL profile (skipped when unreachable)."""
    if request.param == "postgres":
        request.getfixturevalue("on_production_profile")
    else:
        request.getfixturevalue("aiida_profile_clean")
    return request.param


@pytest.fixture
def graph(backend, make_checkpoint, aiida_computer_local):
    """Build the provenance graph; returns the nodes and the MP-20 systems behind them."""
    systems = read_systems(MP20 / "mp_20_pilot_train.csv.gz") + read_systems(MP20 / "mp_20_pilot_val.csv.gz")
    computer = aiida_computer_local(label=f"localhost-{backend}")
    checkpoints = [
        CheckpointData(file=str(make_checkpoint("dit", seed=seed, name=f"{backend}-{seed}.safetensors"))).store()
        for seed in (1, 2)
    ]
    halves = [systems[:4], systems[4:]]
    calcs, made = [], []
    for checkpoint, half in zip(checkpoints, halves):
        calc = orm.CalcJobNode(
            computer=computer, process_type=format_entry_point_string("aiida.calculations", "adit.sample")
        )
        calc.base.links.add_incoming(checkpoint, link_type=LinkType.INPUT_CALC, link_label="checkpoint")
        calc.store()
        nodes = []
        for index, system in enumerate(half):
            node = atoms_to_structure(system.to_ase())
            node.base.links.add_incoming(calc, link_type=LinkType.CREATE, link_label=f"structures__sample_{index:05d}")
            node.store()
            nodes.append(node)
        calcs.append(calc)
        made.append(list(zip(nodes, half)))
    work = orm.WorkChainNode(process_type=format_entry_point_string("aiida.workflows", "adit.generate"))
    work.store()
    for index, (node, _) in enumerate(made[0]):
        node.base.links.add_incoming(work, link_type=LinkType.RETURN, link_label=f"structures__sample_{index:05d}")
    group = orm.Group(label=f"generated-{backend}").store()
    group.add_nodes([node for node, _ in made[1]])
    return {"checkpoints": checkpoints, "work": work, "group": group, "made": made}


def _pks(query):
    return {node.pk for node in structures(query)}


def _check_origin(graph):
    first = {node.pk for node, _ in graph["made"][0]}
    second = {node.pk for node, _ in graph["made"][1]}
    assert _pks(generated_structures(workchain=graph["work"])) == first
    assert _pks(generated_structures(checkpoint=graph["checkpoints"][1])) == second
    assert _pks(generated_structures(group=graph["group"].label)) == second
    assert _pks(generated_structures()) == first | second


def test_provenance_queries(graph):
    """One graph per backend, every join checked against the graph it was built from."""
    _check_origin(graph)
    with pytest.raises(ConfigError, match="expected a CheckpointData"):
        generated_structures(checkpoint=graph["work"].pk)
