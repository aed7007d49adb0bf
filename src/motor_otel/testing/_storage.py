"""Where the simulator's documents live: committed versions per document, snapshots by number.

On mongod a transaction reads from one snapshot, for every collection it reads, taken when it
starts; it sees its own writes and none of the commits made after its snapshot (MongoDB manual,
"Read Concern "snapshot"": data "from a specific single point in time", the transaction's
operations "read from a snapshot of majority-committed data"; transactions.md, "Behavior of the
readConcern field": the command that starts a transaction establishes "the transaction's read
timestamp"). Storage gives the simulator that at the cost of what is written, not of what is
read:

- one commit counter for the whole server; a snapshot is the counter's value when it was taken;
- each document keeps its committed versions, oldest first, for as long as an open snapshot may
  need them: a write appends a version (copy-on-write per document) and never changes one;
- a transaction publishes all its writes under one new version at commit, so a snapshot sees all
  of them or none.

What a transaction wrote before it commits is its own (:class:`~._views.TransactionView`).
Callers hold the engine's lock.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterable
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
    """Every collection's committed versions, the commit counter and the open snapshots.

    Invariant: a chain holds only versions someone can read: its newest, and each older one that
    an open snapshot sees (a snapshot ``s`` sees the version ``v`` followed by ``w`` when
    ``v <= s < w``).
    """

    def __init__(self) -> None:
        self.version = 0  # the last commit
        self.on_commit: Callable[[int], None] | None = None  # told each new version
        self.tables: dict[Name, Table] = {}
        self._open: Counter[int] = Counter()  # open snapshot -> how many hold it
        self._sorted: list[int] = []  # the open snapshots, oldest first
        # snapshot -> rows keeping an older version it sees: looked at again when it closes
        self._watch: dict[int, set[tuple[Table, Any]]] = {}

    def table(self, name: Name) -> Table:
        """The collection's table, made on first write."""
        table = self.tables.get(name)
        if table is None:
            table = self.tables[name] = Table()
        return table

    @property
    def snapshots_open(self) -> bool:
        return bool(self._open)

    def open(self, version: int | None = None) -> int:
        """Take a snapshot of what is committed now, or hold again an older ``version`` that is
        still :meth:`readable`; :meth:`close` it when done."""
        if version is None:
            version = self.version
        elif not self.readable(version):
            raise ValueError(f"version {version} is no longer kept")
        if not self._open[version]:
            bisect.insort(self._sorted, version)
        self._open[version] += 1
        return version

    def readable(self, version: int) -> bool:
        """Whether every document's version as of ``version`` is still kept: it is the latest
        commit, or an open snapshot holds it (older versions only it saw may be gone)."""
        return version == self.version or self._open[version] > 0

    def close(self, snapshot: int) -> None:
        """A snapshot is no longer read: the versions only it saw go."""
        self._open[snapshot] -= 1
        if self._open[snapshot] > 0:
            return
        del self._open[snapshot]
        self._sorted.remove(snapshot)
        for table, key in self._watch.pop(snapshot, ()):
            chain = table.rows.get(key)
            if chain is None:
                continue
            # One pass suffices: a version left unseen cannot make its predecessor seen.
            chain[:] = [e for i, e in enumerate(chain) if self._seen(chain, i)]
            for i in range(len(chain) - 1):  # each older version kept: by the newest that sees it
                newest = self._sorted[bisect.bisect_left(self._sorted, chain[i + 1][0]) - 1]
                self._watch.setdefault(newest, set()).add((table, key))
            self._forget_deleted(table, key, chain)

    def publish(self, writes: Iterable[tuple[Table, Any, Doc | None]]) -> None:
        """Commit ``writes`` (a document, or None to delete it) as one new version."""
        self.version += 1
        version = self.version
        newest_open = self._sorted[-1] if self._sorted else -1
        for table, key, doc in writes:
            chain = table.rows.get(key)
            if chain is None:
                if doc is not None:
                    table.rows[key] = [(version, doc)]
                continue
            # The version this one follows stays only if an open snapshot sees it; every open
            # snapshot is older than ``version``, so: if one is not older than it.
            if chain[-1][0] > newest_open:
                chain.pop()
            else:
                self._watch.setdefault(newest_open, set()).add((table, key))
            chain.append((version, doc))
            self._forget_deleted(table, key, chain)
        if self.on_commit is not None:
            self.on_commit(version)

    def drop(self, name: Name) -> None:
        """The collection goes, with its indexes (snapshots that read it lose it too)."""
        self.tables.pop(name, None)

    def _seen(self, chain: Chain, i: int) -> bool:
        """Whether someone reads ``chain[i]``: it is the newest, or an open snapshot sees it."""
        if i + 1 == len(chain):
            return True
        j = bisect.bisect_left(self._sorted, chain[i][0])
        return j < len(self._sorted) and self._sorted[j] < chain[i + 1][0]

    @staticmethod
    def _forget_deleted(table: Table, key: Any, chain: Chain) -> None:
        """A row whose only version is its deletion is read by nobody: it goes."""
        if len(chain) == 1 and chain[0][1] is None:
            del table.rows[key]
