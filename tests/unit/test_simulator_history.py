"""Snapshot reads outside a transaction: a cluster time names a version, kept for a window.

``motor_otel.testing._history`` stamps each commit with a cluster time and holds the version a
snapshot read returned for ``window_seconds``; past it the version goes and a read at that time
is SnapshotTooOld (239), never an answer from another version. The wall clock is the test's.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from bson.timestamp import Timestamp

from motor_otel.testing._clock import ClusterClock
from motor_otel.testing._errors import CommandError
from motor_otel.testing._history import History
from motor_otel.testing._storage import Storage, Table, at


class _Wall:
    """A wall clock that moves only when told."""

    def __init__(self) -> None:
        self.seconds = 1_000_000.0

    def __call__(self) -> float:
        return self.seconds


def _setup(window: float = 300.0) -> tuple[_Wall, ClusterClock, Storage, History, Table]:
    wall = _Wall()
    clock = ClusterClock(wall)
    storage = Storage()
    history = History(storage, clock, window)
    table = storage.table(("db", "coll"))
    storage.publish([(table, 1, {"_id": 1, "v": 0})])
    return wall, clock, storage, history, table


def _code(call: Callable[[], object]) -> int:
    """The error code ``call`` fails with."""
    with pytest.raises(CommandError) as info:
        call()
    return info.value.code


def test_a_read_time_names_the_version_committed_before_it() -> None:
    """The time a snapshot read returned reads its version after later commits, and the version
    it saw stays while newer ones are written."""
    wall, clock, storage, history, table = _setup()
    read_at, version = history.begin()
    for v in range(1, 4):
        wall.seconds += 1
        storage.publish([(table, 1, {"_id": 1, "v": v})])
    assert history.version_at(read_at) == version
    assert at(table.rows[1], history.version_at(read_at)) == {"_id": 1, "v": 0}
    assert history.version_at(clock.tick()) == storage.version


def test_past_the_window_the_version_goes_and_the_time_is_too_old() -> None:
    """Once the window has passed, the held version is released (storage keeps only the newest)
    and a read at its time is SnapshotTooOld (239)."""
    wall, _, storage, history, table = _setup(window=10)
    read_at, _ = history.begin()
    storage.publish([(table, 1, {"_id": 1, "v": 1})])
    assert len(table.rows[1]) == 2
    wall.seconds += 11
    storage.publish([(table, 1, {"_id": 1, "v": 2})])
    assert [doc["v"] for _, doc in table.rows[1] if doc] == [2]
    assert _code(lambda: history.version_at(read_at)) == 239


def test_a_time_whose_version_was_not_kept_is_too_old() -> None:
    """A past time no snapshot read returned names a version storage may have dropped: it is
    SnapshotTooOld, even inside the window."""
    _, clock, storage, history, table = _setup()
    between = clock.tick()
    storage.publish([(table, 1, {"_id": 1, "v": 1})])
    assert _code(lambda: history.version_at(between)) == 239


def test_a_time_after_the_current_cluster_time_is_invalid() -> None:
    """A read at a time the clock has not reached is InvalidOptions (72)."""
    _, clock, _, history, _ = _setup()
    now = clock.now()
    assert _code(lambda: history.version_at(Timestamp(now.time + 1, 0))) == 72


def test_commits_alone_keep_nothing() -> None:
    """Without snapshot reads, commits hold no version and remember no time: the current time
    reads the latest version, an earlier one is SnapshotTooOld."""
    _, clock, storage, history, table = _setup()
    old = clock.tick()
    for v in range(1, 2000):
        storage.publish([(table, 1, {"_id": 1, "v": v})])
    assert (history._held, len(table.rows[1])) == ([], 1)
    assert _code(lambda: history.version_at(old)) == 239
    assert history.version_at(clock.tick()) == storage.version


def test_a_second_read_of_the_same_version_keeps_it_for_a_window_from_then() -> None:
    """Two snapshot reads with no commit between them share one held version, kept until the
    window has passed since the second; each time is too old once its own window has passed."""
    wall, _, storage, history, table = _setup(window=10)
    first, version = history.begin()
    wall.seconds += 6
    second, again = history.begin()
    storage.publish([(table, 1, {"_id": 1, "v": 1})])
    wall.seconds += 6
    storage.publish([(table, 1, {"_id": 1, "v": 2})])
    assert (again, history.version_at(second)) == (version, version)
    assert _code(lambda: history.version_at(first)) == 239
    wall.seconds += 5
    storage.publish([(table, 1, {"_id": 1, "v": 3})])
    assert _code(lambda: history.version_at(second)) == 239
