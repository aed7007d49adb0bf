"""``command_detail="events"``: each command sent is an event on its operation span, no span.

Through Motor and PyMongo's ``AsyncMongoClient``: a retried command gives two events, a failed
one carries its status code, error type and labels, and transactions keep their attempts,
labels and metrics exactly as in the default ``"spans"`` mode.
"""

from __future__ import annotations

import logging
from typing import Any

import pymongo
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from motor_otel.testing import fail_command
from tests.conftest import maybe_await as _maybe
from tests.signals import make_signals, metric_points
from tests.spans import children, named

ENV = "OTEL_PYTHON_INSTRUMENTATION_MONGODB_COMMAND_DETAIL"
# HostUnreachable with the retryable-write label: retried once, no server rediscovery.
RETRYABLE_INSERT = fail_command("insert", error_code=6, error_labels=["RetryableWriteError"])
TRANSIENT_INSERT = fail_command(
    "insert", error_code=112, error_labels=["TransientTransactionError"]
)


@pytest.fixture
def client(async_driver_client: Any) -> Any:
    return async_driver_client


def _instrument(client: Any, **settings: Any) -> tuple[InMemorySpanExporter, InMemoryMetricReader]:
    signals = make_signals()
    signals.instrument(client, **settings)
    return signals.exporter, signals.reader


def _command_spans(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return [s for s in spans if "db.command.name" in (s.attributes or {})]


async def test_a_retried_command_is_two_events_on_its_operation_span(client: Any) -> None:
    """insert retried after a RetryableWriteError: two ``insert`` events, the first failed."""
    exporter, _ = _instrument(client, command_detail="events")
    await client.admin.command(RETRYABLE_INSERT)
    exporter.clear()
    await client.detail.items.insert_one({"x": 1})

    spans = exporter.get_finished_spans()
    assert _command_spans(spans) == []
    (operation,) = named(spans, "insert detail.items")
    failed, retried = operation.events
    assert (failed.name, retried.name) == ("insert", "insert")
    assert failed.attributes is not None and retried.attributes is not None
    assert failed.attributes["db.response.status_code"] == "6"
    assert failed.attributes["error.type"]
    assert failed.attributes["db.mongodb.error_labels"] == ("RetryableWriteError",)
    assert "error.type" not in retried.attributes
    for event in operation.events:
        assert event.attributes is not None
        assert event.attributes["db.mongodb.command.duration_ms"] >= 0
        assert "db.mongodb.server_connection_id" in event.attributes
    assert failed.timestamp <= retried.timestamp


async def test_a_failed_command_event_says_what_its_span_would(client: Any) -> None:
    """The failed command's event has the status code and error type its span has by default."""
    exporter, _ = _instrument(client)
    await client.admin.command(fail_command("insert", error_code=2))
    with pytest.raises(pymongo.errors.OperationFailure):
        await client.detail.items.insert_one({"x": 1})
    (span,) = named(exporter.get_finished_spans(), "insert")

    exporter, _ = _instrument(client, command_detail="events")
    await client.admin.command(fail_command("insert", error_code=2))
    exporter.clear()
    with pytest.raises(pymongo.errors.OperationFailure):
        await client.detail.items.insert_one({"x": 1})
    spans = exporter.get_finished_spans()
    assert _command_spans(spans) == []
    (operation,) = named(spans, "insert detail.items")
    (event,) = [e for e in operation.events if e.name == "insert"]
    assert event.attributes is not None and span.attributes is not None
    assert event.attributes["db.response.status_code"] == "2"
    assert span.attributes["error.type"] == event.attributes["error.type"]


async def _retried_transaction(client: Any) -> None:
    await client.admin.command(TRANSIENT_INSERT)
    async with await _maybe(client.start_session()) as session:

        async def callback(s: Any) -> None:
            await client.detail.items.insert_one({"x": 1}, session=s)
            await client.detail.items.insert_one({"x": 2}, session=s)

        await session.with_transaction(callback)


def _metric_points(reader: InMemoryMetricReader) -> dict[str, list[tuple[Any, ...]]]:
    return {
        name: sorted(
            (tuple(sorted(p.attributes.items())), getattr(p, "value", getattr(p, "count", None)))
            for p in points
        )
        for name, points in metric_points(reader).items()
    }


def _without_commands(spans: tuple[ReadableSpan, ...]) -> list[tuple[str, list[str]]]:
    """The span tree minus command spans: names and attribute names, in start order."""
    kept = sorted(
        (s for s in spans if "db.command.name" not in (s.attributes or {})),
        key=lambda s: s.start_time or 0,
    )
    return [(s.name, sorted(s.attributes or {})) for s in kept]


async def test_events_mode_keeps_attempts_labels_and_metrics(client: Any) -> None:
    """A retried transaction: same spans (minus commands), attributes and metric points."""
    spans_exporter, spans_reader = _instrument(client)
    await _retried_transaction(client)
    events_exporter, events_reader = _instrument(client, command_detail="events")
    await _retried_transaction(client)

    by_spans = spans_exporter.get_finished_spans()
    by_events = events_exporter.get_finished_spans()
    assert _without_commands(by_spans) == _without_commands(by_events)
    assert _metric_points(spans_reader) == _metric_points(events_reader)
    first, second = named(by_events, "transaction")
    assert list(first.attributes["db.mongodb.error_labels"]) == ["TransientTransactionError"]
    failed_insert = children(by_events, first)[0]  # then an abort, on AsyncMongoClient
    assert failed_insert.name == "insert detail.items"
    (event,) = [e for e in failed_insert.events if e.name != "exception"]
    assert event.name == "insert"
    assert event.attributes is not None
    assert event.attributes["db.mongodb.error_labels"] == ("TransientTransactionError",)
    sent = [e.name for op in children(by_events, second) for e in op.events]  # none failed
    assert sent == ["insert", "insert", "commitTransaction"]


async def test_the_environment_selects_events_mode(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_PYTHON_INSTRUMENTATION_MONGODB_COMMAND_DETAIL=events: no command spans."""
    monkeypatch.setenv(ENV, "events")
    exporter, _ = _instrument(client)
    await client.detail.items.find_one({})
    (operation,) = named(exporter.get_finished_spans(), "find detail.items")
    assert [e.name for e in operation.events] == ["find"]
    assert _command_spans(exporter.get_finished_spans()) == []


async def test_an_invalid_environment_value_is_ignored_with_one_warning(
    client: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unknown value in the environment: one warning, and command spans as by default."""
    monkeypatch.setenv(ENV, "verbose")
    with caplog.at_level(logging.WARNING, logger="motor_otel"):
        exporter, _ = _instrument(client)
    (record,) = [r for r in caplog.records if ENV in r.getMessage()]
    assert "verbose" in record.getMessage()
    await client.detail.items.find_one({})
    assert [s.name for s in _command_spans(exporter.get_finished_spans())] == ["find"]


async def test_an_invalid_keyword_raises(client: Any) -> None:
    """command_detail="verbose" passed as a keyword is a ValueError."""
    with pytest.raises(ValueError, match="command_detail"):
        _instrument(client, command_detail="verbose")


async def test_no_event_lands_on_a_span_that_is_not_ours(client: Any) -> None:
    """A command outside our operations and transactions (a raw-batch find): no event at all."""
    _instrument(client, command_detail="events")
    await client.detail.items.insert_one({"x": 1})
    app = make_signals()
    with app.tracer_provider.get_tracer("app").start_as_current_span("handler"):
        batches = [batch async for batch in client.detail.items.find_raw_batches({})]
    assert batches
    (handler,) = named(app.spans(), "handler")
    assert list(handler.events) == []
