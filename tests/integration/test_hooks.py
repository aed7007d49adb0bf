"""User hooks, through Motor and PyMongo's AsyncMongoClient against the simulator.

Each hook must get the span it is about (what it sets shows up on that exported span, and only
there) and the driver's event or the application's session; a hook that raises is the user's
bug: logged every time it raises, and the application and its spans carry on unchanged.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any

import pymongo
import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Span
from pymongo.monitoring import CommandFailedEvent, CommandStartedEvent, CommandSucceededEvent

from motor_otel import instrument_client
from tests.conftest import CLIENT_OPTIONS
from tests.spans import children, named, render

TRANSIENT_INSERT = {
    "configureFailPoint": "failCommand",
    "mode": {"times": 1},
    "data": {"failCommands": ["insert"], "errorCode": 112},
}
FAIL_POINT_OFF = {"configureFailPoint": "failCommand", "mode": "off"}


@pytest.fixture(params=["motor", "async_mongo_client"])
async def client(request: pytest.FixtureRequest, mongodb_uri: str) -> AsyncIterator[Any]:
    """A fresh, not yet instrumented client of either driver."""
    if request.param == "motor":
        c: Any = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    else:
        c = pymongo.AsyncMongoClient(mongodb_uri, **CLIENT_OPTIONS)
    yield c
    await c.admin.command(FAIL_POINT_OFF)
    closed = c.close()
    if inspect.isawaitable(closed):
        await closed


async def _start_session(client: Any) -> Any:
    session = client.start_session()  # a coroutine for Motor, the session for PyMongo
    return await session if inspect.isawaitable(session) else session


async def _retried_transaction(client: Any) -> tuple[Any, Any, int]:
    """An insert that fails once (TransientTransactionError), so the callback runs twice.

    Returns (the app's session, what the app reads back, callback calls).
    """
    calls = 0

    async def callback(session: Any) -> Any:
        nonlocal calls
        calls += 1
        result = await client.hooks.items.insert_one({"call": calls}, session=session)
        return result.inserted_id

    await client.admin.command(TRANSIENT_INSERT)
    session = await _start_session(client)
    async with session:
        inserted = await session.with_transaction(callback)
    found = await client.hooks.items.find_one({"_id": inserted}, {"_id": 0})
    return session, found, calls


def _by_id(spans: tuple[ReadableSpan, ...]) -> dict[int, ReadableSpan]:
    return {s.context.span_id: s for s in spans}


def _commands(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return [s for s in spans if s.attributes and "db.command.name" in s.attributes]


async def test_each_hook_gets_its_span_and_event(
    client: Any, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """request/response/failed hooks see their command's span and event; attributes land there."""
    seen: list[tuple[str, int, Any]] = []

    def request_hook(span: Span, event: CommandStartedEvent) -> None:
        seen.append(("request", span.get_span_context().span_id, event))
        span.set_attribute("app.request_id", event.request_id)

    def response_hook(span: Span, event: CommandSucceededEvent) -> None:
        seen.append(("response", span.get_span_context().span_id, event))
        span.set_attribute("app.reply_ok", float(event.reply["ok"]))

    def failed_hook(span: Span, event: CommandFailedEvent) -> None:
        seen.append(("failed", span.get_span_context().span_id, event))
        span.set_attribute("app.failure_code", int(event.failure["code"]))

    instrument_client(
        client,
        tracer_provider=tracer_provider,
        request_hook=request_hook,
        response_hook=response_hook,
        failed_hook=failed_hook,
    )
    await _retried_transaction(client)
    spans = exporter.get_finished_spans()
    by_id = _by_id(spans)
    commands = _commands(spans)

    requests = [(sid, e) for kind, sid, e in seen if kind == "request"]
    assert sorted(sid for sid, _ in requests) == sorted(s.context.span_id for s in commands)
    for sid, event in requests:
        assert isinstance(event, CommandStartedEvent)
        span = by_id[sid]
        assert span.name == event.command_name
        assert span.attributes is not None
        assert span.attributes["app.request_id"] == event.request_id

    finished = [(kind, sid, e) for kind, sid, e in seen if kind != "request"]
    assert len(finished) == len(commands)  # every command ends exactly one way
    started = {sid: e for sid, e in requests}
    for kind, sid, event in finished:
        span = by_id[sid]
        assert event.request_id == started[sid].request_id  # the same command
        assert span.attributes is not None
        if kind == "response":
            assert isinstance(event, CommandSucceededEvent)
            assert span.attributes["app.reply_ok"] == 1.0
            assert "app.failure_code" not in span.attributes
        else:
            assert isinstance(event, CommandFailedEvent)
            code = int(span.attributes["db.response.status_code"])  # type: ignore[arg-type]
            assert span.attributes["app.failure_code"] == code
            assert "app.reply_ok" not in span.attributes

    failures = {
        (by_id[sid].name, e.failure["code"]) for kind, sid, e in finished if kind == "failed"
    }
    # The injected write conflict; the server has then dropped the transaction, so the driver's
    # abortTransaction may fail too (NoSuchTransaction), as it does on mongod.
    assert ("insert", 112) in failures
    assert failures <= {("insert", 112), ("abortTransaction", 251)}
    non_commands = [s for s in spans if s not in commands]
    assert non_commands
    assert not any(key.startswith("app.") for s in non_commands for key in (s.attributes or {}))


async def test_transaction_hook_gets_each_attempt_span_and_the_app_session(
    client: Any, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Called once per attempt, with that attempt's span and the session the app is using."""
    seen: list[tuple[int, Any]] = []

    def transaction_hook(span: Span, session: Any) -> None:
        seen.append((span.get_span_context().span_id, session))
        span.set_attribute("app.in_transaction", bool(session.in_transaction))
        span.set_attribute("app.call", len(seen))

    instrument_client(client, tracer_provider=tracer_provider, transaction_hook=transaction_hook)
    session, _, calls = await _retried_transaction(client)
    assert calls == 2
    spans = exporter.get_finished_spans()
    attempts = named(spans, "transaction")
    assert [sid for sid, _ in seen] == [a.context.span_id for a in attempts]
    assert all(hooked is session for _, hooked in seen)
    for number, attempt in enumerate(attempts, start=1):
        assert attempt.attributes is not None
        assert attempt.attributes["db.mongodb.transaction.attempt"] == number
        assert attempt.attributes["app.call"] == number
        assert attempt.attributes["app.in_transaction"] is True
    others = [s for s in spans if s.name != "transaction"]
    assert not any("app.call" in (s.attributes or {}) for s in others)


async def test_raising_hooks_are_logged_and_ignored(
    client: Any,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    mongodb_uri: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Hooks that raise: same app result, same span tree (attributes set before the raise kept),
    one log record with the traceback per raise."""

    def boom(where: str) -> Any:
        def hook(span: Span, _: Any) -> None:
            span.set_attribute("app.before_raise", where)
            raise RuntimeError(f"bug in {where}")

        return hook

    # The same workload on a plain client first: what the application should see.
    plain: Any = type(client)(mongodb_uri, **CLIENT_OPTIONS)
    try:
        _, expected, expected_calls = await _retried_transaction(plain)
    finally:
        closed = plain.close()
        if inspect.isawaitable(closed):
            await closed

    instrument_client(
        client,
        tracer_provider=tracer_provider,
        request_hook=boom("request_hook"),
        response_hook=boom("response_hook"),
        failed_hook=boom("failed_hook"),
        transaction_hook=boom("transaction_hook"),
    )
    with caplog.at_level(logging.ERROR, logger="motor_otel"):
        _, found, calls = await _retried_transaction(client)
    assert (found, calls) == (expected, expected_calls)

    spans = exporter.get_finished_spans()
    (wt,) = named(spans, "withTransaction")
    assert wt.attributes is not None
    assert wt.attributes["db.mongodb.transaction.attempts"] == 2
    assert wt.attributes["db.mongodb.transaction.outcome"] == "committed"
    attempts = children(spans, wt)
    assert [[c.name for c in children(spans, a)] for a in attempts] == [
        ["insert hooks.items", "abortTransaction admin"],
        ["insert hooks.items", "commitTransaction admin"],
    ]
    assert "find hooks.items" in render(spans)

    commands = _commands(spans)
    failed = [s for s in commands if s.attributes and "db.response.status_code" in s.attributes]
    expected_raises = {
        "request_hook": len(commands),
        "response_hook": len(commands) - len(failed),
        "failed_hook": len(failed),
        "transaction_hook": len(attempts),
    }
    assert failed
    records = [r for r in caplog.records if r.name == "motor_otel"]
    raised = {
        where: [r for r in records if r.getMessage() == f"motor-otel {where} raised; ignored"]
        for where in expected_raises
    }
    assert {where: len(rs) for where, rs in raised.items()} == expected_raises
    assert len(records) == sum(expected_raises.values())  # nothing else logged, nothing twice
    for where, rs in raised.items():
        for record in rs:
            assert record.exc_info is not None
            assert str(record.exc_info[1]) == f"bug in {where}"

    # The last hook to run on each span set its attribute before raising: it is kept.
    for span in commands:
        assert span.attributes is not None
        assert span.attributes["app.before_raise"] in ("response_hook", "failed_hook")
    for attempt in attempts:
        assert attempt.attributes is not None
        assert attempt.attributes["app.before_raise"] == "transaction_hook"
