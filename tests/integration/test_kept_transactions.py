"""Kept transactions: under ``KeepTransactionsSampler(ParentBased(TraceIdRatioBased(0.01)))``, every
retried or failed transaction inside an unsampled request gets exactly one trace of its own.

500 transactions run at once, each in its own request span and on its own collection. Which ones
retry or fail is fixed by what their callback sends, not by timing: a ``failCommand`` fail point
(``alwaysOn``, this client's ``appName`` only) fails every ``findAndModify`` with
``WriteConflict`` + ``TransientTransactionError``, and only the retried transactions send one, in
their first attempt; the failed ones insert a duplicate ``_id`` (a real ``DuplicateKey``, 11000).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pymongo
import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanContext, StatusCode
from pymongo.errors import DuplicateKeyError

from motor_otel import KeepTransactionsSampler
from motor_otel.instrumentor import telemetry_of
from motor_otel.kept import open_buffers
from motor_otel.testing import fail_command
from tests.conftest import CLIENT_OPTIONS
from tests.signals import Signals, make_signals
from tests.spans import children

APP = "motor-otel-keep"
KEPT = "db.mongodb.transaction.kept"
TTE = "TransientTransactionError"
CONFLICT_ON_FIND_AND_MODIFY = fail_command(
    "findAndModify", mode="alwaysOn", error_code=112, error_labels=[TTE], appName=APP
)
COUNT = 500


def kind_of(i: int) -> str:
    """10 % retry once, 2 % fail, the rest commit at once."""
    if i % 10 == 3:
        return "retried"
    if i % 50 == 7:
        return "failed"
    return "plain"


def keep_signals() -> Signals:
    return make_signals(sampler=KeepTransactionsSampler(ParentBased(TraceIdRatioBased(0.01))))


@dataclass
class Workload:
    """500 transactions in request spans; which request each one ran in."""

    db: Any
    signals: Signals
    requests: dict[int, SpanContext] = field(default_factory=dict)
    raised: dict[int, BaseException] = field(default_factory=dict)

    def callback(self, i: int) -> Any:
        calls = 0
        coll = self.db[f"c{i}"]
        kind = kind_of(i)

        async def run(session: Any) -> None:
            nonlocal calls
            calls += 1
            if kind == "retried" and calls == 1:  # fails: the fail point's WriteConflict
                await coll.find_one_and_update({"_id": i}, {"$set": {"x": 1}}, session=session)
            elif kind == "failed":  # the document exists: DuplicateKey, not transient
                await self.db.dup.insert_one({"_id": 0}, session=session)
            await coll.update_one({"_id": i}, {"$inc": {"n": 1}}, upsert=True, session=session)

        return run

    async def one(self, client: Any, i: int) -> None:
        tracer = self.signals.tracer_provider.get_tracer("app")
        with tracer.start_as_current_span(f"request {i}") as request:
            self.requests[i] = request.get_span_context()
            session = client.start_session()
            session = await session if inspect.isawaitable(session) else session
            try:
                await session.with_transaction(self.callback(i))
            except DuplicateKeyError as exc:
                self.raised[i] = exc
            finally:
                ended = session.end_session()
                if inspect.isawaitable(ended):
                    await ended

    async def run(self, client: Any) -> None:
        await self.db.dup.insert_one({"_id": 0})
        await client.admin.command(CONFLICT_ON_FIND_AND_MODIFY)
        try:
            await asyncio.gather(*(self.one(client, i) for i in range(COUNT)))
        finally:
            await client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


def traces(spans: Sequence[ReadableSpan]) -> dict[int, list[ReadableSpan]]:
    found: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        found.setdefault(span.context.trace_id, []).append(span)
    return found


def only(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    (span,) = [s for s in spans if s.name == name]
    return span


def assert_nested_in_time(trace_spans: Sequence[ReadableSpan]) -> None:
    """Every span lies within its parent, and has real (non-zero, ordered) timestamps."""
    by_id = {s.context.span_id: s for s in trace_spans}
    for span in trace_spans:
        assert span.start_time and span.end_time and span.start_time <= span.end_time
        if span.parent is not None and span.parent.span_id in by_id:
            parent = by_id[span.parent.span_id]
            assert parent.start_time <= span.start_time <= span.end_time <= parent.end_time  # type: ignore[operator]


def check_kept(workload: Workload, spans: Sequence[ReadableSpan], collection: str) -> None:
    """The must-show assertions on what was exported, and on what was not."""
    sampled = {i for i, ctx in workload.requests.items() if ctx.trace_flags.sampled}
    assert len(sampled) < COUNT // 10  # the ratio is 1 %: nearly every request is unsampled
    request_traces = {workload.requests[i].trace_id for i in sampled}
    expected = {i for i in range(COUNT) if kind_of(i) != "plain" and i not in sampled}
    assert len(expected) >= 55
    kept: dict[int, list[ReadableSpan]] = {}
    for trace_id, trace_spans in traces(spans).items():
        (root,) = [s for s in trace_spans if s.parent is None]
        if KEPT not in (root.attributes or {}):  # the delegate's: a sampled request (or set-up)
            assert trace_id in request_traces or root.name != "withTransaction"
            assert not any(KEPT in (s.attributes or {}) for s in trace_spans)
            continue
        assert root.name == "withTransaction"
        (link,) = root.links
        (i,) = [i for i, ctx in workload.requests.items() if ctx == link.context]
        assert not link.context.trace_flags.sampled
        assert i not in kept, "one kept trace per transaction"
        kept[i] = trace_spans
    assert set(kept) == expected  # every retried and failed one, and nothing else

    for i, trace_spans in kept.items():
        assert_nested_in_time(trace_spans)
        root = only(trace_spans, "withTransaction")
        attempts = children(trace_spans, root)
        assert [a.name for a in attempts] == ["transaction"] * len(attempts)
        assert [a.attributes["db.mongodb.transaction.attempt"] for a in attempts] == list(
            range(1, len(attempts) + 1)
        )
        if kind_of(i) == "retried":
            assert root.attributes[KEPT] == "retried"
            assert root.attributes["db.mongodb.transaction.outcome"] == "committed"
            first, second = attempts
            assert first.attributes["db.mongodb.transaction.outcome"] == "aborted"
            cause = f"findAndModify {collection}.c{i}"
            assert first.attributes["db.mongodb.transaction.retry_cause"] == cause
            operation = only(children(trace_spans, first), cause)
            assert operation.attributes["error.type"] == "112"
            (command,) = children(trace_spans, operation)
            assert command.name == "findAndModify"
            assert command.attributes["db.response.status_code"] == "112"
            assert command.status.status_code is StatusCode.ERROR
            assert second.attributes["db.mongodb.transaction.outcome"] == "committed"
            assert "db.mongodb.transaction.backoff_ms" in second.attributes
            names = [s.name for s in children(trace_spans, second)]
            assert names == [f"update {collection}.c{i}", "commitTransaction admin"]
        else:
            assert root.attributes[KEPT] == "failed"
            assert root.attributes["db.mongodb.transaction.outcome"] == "failed"
            assert root.attributes["error.type"] == "11000"
            assert root.status.status_code is StatusCode.ERROR
            (attempt,) = attempts
            operation = only(children(trace_spans, attempt), f"insert {collection}.dup")
            assert operation.attributes["error.type"] == "11000"
            (command,) = children(trace_spans, operation)
            assert command.attributes["error.type"] == "11000"
            assert "db.mongodb.server_connection_id" in command.attributes


def check_metrics(signals: Signals) -> None:
    """Metrics count all 500, kept or not."""
    points = signals.points()
    transactions: dict[tuple[str, str], int] = {}
    for p in points["db.client.mongodb.transactions"]:
        outcome = p.attributes["db.mongodb.transaction.outcome"]
        # a failed one's abort may add the server's TransientTransactionError: count by error.type
        key = (outcome, p.attributes["db.mongodb.error_labels"] if outcome != "failed" else "")
        transactions[key] = transactions.get(key, 0) + p.value
        if outcome == "failed":
            assert p.attributes["error.type"] == "11000"
    retried = sum(kind_of(i) == "retried" for i in range(COUNT))
    failed = sum(kind_of(i) == "failed" for i in range(COUNT))
    assert transactions == {
        ("committed", "none"): COUNT - retried - failed,
        ("committed", TTE): retried,
        ("failed", ""): failed,
    }
    assert sum(p.value for p in points["db.client.mongodb.transaction.retries"]) == retried
    assert sum(p.count for p in points["db.client.mongodb.transaction.wasted_duration"]) == retried


def check_freed(client: Any) -> None:
    telemetry = telemetry_of(client)
    assert telemetry is not None
    gc.collect()
    assert telemetry.correlator.sizes() == (0, 0)
    assert open_buffers() == 0


@pytest.mark.parametrize("mode", ["driver", "spec"])
async def test_motor_keeps_every_retried_and_failed_transaction(
    mongodb_uri: str, mode: str
) -> None:
    """Motor (both modes): 500 concurrent transactions, each retried or failed one kept once."""
    signals = keep_signals()
    client = AsyncIOMotorClient(mongodb_uri, appName=APP, **CLIENT_OPTIONS)
    try:
        signals.instrument(client, with_transaction=mode)
        db = client[f"keep_motor_{mode}"]
        await client.drop_database(db.name)
        workload = Workload(db, signals)
        await workload.run(client)
        assert sorted(workload.raised) == [i for i in range(COUNT) if kind_of(i) == "failed"]
        check_kept(workload, signals.spans(), db.name)
        check_metrics(signals)
        check_freed(client)
    finally:
        client.close()


async def test_async_mongo_client_keeps_every_retried_and_failed_transaction(
    mongodb_uri: str,
) -> None:
    """AsyncMongoClient: 500 concurrent transactions, each retried or failed one kept once."""
    signals = keep_signals()
    client: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(
        mongodb_uri, appName=APP, **CLIENT_OPTIONS
    )
    try:
        signals.instrument(client)
        db = client["keep_async"]
        await client.drop_database(db.name)
        workload = Workload(db, signals)
        await workload.run(client)
        check_kept(workload, signals.spans(), db.name)
        check_metrics(signals)
        check_freed(client)
    finally:
        await client.close()


def test_sync_client_keeps_a_retried_and_a_failed_transaction(mongodb_uri: str) -> None:
    """MongoClient: a retried and a failed transaction in unsampled requests are kept; a plain
    one is not."""
    signals = make_signals(sampler=KeepTransactionsSampler(ParentBased(TraceIdRatioBased(0.0))))
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(
        mongodb_uri, appName=APP, **CLIENT_OPTIONS
    )
    tracer = signals.tracer_provider.get_tracer("app")
    try:
        signals.instrument(client)
        db = client["keep_sync"]
        client.drop_database(db.name)
        db.dup.insert_one({"_id": 0})
        client.admin.command(CONFLICT_ON_FIND_AND_MODIFY)
        requests = {}
        for i in (3, 7, 8):  # retried, failed, plain
            calls = 0

            def callback(session: Any, i: int = i) -> None:
                nonlocal calls
                calls += 1
                if kind_of(i) == "retried" and calls == 1:
                    db[f"c{i}"].find_one_and_update({"_id": i}, {"$set": {"x": 1}}, session=session)
                elif kind_of(i) == "failed":
                    db.dup.insert_one({"_id": 0}, session=session)
                db[f"c{i}"].update_one({"_id": i}, {"$inc": {"n": 1}}, upsert=True, session=session)

            with tracer.start_as_current_span("request") as request:
                requests[i] = request.get_span_context()
                with client.start_session() as session:
                    try:
                        session.with_transaction(callback)
                    except DuplicateKeyError:
                        assert i == 7
        client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        workload = Workload(db, signals, requests=requests)
        spans = signals.spans()
        roots = [s for s in spans if s.parent is None]
        assert sorted(r.attributes[KEPT] for r in roots) == ["failed", "retried"]
        linked = {r.attributes[KEPT]: r.links[0].context for r in roots}
        assert linked == {"retried": requests[3], "failed": requests[7]}
        for trace_spans in traces(spans).values():
            assert_nested_in_time(trace_spans)
        assert workload.requests == requests
        check_freed(client)
    finally:
        client.close()


async def test_application_span_in_a_retried_attempt_is_recorded_under_it(
    async_driver_client: Any,
) -> None:
    """Once a transaction is kept, the app's own span inside the retried callback is recorded as
    a child of the live attempt; the one inside the first attempt, before the rule matched, is
    not recorded."""
    signals = make_signals(sampler=KeepTransactionsSampler(ParentBased(TraceIdRatioBased(0.0))))
    client = signals.instrument(async_driver_client)
    db = client.keep_app_span
    await client.drop_database(db.name)
    await db.c.insert_one({"_id": 1})
    await client.admin.command(
        fail_command("update", error_code=112, error_labels=[TTE], namespace=f"{db.name}.c")
    )
    tracer = signals.tracer_provider.get_tracer("app")

    async def callback(session: Any) -> None:
        with tracer.start_as_current_span("app.reserve"):
            await db.c.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)

    with tracer.start_as_current_span("request"):
        session = client.start_session()
        session = await session if inspect.isawaitable(session) else session
        try:
            await session.with_transaction(callback)
        finally:
            ended = session.end_session()
            if inspect.isawaitable(ended):
                await ended
    spans = signals.spans()
    (app_span,) = [s for s in spans if s.name == "app.reserve"]
    (first, second) = sorted(
        (s for s in spans if s.name == "transaction"),
        key=lambda s: s.attributes["db.mongodb.transaction.attempt"],
    )
    assert app_span.parent is not None and app_span.parent.span_id == second.context.span_id
    assert app_span.context.trace_id == second.context.trace_id
    update = only(children(spans, second), f"update {db.name}.c")  # under its attempt, as always
    assert [link.context for link in update.links] == [app_span.context]
    assert [s.name for s in children(spans, first)] == [
        f"update {db.name}.c",
        "abortTransaction admin",
    ]
    assert len([s for s in spans if s.name == "app.reserve"]) == 1  # the first one's is dropped
    assert trace.get_current_span() is trace.INVALID_SPAN
