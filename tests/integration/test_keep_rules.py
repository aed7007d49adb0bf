"""Keep rules, one by one, and what is built when they cannot act (through Motor and
AsyncMongoClient, under unsampled request spans)."""

from __future__ import annotations

import gc
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import StatusCode
from pymongo.errors import DuplicateKeyError, OperationFailure
from pymongo.monitoring import CommandStartedEvent, CommandSucceededEvent

from motor_otel import KeepTransactionsSampler
from motor_otel.kept import BufferedSpan, buffered, open_buffers
from motor_otel.testing import fail_command
from tests.signals import Signals, make_signals
from tests.spans import children, named

TTE = ["TransientTransactionError"]
KEPT = "db.mongodb.transaction.kept"
NEVER = ParentBased(TraceIdRatioBased(0.0))  # no request is sampled: only kept traces export


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _in_request(
    signals: Signals, client: Any, callback: Callable[[Any], Awaitable[Any]]
) -> None:
    """One with_transaction call inside an unsampled request span; errors are the test's."""
    tracer = signals.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("request"):
        session = await _maybe(client.start_session())
        try:
            await session.with_transaction(callback)
        finally:
            await _maybe(session.end_session())


async def _db(client: Any, name: str) -> Any:
    await client.drop_database(name)
    db = client[name]
    await db.c.insert_one({"_id": 1})
    return db


def _retry_once(db: Any) -> dict[str, Any]:
    return fail_command("update", error_code=112, error_labels=TTE, namespace=f"{db.name}.c")


def _roots(spans: list[ReadableSpan] | Any) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is None]


@pytest.mark.parametrize("sampler", [NEVER, None], ids=["plain-sampler", "keep-none"])
async def test_nothing_extra_is_built_when_rules_cannot_act(
    async_driver_client: Any, sampler: Sampler | None
) -> None:
    """A sampler that is not ours, or keep="none": no buffer while the transaction runs, and a
    retried transaction in an unsampled request exports nothing."""
    signals = make_signals(sampler=sampler or KeepTransactionsSampler(NEVER))
    client = signals.instrument(async_driver_client, keep="retried" if sampler else "none")
    db = await _db(client, "keep_rules_off")
    await client.admin.command(_retry_once(db))
    buffers: list[int] = []

    async def callback(session: Any) -> None:
        buffers.append(open_buffers())
        await db.c.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)

    await _in_request(signals, client, callback)
    assert buffers == [0, 0]
    assert signals.spans() == ()
    assert sum(p.value for p in signals.points()["db.client.mongodb.transaction.retries"]) == 1


async def test_a_buffer_lives_exactly_as_long_as_its_transaction(async_driver_client: Any) -> None:
    """Under the keep sampler the same transaction is buffered while it runs, freed at its end."""
    signals = make_signals(sampler=KeepTransactionsSampler(NEVER))
    client = signals.instrument(async_driver_client)
    db = await _db(client, "keep_rules_buffer")
    buffers: list[int] = []

    async def callback(session: Any) -> None:
        buffers.append(open_buffers())
        await db.c.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)

    await _in_request(signals, client, callback)
    assert buffers == [1]
    assert open_buffers() == 0
    assert signals.spans() == ()  # it matched no rule


async def test_slow_keeps_a_transaction_that_took_longer(async_driver_client: Any) -> None:
    """keep="slow:0" keeps a transaction that committed at once, marked with the rule."""
    signals = make_signals(sampler=KeepTransactionsSampler(NEVER))
    client = signals.instrument(async_driver_client, keep="slow:0")
    db = await _db(client, "keep_rules_slow")

    async def callback(session: Any) -> None:
        await db.c.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)

    await _in_request(signals, client, callback)
    (root,) = _roots(signals.spans())
    assert (root.name, root.attributes[KEPT]) == ("withTransaction", "slow:0")
    (attempt,) = children(signals.spans(), root)
    assert [s.name for s in children(signals.spans(), attempt)] == [
        "update keep_rules_slow.c",
        "commitTransaction admin",
    ]


async def test_a_lone_transaction_that_failed_is_kept_with_its_root(
    async_driver_client: Any,
) -> None:
    """Outside with_transaction: an operation's error, then abort_transaction: the kept root is
    the transaction span itself, with the failed insert and its command under it."""
    signals = make_signals(sampler=KeepTransactionsSampler(NEVER))
    client = signals.instrument(async_driver_client)
    db = await _db(client, "keep_rules_lone")
    tracer = signals.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("request") as request:
        session = await _maybe(client.start_session())
        await _maybe(session.start_transaction())
        with pytest.raises(DuplicateKeyError):
            await db.c.insert_one({"_id": 1}, session=session)
        await session.abort_transaction()
        await _maybe(session.end_session())
    spans = signals.spans()
    (root,) = _roots(spans)
    assert (root.name, root.attributes[KEPT]) == ("transaction", "failed")
    assert root.attributes["db.mongodb.transaction.outcome"] == "aborted"
    assert [link.context for link in root.links] == [request.get_span_context()]
    insert, abort = children(spans, root)
    assert (insert.name, insert.attributes["error.type"]) == ("insert keep_rules_lone.c", "11000")
    assert [s.name for s in children(spans, insert)] == ["insert"]
    assert abort.name == "abortTransaction admin"


async def test_a_retried_commit_is_kept_and_recorded_live_from_the_retry(
    motor_client: Any,
) -> None:
    """Motor's spec mode retries an unknown commit result: the transaction is kept when the
    commit is retried; the first commit is emitted after the fact, the retry recorded live."""
    signals = make_signals(sampler=KeepTransactionsSampler(NEVER))
    client = signals.instrument(motor_client, with_transaction="spec")
    db = await _db(client, "keep_rules_commit")
    await client.admin.command(fail_command("commitTransaction", mode=2, error_code=6))

    async def callback(session: Any) -> None:
        await db.c.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)

    await _in_request(signals, client, callback)
    spans = signals.spans()
    (root,) = _roots(spans)
    assert root.attributes[KEPT] == "retried"
    assert root.attributes["db.mongodb.transaction.commit_attempts"] == 2
    (attempt,) = children(spans, root)
    assert attempt.attributes["db.mongodb.transaction.outcome"] == "committed"
    commits = named(children(spans, attempt), "commitTransaction admin")
    assert len(commits) == 2
    assert [len(children(spans, c)) for c in commits] == [2, 1]  # the driver's own retry, then 1
    assert commits[0].end_time <= commits[1].start_time  # type: ignore[operator]


async def test_events_mode_keeps_commands_as_events(async_driver_client: Any) -> None:
    """command_detail="events": a kept transaction's commands are events on its operations."""
    signals = make_signals(sampler=KeepTransactionsSampler(NEVER))
    client = signals.instrument(async_driver_client, command_detail="events")
    db = await _db(client, "keep_rules_events")
    await client.admin.command(_retry_once(db))

    async def callback(session: Any) -> None:
        await db.c.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)

    await _in_request(signals, client, callback)
    spans = signals.spans()
    assert not [s for s in spans if s.name in ("update", "commitTransaction")]
    first, second = named(spans, "update keep_rules_events.c")
    assert [(e.name, e.attributes["error.type"]) for e in first.events if e.name == "update"] == [
        ("update", "112")
    ]
    assert [e.name for e in second.events] == ["update"]
    assert first.start_time <= first.events[0].timestamp <= first.end_time  # type: ignore[operator]


async def test_the_buffer_cap_is_counted_on_the_root(
    async_driver_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_BUFFERED spans and events, the rest is dropped and counted on the kept root."""
    monkeypatch.setattr("motor_otel.kept.MAX_BUFFERED", 6)
    signals = make_signals(sampler=KeepTransactionsSampler(NEVER))
    client = signals.instrument(async_driver_client)
    db = await _db(client, "keep_rules_cap")
    await client.admin.command(_retry_once(db))

    async def callback(session: Any) -> None:
        for _ in range(3):  # 3 operations + 3 commands per attempt before the failing update
            await db.c.find_one({"_id": 1}, session=session)
        await db.c.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)

    await _in_request(signals, client, callback)
    spans = signals.spans()
    (root,) = _roots(spans)
    assert root.attributes[KEPT] == "retried"
    # buffered: root, attempt 1, 2 finds and 2 of their commands; the rest of attempt 1 dropped
    assert root.attributes["db.mongodb.transaction.kept_dropped"] > 0
    first, second = named(spans, "transaction")
    assert len(children(spans, first)) == 2
    assert len(children(spans, second)) == 5  # live: 3 finds, the update, the commit


async def test_the_application_sees_its_unsampled_span_while_buffered(
    async_driver_client: Any,
) -> None:
    """Inside a buffered transaction's callback the current span is still the request's, not
    recording: buffering never makes the app's code think it is traced."""
    signals = make_signals(sampler=KeepTransactionsSampler(NEVER))
    client = signals.instrument(async_driver_client)
    db = await _db(client, "keep_rules_current")
    seen: list[tuple[bool, int]] = []
    tracer = signals.tracer_provider.get_tracer("app")

    async def callback(session: Any) -> None:
        current = trace.get_current_span()
        seen.append((current.is_recording(), current.get_span_context().span_id))
        await db.c.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)

    with tracer.start_as_current_span("request") as request:
        session = await _maybe(client.start_session())
        try:
            await session.with_transaction(callback)
        finally:
            await _maybe(session.end_session())
    assert seen == [(False, request.get_span_context().span_id)]


async def test_commit_not_retried_keeps_what_motors_loop_let_escape(motor_client: Any) -> None:
    """keep="commit_not_retried" alone: Motor's own loop lets a transient commit error escape;
    the transaction is kept by that rule, its root carrying the commit_not_retried event."""
    signals = make_signals(sampler=KeepTransactionsSampler(NEVER))
    client = signals.instrument(motor_client, keep="commit_not_retried")
    db = await _db(client, "keep_rules_not_retried")
    await client.admin.command(fail_command("commitTransaction", error_code=112, error_labels=TTE))

    async def callback(session: Any) -> None:
        await db.c.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)

    with pytest.raises(OperationFailure):
        await _in_request(signals, client, callback)
    spans = signals.spans()
    (root,) = _roots(spans)
    assert root.attributes[KEPT] == "commit_not_retried"
    assert [e.name for e in root.events if e.name != "exception"] == ["commit_not_retried"]
    (attempt,) = children(spans, root)
    assert [s.name for s in children(spans, attempt)] == [
        "update keep_rules_not_retried.c",
        "commitTransaction admin",
    ]


async def test_an_unkept_transaction_builds_no_command_attributes(
    async_driver_client: Any,
) -> None:
    """Command attributes, query text and hooks are built only for a transaction that is kept,
    on its exported spans; a buffer holds no span of ours once its transaction has ended."""
    signals = make_signals(sampler=KeepTransactionsSampler(NEVER))
    hooked: list[tuple[str, str, bool]] = []

    def hook(span: Any, event: Any) -> None:
        hooked.append((event.command_name, type(event).__name__, span.is_recording()))

    hooks = {"request_hook": hook, "response_hook": hook, "failed_hook": hook}
    client = signals.instrument(async_driver_client, query_text_max_length=200, **hooks)
    db = await _db(client, "keep_rules_lean")

    async def callback(session: Any) -> None:
        await db.c.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)

    await _in_request(signals, client, callback)  # commits at once: matches no rule
    assert (hooked, signals.spans()) == ([], ())
    assert _buffered_and_events() == ([], [])

    await client.admin.command(_retry_once(db))
    await _in_request(signals, client, callback)  # retried: kept
    started, succeeded, failed = (
        "CommandStartedEvent",
        "CommandSucceededEvent",
        "CommandFailedEvent",
    )
    assert hooked == [
        ("update", started, True),  # the first attempt's, replayed on its kept spans
        ("update", failed, True),
        ("abortTransaction", started, True),
        ("abortTransaction", failed, True),  # NoSuchTransaction: the server aborted it
        ("update", started, True),  # the retry's, live
        ("update", succeeded, True),
        ("commitTransaction", started, True),
        ("commitTransaction", succeeded, True),
    ]
    first, second = named(signals.spans(), "update")  # the replayed one is exported first
    for update in (first, second):
        assert update.attributes["db.query.text"].startswith('{"update": "c", "ordered": "?"')
        assert isinstance(update.attributes["db.mongodb.driver_connection_id"], int)
    assert (first.status.status_code, second.status.status_code) == (
        StatusCode.ERROR,
        StatusCode.UNSET,
    )
    assert _buffered_and_events() == ([], [])


def _buffered_and_events() -> tuple[list[Any], list[Any]]:
    """Spans still buffering, and the driver's command events (and so documents) still held."""
    gc.collect()
    alive = gc.get_objects()
    events = (CommandStartedEvent, CommandSucceededEvent)  # type(): a dead proxy may be there
    return [o for o in alive if type(o) is BufferedSpan and buffered(o)], [
        o for o in alive if type(o) in events
    ]
