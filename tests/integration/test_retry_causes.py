"""Where retries come from and what they cost: retry_cause, the retries metric's cause labels,
wasted_duration / wasted_ms and Motor's unretried commits, through Motor (driver and spec modes)
and AsyncMongoClient.

The conflicts are injected with ``failCommand`` (code 112 WriteConflict with
TransientTransactionError, as mongod labels a write conflict inside a transaction); the last
tests make two transactions really conflict on one document.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pymongo
import pytest
import structlog
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pymongo.errors import OperationFailure

from motor_otel.testing import fail_command
from tests.conftest import CLIENT_OPTIONS
from tests.signals import Signals, make_signals, metric_points, metrics
from tests.spans import children, named

TTE = ["TransientTransactionError"]
CONFLICT_ON_UPDATE = fail_command("update", error_code=112, error_labels=TTE)
CONFLICT_ON_COMMIT = fail_command("commitTransaction", error_code=112, error_labels=TTE)
ERROR_TYPE = "112"  # error.type of a server error: its code (WriteConflict)
RETRIES = "db.client.mongodb.transaction.retries"
WASTED = "db.client.mongodb.transaction.wasted_duration"
NOT_RETRIED = "db.client.mongodb.transaction.commit_not_retried"


@dataclass
class Run:
    """One instrumented client and what it exported."""

    client: Any
    db: Any
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    async def command(self, document: dict[str, Any]) -> None:
        await self.client.admin.command(document)

    async def with_transaction(self, callback: Callable[[Any], Awaitable[Any]]) -> None:
        session = await _start_session(self.client)
        try:
            await session.with_transaction(callback)
        finally:
            await session.end_session()

    def points(self, name: str) -> list[Any]:
        return metric_points(self.reader).get(name, [])

    def kind_and_unit(self, name: str) -> tuple[str, str]:
        (found,) = [
            (type(metric.data).__name__, metric.unit)
            for metric in metrics(self.reader)
            if metric.name == name
        ]
        return found

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


async def _start_session(client: Any) -> Any:
    session = client.start_session()
    return await session if asyncio.iscoroutine(session) else session


DRIVERS = ("motor-driver", "motor-spec", "async-pymongo")


@pytest.fixture(params=DRIVERS)
async def run(request: pytest.FixtureRequest, mongodb_uri: str) -> AsyncIterator[Run]:
    kind: str = request.param
    client: Any
    if kind == "async-pymongo":
        client = pymongo.AsyncMongoClient(mongodb_uri, **CLIENT_OPTIONS)
    else:
        client = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    signals = make_signals()
    signals.instrument(
        client,
        with_transaction="spec" if kind == "motor-spec" else "driver",
        log_lifecycle=True,
    )
    stock = client.causes.stock
    await stock.delete_many({})
    await stock.insert_one({"_id": "fig", "qty": 10})
    yield Run(client, client.causes, signals.exporter, signals.reader)
    await client.admin.command(fail_command(mode="off"))
    closed = client.close()
    if asyncio.iscoroutine(closed):
        await closed


def _seconds(span: ReadableSpan) -> float:
    assert span.start_time is not None and span.end_time is not None
    return (span.end_time - span.start_time) / 1e9


async def test_update_conflict_is_the_cause(run: Run) -> None:
    """An update failing with TransientTransactionError: the aborted attempt names it, the
    retries point carries its collection, operation and error.type, and the time it cost is
    one wasted_duration point and wasted_ms on the withTransaction span."""
    await run.command(CONFLICT_ON_UPDATE)

    async def buy(session: Any) -> None:
        await run.db.stock.update_one({"_id": "fig"}, {"$inc": {"qty": -1}}, session=session)
        await run.db.orders.insert_one({"item": "fig"}, session=session)

    with structlog.testing.capture_logs() as logs:
        await run.with_transaction(buy)

    spans = run.spans()
    (call,) = named(spans, "withTransaction")
    first, second = (s for s in children(spans, call) if s.name == "transaction")
    assert first.attributes["db.mongodb.transaction.outcome"] == "aborted"
    assert first.attributes["db.mongodb.transaction.retry_cause"] == "update causes.stock"
    assert "db.mongodb.transaction.retry_cause" not in second.attributes

    (retry,) = run.points(RETRIES)
    assert dict(retry.attributes) == {
        "db.system.name": "mongodb",
        "db.mongodb.error_label": "TransientTransactionError",
        "db.collection.name": "stock",
        "db.operation.name": "update",
        "error.type": ERROR_TYPE,
    }
    assert retry.value == 1

    (wasted,) = run.points(WASTED)
    assert run.kind_and_unit(WASTED) == ("Histogram", "s")
    assert wasted.count == 1
    assert dict(wasted.attributes) == {
        "db.system.name": "mongodb",
        "db.mongodb.transaction.outcome": "committed",
        "db.collection.name": "stock",
        "db.operation.name": "update",
    }
    assert _seconds(first) <= wasted.sum <= _seconds(call)
    assert call.attributes["db.mongodb.transaction.wasted_ms"] == pytest.approx(
        wasted.sum * 1000.0, abs=0.001
    )

    (logged,) = [e for e in logs if e["event"] == "transaction.retry"]
    expected = ("update causes.stock", "stock", "update", ERROR_TYPE)
    assert expected == (
        logged["db.mongodb.transaction.retry_cause"],
        logged["db.collection.name"],
        logged["db.operation.name"],
        logged["error.type"],
    )


async def test_commit_conflict_is_the_cause(run: Run, request: pytest.FixtureRequest) -> None:
    """A commit failing with TransientTransactionError: ``commitTransaction admin`` is the cause.
    The documented loop retries the transaction; Motor's does not, and that is counted."""
    await run.command(CONFLICT_ON_COMMIT)

    async def buy(session: Any) -> None:
        await run.db.stock.update_one({"_id": "fig"}, {"$inc": {"qty": -1}}, session=session)

    motor_driver = request.node.callspec.params["run"] == "motor-driver"
    if motor_driver:
        with pytest.raises(OperationFailure) as raised:
            await run.with_transaction(buy)
        assert raised.value.code == 112
    else:
        await run.with_transaction(buy)

    spans = run.spans()
    (call,) = named(spans, "withTransaction")
    attempts = [s for s in children(spans, call) if s.name == "transaction"]
    assert attempts[0].attributes["db.mongodb.transaction.retry_cause"] == "commitTransaction admin"
    if motor_driver:
        assert len(attempts) == 1
        assert [e.name for e in call.events if e.name != "exception"] == ["commit_not_retried"]
        (point,) = run.points(NOT_RETRIED)
        assert point.value == 1
        assert run.kind_and_unit(NOT_RETRIED) == ("Sum", "{commit}")
        assert dict(point.attributes) == {
            "db.system.name": "mongodb",
            "db.mongodb.error_labels": "TransientTransactionError",
            "error.type": ERROR_TYPE,
        }
        assert run.points(WASTED) == []  # nothing retried, so nothing lost to retries
        assert "db.mongodb.transaction.wasted_ms" not in call.attributes
        return
    assert len(attempts) == 2
    (retry,) = run.points(RETRIES)
    assert dict(retry.attributes) == {
        "db.system.name": "mongodb",
        "db.mongodb.error_label": "TransientTransactionError",
        "db.operation.name": "commitTransaction",
        "error.type": ERROR_TYPE,
    }
    (wasted,) = run.points(WASTED)
    assert wasted.attributes["db.operation.name"] == "commitTransaction"
    assert "db.collection.name" not in wasted.attributes
    assert _seconds(attempts[0]) <= wasted.sum <= _seconds(call)
    assert run.points(NOT_RETRIED) == []


async def test_two_causes_leave_the_wasted_point_without_one(run: Run) -> None:
    """Retries with different causes: each retries point names its own; the wasted_duration
    point keeps only the outcome, since no single cause explains the time."""
    await run.command(CONFLICT_ON_UPDATE)
    calls = 0

    async def buy(session: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            await run.command(fail_command("insert", error_code=112, error_labels=TTE))
        await run.db.stock.update_one({"_id": "fig"}, {"$inc": {"qty": -1}}, session=session)
        await run.db.orders.insert_one({"item": "fig"}, session=session)

    await run.with_transaction(buy)
    spans = run.spans()
    (call,) = named(spans, "withTransaction")
    attempts = [s for s in children(spans, call) if s.name == "transaction"]
    assert [a.attributes.get("db.mongodb.transaction.retry_cause") for a in attempts] == [
        "update causes.stock",
        "insert causes.orders",
        None,
    ]
    causes = sorted(
        (p.attributes["db.collection.name"], p.attributes["db.operation.name"], p.value)
        for p in run.points(RETRIES)
    )
    assert causes == [("orders", "insert", 1), ("stock", "update", 1)]
    (wasted,) = run.points(WASTED)
    assert dict(wasted.attributes) == {
        "db.system.name": "mongodb",
        "db.mongodb.transaction.outcome": "committed",
    }
    lost = _seconds(attempts[0]) + _seconds(attempts[1])
    assert lost <= wasted.sum <= _seconds(call)


async def test_two_transactions_conflicting_on_one_document(
    run: Run, request: pytest.FixtureRequest
) -> None:
    """Real contention: another transaction writes the same stock document and commits while
    ours runs. A server that finds the conflict at the write (mongod) makes our update the
    cause; one that finds it at commit makes ``commitTransaction admin`` the cause, which
    Motor's own loop does not retry (counted) and the documented loop does."""
    other = await _start_session(run.client)
    other_start = other.start_transaction()
    if asyncio.iscoroutine(other_start):
        await other_start
    await run.db.stock.update_one({"_id": "fig"}, {"$inc": {"qty": -5}}, session=other)
    calls = 0

    async def buy(session: Any) -> None:
        nonlocal calls
        calls += 1
        try:
            await run.db.stock.update_one({"_id": "fig"}, {"$inc": {"qty": -1}}, session=session)
        finally:
            if calls == 1:
                await other.commit_transaction()
        await run.db.orders.insert_one({"item": "fig"}, session=session)

    motor_driver = request.node.callspec.params["run"] == "motor-driver"
    try:
        await run.with_transaction(buy)
        raised = None
    except OperationFailure as exc:
        raised = exc
    finally:
        await other.end_session()

    spans = run.spans()
    (call,) = named(spans, "withTransaction")
    first = next(s for s in children(spans, call) if s.name == "transaction")
    cause = first.attributes["db.mongodb.transaction.retry_cause"]
    assert cause in ("update causes.stock", "commitTransaction admin")
    if motor_driver and cause == "commitTransaction admin":
        assert raised is not None and raised.code == 112  # Motor gave up: the app sees it
        (point,) = run.points(NOT_RETRIED)
        assert point.value == 1
        return
    assert raised is None
    assert calls == 2
    (retry,) = run.points(RETRIES)
    assert retry.attributes["db.operation.name"] == cause.split()[0]
    assert retry.attributes["error.type"] == ERROR_TYPE
    (wasted,) = run.points(WASTED)
    assert _seconds(first) <= wasted.sum <= _seconds(call)
    assert call.attributes["db.mongodb.transaction.wasted_ms"] > 0


def test_sync_mongo_client_names_the_cause(
    sync_client: pymongo.MongoClient[Any], signals: Signals
) -> None:
    """The sync MongoClient's loop reports the same cause, retries point and wasted time."""
    signals.instrument(sync_client)
    sync_client.causes.stock.replace_one({"_id": "fig"}, {"qty": 10}, upsert=True)
    sync_client.admin.command(CONFLICT_ON_UPDATE)
    with sync_client.start_session() as session:
        session.with_transaction(
            lambda s: sync_client.causes.stock.update_one(
                {"_id": "fig"}, {"$inc": {"qty": -1}}, session=s
            )
        )
    run = Run(sync_client, sync_client.causes, signals.exporter, signals.reader)
    spans = run.spans()
    (call,) = named(spans, "withTransaction")
    first = next(s for s in children(spans, call) if s.name == "transaction")
    assert first.attributes["db.mongodb.transaction.retry_cause"] == "update causes.stock"
    (retry,) = run.points(RETRIES)
    assert (retry.attributes["db.collection.name"], retry.attributes["error.type"]) == (
        "stock",
        ERROR_TYPE,
    )
    (wasted,) = run.points(WASTED)
    assert _seconds(first) <= wasted.sum <= _seconds(call)


async def test_metrics_count_causes_whatever_the_sampler_says(mongodb_uri: str) -> None:
    """Nothing sampled: the retries point still names its cause, the wasted time is still
    recorded, and Motor's unretried commit is still counted."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    client: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    signals = make_signals(ALWAYS_OFF)
    signals.instrument(client)
    run = Run(client, client.causes, signals.exporter, signals.reader)
    try:
        await run.command(CONFLICT_ON_UPDATE)
        await run.with_transaction(
            lambda s: run.db.stock.update_one({"_id": "fig"}, {"$inc": {"qty": -1}}, session=s)
        )
        await run.command(CONFLICT_ON_COMMIT)
        with pytest.raises(OperationFailure):
            await run.with_transaction(lambda s: run.db.orders.insert_one({}, session=s))
    finally:
        await client.admin.command(fail_command(mode="off"))
        client.close()
    (retry,) = run.points(RETRIES)
    assert (retry.attributes["db.collection.name"], retry.attributes["db.operation.name"]) == (
        "stock",
        "update",
    )
    (wasted,) = run.points(WASTED)
    assert wasted.count == 1 and wasted.sum > 0
    (unretried,) = run.points(NOT_RETRIED)
    assert unretried.value == 1
