"""Malformed, unexpected and out-of-order input: nothing escapes, nothing leaks, nothing changes.

The listener gets real ``pymongo.monitoring`` events built from generated commands and replies;
``_guard`` re-raises our internal errors under pytest, so any bug here fails the test instead of
being logged. The session wrappers get generated call sequences (start, insert, find, commit,
abort, end_session, with_transaction, injected transient errors) on Motor, ``AsyncMongoClient``
and ``MongoClient`` sessions, with and without us: the application must see exactly the results
and exceptions it sees without us, and the correlation state must be empty once the session ends.
"""

from __future__ import annotations

import datetime
import inspect
import uuid
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
from pymongo import monitoring

from motor_otel import instrument_client
from motor_otel.correlation import Attempt
from motor_otel.instrumentor import _build, telemetry_of
from motor_otel.listener import TracingCommandListener
from motor_otel.testing import fail_command
from tests.conftest import CLIENT_OPTIONS
from tests.signals import make_signals

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
    signals = make_signals()  # not the fixture: one per Hypothesis example
    exporter, provider = signals.exporter, signals.tracer_provider
    telemetry = _build(provider, None, {})
    listener = TracingCommandListener(telemetry)
    attempt_span = telemetry.tracer.start_span("transaction")
    session = object()  # what the session side marks its attempts with
    telemetry.correlator.open_attempt(Attempt(attempt_span, str(LSID), 1, 1, owner=session))

    for i, (kind, request_id, command, reply) in enumerate(actions):
        if i == end_session_at:
            telemetry.correlator.forget_session(str(LSID), session)
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
    # The listener alone: no command left in flight, no attempt made up or dropped. The attempt
    # the test opened is there until the test's own forget_session, which only it calls.
    forgotten = end_session_at < len(actions)
    assert (0 if forgotten else 1, 0) == telemetry.correlator.sizes()
    attempt_span.end()
    started = sum(1 for kind, *_ in actions if kind == "started")
    finished = exporter.get_finished_spans()
    assert len(finished) <= started + 1
    for span in finished:
        for key, value in (span.attributes or {}).items():
            assert _valid_attribute(value), (key, value)
        for event in span.events:
            assert all(_valid_attribute(v) for v in (event.attributes or {}).values())


# -- session wrappers: what the driver rejects, we reject identically -------------------------
STEPS = (
    "start",  # start_transaction()
    "insert",
    "find",
    "commit",
    "abort",
    "end",  # end_session()
    "with",  # with_transaction(callback that inserts)
    "with_raising",  # with_transaction(callback that raises the application's ValueError)
    "with_not_awaitable",  # with_transaction(plain function): a TypeError on the async drivers
    "fail_next_insert",  # the next insert fails with WriteConflict (TransientTransactionError)
)
DRIVERS = ("motor", "pymongo_async", "pymongo_sync")
Outcome = tuple[Any, ...]


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _client(driver: str, uri: str) -> Any:
    if driver == "motor":
        return AsyncIOMotorClient(uri, **CLIENT_OPTIONS)
    if driver == "pymongo_async":
        return pymongo.AsyncMongoClient(uri, **CLIENT_OPTIONS)
    return pymongo.MongoClient(uri, **CLIENT_OPTIONS)


def _callback(sync: bool, coll: Any, step: str) -> Any:
    """The with_transaction callback for a step, sync or async as the driver needs."""
    if sync or step == "with_not_awaitable":

        def plain(session: Any) -> str:
            if step == "with_raising":
                raise ValueError("the application's own error")
            if step == "with":
                coll.insert_one({}, session=session)
            return "done"

        return plain

    async def callback(session: Any) -> str:
        if step == "with_raising":
            raise ValueError("the application's own error")
        await coll.insert_one({}, session=session)
        return "done"

    return callback


async def _step(step: str, sync: bool, client: Any, coll: Any, session: Any) -> Any:
    """One call on the session, its result reduced to what is the same on every run."""
    if step == "start":
        await _maybe(session.start_transaction())
        return None
    if step == "insert":
        return (await _maybe(coll.insert_one({}, session=session))).acknowledged
    if step == "find":
        return (await _maybe(coll.find_one({}, session=session))) is not None
    if step == "commit":
        return await _maybe(session.commit_transaction())
    if step == "abort":
        return await _maybe(session.abort_transaction())
    if step == "end":
        return await _maybe(session.end_session())
    if step == "fail_next_insert":
        return (await _maybe(client.admin.command(fail_command("insert", mode=1, error_code=112))))[
            "ok"
        ]
    return await _maybe(session.with_transaction(_callback(sync, coll, step)))


def _describe(exc: BaseException) -> Outcome:
    labels = sorted(getattr(exc, "_error_labels", None) or ())
    return ("raised", type(exc).__qualname__, getattr(exc, "code", None), labels)


async def _run_steps(
    driver: str, uri: str, steps: list[str], traced: bool
) -> tuple[list[Outcome], tuple[int, int] | None]:
    """The steps on one session of a fresh client; with ``traced``, the correlator's sizes after."""
    client = _client(driver, uri)
    telemetry = None
    if traced:
        instrument_client(client, tracer_provider=TracerProvider())
        telemetry = telemetry_of(client)
        assert telemetry is not None
    coll = client.robust[f"steps_{driver}_{'otel' if traced else 'plain'}"]
    outcomes: list[Outcome] = []
    try:
        await _maybe(coll.drop())
        session = await _maybe(client.start_session())
        for step in steps:
            try:
                outcomes.append(
                    ("returned", await _step(step, driver == "pymongo_sync", client, coll, session))
                )
            except Exception as exc:  # the point: which exception
                outcomes.append(_describe(exc))
        await _maybe(session.end_session())
        sizes = None if telemetry is None else telemetry.correlator.sizes()
    finally:
        await _maybe(client.admin.command(fail_command("insert", mode="off")))
        await _maybe(client.close())
    return outcomes, sizes


@pytest.mark.parametrize("driver", DRIVERS)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(st.sampled_from(STEPS), min_size=1, max_size=8))
async def test_session_call_sequences_behave_exactly_as_without_us(
    driver: str, steps: list[str], mongodb_uri: str
) -> None:
    """Any call sequence: same results and exceptions (type, code, labels); nothing left behind."""
    plain, _ = await _run_steps(driver, mongodb_uri, steps, traced=False)
    traced, sizes = await _run_steps(driver, mongodb_uri, steps, traced=True)
    assert plain == traced
    assert sizes == (0, 0)
