"""Metrics and lifecycle logs say what the spans say, for scripted fail-point scenarios."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import structlog
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorClientSession
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pymongo.errors import PyMongoError

from motor_otel import instrument_client
from motor_otel.logs import add_trace_context
from tests.conftest import CLIENT_OPTIONS
from tests.signals import Signals, metric_points, metrics

TRANSIENT_INSERT = {
    "configureFailPoint": "failCommand",
    "mode": {"times": 1},
    "data": {"failCommands": ["insert"], "errorCode": 112},
}
UNKNOWN_COMMIT = {
    "configureFailPoint": "failCommand",
    "mode": {"times": 2},
    "data": {"failCommands": ["commitTransaction"], "errorCode": 91},
}

# HostUnreachable: "unknown" on commit like 91, without the wait for a new heartbeat.
UNREACHABLE_COMMIT = {
    "configureFailPoint": "failCommand",
    "mode": {"times": 2},
    "data": {"failCommands": ["commitTransaction"], "errorCode": 6},
}


@pytest.fixture
async def client(mongodb_uri: str) -> AsyncIterator[AsyncIOMotorClient]:
    c: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    yield c
    await c.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    c.close()


async def _retried_transaction(client: AsyncIOMotorClient) -> None:
    """One transient callback failure, then one unknown commit result, then success."""
    calls = 0

    async def callback(session: AsyncIOMotorClientSession) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            await client.admin.command(UNKNOWN_COMMIT)
        await client.signals.items.insert_one({"n": calls}, session=session)

    await client.admin.command(TRANSIENT_INSERT)
    async with await client.start_session() as session:
        await session.with_transaction(callback)


async def _metrics_of_a_retried_transaction(
    client: AsyncIOMotorClient, signals: Signals
) -> InMemoryMetricReader:
    """What the metrics say after ``_retried_transaction`` in spec mode."""
    signals.instrument(client, with_transaction="spec")
    await _retried_transaction(client)
    return signals.reader


async def test_metrics_match_a_retried_transaction(
    client: AsyncIOMotorClient, signals: Signals
) -> None:
    """attempts=2, one transaction retry, one commit retry, one committed transaction."""
    reader = await _metrics_of_a_retried_transaction(client, signals)
    points = metric_points(reader)

    (attempts,) = points["db.client.mongodb.transaction.attempts"]
    assert (attempts.count, attempts.sum) == (1, 2)
    assert attempts.attributes["db.mongodb.transaction.outcome"] == "committed"
    (done,) = points["db.client.mongodb.transactions"]
    assert done.value == 1
    assert done.attributes["db.mongodb.transaction.outcome"] == "committed"
    assert "TransientTransactionError" in done.attributes["db.mongodb.error_labels"]
    retries = {
        p.attributes["db.mongodb.error_label"]: p.value
        for p in points["db.client.mongodb.transaction.retries"]
    }
    assert retries == {"TransientTransactionError": 1}
    commit = {
        p.attributes["db.mongodb.error_label"]: p.value
        for p in points["db.client.mongodb.transaction.commit_retries"]
    }
    assert commit == {"RetryableWriteError": 1, "UnknownTransactionCommitResult": 1}
    (duration,) = points["db.client.mongodb.transaction.duration"]
    assert duration.count == 1 and duration.sum > 0
    ops = {
        (p.attributes["db.operation.name"], p.attributes.get("error.type")): p.count
        for p in points["db.client.operation.duration"]
    }
    assert ops[("insert", None)] == 1
    assert ops[("insert", "112")] == 1  # WriteConflict, the fail point's errorCode
    assert ops[("commitTransaction", None)] == 1
    assert ops[("commitTransaction", "91")] == 1  # NotPrimaryError: its code is in details
    assert list(points["db.client.operation.duration"][0].explicit_bounds) == [
        0.001,
        0.005,
        0.01,
        0.05,
        0.1,
        0.5,
        1.0,
        5.0,
        10.0,
    ]


async def test_metric_kinds_and_units_are_the_documented_ones(
    client: AsyncIOMotorClient, signals: Signals
) -> None:
    """Each metric has the kind and unit of the README's metric table."""
    reader = await _metrics_of_a_retried_transaction(client, signals)
    actual = {
        metric.name: (type(metric.data).__name__, metric.unit)
        for metric in metrics(reader, "motor_otel")
    }
    expected = {
        "db.client.operation.duration": ("Histogram", "s"),
        "db.client.mongodb.transaction.duration": ("Histogram", "s"),
        "db.client.mongodb.transaction.attempts": ("Histogram", "{attempt}"),
        "db.client.mongodb.transactions": ("Sum", "{transaction}"),
        "db.client.mongodb.transaction.retries": ("Sum", "{retry}"),
        "db.client.mongodb.transaction.commit_retries": ("Sum", "{retry}"),
        "db.client.mongodb.transaction.wasted_duration": ("Histogram", "s"),
        "db.client.mongodb.transaction.app_duration": ("Histogram", "s"),
        "db.client.mongodb.transaction.write_window": ("Histogram", "s"),
        "db.client.mongodb.transaction.open": ("Sum", "{transaction}"),
    }  # commit_not_retried (Sum, {commit}): tests/integration/test_retry_causes.py; oldest_age
    # (Gauge, s) has a point only while a transaction is open: tests/integration/test_timing.py
    assert expected == actual


async def test_failed_transaction_metrics(client: AsyncIOMotorClient, signals: Signals) -> None:
    """A commit error escaping Motor's loop ("driver" mode) counts as outcome failed."""
    signals.instrument(client)
    await client.admin.command(UNKNOWN_COMMIT)
    async with await client.start_session() as session:
        with pytest.raises(PyMongoError):
            await session.with_transaction(lambda s: client.signals.items.insert_one({}, session=s))
    (done,) = signals.points()["db.client.mongodb.transactions"]
    assert done.attributes["db.mongodb.transaction.outcome"] == "failed"
    assert done.attributes["error.type"] == "91"


async def test_lifecycle_log_events(
    client: AsyncIOMotorClient, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """log_lifecycle=True emits started/retry/commit_retry/committed with span attributes."""
    instrument_client(
        client,
        tracer_provider=tracer_provider,
        with_transaction="spec",
        log_lifecycle=True,
        long_transaction_ms=0,  # the commit retry waits for the server: transaction.long otherwise
    )
    with structlog.testing.capture_logs() as logs:
        await _retried_transaction(client)
    events = [(e["event"], e["log_level"], e.get("db.mongodb.transaction.attempt")) for e in logs]
    assert events == [
        ("transaction.started", "debug", 1),
        ("transaction.retry", "warning", 2),
        ("transaction.started", "debug", 2),
        ("transaction.commit_retry", "warning", 2),
        ("transaction.committed", "info", None),
    ]
    committed = logs[-1]
    assert committed["db.mongodb.transaction.attempts"] == 2
    assert committed["db.mongodb.transaction.commit_attempts"] == 2
    attempts = [s for s in exporter.get_finished_spans() if s.name == "transaction"]
    assert {committed["db.mongodb.lsid"]} == {a.attributes["db.mongodb.lsid"] for a in attempts}
    assert logs[2]["db.mongodb.txn_number"] == attempts[1].attributes["db.mongodb.txn_number"]


async def test_lifecycle_logs_are_off_by_default(
    client: AsyncIOMotorClient, tracer_provider: TracerProvider
) -> None:
    """Without the switch the instrumentation logs nothing."""
    instrument_client(client, tracer_provider=tracer_provider, with_transaction="spec")
    with structlog.testing.capture_logs() as logs:
        await _retried_transaction(client)
    assert logs == []


async def test_log_lines_carry_the_transaction_trace_ids(
    client: AsyncIOMotorClient, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """With add_trace_context in the chain, lifecycle lines carry their span's ids."""
    capture = structlog.testing.LogCapture()
    structlog.configure(processors=[add_trace_context, capture])
    try:
        instrument_client(
            client, tracer_provider=tracer_provider, with_transaction="spec", log_lifecycle=True
        )
        await _retried_transaction(client)
    finally:
        structlog.reset_defaults()
    spans = {s.context.span_id: s for s in exporter.get_finished_spans()}
    first = capture.entries[0]
    span = spans[int(first["span_id"], 16)]
    assert span.name == "transaction"
    assert first["trace_id"] == format(span.context.trace_id, "032x")
    last = capture.entries[-1]
    assert spans[int(last["span_id"], 16)].name == "withTransaction"


async def test_retry_log_event_carries_labels_and_attempt(
    client: AsyncIOMotorClient, tracer_provider: TracerProvider
) -> None:
    """transaction.retry (warning) names the next attempt and the labels that caused it."""
    instrument_client(client, tracer_provider=tracer_provider, log_lifecycle=True)
    await client.admin.command(TRANSIENT_INSERT)
    with structlog.testing.capture_logs() as logs:
        async with await client.start_session() as session:
            await session.with_transaction(lambda s: client.signals.items.insert_one({}, session=s))
    (retry,) = [e for e in logs if e["event"] == "transaction.retry"]
    expected = ("warning", 2, ["TransientTransactionError"])
    assert expected == (
        retry["log_level"],
        retry["db.mongodb.transaction.attempt"],
        retry["db.mongodb.error_labels"],
    )


async def test_aborted_log_event(
    client: AsyncIOMotorClient, tracer_provider: TracerProvider
) -> None:
    """start_transaction settled by abort_transaction: transaction.aborted at info."""
    instrument_client(client, tracer_provider=tracer_provider, log_lifecycle=True)
    with structlog.testing.capture_logs() as logs:
        async with await client.start_session() as session:
            session.start_transaction()
            await client.signals.items.insert_one({}, session=session)
            await session.abort_transaction()
    events = [(e["event"], e["log_level"]) for e in logs]
    assert events == [("transaction.started", "debug"), ("transaction.aborted", "info")]
    aborted = logs[-1]
    assert aborted["db.mongodb.transaction.outcome"] == "aborted"
    assert "error.type" not in aborted


async def test_failed_log_event_has_error_type_and_labels(
    client: AsyncIOMotorClient, tracer_provider: TracerProvider
) -> None:
    """A commit error escaping Motor's loop: transaction.failed at error, with error.type."""
    instrument_client(client, tracer_provider=tracer_provider, log_lifecycle=True)
    await client.admin.command(UNREACHABLE_COMMIT)
    with structlog.testing.capture_logs() as logs:
        async with await client.start_session() as session:
            with pytest.raises(PyMongoError) as raised:
                await session.with_transaction(
                    lambda s: client.signals.items.insert_one({}, session=s)
                )
    (failed,) = [e for e in logs if e["event"] == "transaction.failed"]
    assert failed["log_level"] == "error"
    assert failed["error.type"] == "6"  # HostUnreachable, the fail point's errorCode
    assert failed["db.response.status_code"] == "6"
    assert raised.value.code == 6  # type: ignore[attr-defined]
    assert "error_type" not in failed
    assert "UnknownTransactionCommitResult" in failed["db.mongodb.error_labels"]
    assert failed["db.mongodb.transaction.outcome"] == "failed"


async def test_lifecycle_events_reach_stdlib_when_structlog_is_unconfigured(
    client: AsyncIOMotorClient,
    tracer_provider: TracerProvider,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No structlog configuration: stdlib records on "motor_otel", fields as attributes, no print."""
    structlog.reset_defaults()  # capture_logs in other tests leaves structlog "configured"
    caplog.set_level(logging.DEBUG, logger="motor_otel")
    instrument_client(client, tracer_provider=tracer_provider, log_lifecycle=True)
    await client.admin.command(TRANSIENT_INSERT)
    async with await client.start_session() as session:
        await session.with_transaction(lambda s: client.signals.items.insert_one({}, session=s))
    records = [r for r in caplog.records if r.name == "motor_otel"]
    expected = [
        ("transaction.started", logging.DEBUG),
        ("transaction.retry", logging.WARNING),
        ("transaction.started", logging.DEBUG),
        ("transaction.committed", logging.INFO),
    ]
    assert expected == [(r.getMessage(), r.levelno) for r in records]
    retry, committed = records[1], records[-1]
    assert getattr(retry, "db.mongodb.error_labels") == ["TransientTransactionError"]
    assert getattr(committed, "db.mongodb.transaction.attempts") == 2
    assert getattr(committed, "db.mongodb.transaction.outcome") == "committed"
    assert capsys.readouterr().out == ""
