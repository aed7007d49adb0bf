"""Malformed, unexpected and out-of-order input: nothing escapes, nothing leaks, nothing changes.

The listener gets real ``pymongo.monitoring`` events built from generated commands and replies;
``_guard`` re-raises our internal errors under pytest, so any bug here fails the test instead of
being logged. The session wrappers get call sequences a driver rejects, through real clients: the
application must see exactly the exception it sees without us.
"""

from __future__ import annotations

import datetime
import inspect
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pymongo
import pytest
from bson import Int64
from bson.binary import Binary, UuidRepresentation
from bson.timestamp import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pymongo import monitoring

from motor_otel import instrument_client
from motor_otel.correlation import Attempt
from motor_otel.instrumentor import _build
from motor_otel.listener import TracingCommandListener
from tests.conftest import CLIENT_OPTIONS

LSID = uuid.UUID(int=7)
ADDRESS = ("127.0.0.1", 27017)
DURATION = datetime.timedelta(milliseconds=1)

garbage = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
lsids = st.one_of(
    st.just({"id": Binary.from_uuid(LSID, UuidRepresentation.STANDARD)}),
    st.builds(lambda b: {"id": Binary(b, 4)}, st.binary(max_size=20)),
    st.builds(lambda v: {"id": v}, garbage),
    garbage,
)
values = st.one_of(
    garbage,
    st.just("x" * 200_000),  # a huge document
    st.just(b"\xff\xfe\xfd non-UTF-8"),
    st.builds(Timestamp, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)),
)


@st.composite
def commands(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(
        st.sampled_from(
            ["insert", "find", "getMore", "killCursors", "commitTransaction", "saslStart", "hello"]
        )
    )
    command: dict[str, Any] = {name: draw(st.one_of(st.just("items"), values))}
    if draw(st.booleans()):
        command["lsid"] = draw(lsids)
    if draw(st.booleans()):
        command["txnNumber"] = draw(st.one_of(st.just(Int64(1)), garbage))
    if draw(st.booleans()):
        command["documents"] = [{"v": draw(values)}]
    if draw(st.booleans()):
        command["cursors"] = draw(st.one_of(st.lists(garbage, max_size=2), garbage))
    return command


@st.composite
def replies(draw: st.DrawFn) -> dict[str, Any]:
    reply: dict[str, Any] = {"ok": draw(st.sampled_from([1, 0, 1.0, "x"]))}
    for key in ("operationTime", "$clusterTime", "cursor", "errorLabels", "errmsg", "code"):
        if draw(st.booleans()):
            reply[key] = draw(
                st.one_of(values, st.builds(lambda t: {"clusterTime": t, "id": t}, values))
            )
    return reply


actions = st.lists(
    st.tuples(
        st.sampled_from(["started", "succeeded", "failed"]),
        st.integers(0, 4),  # request ids collide on purpose
        commands(),
        replies(),
    ),
    max_size=12,
)


def _valid_attribute(value: object) -> bool:
    if isinstance(value, (str, bool, int, float)):
        return True
    return isinstance(value, tuple) and all(isinstance(v, (str, bool, int, float)) for v in value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=actions, end_session_at=st.integers(0, 12))
def test_listener_survives_any_event_sequence(
    actions: list[tuple[str, int, dict[str, Any], dict[str, Any]]], end_session_at: int
) -> None:
    """No exception escapes, every span started is ended once its request ends, no state is left."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = _build(provider, None, {})
    listener = TracingCommandListener(telemetry)
    attempt_span = telemetry.tracer.start_span("transaction")
    telemetry.correlator.open_attempt(Attempt(attempt_span, str(LSID), 1, 1))

    for i, (kind, request_id, command, reply) in enumerate(actions):
        if i == end_session_at:
            telemetry.correlator.forget_session(str(LSID))
        if kind == "started":
            listener.started(
                monitoring.CommandStartedEvent(command, "db", request_id, ADDRESS, None)
            )
        elif kind == "succeeded":
            name = next(iter(command))
            listener.succeeded(
                monitoring.CommandSucceededEvent(DURATION, reply, name, request_id, ADDRESS, None)
            )
        else:
            name = next(iter(command))
            listener.failed(
                monitoring.CommandFailedEvent(DURATION, reply, name, request_id, ADDRESS, None)
            )

    for request_id in range(5):  # whatever is still in flight finishes now
        listener.succeeded(
            monitoring.CommandSucceededEvent(DURATION, {"ok": 1}, "ping", request_id, ADDRESS, None)
        )
    attempt_span.end()
    telemetry.correlator.forget_session(str(LSID))
    assert telemetry.correlator.sizes() == (0, 0)
    started = sum(1 for kind, *_ in actions if kind == "started")
    finished = exporter.get_finished_spans()
    assert len(finished) <= started + 1
    for span in finished:
        for key, value in (span.attributes or {}).items():
            assert _valid_attribute(value), (key, value)
        for event in span.events:
            assert all(_valid_attribute(v) for v in (event.attributes or {}).values())


# -- session wrappers: what the driver rejects, we reject identically -------------------------
async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _commit_without_start(client: Any, session: Any) -> Any:
    return await session.commit_transaction()


async def _double_start(client: Any, session: Any) -> Any:
    await _maybe(session.start_transaction())
    return await _maybe(session.start_transaction())


async def _abort_after_commit(client: Any, session: Any) -> Any:
    await _maybe(session.start_transaction())
    await client.robust.items.insert_one({}, session=session)
    await session.commit_transaction()
    return await session.abort_transaction()


async def _end_twice_then_use(client: Any, session: Any) -> Any:
    await session.end_session()
    await session.end_session()
    return await client.robust.items.find_one({}, session=session)


async def _plain_function_callback(client: Any, session: Any) -> Any:
    return await session.with_transaction(lambda s: "not awaitable")


async def _start_after_end(client: Any, session: Any) -> Any:
    await session.end_session()
    return await _maybe(session.start_transaction())


SEQUENCES: dict[str, Callable[[Any, Any], Awaitable[Any]]] = {
    "commit without start": _commit_without_start,
    "double start": _double_start,
    "abort after commit": _abort_after_commit,
    "end twice then use": _end_twice_then_use,
    "plain function callback": _plain_function_callback,
    "start after end": _start_after_end,
}


async def _outcome(
    client_class: Any, uri: str, sequence: Callable[[Any, Any], Awaitable[Any]], traced: bool
) -> tuple[str, str]:
    client = client_class(uri, **CLIENT_OPTIONS)
    if traced:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        instrument_client(client, tracer_provider=provider)
    session = await _maybe(client.start_session())
    try:
        result = await sequence(client, session)
        outcome = ("returned", repr(result))
    except Exception as exc:  # the point: which exception, with which message
        outcome = (type(exc).__qualname__, str(exc))
    finally:
        await session.end_session()
        await _maybe(client.close())
    return outcome


@pytest.mark.parametrize("sequence", list(SEQUENCES))
@pytest.mark.parametrize("client_class", [AsyncIOMotorClient, pymongo.AsyncMongoClient])
async def test_unexpected_session_calls_fail_exactly_as_without_us(
    client_class: Any, sequence: str, mongodb_uri: str
) -> None:
    """Same exception type and message (or same result) with and without instrumentation."""
    plain = await _outcome(client_class, mongodb_uri, SEQUENCES[sequence], traced=False)
    traced = await _outcome(client_class, mongodb_uri, SEQUENCES[sequence], traced=True)
    assert traced == plain
