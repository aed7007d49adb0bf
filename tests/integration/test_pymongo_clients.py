"""The same span model through PyMongo's AsyncMongoClient and MongoClient."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pymongo
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.synchronous.client_session import ClientSession

from motor_otel import InstrumentedAsyncClientSession, InstrumentedClientSession, instrument_client
from motor_otel.testing import fail_command
from tests.spans import ancestors, children, named

FAIL_INSERT_ONCE = fail_command("insert", error_code=112)
FAIL_COMMIT_TWICE = fail_command("commitTransaction", mode=2, error_code=91)


def _assert_retried_tree(spans: Any, db: str) -> None:
    (wt,) = named(spans, "withTransaction")
    assert wt.attributes["db.mongodb.transaction.attempts"] == 2
    assert wt.attributes["db.mongodb.transaction.commit_attempts"] == 2
    assert wt.attributes["db.mongodb.transaction.outcome"] == "committed"
    attempts = [s for s in children(spans, wt) if s.name == "transaction"]
    assert [a.attributes["db.mongodb.transaction.outcome"] for a in attempts] == [
        "aborted",
        "committed",
    ]
    assert [c.name for c in children(spans, attempts[1])] == [
        "runCommand admin",  # the callback arming the commit fail point: it ran in the attempt
        f"insert {db}.items",
        "commitTransaction admin",
        "commitTransaction admin",
    ]
    for cmd in named(spans, "insert") + named(spans, "commitTransaction"):
        (attempt,) = [a for a in ancestors(spans, cmd) if a.name == "transaction"]
        assert (
            attempt.attributes["db.mongodb.txn_number"] == cmd.attributes["db.mongodb.txn_number"]
        )


async def test_async_mongo_client_retried_transaction(
    async_client: pymongo.AsyncMongoClient[Any],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """PyMongo's own loop retries the callback and the commit; every step is a span."""
    instrument_client(async_client, tracer_provider=tracer_provider)
    await async_client.admin.command(FAIL_INSERT_ONCE)
    calls = 0

    async def callback(session: AsyncClientSession) -> str:
        nonlocal calls
        calls += 1
        if calls == 2:
            await async_client.admin.command(FAIL_COMMIT_TWICE)
        await async_client.pm_async.items.insert_one({"n": calls}, session=session)
        return "ok"

    async with async_client.start_session() as session:
        assert isinstance(session, InstrumentedAsyncClientSession)
        assert isinstance(session, AsyncClientSession)
        assert await session.with_transaction(callback) == "ok"
    _assert_retried_tree(exporter.get_finished_spans(), "pm_async")


def test_sync_mongo_client_retried_transaction(
    sync_client: pymongo.MongoClient[Any],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """The sync MongoClient gets the same tree."""
    instrument_client(sync_client, tracer_provider=tracer_provider)
    sync_client.admin.command(FAIL_INSERT_ONCE)
    calls = 0

    def callback(session: ClientSession) -> str:
        nonlocal calls
        calls += 1
        if calls == 2:
            sync_client.admin.command(FAIL_COMMIT_TWICE)
        sync_client.pm_sync.items.insert_one({"n": calls}, session=session)
        return "ok"

    with sync_client.start_session() as session:
        assert isinstance(session, InstrumentedClientSession)
        assert session.with_transaction(callback) == "ok"
    _assert_retried_tree(exporter.get_finished_spans(), "pm_sync")


def _five_items(
    client: pymongo.MongoClient[Any], provider: TracerProvider, exporter: InMemorySpanExporter
) -> Any:
    """An instrumented client's collection of five documents, the set-up spans cleared."""
    instrument_client(client, tracer_provider=provider)
    coll = client.pm_cursor.items
    coll.drop()
    coll.insert_many([{"i": i} for i in range(5)])
    exporter.clear()
    return coll


def test_sync_cursor_operation_spans(
    sync_client: pymongo.MongoClient[Any],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """find() is one operation span over its find and getMore commands; find_one is one span."""
    coll = _five_items(sync_client, tracer_provider, exporter)
    assert len(list(coll.find({}, batch_size=2))) == 5
    assert coll.find_one({"i": 3}) is not None
    spans = exporter.get_finished_spans()
    finds = named(spans, "find pm_cursor.items")
    assert len(finds) == 2
    assert [c.name for c in children(spans, finds[0])] == ["find", "getMore", "getMore"]
    assert [c.name for c in children(spans, finds[1])] == ["find"]


def test_sync_cursor_closed_early_ends_its_span(
    sync_client: pymongo.MongoClient[Any],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """A cursor closed half-read ends its find span at close."""
    coll = _five_items(sync_client, tracer_provider, exporter)
    cursor = coll.find({}, batch_size=2)
    next(cursor)
    assert named(exporter.get_finished_spans(), "find pm_cursor.items") == []
    cursor.close()
    (find,) = named(exporter.get_finished_spans(), "find pm_cursor.items")
    assert [c.name for c in children(exporter.get_finished_spans(), find)] == ["find"]


def test_sync_aggregate_get_mores_stay_in_their_operation(
    sync_client: pymongo.MongoClient[Any],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """aggregate() returns before its getMores: they still nest under its operation span."""
    coll = _five_items(sync_client, tracer_provider, exporter)
    assert len(list(coll.aggregate([{"$match": {}}], batchSize=2))) == 5
    spans = exporter.get_finished_spans()
    (agg,) = named(spans, "aggregate pm_cursor.items")
    assert [c.name for c in children(spans, agg)] == ["aggregate", "getMore", "getMore"]
    assert [s for s in spans if s.parent is None] == [agg]


async def test_async_aggregate_get_mores_stay_in_their_operation(
    async_client: pymongo.AsyncMongoClient[Any],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """The same through AsyncMongoClient."""
    instrument_client(async_client, tracer_provider=tracer_provider)
    coll = async_client.pm_cursor.items
    await coll.drop()
    await coll.insert_many([{"i": i} for i in range(5)])
    exporter.clear()
    cursor = await coll.aggregate([{"$match": {}}], batchSize=2)
    assert len(await cursor.to_list()) == 5
    spans = exporter.get_finished_spans()
    (agg,) = named(spans, "aggregate pm_cursor.items")
    assert [c.name for c in children(spans, agg)] == ["aggregate", "getMore", "getMore"]


async def test_async_cursor_abandoned_by_break_ends_its_span_when_collected(
    async_client: pymongo.AsyncMongoClient[Any],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """Leaving an async for early loses no span: it ends when the cursor is freed."""
    instrument_client(async_client, tracer_provider=tracer_provider)
    coll = async_client.pm_cursor.items
    await coll.drop()
    await coll.insert_many([{"i": i} for i in range(5)])
    exporter.clear()
    async for _doc in coll.find({}, batch_size=2):
        break
    gc.collect()  # CPython frees the loop's cursor at once; other interpreters at a collection
    (find,) = named(exporter.get_finished_spans(), "find pm_cursor.items")
    assert find.status.is_ok


async def test_async_client_concurrent_transactions_correlate(
    async_client: pymongo.AsyncMongoClient[Any],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """100 concurrent transactions on AsyncMongoClient: no command under another's attempt."""
    instrument_client(async_client, tracer_provider=tracer_provider)
    coll = async_client.pm_many.items

    async def one(i: int) -> None:
        async with async_client.start_session() as session:
            await session.with_transaction(lambda s: coll.insert_one({"i": i}, session=s))

    await asyncio.gather(*(one(i) for i in range(100)))
    spans = exporter.get_finished_spans()
    commands = named(spans, "insert") + named(spans, "commitTransaction")
    assert len(commands) == 200
    for cmd in commands:
        (attempt,) = [a for a in ancestors(spans, cmd) if a.name == "transaction"]
        assert attempt.attributes["db.mongodb.lsid"] == cmd.attributes["db.mongodb.lsid"]
        assert (
            attempt.attributes["db.mongodb.txn_number"] == cmd.attributes["db.mongodb.txn_number"]
        )
