"""Transaction tracing through Motor against a real wire-protocol server."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from bson.timestamp import Timestamp
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorClientSession
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from pymongo import ReadPreference, monitoring
from pymongo.errors import OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from motor_otel import InstrumentedAsyncIOMotorClientSession, instrument_client
from motor_otel.testing import fail_command
from tests.conftest import CLIENT_OPTIONS
from tests.spans import ancestors, children, named

TRANSIENT_CALLBACK = fail_command(
    "insert", error_code=112, error_labels=["TransientTransactionError"]
)
# Twice: PyMongo retries a retryable commit error once itself, then surfaces the unknown result.
UNKNOWN_COMMIT = fail_command("commitTransaction", mode=2, error_code=91)


@pytest.fixture
async def client_factory(mongodb_uri: str) -> AsyncIterator[Callable[..., AsyncIOMotorClient]]:
    clients: list[AsyncIOMotorClient] = []

    def make(**options: Any) -> AsyncIOMotorClient:
        client: AsyncIOMotorClient = AsyncIOMotorClient(
            mongodb_uri, **{**CLIENT_OPTIONS, **options}
        )
        clients.append(client)
        return client

    yield make
    if clients:
        await clients[0].admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    for client in clients:
        client.close()


async def committed(client: AsyncIOMotorClient) -> int:
    status = await client.admin.command("serverStatus")
    return int(status["transactions"]["totalCommitted"])


async def test_spec_mode_retries_callback_and_commit(
    client_factory: Callable[..., AsyncIOMotorClient],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """Transient callback error + unknown commit result: 2 attempts, 2 commits, one on the server."""
    client = client_factory()
    instrument_client(client, tracer_provider=tracer_provider, with_transaction="spec")
    coll = client.tx_spec.items
    await coll.drop()
    before = await committed(client)
    await client.admin.command(TRANSIENT_CALLBACK)
    calls = 0

    async def callback(session: AsyncIOMotorClientSession) -> str:
        nonlocal calls
        calls += 1
        if calls == 2:  # arm the commit failure once the transient insert has happened
            await client.admin.command(UNKNOWN_COMMIT)
        await coll.insert_one({"call": calls}, session=session)
        return "value"

    async with await client.start_session() as session:
        assert await session.with_transaction(callback) == "value"
    assert await committed(client) - before == 1
    assert [d["call"] for d in await coll.find({}, {"_id": 0}).to_list(None)] == [2]

    spans = exporter.get_finished_spans()
    (wt,) = named(spans, "withTransaction")
    assert wt.attributes["db.mongodb.transaction.attempts"] == 2
    assert wt.attributes["db.mongodb.transaction.commit_attempts"] == 2
    assert wt.attributes["db.mongodb.transaction.outcome"] == "committed"
    attempts = [s for s in children(spans, wt) if s.name == "transaction"]
    assert [a.attributes["db.mongodb.transaction.attempt"] for a in attempts] == [1, 2]
    assert [a.attributes["db.mongodb.transaction.outcome"] for a in attempts] == [
        "aborted",
        "committed",
    ]
    assert "TransientTransactionError" in attempts[0].attributes["db.mongodb.error_labels"]
    assert "UnknownTransactionCommitResult" in attempts[1].attributes["db.mongodb.error_labels"]
    commits = [s for s in children(spans, attempts[1]) if s.name == "commitTransaction admin"]
    assert len(commits) == 2
    failed_commit = children(spans, commits[0])
    assert [c.name for c in failed_commit] == ["commitTransaction", "commitTransaction"]
    assert failed_commit[0].attributes["db.response.status_code"] == "91"
    assert "cluster_time" in " ".join(wt.attributes)  # times from the session at the end
    assert (
        wt.attributes["db.mongodb.cluster_time"]
        >= attempts[1].attributes["db.mongodb.cluster_time"]
    )

    # Labels and exception events are on the failed operations and commands too.
    (failed_insert,) = [s for s in children(spans, attempts[0]) if s.name == "insert tx_spec.items"]
    (failed_insert_command,) = children(spans, failed_insert)
    assert failed_insert_command.attributes["db.response.status_code"] == "112"
    _assert_failed(failed_insert, ("TransientTransactionError",))
    _assert_failed(failed_insert_command, ("TransientTransactionError",))
    _assert_failed(commits[0], ("RetryableWriteError", "UnknownTransactionCommitResult"))
    for command in failed_commit:
        assert command.attributes["db.response.status_code"] == "91"
        _assert_failed(command, ("RetryableWriteError",))
    assert StatusCode.UNSET is commits[1].status.status_code
    assert "db.mongodb.error_labels" not in commits[1].attributes


def _assert_failed(span: ReadableSpan, labels: tuple[str, ...]) -> None:
    """ERROR status, the labels, and one exception event carrying the same labels."""
    assert span.attributes is not None
    assert StatusCode.ERROR is span.status.status_code, span.name
    assert labels == tuple(span.attributes["db.mongodb.error_labels"]), span.name
    (event,) = [e for e in span.events if e.name == "exception"]
    assert event.attributes is not None
    assert labels == tuple(event.attributes["db.mongodb.error_labels"]), span.name


async def _run_with_commit_failure(
    client: AsyncIOMotorClient,
) -> tuple[str, Any, int]:
    """Run one with_transaction whose first commit fails with an unknown-result error."""
    coll = client.tx_side.items
    before = await committed(client)
    await client.admin.command(UNKNOWN_COMMIT)

    async def callback(session: AsyncIOMotorClientSession) -> int:
        await coll.insert_one({"x": 1}, session=session)
        return 42

    async with await client.start_session() as session:
        try:
            result: tuple[str, Any] = ("returned", await session.with_transaction(callback))
        except PyMongoError as exc:
            result = ("raised", (type(exc), getattr(exc, "code", None), sorted(exc._error_labels)))
    await client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    return result[0], result[1], await committed(client) - before


async def test_plain_driver_and_spec_side_by_side(
    client_factory: Callable[..., AsyncIOMotorClient],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """Same fail points: plain Motor == "driver" mode (commit not retried); "spec" retries it."""
    plain = await _run_with_commit_failure(client_factory())
    driver_client = client_factory()
    instrument_client(driver_client, tracer_provider=tracer_provider)
    driver = await _run_with_commit_failure(driver_client)
    spec_client = client_factory()
    instrument_client(spec_client, tracer_provider=tracer_provider, with_transaction="spec")
    spec = await _run_with_commit_failure(spec_client)

    assert plain[0] == "raised"  # Motor 3.7 never retries a failed first commit
    assert driver == plain
    assert spec == ("returned", 42, 1)

    wts = named(exporter.get_finished_spans(), "withTransaction")
    driver_wt, spec_wt = wts
    events = [e for e in driver_wt.events if e.name == "commit_not_retried"]
    assert len(events) == 1
    assert "UnknownTransactionCommitResult" in events[0].attributes["db.mongodb.error_labels"]
    assert driver_wt.attributes["db.mongodb.transaction.outcome"] == "failed"
    assert spec_wt.attributes["db.mongodb.transaction.commit_attempts"] == 2
    # An unknown commit is red only if nothing committed it after all.
    (driver_attempt,) = [s for s in children(exporter.get_finished_spans(), driver_wt)]
    (spec_attempt,) = [s for s in children(exporter.get_finished_spans(), spec_wt)]
    assert driver_attempt.status.status_code is StatusCode.ERROR
    assert spec_attempt.status.status_code is StatusCode.UNSET
    assert spec_attempt.attributes["db.mongodb.transaction.outcome"] == "committed"
    assert [e.name for e in spec_attempt.events if e.name == "exception"] == ["exception"]
    assert not [e for e in spec_wt.events if e.name == "commit_not_retried"]


async def test_driver_mode_keeps_exceptions_and_results(
    client_factory: Callable[..., AsyncIOMotorClient],
    tracer_provider: TracerProvider,
) -> None:
    """In the default mode a non-transient callback error reaches the caller unchanged."""
    client = client_factory()
    instrument_client(client, tracer_provider=tracer_provider)
    coll = client.tx_dup.items
    await coll.drop()
    await coll.insert_one({"_id": 1})

    async def callback(session: AsyncIOMotorClientSession) -> None:
        await coll.insert_one({"_id": 1}, session=session)

    async with await client.start_session() as session:
        with pytest.raises(OperationFailure) as info:
            await session.with_transaction(callback)
    assert info.value.code == 11000


async def test_500_concurrent_transactions_are_never_misparented(
    client_factory: Callable[..., AsyncIOMotorClient],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """Every command span's ancestor transaction carries the command's own lsid and txnNumber."""
    client = client_factory(maxPoolSize=50)
    instrument_client(client, tracer_provider=tracer_provider)
    coll = client.tx_many.items
    await coll.drop()

    async def one(i: int) -> None:
        async with await client.start_session() as session:
            await session.with_transaction(lambda s: coll.insert_one({"_id": i}, session=s))

    await asyncio.gather(*(one(i) for i in range(500)))
    assert await coll.count_documents({}) == 500
    spans = exporter.get_finished_spans()
    checked = 0
    for span in spans:
        if span.name not in ("insert", "commitTransaction"):
            continue
        (attempt,) = [a for a in ancestors(spans, span) if a.name == "transaction"]
        assert attempt.attributes["db.mongodb.lsid"] == span.attributes["db.mongodb.lsid"]
        assert (
            attempt.attributes["db.mongodb.txn_number"] == span.attributes["db.mongodb.txn_number"]
        )
        checked += 1
    assert checked == 1000
    assert len(named(spans, "transaction")) == 500


async def test_commands_from_another_task_nest_under_the_attempt(
    client_factory: Callable[..., AsyncIOMotorClient],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """start_transaction in one task, writes in another task: nested under the attempt, linked."""
    client = client_factory()
    instrument_client(client, tracer_provider=tracer_provider)
    coll = client.tx_tasks.items
    tracer = tracer_provider.get_tracer("test")
    session = await client.start_session()
    session.start_transaction()

    async def writer() -> None:
        with tracer.start_as_current_span("worker"):
            await coll.insert_one({"w": 1}, session=session)

    await asyncio.create_task(writer())
    await session.commit_transaction()
    await session.end_session()

    spans = exporter.get_finished_spans()
    (attempt,) = named(spans, "transaction")
    (op,) = named(spans, "insert tx_tasks.items")
    (worker,) = named(spans, "worker")
    assert op.parent is not None and op.parent.span_id == attempt.context.span_id
    assert [link.context.span_id for link in op.links] == [worker.context.span_id]
    (cmd,) = named(spans, "insert")
    assert cmd.parent is not None and cmd.parent.span_id == op.context.span_id
    assert attempt.attributes["db.mongodb.transaction.outcome"] == "committed"


async def test_command_from_a_thread_without_context(
    client_factory: Callable[..., AsyncIOMotorClient],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    mongodb_uri: str,
) -> None:
    """A command sent from a bare thread still lands under the attempt by lsid + txnNumber."""
    client = client_factory()
    instrument_client(client, tracer_provider=tracer_provider)
    session = await client.start_session()
    session.start_transaction()
    # Send the first statement through PyMongo directly from a thread with an empty context.
    sync_coll = client.delegate.tx_thread.items
    thread = threading.Thread(
        target=sync_coll.insert_one, args=({"t": 1},), kwargs={"session": session.delegate}
    )
    thread.start()
    await asyncio.to_thread(thread.join)
    await session.commit_transaction()
    await session.end_session()
    spans = exporter.get_finished_spans()
    (attempt,) = named(spans, "transaction")
    (cmd,) = named(spans, "insert")
    assert cmd.parent is not None and cmd.parent.span_id == attempt.context.span_id


async def test_no_context_manager_style(
    client_factory: Callable[..., AsyncIOMotorClient],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """start_transaction() then commit/abort without `async with` gives one span per transaction."""
    client = client_factory()
    instrument_client(client, tracer_provider=tracer_provider)
    coll = client.tx_plain.items
    session = await client.start_session()
    assert isinstance(session, InstrumentedAsyncIOMotorClientSession)
    assert isinstance(session, AsyncIOMotorClientSession)
    session.start_transaction()
    await coll.insert_one({"a": 1}, session=session)
    await session.abort_transaction()
    session.start_transaction()
    await coll.insert_one({"a": 2}, session=session)
    await session.commit_transaction()
    session.start_transaction()
    await coll.insert_one({"a": 3}, session=session)
    await session.end_session()  # ends the open transaction by aborting it
    spans = exporter.get_finished_spans()
    outcomes = [s.attributes["db.mongodb.transaction.outcome"] for s in named(spans, "transaction")]
    assert outcomes == ["aborted", "committed", "aborted"]
    for attempt in named(spans, "transaction"):
        names = [c.name for c in children(spans, attempt)]
        assert names[0] == "insert tx_plain.items"
        assert names[1] in ("abortTransaction admin", "commitTransaction admin")
    assert [d["a"] for d in await coll.find({}, {"_id": 0}).to_list(None)] == [2]


def _as_int64(timestamp: Timestamp) -> int:
    """A BSON timestamp as the attributes carry it: seconds << 32 | increment."""
    return (timestamp.time << 32) | timestamp.inc


class _Replies(monitoring.CommandListener):
    """The replies a client received, by command name, in order."""

    def __init__(self) -> None:
        self.replies: dict[str, list[Any]] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self.replies.setdefault(event.command_name, []).append(event.reply)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_command_spans_carry_the_reply_times(
    client_factory: Callable[..., AsyncIOMotorClient],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """Each command span has the reply's operationTime and $clusterTime as int64, increasing."""
    replies = _Replies()
    client = client_factory(event_listeners=[replies])
    instrument_client(client, tracer_provider=tracer_provider)
    coll = client.tx_times.items
    for i in range(3):  # writes: each one moves a real server's clock too
        await coll.insert_one({"i": i})

    spans = named(exporter.get_finished_spans(), "insert")
    expected = [
        (_as_int64(r["operationTime"]), _as_int64(r["$clusterTime"]["clusterTime"]))
        for r in replies.replies["insert"]
    ]
    actual = [
        (s.attributes["db.mongodb.operation_time"], s.attributes["db.mongodb.cluster_time"])
        for s in spans
        if s.attributes is not None
    ]
    assert expected == actual
    for series in zip(*actual, strict=True):  # operation times, then cluster times
        assert all(a < b for a, b in itertools.pairwise(series)), series


async def test_transaction_spans_carry_the_session_times_at_the_end(
    client_factory: Callable[..., AsyncIOMotorClient],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """withTransaction and its attempt carry the times of the last reply: the commit's."""
    client = client_factory()
    instrument_client(client, tracer_provider=tracer_provider)
    coll = client.tx_times.items
    async with await client.start_session() as session:
        await session.with_transaction(lambda s: coll.insert_one({"t": 1}, session=s))
        session_times = (
            _as_int64(session.operation_time),
            _as_int64(session.cluster_time["clusterTime"]),
        )

    spans = exporter.get_finished_spans()
    (wt,) = named(spans, "withTransaction")
    (attempt,) = named(spans, "transaction")
    (commit,) = named(spans, "commitTransaction")
    (insert,) = named(spans, "insert")
    times = [
        (s.attributes["db.mongodb.operation_time"], s.attributes["db.mongodb.cluster_time"])
        for s in (commit, attempt, wt)
        if s.attributes is not None
    ]
    assert [session_times] * 3 == times
    assert insert.attributes is not None
    assert insert.attributes["db.mongodb.operation_time"] < session_times[0]


READ_CONCERN = ReadConcern("majority")
WRITE_CONCERN = WriteConcern("majority", wtimeout=5000)
OPTIONS: dict[str, Any] = {
    "read_concern": READ_CONCERN,
    "write_concern": WRITE_CONCERN,
    "read_preference": ReadPreference.PRIMARY,
    "max_commit_time_ms": 1500,
}
OPTION_ATTRIBUTES = {
    "db.mongodb.transaction.read_concern": "majority",
    "db.mongodb.transaction.write_concern": {"w=majority", "wtimeout=5000"},  # in any order
    "db.mongodb.transaction.read_preference": "primary",
    "db.mongodb.transaction.max_commit_time_ms": 1500,
}


async def _start_commit(client: AsyncIOMotorClient, options: dict[str, Any]) -> None:
    async with await client.start_session() as session:
        session.start_transaction(**options)
        await client.tx_options.items.insert_one({"o": 1}, session=session)
        await session.commit_transaction()


async def _with_transaction(client: AsyncIOMotorClient, options: dict[str, Any]) -> None:
    coll = client.tx_options.items
    async with await client.start_session() as session:
        await session.with_transaction(lambda s: coll.insert_one({"o": 1}, session=s), **options)


@pytest.mark.parametrize(
    ("mode", "run"),
    [
        ("driver", _start_commit),
        ("driver", _with_transaction),
        ("spec", _with_transaction),
    ],
    ids=["start_transaction", "with_transaction driver", "with_transaction spec"],
)
async def test_transaction_options_become_attempt_attributes(
    mode: str,
    run: Callable[[AsyncIOMotorClient, dict[str, Any]], Coroutine[Any, Any, None]],
    client_factory: Callable[..., AsyncIOMotorClient],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """Transaction options given are attributes of the attempt span; none given, none there."""
    client = client_factory()
    instrument_client(client, tracer_provider=tracer_provider, with_transaction=mode)
    await run(client, OPTIONS)
    await run(client, {})

    with_options, without = named(exporter.get_finished_spans(), "transaction")
    assert with_options.attributes is not None and without.attributes is not None
    found = {k: v for k, v in with_options.attributes.items() if k in OPTION_ATTRIBUTES}
    write_concern = "db.mongodb.transaction.write_concern"
    found[write_concern] = set(str(found.get(write_concern)).split(","))
    expected = OPTION_ATTRIBUTES
    assert expected == found
    assert not [k for k in without.attributes if k in OPTION_ATTRIBUTES]
    assert with_options.attributes["db.mongodb.transaction.outcome"] == "committed"


async def test_leaving_async_with_aborts_the_open_transaction(
    client_factory: Callable[..., AsyncIOMotorClient],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """Leaving `async with` with a transaction open: a traced abort, attempt aborted, no commit."""
    client = client_factory()
    instrument_client(client, tracer_provider=tracer_provider)
    coll = client.tx_exit.items
    await coll.drop()
    before = await committed(client)
    async with await client.start_session() as session:
        session.start_transaction()
        await coll.insert_one({"a": 1}, session=session)
    assert await committed(client) - before == 0
    assert await coll.count_documents({}) == 0

    spans = exporter.get_finished_spans()
    (attempt,) = named(spans, "transaction")  # finished: the span was ended
    assert attempt.attributes is not None
    assert attempt.attributes["db.mongodb.transaction.outcome"] == "aborted"
    assert StatusCode.UNSET is attempt.status.status_code
    operations = children(spans, attempt)
    assert [s.name for s in operations] == ["insert tx_exit.items", "abortTransaction admin"]
    (abort,) = children(spans, operations[1])
    assert abort.attributes is not None
    assert abort.name == "abortTransaction"
    assert StatusCode.UNSET is abort.status.status_code
    assert (
        attempt.attributes["db.mongodb.lsid"],
        attempt.attributes["db.mongodb.txn_number"],
    ) == (abort.attributes["db.mongodb.lsid"], abort.attributes["db.mongodb.txn_number"])
