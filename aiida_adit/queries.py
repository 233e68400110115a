"""Provenance queries over generated structures.

One entry point, :func:`generated_structures`, builds a QueryBuilder for the
StructureData that ``adit.sample`` CalcJobs created, narrowed by where they came
from (a work chain, a checkpoint, a group) and by what is known about them
(extras set by ``adit.generate``: ``valid``, ``formula``, ``kind``, ``elements``;
set by the metastability work chain: ``e_above_hull`` in eV/atom). The filters
use only operators that both storage backends (SQLite and PostgreSQL) implement
for JSON: ``==``, ``<=``, ``in`` and ``contains`` on lists.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiida import orm
from aiida.plugins.entry_point import format_entry_point_string

from adit_torch.errors import ConfigError
from aiida_adit.data.checkpoint import CheckpointData

SAMPLE_PROCESS_TYPE = format_entry_point_string("aiida.calculations", "adit.sample")


def _node(value, cls, what: str):
    """Load ``value`` (node, pk or uuid) as a ``cls`` node; ConfigError names ``what`` otherwise."""
    node = value if isinstance(value, orm.Node) else orm.load_node(value)
    if not isinstance(node, cls):
        raise ConfigError(f"{what}: expected a {cls.__name__}, got {type(node).__name__}<{node.pk}>")
    return node


def generated_structures(
    workchain: orm.WorkflowNode | int | str | None = None,
    checkpoint: CheckpointData | int | str | None = None,
    group: orm.Group | str | None = None,
    valid: bool | None = None,
    formula: str | None = None,
    elements: Iterable[str] | None = None,
    kind: str | None = None,
    max_e_above_hull: float | None = None,
    conditions: dict | None = None,
) -> orm.QueryBuilder:
    """A QueryBuilder projecting the generated StructureData (tag ``structure``) that match every filter.

    :param workchain: only structures returned by this work chain (e.g. ``adit.generate``).
    :param checkpoint: only structures sampled from this checkpoint (through any ``adit.sample`` CalcJob).
    :param group: only structures in this group (Group or label).
    :param valid: only structures whose ``valid`` extra is this value.
    :param formula: only this reduced formula (``formula`` extra, as written by ``adit evaluate``).
    :param elements: only structures containing all these element symbols.
    :param kind: ``crystal`` or ``molecule``.
    :param max_e_above_hull: only structures with ``e_above_hull`` extra (eV/atom) <= this.
    :param conditions: only structures sampled under these conditions (``{"space_group": 225}``,
        ``{"chemical_system": "Fe-Li-O"}``: any spelling of the set; other conditions may be set too).
    """
    query = orm.QueryBuilder()
    if checkpoint is not None:
        ckpt = _node(checkpoint, CheckpointData, "checkpoint")
        query.append(CheckpointData, filters={"id": ckpt.pk}, tag="checkpoint")
        query.append(
            orm.CalcJobNode, with_incoming="checkpoint", filters={"process_type": SAMPLE_PROCESS_TYPE}, tag="sample"
        )
    else:
        query.append(orm.CalcJobNode, filters={"process_type": SAMPLE_PROCESS_TYPE}, tag="sample")

    filters: dict = {}
    if valid is not None:
        filters["extras.valid"] = bool(valid)
    if formula is not None:
        filters["extras.formula"] = formula
    if kind is not None:
        filters["extras.kind"] = kind
    if elements:
        filters["extras.elements"] = {"contains": sorted(set(elements))}
    if max_e_above_hull is not None:
        filters["extras.e_above_hull"] = {"<=": float(max_e_above_hull)}
    if conditions:
        from aiida_adit.parsers.sample import canonical_conditions

        for key, value in canonical_conditions(conditions).items():
            filters[f"extras.conditions.{key}"] = value
    query.append(orm.StructureData, with_incoming="sample", filters=filters, tag="structure", project="*")

    if workchain is not None:
        work = _node(workchain, orm.WorkflowNode, "workchain")
        query.append(orm.WorkflowNode, with_outgoing="structure", filters={"id": work.pk}, tag="workchain")
    if group is not None:
        label = group.label if isinstance(group, orm.Group) else group
        query.append(orm.Group, with_node="structure", filters={"label": label}, tag="group")
    query.distinct()
    return query


def structures(query: orm.QueryBuilder) -> list[orm.StructureData]:
    """The StructureData nodes of a :func:`generated_structures` query, oldest first."""
    query.order_by({"structure": {"id": "asc"}})
    return query.all(flat=True)
