"""The simulator's versioned storage keeps exactly the versions someone can read.

A version stays while an open snapshot reads it; once no snapshot does, it goes, so documents
written under long transactions do not pile up (``motor_otel.testing._storage``).
"""

from __future__ import annotations

import pytest

from motor_otel.testing._storage import Storage, Table, at


def _doc(v: int) -> dict[str, int]:
    return {"_id": 1, "v": v}


def _one_document() -> tuple[Storage, Table]:
    """Storage with one collection holding document 1 at version 1 (``v: 0``)."""
    storage = Storage()
    table = storage.table(("db", "coll"))
    storage.publish([(table, 1, _doc(0))])
    return storage, table


def _two_snapshots() -> tuple[Storage, Table, int, int]:
    """Document 1 at ``v`` 0, 1 and 2, with a snapshot open on 0 and another on 1."""
    storage, table = _one_document()
    first = storage.open()
    storage.publish([(table, 1, _doc(1))])
    second = storage.open()
    storage.publish([(table, 1, _doc(2))])
    return storage, table, first, second


def _versions(table: Table, key: int = 1) -> list[int | None]:
    return [None if doc is None else doc["v"] for _, doc in table.rows.get(key, [])]


def test_snapshot_reads_its_version_while_newer_ones_are_committed() -> None:
    """A snapshot sees the version committed before it; later commits, inserts included, are
    visible only to later readers."""
    storage, table = _one_document()
    snapshot = storage.open()
    storage.publish([(table, 1, _doc(1))])
    storage.publish([(table, 2, {"_id": 2})])
    assert at(table.rows[1], snapshot) == _doc(0)
    assert at(table.rows[1], storage.version) == _doc(1)
    assert at(table.rows[2], snapshot) is None


def test_versions_no_snapshot_reads_are_dropped_at_once() -> None:
    """With one old snapshot open, writes keep the version it reads and the newest, not every
    version in between; with none open, only the newest."""
    storage, table = _one_document()
    snapshot = storage.open()
    for v in range(1, 6):
        storage.publish([(table, 1, _doc(v))])
    assert _versions(table) == [0, 5]
    storage.close(snapshot)
    assert _versions(table) == [5]
    storage.publish([(table, 1, _doc(6))])
    assert _versions(table) == [6]


@pytest.mark.parametrize(("closed", "left"), [("older", [1, 2]), ("newer", [0, 2])])
def test_closing_one_of_two_snapshots_keeps_what_the_other_reads(
    closed: str, left: list[int]
) -> None:
    """Closing either of two snapshots drops only the version it alone read; the other still
    reads its own, which goes when that one closes too."""
    storage, table, first, second = _two_snapshots()
    assert _versions(table) == [0, 1, 2]
    closing, other, other_reads = (first, second, 1) if closed == "older" else (second, first, 0)
    storage.close(closing)
    assert _versions(table) == left
    assert at(table.rows[1], other) == _doc(other_reads)
    storage.close(other)
    assert _versions(table) == [2]


def test_a_deleted_document_is_forgotten_once_no_snapshot_reads_it() -> None:
    """A delete keeps the document for the snapshots that read it, then the row goes."""
    storage, table = _one_document()
    snapshot = storage.open()
    storage.publish([(table, 1, None)])
    assert at(table.rows[1], snapshot) == _doc(0)
    storage.close(snapshot)
    assert 1 not in table.rows
    storage.publish([(table, 2, {"_id": 2})])
    storage.publish([(table, 2, None)])
    assert 2 not in table.rows


def test_one_snapshot_held_twice_keeps_its_versions_until_both_close() -> None:
    """Two transactions that took the same snapshot: the versions it reads stay until the
    second one closes."""
    storage, table = _one_document()
    one, two = storage.open(), storage.open()
    storage.publish([(table, 1, _doc(1))])
    storage.close(one)
    assert at(table.rows[1], two) == _doc(0)
    storage.close(two)
    assert _versions(table) == [1]
