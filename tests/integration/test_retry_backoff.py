"""The wait before each retried attempt (the driver's backoff) is on the attempt's span.

The jitter of the loop under test is pinned to 1.0, so the first retry sleeps exactly
``0.005 * 1.5 = 7.5 ms`` (the convenient API's backoff): the measured wait can be no shorter.
"""

from __future__ import annotations

import types
from typing import Any

import pymongo
import pytest
import structlog
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from motor_otel import instrument_client
from motor_otel.testing import fail_command
from tests.spans import children, named

BACKOFF = "db.mongodb.transaction.backoff_ms"
FIRST_RETRY_MS = 0.005 * 1.5 * 1000
FAIL_INSERT_ONCE = fail_command("insert", error_code=112)  # WriteConflict: transient in a txn
NO_JITTER = types.SimpleNamespace(random=lambda: 1.0)


def _attempts(spans: tuple[ReadableSpan, ...]) -> tuple[ReadableSpan, list[ReadableSpan]]:
    (wt,) = named(spans, "withTransaction")
    return wt, [s for s in children(list(spans), wt) if s.name == "transaction"]


def _assert_backoff(spans: tuple[ReadableSpan, ...], at_least_ms: float) -> None:
    wt, (first, second) = _attempts(spans)
    assert BACKOFF not in (first.attributes or {})
    waited = second.attributes[BACKOFF]  # type: ignore[index]
    assert isinstance(waited, float)
    assert waited >= at_least_ms
    assert wt.attributes[BACKOFF] == waited  # type: ignore[index]


async def test_async_mongo_client_backoff_is_on_the_retried_attempt(
    async_client: pymongo.AsyncMongoClient[Any],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PyMongo's loop sleeps before attempt 2: attempt 2 and withTransaction carry that wait."""
    monkeypatch.setattr("pymongo.asynchronous.client_session.random", NO_JITTER)
    instrument_client(async_client, tracer_provider=tracer_provider)
    await async_client.admin.command(FAIL_INSERT_ONCE)
    coll = async_client.backoff.items
    async with async_client.start_session() as session:
        await session.with_transaction(lambda s: coll.insert_one({"x": 1}, session=s))
    _assert_backoff(exporter.get_finished_spans(), FIRST_RETRY_MS)


def test_sync_mongo_client_backoff_is_on_the_retried_attempt(
    sync_client: pymongo.MongoClient[Any],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same through the sync MongoClient's loop."""
    monkeypatch.setattr("pymongo.synchronous.client_session.random", NO_JITTER)
    instrument_client(sync_client, tracer_provider=tracer_provider)
    sync_client.admin.command(FAIL_INSERT_ONCE)
    coll = sync_client.backoff.items
    with sync_client.start_session() as session:
        session.with_transaction(lambda s: coll.insert_one({"x": 1}, session=s))
    _assert_backoff(exporter.get_finished_spans(), FIRST_RETRY_MS)


async def test_motor_spec_mode_backoff_and_retry_log(
    motor_client: AsyncIOMotorClient,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Our spec loop's backoff is measured the same way, and the retry log line says it too."""
    monkeypatch.setattr("motor_otel.transaction.random", NO_JITTER)
    instrument_client(
        motor_client, tracer_provider=tracer_provider, with_transaction="spec", log_lifecycle=True
    )
    await motor_client.admin.command(FAIL_INSERT_ONCE)
    coll = motor_client.backoff.items

    async def callback(session: Any) -> None:
        await coll.insert_one({"x": 1}, session=session)

    with structlog.testing.capture_logs() as logs:
        async with await motor_client.start_session() as session:
            await session.with_transaction(callback)
    spans = exporter.get_finished_spans()
    _assert_backoff(spans, FIRST_RETRY_MS)
    (retry,) = [line for line in logs if line["event"] == "transaction.retry"]
    _, (_, second) = _attempts(spans)
    assert second.attributes[BACKOFF] == retry[BACKOFF]  # type: ignore[index]


async def test_motor_driver_mode_shows_that_motor_does_not_back_off(
    motor_client: AsyncIOMotorClient,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """Motor 3.7's loop retries at once; the attribute is there all the same (the wait it had)."""
    instrument_client(motor_client, tracer_provider=tracer_provider)
    await motor_client.admin.command(FAIL_INSERT_ONCE)
    coll = motor_client.backoff.items

    async def callback(session: Any) -> None:
        await coll.insert_one({"x": 1}, session=session)

    async with await motor_client.start_session() as session:
        await session.with_transaction(callback)
    _assert_backoff(exporter.get_finished_spans(), 0.0)
