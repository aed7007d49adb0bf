"""Where the simulator's documents live: committed versions per document, snapshots by number.

On mongod a transaction reads from one snapshot, for every collection it reads, taken when it
starts; it sees its own writes and none of the commits made after its snapshot (MongoDB manual,
"Transactions", "Read Concern "snapshot""; transactions.md, "Transactions": a transaction's reads
are from a snapshot). Storage gives the simulator that at the cost of what is written, not of
what is read:

- one commit counter for the whole server; a snapshot is the counter's value when it was taken;
- each document keeps its committed versions, oldest first, for as long as an open snapshot may
  need them: a write appends a version (copy-on-write per document) and never changes one;
- a transaction publishes all its writes under one new version at commit, so a snapshot sees all
  of them or none.

What a transaction wrote before it commits is its own (:class:`~._views.TransactionView`).
Callers hold the engine's lock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Doc = dict[str, Any]
Name = tuple[str, str]  # (database, collection)
Chain = list[tuple[int, Doc | None]]  # (version, the document or None once deleted), oldest first


def at(chain: Chain, version: int) -> Doc | None:
    """The document as a snapshot taken at ``version`` sees it (None: absent)."""
    for committed, doc in reversed(chain):
        if committed <= version:
            return doc
    return None


@dataclass(slots=True, eq=False)
class Table:
    """One collection: its documents' version chains (keyed as mongomock keys its store),
    its indexes and whether it was created explicitly (so exists while empty)."""

    rows: dict[Any, Chain] = field(default_factory=dict)
    indexes: dict[str, Doc] = field(default_factory=dict)
    created: bool = False


class Storage:
    """Every collection's committed versions, the commit counter and the open snapshots."""

    def __init__(self) -> None:
        self.version = 0  # the last commit
        self.tables: dict[Name, Table] = {}
        self._open: Counter[int] = Counter()  # open snapshot -> how many hold it
        self._chained: set[tuple[Table, Any]] = set()  # rows that keep more than one version

    def table(self, name: Name) -> Table:
        """The collection's table, made on first write."""
        table = self.tables.get(name)
        if table is None:
            table = self.tables[name] = Table()
        return table

    @property
    def snapshots_open(self) -> bool:
        return bool(self._open)

    def open(self) -> int:
        """Take a snapshot of what is committed now; :meth:`close` it when done."""
        self._open[self.version] += 1
        return self.version

    def close(self, snapshot: int) -> None:
        """A snapshot is no longer read: versions only it needed go."""
        oldest = min(self._open)
        self._open[snapshot] -= 1
        if self._open[snapshot] <= 0:
            del self._open[snapshot]
        if not self._open or min(self._open) != oldest:
            for table, key in list(self._chained):
                chain = table.rows.get(key)
                if chain is not None:
                    self._trim(table, key, chain)
                else:
                    self._chained.discard((table, key))

    def publish(self, writes: Iterable[tuple[Table, Any, Doc | None]]) -> None:
        """Commit ``writes`` (a document, or None to delete it) as one new version."""
        self.version += 1
        version = self.version
        for table, key, doc in writes:
            chain = table.rows.get(key)
            if chain is None:
                if doc is not None:
                    table.rows[key] = [(version, doc)]
                continue
            chain.append((version, doc))
            self._trim(table, key, chain)

    def drop(self, name: Name) -> None:
        """The collection goes, with its indexes (snapshots that read it lose it too)."""
        self.tables.pop(name, None)

    def _trim(self, table: Table, key: Any, chain: Chain) -> None:
        """Drop the versions no open snapshot can see: all but the newest that is not newer
        than the oldest snapshot, and everything newer."""
        oldest = min(self._open) if self._open else self.version
        keep = 0
        while keep + 1 < len(chain) and chain[keep + 1][0] <= oldest:
            keep += 1
        if keep:
            del chain[:keep]
        if len(chain) == 1 and chain[0][1] is None:  # deleted, and nobody sees it before that
            del table.rows[key]
            self._chained.discard((table, key))
        elif len(chain) > 1:
            self._chained.add((table, key))
        else:
            self._chained.discard((table, key))
