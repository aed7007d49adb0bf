"""The pure parts of where a transaction's time goes (``motor_otel.timing``)."""

from __future__ import annotations

from typing import Any

import pytest

from motor_otel.timing import AttemptTimer, OpenTransactions, Totals, is_write, written_collection

INSERT: dict[str, Any] = {"insert": "orders", "documents": [{}]}


def test_overlapping_commands_count_once() -> None:
    """Two commands in flight at once add their union, not their sum, to server time."""
    timer = AttemptTimer(0.0)
    timer.command_started(1.0, "find", {"find": "a"}, "db")
    timer.command_started(1.5, "find", {"find": "a"}, "db")
    timer.command_ended(2.0)
    timer.command_ended(3.0)  # [1, 3] in flight
    timer.command_started(4.0, "find", {"find": "a"}, "db")
    timer.command_ended(4.5)
    times = timer.finish(5.0, "committed")
    assert (times.server_s, times.app_s, times.duration_s) == (2.5, 2.5, 5.0)


def test_write_window_starts_at_the_first_write() -> None:
    """The window opens at the first write command's start and closes at the attempt's end."""
    timer = AttemptTimer(0.0)
    timer.command_started(1.0, "find", {"find": "stock"}, "shop")
    timer.command_ended(1.25)
    timer.command_started(2.0, "insert", INSERT, "shop")
    timer.command_ended(2.5)
    timer.command_started(3.0, "update", {"update": "stock"}, "shop")
    timer.command_ended(3.5)
    times = timer.finish(4.0, "aborted")
    assert (times.write_window_s, times.write_collection, times.outcome) == (
        2.0,
        "orders",
        "aborted",
    )


def test_read_only_attempt_has_no_window() -> None:
    """Without a write command there is no window, and a long threshold cannot fire."""
    timer = AttemptTimer(0.0)
    timer.command_started(1.0, "find", {"find": "a"}, "db")
    timer.command_ended(2.0)
    times = timer.finish(900.0, "committed", long_after_s=0.1)
    assert (times.write_window_s, times.long) == (None, False)


def test_a_command_still_in_flight_counts_until_the_end() -> None:
    """A command whose reply never came counts as in flight up to the attempt's end; an end
    without a start is ignored."""
    timer = AttemptTimer(0.0)
    timer.command_ended(0.5)
    timer.command_started(1.0, "insert", INSERT, "db")
    times = timer.finish(3.0, "failed")
    assert (times.server_s, times.app_s, times.write_window_s) == (2.0, 1.0, 2.0)


def test_long_threshold() -> None:
    """Long means a window strictly past the threshold; a threshold of 0 never fires."""
    timer = AttemptTimer(0.0)
    timer.command_started(0.0, "insert", INSERT, "db")
    timer.command_ended(0.25)
    assert timer.finish(0.5, "committed", long_after_s=0.25).long is True
    assert timer.finish(0.5, "committed", long_after_s=0.5).long is False
    assert timer.finish(0.5, "committed", long_after_s=0.0).long is False


@pytest.mark.parametrize(
    ("name", "command", "expected"),
    [
        ("insert", INSERT, True),
        ("update", {"update": "c"}, True),
        ("delete", {"delete": "c"}, True),
        ("findAndModify", {"findAndModify": "c"}, True),
        ("bulkWrite", {"bulkWrite": 1, "nsInfo": [{"ns": "db.c"}]}, True),
        ("aggregate", {"aggregate": "c", "pipeline": [{"$match": {}}, {"$out": "d"}]}, True),
        ("aggregate", {"aggregate": "c", "pipeline": [{"$merge": {"into": "d"}}]}, True),
        ("aggregate", {"aggregate": "c", "pipeline": [{"$match": {}}]}, False),
        ("aggregate", {"aggregate": "c", "pipeline": []}, False),
        ("find", {"find": "c"}, False),
        ("getMore", {"getMore": 1, "collection": "c"}, False),
        ("commitTransaction", {"commitTransaction": 1}, False),
    ],
)
def test_which_commands_write(name: str, command: dict[str, Any], expected: bool) -> None:
    """Writes are the write commands and aggregates ending in $out or $merge."""
    assert is_write(name, command) is expected


def test_client_bulk_write_collection() -> None:
    """A client bulkWrite's collection is that of its first namespace."""
    command = {"bulkWrite": 1, "nsInfo": [{"ns": "shop.orders"}, {"ns": "shop.stock"}]}
    assert written_collection("bulkWrite", command, "admin") == "orders"
    assert written_collection("insert", INSERT, "shop") == "orders"


def test_totals_sum_attempts() -> None:
    """withTransaction's times are its attempts' sums; the window only over attempts that wrote."""
    first, second = AttemptTimer(0.0), AttemptTimer(10.0)
    first.command_started(1.0, "find", {"find": "c"}, "db")
    first.command_ended(2.0)
    second.command_started(11.0, "insert", INSERT, "db")
    second.command_ended(11.5)
    totals = Totals()
    assert totals.attributes() == {
        "db.mongodb.transaction.server_ms": 0.0,
        "db.mongodb.transaction.app_ms": 0.0,
    }
    totals.add(first.finish(3.0, "aborted"))
    totals.add(second.finish(12.0, "committed"))
    assert totals.attributes() == {
        "db.mongodb.transaction.server_ms": 1500.0,
        "db.mongodb.transaction.app_ms": 3500.0,
        "db.mongodb.transaction.write_window_ms": 1000.0,
    }


def test_open_transactions_oldest_first() -> None:
    """The oldest open transaction's age; a reopened session moves to the back; none: None."""
    now = [10.0]
    registry = OpenTransactions(lambda: now[0])
    a, b = object(), object()
    assert registry.oldest_age() is None
    registry.opened(a, 1.0)
    registry.opened(b, 2.0)
    assert (len(registry), registry.oldest_age()) == (2, 9.0)
    registry.closed(a)
    registry.opened(a, 5.0)
    assert registry.oldest_age() == 8.0
    registry.closed(b)
    registry.closed(b)
    registry.closed(a)
    assert (len(registry), registry.oldest_age()) == (0, None)
