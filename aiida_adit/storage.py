"""Writing many nodes in a few database transactions instead of one each.

aiida-core commits once per stored node and once per ``extras.set_many`` on a
stored node. For the thousands of StructureData a sampling run makes, those
commits dominate (``benchmarks/results/aiida_store.md``). Grouping the writes in
transactions of :data:`WRITES_PER_TRANSACTION` removes most of that cost while
keeping each transaction short: on SQLite a transaction holds the database's
write lock, and other daemon workers wait for it (5 s at most before they fail
with "database is locked").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from aiida import orm
from aiida.manage import get_manager

#: Node writes per transaction: 100 amortises the commit (about 15 ms on SQLite here) to
#: a fraction of a millisecond per node and holds a write lock for about 1-3 s.
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
    if storage.in_transaction:
        count = 0
        for item in items:
            write(item)
            count += 1
        return count
    count = 0
    for chunk in chunks(items, size):
        with storage.transaction():
            for item in chunk:
                write(item)
        count += len(chunk)
    return count


def set_extras(pairs: Iterable[tuple[orm.Node, Mapping[str, Any]]], size: int | None = None) -> int:
    """Set ``extras`` on each stored ``node`` of ``(node, extras)`` pairs, ``size`` nodes per transaction.

    Returns the number of nodes written.
    """
    return write_in_transactions(pairs, lambda pair: pair[0].base.extras.set_many(dict(pair[1])), size)
