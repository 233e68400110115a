"""Writing many nodes in a few database transactions instead of one each.

aiida-core commits once per stored node, once per ``extras.set_many`` on a
stored node and once per link added between stored nodes, and every commit
expires every object the session holds. For the thousands of StructureData a
sampling run makes, those commits dominate and grow with the run
(``benchmarks/results/aiida_store.md``). Grouping the writes in transactions of
:data:`WRITES_PER_TRANSACTION` removes most of that cost while keeping each
transaction short: on SQLite a transaction holds the database's write lock, and
other daemon workers wait for it (5 s at most before they fail with "database is
locked"). Work chains return those structures too; :class:`ReturnLinksInBulk`
adds their RETURN links with one insert per chunk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from aiida import orm
from aiida.common.links import LinkType, validate_link_label
from aiida.manage import get_manager

#: Node writes per transaction: 100 amortises a commit (about 8 ms per node on an idle
#: machine here, more as the session grows) to well under a millisecond per node, and
#: holds SQLite's write lock for about 1.7 s on an idle 2-core machine (longer under load).
WRITES_PER_TRANSACTION = 100

T = TypeVar("T")


def chunks(items: Iterable[T], size: int | None = None) -> Iterator[list[T]]:
    """Consecutive lists of at most ``size`` (default :data:`WRITES_PER_TRANSACTION`) items of ``items``."""
    size = WRITES_PER_TRANSACTION if size is None else size
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_in_transactions(items: Iterable[T], write: Callable[[T], Any], size: int | None = None) -> int:
    """Call ``write(item)`` for every item, ``size`` (default :data:`WRITES_PER_TRANSACTION`) per transaction.

    A failing write rolls back its own transaction (at most ``size`` writes) and is
    raised; the transactions before it stay committed. Inside a transaction the caller
    already opened, the writes simply join it (aiida-core's nested transactions commit
    the outer one on exit, which would end the caller's early). Returns the number of writes.
    """
    storage = get_manager().get_profile_storage()
    count = 0
    for chunk in chunks(items, size):
        with contextlib.nullcontext() if storage.in_transaction else storage.transaction():
            for item in chunk:
                write(item)
        count += len(chunk)
    return count


def set_extras(pairs: Iterable[tuple[orm.Node, Mapping[str, Any]]], size: int | None = None) -> int:
    """Set ``extras`` on each stored ``node`` of ``(node, extras)`` pairs, ``size`` nodes per transaction.

    Returns the number of nodes written.
    """
    return write_in_transactions(pairs, lambda pair: pair[0].base.extras.set_many(dict(pair[1])), size)


class StoreOutputsInChunks:
    """CalcJob mixin: new outputs are stored and linked :data:`WRITES_PER_TRANSACTION` per transaction.

    Put it before ``CalcJob`` in the bases. Same links and the same validation as
    aiida-core's ``update_outputs``, one commit per chunk instead of one per node.
    Anything left (e.g. an output that is somehow already stored) goes through
    aiida-core's path unchanged.
    """

    def update_outputs(self) -> None:
        """Store and link the outputs added since the last call, in chunks."""
        if self.metadata.store_provenance is not False:
            linked = set(self.node.base.links.get_outgoing(link_type=LinkType.CREATE).all_link_labels())
            new = [
                (label, node)
                for label, node in self._flat_outputs().items()
                if label not in linked and not node.is_stored
            ]

            def store(pair) -> None:
                label, node = pair
                node.base.links.add_incoming(self.node, LinkType.CREATE, label)
                node.store()

            write_in_transactions(new, store)
        super().update_outputs()


def return_links(workflow: orm.WorkflowNode, outputs: Mapping[str, orm.Node], size: int | None = None) -> int:
    """Add a RETURN link from the stored ``workflow`` to each stored Data node of ``outputs`` (label -> node).

    The links aiida-core would add one commit each, inserted ``size`` (default
    :data:`WRITES_PER_TRANSACTION`) per statement. The rules aiida-core checks for a
    RETURN link are checked here first, for all of them: a stored work flow node as the
    source, stored Data nodes as targets, valid labels not yet used by ``workflow``.

    :raises ValueError: naming the first output that breaks a rule (nothing is linked then).
    """
    if not isinstance(workflow, orm.WorkflowNode) or not workflow.is_stored:
        raise ValueError(f"RETURN links need a stored WorkflowNode as the source, got {workflow!r}")
    used = set(workflow.base.links.get_outgoing(link_type=LinkType.RETURN).all_link_labels())
    rows = []
    for label, node in outputs.items():
        try:
            validate_link_label(label)
        except ValueError as exc:
            raise ValueError(f"output `{label}` of {workflow.process_label}<{workflow.pk}>: {exc}") from exc
        if label in used:
            raise ValueError(f"output `{label}` of {workflow.process_label}<{workflow.pk}>: label already used")
        if not isinstance(node, orm.Data) or not node.is_stored:
            raise ValueError(
                f"output `{label}` of {workflow.process_label}<{workflow.pk}>: a work flow can only return "
                f"stored Data nodes, got {node!r}"
            )
        rows.append({"input_id": workflow.pk, "output_id": node.pk, "label": label, "type": LinkType.RETURN.value})
    storage = get_manager().get_profile_storage()
    for chunk in chunks(rows, size):
        storage.bulk_insert(orm.EntityTypes.LINK, chunk)  # its own transaction, or the caller's when one is open
    return len(rows)


class ReturnLinksInBulk:
    """Work chain mixin: returned nodes get their RETURN links from :func:`return_links`.

    Put it before ``WorkChain`` in the bases. aiida-core's ``update_outputs`` commits once
    per returned node; a work chain that passes on 10,000 generated structures would spend
    minutes on it. Outputs that are not stored Data nodes are left to aiida-core, which
    reports them as it always does.
    """

    def update_outputs(self) -> None:
        """Link the new stored outputs in bulk, then let aiida-core handle anything left."""
        if self.metadata.store_provenance is not False:
            linked = set(self.node.base.links.get_outgoing(link_type=LinkType.RETURN).all_link_labels())
            new = {
                label: node
                for label, node in self._flat_outputs().items()
                if label not in linked and isinstance(node, orm.Data) and node.is_stored
            }
            if new:
                return_links(self.node, new)
        super().update_outputs()
