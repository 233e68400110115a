"""Chunked writes: how many per transaction, what a failure rolls back, and the sample CalcJob using them."""

import pytest
from aiida import orm
from aiida.engine import run_get_node
from aiida.plugins import CalculationFactory

from aiida_adit import storage
from aiida_adit.data.checkpoint import CheckpointData
from aiida_adit.parsers.sample import output_label


def _in_database(values):
    filters = {"attributes.value": {"in": list(values)}}
    query = orm.QueryBuilder().append(orm.Int, filters=filters, project="attributes.value")
    return sorted(query.all(flat=True))


def test_chunks_split_in_order():
    assert list(storage.chunks(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(storage.chunks([], 3)) == []
    with pytest.raises(ValueError, match="at least 1"):
        list(storage.chunks(range(3), 0))


def test_a_failing_write_rolls_back_only_its_own_chunk(aiida_profile_clean):
    values = list(range(7001, 7008))

    def store(value):
        if value == 7005:
            raise RuntimeError("write 5 fails")
        orm.Int(value).store()

    with pytest.raises(RuntimeError, match="write 5 fails"):
        storage.write_in_transactions(values, store, size=3)
    # chunk [7001..7003] was committed; chunk [7004, 7005, 7006] rolled back as a whole
    assert _in_database(values) == [7001, 7002, 7003]


def test_set_extras_on_many_nodes(aiida_profile_clean):
    nodes = [orm.Int(i).store() for i in range(5)]
    assert storage.set_extras(((node, {"index": node.value, "kind": "test"}) for node in nodes), size=2) == 5
    query = orm.QueryBuilder().append(orm.Int, filters={"extras.kind": "test"}, project="extras.index")
    assert sorted(query.all(flat=True)) == [0, 1, 2, 3, 4]


def test_inside_a_callers_transaction_the_writes_join_it(aiida_profile_clean):
    from aiida.manage import get_manager

    nodes = [orm.Int(i).store() for i in range(3)]
    with pytest.raises(RuntimeError, match="caller fails"):
        with get_manager().get_profile_storage().transaction():
            storage.set_extras(((node, {"joined": True}) for node in nodes), size=1)
            raise RuntimeError("caller fails")
    # the caller's failure rolls back every write made inside its transaction
    query = orm.QueryBuilder().append(orm.Int, filters={"extras.joined": True})
    assert query.count() == 0


def _sample_inputs(code, checkpoint, size=5):
    return {
        "code": code,
        "checkpoint": checkpoint,
        "num_samples": orm.Int(size),
        "kind": orm.Str("molecule"),
        "steps": orm.Int(3),
        "seed": orm.Int(5),
        "metadata": {"options": {"max_wallclock_seconds": 600}},
    }


def test_sample_outputs_are_stored_in_chunks(aiida_profile_clean, adit_code, fixture_folder, monkeypatch):
    """A real ``adit sample`` run: every structure goes through the chunked path, linked and with its extras."""
    original, written = storage.write_in_transactions, []

    def spy(items, write, size=None):
        items = list(items)
        written.append([label for label, _ in items])
        return original(items, write, size)

    monkeypatch.setattr(storage, "WRITES_PER_TRANSACTION", 2)
    monkeypatch.setattr(storage, "write_in_transactions", spy)
    checkpoint = CheckpointData.get_or_create(fixture_folder("train_dit", "temporary") / "dit.safetensors")
    _, node = run_get_node(CalculationFactory("adit.sample"), **_sample_inputs(adit_code("adit.sample"), checkpoint))
    assert node.is_finished_ok, node.exit_message
    labels = [f"structures__{output_label(i)}" for i in range(5)]
    assert sorted(label for batch in written for label in batch if label.startswith("structures__")) == labels
    assert sorted(node.outputs.structures) == [output_label(i) for i in range(5)]
    for structure in node.outputs.structures.values():
        assert structure.base.extras.get("kind") == "molecule"
        assert structure.base.extras.get("elements") == sorted(structure.get_symbols_set())
        assert structure.base.links.get_incoming().one().node.pk == node.pk


def test_work_chain_returns_structures_through_bulk_links(aiida_profile_clean, adit_code, fixture_folder, monkeypatch):
    """``adit.sample`` work chain: its RETURN links come from ``return_links``, and read back like any others."""
    from aiida.common.links import LinkType
    from aiida.plugins import WorkflowFactory

    original, returned = storage.return_links, []

    def spy(workflow, outputs, size=None):
        returned.extend(outputs)
        return original(workflow, outputs, size)

    monkeypatch.setattr(storage, "return_links", spy)
    checkpoint = CheckpointData.get_or_create(fixture_folder("train_dit", "temporary") / "dit.safetensors")
    inputs = {"sample": _sample_inputs(adit_code("adit.sample"), checkpoint)}
    _, node = run_get_node(WorkflowFactory("adit.sample"), **inputs)
    assert node.is_finished_ok, node.exit_message
    assert sorted(label for label in returned if label.startswith("structures__")) == [
        f"structures__{output_label(i)}" for i in range(5)
    ]
    calc = node.called[0]
    assert {n.pk for n in node.outputs.structures.values()} == {n.pk for n in calc.outputs.structures.values()}
    links = node.base.links.get_outgoing(link_type=LinkType.RETURN).all()
    assert len([link for link in links if link.link_label.startswith("structures__")]) == 5


def test_return_links_checks_every_output_before_linking(aiida_profile_clean):
    from aiida.common.links import LinkType

    workflow = orm.WorkflowNode().store()
    good = orm.Int(1).store()
    with pytest.raises(ValueError, match="only return stored Data nodes"):
        storage.return_links(workflow, {"good": good, "unstored": orm.Int(2)})
    with pytest.raises(ValueError, match="`bad label`"):
        storage.return_links(workflow, {"good": good, "bad label": orm.Int(3).store()})
    assert workflow.base.links.get_outgoing().all() == []  # nothing linked by the failed calls
    assert storage.return_links(workflow, {"good": good}) == 1
    with pytest.raises(ValueError, match="already used"):
        storage.return_links(workflow, {"good": orm.Int(4).store()})
    link = workflow.base.links.get_outgoing(link_type=LinkType.RETURN).one()
    assert (link.link_label, link.node.pk) == ("good", good.pk)
