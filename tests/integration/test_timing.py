"""Where a transaction's time goes: server_ms, app_ms, the write window, open transactions.

Through Motor (driver and spec mode) and ``AsyncMongoClient`` against the simulator (or
``MONGODB_URI``), with a controllable clock (``tests/clocks.py``) standing in for application
work: no sleeps, and nothing of the drivers replaced.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Sequence
from typing import Any

import pytest
import structlog
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

from motor_otel import KeepTransactionsSampler
from motor_otel.testing import fail_command
from tests.clocks import FrozenClock, OffsetClock, use_clock
from tests.conftest import maybe_await
from tests.signals import Signals, make_signals

SERVER = "db.mongodb.transaction.server_ms"
APP = "db.mongodb.transaction.app_ms"
WINDOW = "db.mongodb.transaction.write_window_ms"
# Our timestamps and the SDK's are read a few microseconds apart in the same calls; a thread
# switch between them (the simulator serves from threads of this process) can add a few ms.
TOLERANCE_MS = 10.0
BLOCK_MS = 100  # the server holds each blocked find this long


def _modes(client: Any) -> list[str]:
    return ["driver", "spec"] if isinstance(client, AsyncIOMotorClient) else ["driver"]


def _ms(ns: int) -> float:
    return ns / 1e6


def _union_ms(spans: Sequence[ReadableSpan]) -> float:
    """The time during which at least one of ``spans`` was open."""
    total, end = 0, None
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        start, stop = span.start_time or 0, span.end_time or 0
        if end is None or start > end:
            total += stop - start
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return _ms(total)


def _commands_of(spans: Sequence[ReadableSpan], attempt: ReadableSpan) -> list[ReadableSpan]:
    """The command spans under ``attempt`` (children of its operation spans, or of it)."""
    by_id = {s.context.span_id: s for s in spans}
    found = []
    for span in spans:
        if "db.command.name" not in (span.attributes or {}):
            continue
        parent = span.parent
        while parent is not None and parent.span_id != attempt.context.span_id:
            above = by_id.get(parent.span_id)
            parent = above.parent if above is not None else None
        if parent is not None:
            found.append(span)
    return found


def _instrumented(
    client: Any, clock: Any, sampler: Any = None, **settings: Any
) -> tuple[Signals, Any]:
    """Fresh signals for ``client`` (``settings`` as for ``instrument_client``), every duration
    read on ``clock``; and the driver's collection."""
    signals = make_signals(sampler=sampler)
    signals.instrument(client, **settings)
    use_clock(client, clock)
    return signals, _items(client)


def _items(client: Any) -> Any:
    """A collection per driver: an abandoned transaction holds its documents on the server."""
    return client.timing[f"items_{type(client).__name__}"]


async def _session(client: Any) -> Any:
    return await maybe_await(client.start_session())


async def _with_transaction(client: Any, callback: Any) -> None:
    """``with_transaction(callback)`` on a new session, ended afterwards."""
    session = await _session(client)
    try:
        await session.with_transaction(callback)
    finally:
        await maybe_await(session.end_session())


async def test_app_server_and_write_window_match_the_spans(async_driver_client: Any) -> None:
    """app_ms is the known work plus the gaps between commands; server_ms is the union of the
    exported command spans (two overlapping finds count once); the write window runs from the
    first write command's start to the commit's end."""
    client = async_driver_client

    async def run(mode: str) -> None:
        clock = OffsetClock()
        signals, items = _instrumented(client, clock, with_transaction=mode)
        await items.delete_many({})
        await items.insert_one({"_id": "seed"})
        await client.admin.command(
            fail_command("find", mode=3, blockConnection=True, blockTimeMS=BLOCK_MS)
        )

        async def callback(session: Any) -> None:
            await items.find_one({"_id": "seed"}, session=session)  # starts the transaction
            await asyncio.gather(  # two reads in flight at once: their overlap counts once
                items.find_one({"_id": "seed"}, session=session),
                items.find_one({"_id": "seed"}, session=session),
            )
            clock.advance(0.2)  # application work before the first write: not in the window
            await items.insert_one({"_id": mode}, session=session)
            clock.advance(0.3)  # application work between two writes: in the window
            await items.update_one({"_id": mode}, {"$set": {"x": 1}}, session=session)

        await _with_transaction(client, callback)
        spans = signals.spans()
        attempts = [s for s in spans if s.name == "transaction"]
        assert len(attempts) == 1
        (attempt,) = attempts
        (call,) = [s for s in spans if s.name == "withTransaction"]
        commands = _commands_of(spans, attempt)
        names = sorted(s.name for s in commands)
        assert names == ["commitTransaction", "find", "find", "find", "insert", "update"]
        attrs = attempt.attributes or {}
        union = _union_ms(commands)
        assert abs(attrs[SERVER] - union) <= TOLERANCE_MS, (mode, attrs[SERVER], union)
        finds = [s for s in commands if s.name == "find"]
        assert sum(_ms((s.end_time or 0) - (s.start_time or 0)) for s in finds) >= 3 * BLOCK_MS
        assert 2 * BLOCK_MS <= attrs[SERVER] < 3 * BLOCK_MS  # two finds overlapped: once
        duration = _ms((attempt.end_time or 0) - (attempt.start_time or 0))
        expected_app = duration - union + 500.0  # the gaps between commands, plus known work
        assert abs(attrs[APP] - expected_app) <= TOLERANCE_MS, (mode, attrs[APP], expected_app)
        (insert,) = [s for s in commands if s.name == "insert"]
        window = _ms((attempt.end_time or 0) - (insert.start_time or 0)) + 300.0
        assert abs(attrs[WINDOW] - window) <= TOLERANCE_MS, (mode, attrs[WINDOW], window)
        call_attrs = call.attributes or {}
        assert [call_attrs[SERVER], call_attrs[APP], call_attrs[WINDOW]] == [
            attrs[SERVER],
            attrs[APP],
            attrs[WINDOW],
        ]

    for mode in _modes(client):
        await run(mode)


async def test_read_only_attempt_has_no_write_window(async_driver_client: Any) -> None:
    """An attempt that only reads gets server_ms and app_ms, no write window, no window point."""
    client = async_driver_client
    signals = make_signals()
    signals.instrument(client)
    items = _items(client)

    async def callback(session: Any) -> None:
        await items.find_one({}, session=session)

    await _with_transaction(client, callback)
    spans = signals.spans()
    for name in ("transaction", "withTransaction"):
        (span,) = [s for s in spans if s.name == name]
        attrs = span.attributes or {}
        assert SERVER in attrs and APP in attrs and WINDOW not in attrs, name
    points = signals.points()
    assert len(points["db.client.mongodb.transaction.app_duration"]) == 1
    assert "db.client.mongodb.transaction.write_window" not in points


async def test_with_transaction_sums_its_attempts(async_driver_client: Any) -> None:
    """On withTransaction, server_ms, app_ms and the write window are its attempts' sums,
    the aborted attempt's window (first write to the abort's end) included."""
    client = async_driver_client

    async def run(mode: str) -> None:
        clock = OffsetClock()
        signals, items = _instrumented(client, clock, with_transaction=mode)
        await items.delete_many({})
        await client.admin.command(
            fail_command("update", error_code=112, error_labels=["TransientTransactionError"])
        )

        async def callback(session: Any) -> None:
            await items.insert_one({"_id": mode}, session=session)
            clock.advance(0.125)
            await items.update_one({"_id": mode}, {"$set": {"x": 1}}, session=session)

        await _with_transaction(client, callback)
        spans = signals.spans()
        attempts = sorted(
            (s for s in spans if s.name == "transaction"),
            key=lambda s: (s.attributes or {})["db.mongodb.transaction.attempt"],
        )
        (call,) = [s for s in spans if s.name == "withTransaction"]
        assert [(s.attributes or {})["db.mongodb.transaction.outcome"] for s in attempts] == [
            "aborted",
            "committed",
        ]
        call_attrs = call.attributes or {}
        for key in (SERVER, APP, WINDOW):
            total = sum((s.attributes or {})[key] for s in attempts)
            assert abs(call_attrs[key] - total) <= 0.002, (mode, key)  # each rounded to µs
        for attempt in attempts:  # the known work is in each attempt's app time and window
            attrs = attempt.attributes or {}
            assert attrs[APP] >= 125.0 and attrs[WINDOW] >= 125.0

    for mode in _modes(client):
        await run(mode)


async def test_a_kept_retried_transaction_carries_its_times(async_driver_client: Any) -> None:
    """Under KeepTransactionsSampler(ParentBased(ALWAYS_OFF)), inside an unsampled request, a
    retried with_transaction is kept: each attempt (the first one buffered, the second live) has
    the server, app and write-window times the clock predicts and a transaction.long event, the
    withTransaction root their sums; the per-attempt points are exact and their exemplars name
    the kept trace; both attempts log transaction.long."""
    client = async_driver_client

    async def run(mode: str) -> None:
        clock = FrozenClock()
        signals, items = _instrumented(
            client,
            clock,
            sampler=KeepTransactionsSampler(ParentBased(ALWAYS_OFF)),
            with_transaction=mode,
            long_transaction_ms=100,
            log_lifecycle=True,
        )
        await items.delete_many({})
        await client.admin.command(
            fail_command("update", error_code=112, error_labels=["TransientTransactionError"])
        )

        async def callback(session: Any) -> None:
            await items.insert_one({"_id": mode}, session=session)
            clock.advance(0.125)  # known work between the two writes: app time, in the window
            await items.update_one({"_id": mode}, {"$set": {"x": 1}}, session=session)

        request = signals.tracer_provider.get_tracer("app").start_as_current_span("request")
        with structlog.testing.capture_logs() as logs, request as caller:
            assert not caller.get_span_context().trace_flags.sampled
            await _with_transaction(client, callback)
        spans = signals.spans()
        (root,) = [s for s in spans if s.name == "withTransaction"]
        assert (root.attributes or {})["db.mongodb.transaction.kept"] == "retried", mode
        kept_id = root.context.trace_id
        attempts = sorted(
            (s for s in spans if s.name == "transaction"),
            key=lambda s: (s.attributes or {})["db.mongodb.transaction.attempt"],
        )
        each = {SERVER: 0.0, APP: 125.0, WINDOW: 125.0}  # the frozen clock moved only 125 ms
        assert [
            (
                s.context.trace_id,
                (s.attributes or {})["db.mongodb.transaction.outcome"],
                {k: (s.attributes or {})[k] for k in each},
                [(e.name, dict(e.attributes or {})) for e in s.events],
            )
            for s in attempts
        ] == [
            (kept_id, "aborted", each, [("transaction.long", each)]),
            (kept_id, "committed", each, [("transaction.long", each)]),
        ], mode
        assert {k: (root.attributes or {})[k] for k in each} == {
            SERVER: 0.0,
            APP: 250.0,
            WINDOW: 250.0,
        }, mode
        points = signals.points()
        for name, outcomes in (
            ("db.client.mongodb.transaction.app_duration", {"aborted", "committed"}),
            ("db.client.mongodb.transaction.write_window", {"aborted", "committed"}),
        ):
            found = points[name]
            assert {p.attributes["db.mongodb.transaction.outcome"] for p in found} == outcomes
            assert [(p.count, p.sum) for p in found] == [(1, 0.125)] * 2, (mode, name)
            assert [{e.trace_id for e in p.exemplars} for p in found] == [{kept_id}] * 2, mode
        long = [e for e in logs if e["event"] == "transaction.long"]
        assert [e["db.mongodb.transaction.attempt"] for e in long] == [1, 2], mode
        assert [{k: e[k] for k in each} for e in long] == [each, each], mode

    for mode in _modes(client):
        await run(mode)


async def test_a_kept_failed_lone_transaction_carries_its_times(async_driver_client: Any) -> None:
    """A lone transaction (no with_transaction) whose write failed, aborted under an unsampled
    request and kept by the failed rule after its only attempt ended: the kept transaction root
    has the times the clock predicts and its transaction.long event, and the attempt's points
    (recorded once kept) have exemplars naming the kept trace."""
    from pymongo.errors import OperationFailure

    client = async_driver_client
    clock = FrozenClock()
    signals, items = _instrumented(
        client,
        clock,
        sampler=KeepTransactionsSampler(ParentBased(ALWAYS_OFF)),
        long_transaction_ms=100,
    )
    await items.delete_many({})
    await client.admin.command(fail_command("update", error_code=2))
    with signals.tracer_provider.get_tracer("app").start_as_current_span("request"):
        session = await _session(client)
        try:
            await maybe_await(session.start_transaction())
            await items.insert_one({"_id": "lone"}, session=session)
            clock.advance(0.25)
            with pytest.raises(OperationFailure):
                await items.update_one({"_id": "lone"}, {"$set": {"x": 1}}, session=session)
            await session.abort_transaction()
        finally:
            await maybe_await(session.end_session())
    (root,) = [s for s in signals.spans() if s.name == "transaction"]
    attrs = root.attributes or {}
    expected = {SERVER: 0.0, APP: 250.0, WINDOW: 250.0}
    assert (attrs["db.mongodb.transaction.kept"], attrs["db.mongodb.transaction.outcome"]) == (
        "failed",
        "aborted",
    )
    assert {k: attrs[k] for k in expected} == expected
    assert [(e.name, dict(e.attributes or {})) for e in root.events] == [
        ("transaction.long", expected)
    ]
    points = signals.points()
    for name in (
        "db.client.mongodb.transaction.app_duration",
        "db.client.mongodb.transaction.write_window",
    ):
        (point,) = points[name]
        assert (point.count, point.sum) == (1, 0.25), name
        assert {e.trace_id for e in point.exemplars} == {root.context.trace_id}, name


async def _open_value(signals: Signals) -> Any:
    (point,) = signals.points()["db.client.mongodb.transaction.open"]
    return point.value


def _oldest(signals: Signals) -> list[float]:
    return [p.value for p in signals.points().get("db.client.mongodb.transaction.oldest_age", [])]


async def test_metrics_are_exact_when_nothing_is_sampled(async_driver_client: Any) -> None:
    """Under ALWAYS_OFF, with a clock that moves only by the known work: app_duration and
    write_window points are exactly that work, by outcome and the first write's collection."""
    client = async_driver_client
    clock = FrozenClock()
    signals, items = _instrumented(client, clock, sampler=ALWAYS_OFF)
    await items.delete_many({})

    async def callback(session: Any) -> None:
        await items.find_one({}, session=session)
        clock.advance(0.25)
        await items.insert_one({"_id": 1}, session=session)
        clock.advance(0.5)
        await items.update_one({"_id": 1}, {"$set": {"x": 1}}, session=session)

    await _with_transaction(client, callback)
    assert signals.spans() == ()
    points = signals.points()
    (app,) = points["db.client.mongodb.transaction.app_duration"]
    assert (app.count, app.sum) == (1, 0.75)
    assert dict(app.attributes) == {
        "db.system.name": "mongodb",
        "db.mongodb.transaction.outcome": "committed",
    }
    (window,) = points["db.client.mongodb.transaction.write_window"]
    assert (window.count, window.sum) == (1, 0.5)
    assert dict(window.attributes) == {
        "db.system.name": "mongodb",
        "db.mongodb.transaction.outcome": "committed",
        "db.collection.name": items.name,
    }


async def test_open_returns_to_zero_and_oldest_age_reports_the_open_one(
    async_driver_client: Any,
) -> None:
    """Under ALWAYS_OFF, ``open`` counts a transaction while it is open and is 0 again after a
    commit, an abort, a raising callback and an abandoned (collected) session; ``oldest_age``
    reports the open one's age and nothing once none is open."""
    client = async_driver_client
    clock = FrozenClock()
    signals, items = _instrumented(client, clock, sampler=ALWAYS_OFF)
    await items.delete_many({})

    async def start(session: Any) -> None:
        await maybe_await(session.start_transaction())

    # committed by hand
    session = await _session(client)
    await start(session)
    await items.insert_one({"_id": "c"}, session=session)
    clock.advance(1.5)
    assert await _open_value(signals) == 1
    assert _oldest(signals) == [1.5]
    await session.commit_transaction()
    assert (await _open_value(signals), _oldest(signals)) == (0, [])
    # aborted
    await start(session)
    await items.insert_one({"_id": "a"}, session=session)
    assert await _open_value(signals) == 1
    await session.abort_transaction()
    assert (await _open_value(signals), _oldest(signals)) == (0, [])

    # a raising callback
    async def boom(s: Any) -> None:
        await items.insert_one({"_id": "r"}, session=s)
        assert await _open_value(signals) == 1
        raise ValueError("the application failed")

    with pytest.raises(ValueError):
        await session.with_transaction(boom)
    assert (await _open_value(signals), _oldest(signals)) == (0, [])
    # committed by with_transaction
    await session.with_transaction(lambda s: items.insert_one({"_id": "w"}, session=s))
    assert (await _open_value(signals), _oldest(signals)) == (0, [])
    await maybe_await(session.end_session())

    # abandoned mid-transaction: never ended, only collected
    abandoned = await _session(client)
    await start(abandoned)
    await items.insert_one({"_id": "lost"}, session=abandoned)
    clock.advance(2.0)
    assert await _open_value(signals) == 1
    assert _oldest(signals) == [2.0]
    del abandoned
    gc.collect()
    assert (await _open_value(signals), _oldest(signals)) == (0, [])


async def test_long_transaction_event_and_log(async_driver_client: Any) -> None:
    """A write window past long_transaction_ms adds a transaction.long event to the attempt span
    and logs transaction.long (with log_lifecycle) carrying app_ms, server_ms and the window."""
    client = async_driver_client
    clock = FrozenClock()
    signals, items = _instrumented(client, clock, long_transaction_ms=100, log_lifecycle=True)
    await items.delete_many({})

    async def callback(session: Any) -> None:
        await items.insert_one({"_id": 1}, session=session)
        clock.advance(0.125)

    session = await _session(client)
    try:
        with structlog.testing.capture_logs() as logs:
            await session.with_transaction(callback)
            await session.with_transaction(  # 0 ms: not long
                lambda s: items.insert_one({"_id": 2}, session=s)
            )
    finally:
        await maybe_await(session.end_session())
    expected = {APP: 125.0, SERVER: 0.0, WINDOW: 125.0}
    attempts = [s for s in signals.spans() if s.name == "transaction"]
    assert [[(e.name, dict(e.attributes or {})) for e in s.events] for s in attempts] == [
        [("transaction.long", expected)],
        [],
    ]
    long = [e for e in logs if e["event"] == "transaction.long"]
    assert len(long) == 1
    assert long[0]["log_level"] == "warning"
    assert {k: long[0][k] for k in expected} == expected
    assert long[0]["db.collection.name"] == items.name
    assert long[0]["db.mongodb.transaction.attempt"] == 1


@pytest.mark.parametrize(("value", "long"), [("50", True), ("soon", False)])
async def test_long_transaction_env_var(
    async_driver_client: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    value: str,
    long: bool,
) -> None:
    """OTEL_PYTHON_INSTRUMENTATION_MONGODB_LONG_TRANSACTION_MS sets the threshold; a bad value
    gets one warning and the default (100 ms) is used."""
    client = async_driver_client
    variable = "OTEL_PYTHON_INSTRUMENTATION_MONGODB_LONG_TRANSACTION_MS"
    monkeypatch.setenv(variable, value)
    signals = make_signals()
    with caplog.at_level(logging.WARNING, logger="motor_otel"):
        signals.instrument(client)
    warnings = [r.getMessage() for r in caplog.records if variable in r.getMessage()]
    assert len(warnings) == (0 if long else 1)
    clock = FrozenClock()
    use_clock(client, clock)
    items = _items(client)
    await items.delete_many({})

    async def callback(session: Any) -> None:
        await items.insert_one({"_id": 1}, session=session)
        clock.advance(0.0625)  # past 50 ms, not past the default 100 ms

    await _with_transaction(client, callback)
    (attempt,) = [s for s in signals.spans() if s.name == "transaction"]
    assert [e.name for e in attempt.events] == (["transaction.long"] if long else [])


def test_long_transaction_keyword_is_checked() -> None:
    """A negative or non-numeric long_transaction_ms keyword raises ValueError."""
    from motor_otel.config import Settings

    for bad in (-1, "soon", float("nan"), True):
        with pytest.raises(ValueError):
            Settings.resolve(environ={}, long_transaction_ms=bad)
    assert Settings.resolve(environ={}, long_transaction_ms=0).long_transaction_ms == 0.0
    assert Settings.resolve(environ={}).long_transaction_ms == 100.0


def test_sync_client_metrics_are_exact_when_nothing_is_sampled(sync_client: Any) -> None:
    """The sync MongoClient measures the same way: exact app time and write window, open 0."""
    clock = FrozenClock()
    signals, items = _instrumented(sync_client, clock, sampler=ALWAYS_OFF)
    items.delete_many({})

    def callback(session: Any) -> None:
        items.insert_one({"_id": 1}, session=session)
        clock.advance(0.5)
        items.update_one({"_id": 1}, {"$set": {"x": 1}}, session=session)

    with sync_client.start_session() as session:
        session.with_transaction(callback)
    points = signals.points()
    (app,) = points["db.client.mongodb.transaction.app_duration"]
    (window,) = points["db.client.mongodb.transaction.write_window"]
    (opened,) = points["db.client.mongodb.transaction.open"]
    assert [(app.count, app.sum), (window.count, window.sum), opened.value] == [
        (1, 0.5),
        (1, 0.5),
        0,
    ]


async def test_unsampled_attempts_still_time_their_commands(async_driver_client: Any) -> None:
    """Under ALWAYS_OFF a command's in-flight time is still server time: a find the server
    holds for 100 ms is not in app_duration, the known work is."""
    client = async_driver_client
    clock = OffsetClock()
    signals, items = _instrumented(client, clock, sampler=ALWAYS_OFF)
    await client.admin.command(
        fail_command("find", mode=1, blockConnection=True, blockTimeMS=BLOCK_MS)
    )

    async def callback(session: Any) -> None:
        await items.find_one({}, session=session)
        clock.advance(0.25)

    await _with_transaction(client, callback)
    (app,) = signals.points()["db.client.mongodb.transaction.app_duration"]
    assert 0.25 <= app.sum < 0.25 + BLOCK_MS / 1000 / 2
