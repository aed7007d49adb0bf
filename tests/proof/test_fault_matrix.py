"""Fault matrix: every failure mode of with_transaction, through three drivers, with and without us.

Each scenario runs twice per driver on the same fail points: once on a plain client and once on a
client given ``instrument_client`` (default ``"driver"`` mode). The caller must see the same thing
both times (return value or exception type/code/labels, callback calls, commands on the wire,
server-side commits, documents left behind); the instrumented run must also tell the story in
spans. Motor 3.7 never retries a failed first commit (see tests/spec/test_spec.py): the matrix
records that deviation unchanged and checks the ``commit_not_retried`` event that exposes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pymongo
import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from pymongo import monitoring

from motor_otel import InstrumentedAsyncIOMotorClientSession, instrument_client
from tests.conftest import CLIENT_OPTIONS
from tests.proof.conftest import FakeTime
from tests.spans import ancestors, children, named

DB = "fault_matrix"
TTE = "TransientTransactionError"
UTCR = "UnknownTransactionCommitResult"
RWE = "RetryableWriteError"

Observed = dict[str, Any]
ClockFactory = Callable[[float], contextlib.AbstractContextManager[FakeTime]]


@dataclass(frozen=True)
class Expect:
    """What one driver family does in a scenario, and what our spans must say about it."""

    attempts: tuple[str, ...]  # outcome of each ``transaction`` span, in order (or see repeated)
    outcome: str  # the ``withTransaction`` span's outcome
    raises: str | None = None  # exception type the caller sees; None: a return value
    documents: tuple[int, ...] = ()  # the callback calls whose insert is in the collection after
    commit_attempts: int | None = 0  # None: two or more (a loop bounded by the 120 s limit)
    labels: frozenset[str] = frozenset()  # labels the ``withTransaction`` span must carry
    commit_not_retried: bool = False
    repeated: bool = False  # attempts[0], two or more times (a loop bounded by the 120 s limit)


@dataclass(frozen=True)
class Scenario:
    """One fault: a fail point, what the callback does, and what each driver family does."""

    name: str
    pymongo: Expect
    motor: Expect | None = None  # None: Motor behaves like PyMongo here
    fail_on: str | None = None
    fail_data: dict[str, Any] = field(default_factory=dict)
    mode: Any = field(default_factory=lambda: {"times": 1})
    steps: tuple[str, ...] = ("insert",)
    clock_step: float | None = None
    end_session_first: bool = False
    asyncio_only: bool = False

    def expect(self, driver: str) -> Expect:
        return self.motor if driver == "motor" and self.motor is not None else self.pymongo

    def fail_point(self) -> dict[str, Any] | None:
        if self.fail_on is None:
            return None
        data = {"failCommands": [self.fail_on], **self.fail_data}
        return {"configureFailPoint": "failCommand", "mode": self.mode, "data": data}


# HostUnreachable: retryable, so "unknown" on commit, but not a state change that would make the
# driver wait for a new heartbeat (as ShutdownInProgress or NotWritablePrimary do) on every retry.
HOST_UNREACHABLE = {"errorCode": 6}
COMMITTED = Expect(("committed",), "committed", documents=(1,), commit_attempts=1)


def motor_commit_raises(raises: str, labels: set[str], documents: tuple[int, ...] = ()) -> Expect:
    """Motor 3.7: the first commit's error escapes with_transaction, visible as an event."""
    return Expect(
        ("failed",),
        "failed",
        raises=raises,
        documents=documents,
        commit_attempts=1,
        labels=frozenset(labels),
        commit_not_retried=True,
    )


SCENARIOS = [
    Scenario(
        "transient_error_in_callback",
        Expect(
            ("aborted", "committed"),
            "committed",
            documents=(2,),
            commit_attempts=1,
            labels=frozenset({TTE}),
        ),
        fail_on="insert",
        fail_data={"errorCode": 112, "errorLabels": [TTE]},
    ),
    Scenario(  # both loops retry until the (fake) clock passes 120 s; only PyMongo converts the error
        "transient_error_in_callback_until_time_limit",
        Expect(
            ("aborted",), "failed", raises="NetworkTimeout", labels=frozenset({TTE}), repeated=True
        ),
        motor=Expect(
            ("aborted",),
            "failed",
            raises="OperationFailure",
            labels=frozenset({TTE}),
            repeated=True,
        ),
        fail_on="insert",
        fail_data={"errorCode": 112, "errorLabels": [TTE]},
        mode="alwaysOn",
        clock_step=10.0,
    ),
    Scenario(
        "transient_error_in_commit",
        Expect(
            ("failed", "committed"),
            "committed",
            documents=(2,),
            commit_attempts=2,
            labels=frozenset({TTE}),
        ),
        motor=motor_commit_raises("OperationFailure", {TTE}),
        fail_on="commitTransaction",
        fail_data={"errorCode": 251, "errorLabels": [TTE]},
    ),
    Scenario(  # twice: PyMongo retries a retryable commit error once itself, then says "unknown"
        "unknown_commit_result_once",
        Expect(
            ("committed",),
            "committed",
            documents=(1,),
            commit_attempts=2,
            labels=frozenset({UTCR, RWE}),
        ),
        motor=motor_commit_raises("OperationFailure", {UTCR, RWE}),
        fail_on="commitTransaction",
        fail_data=HOST_UNREACHABLE,
        mode={"times": 2},
    ),
    Scenario(  # PyMongo retries the commit until the (fake) clock passes 120 s, then times out
        "unknown_commit_result_until_time_limit",
        Expect(
            ("failed",),
            "failed",
            raises="NetworkTimeout",
            commit_attempts=None,
            labels=frozenset({UTCR, RWE}),
        ),
        motor=motor_commit_raises("OperationFailure", {UTCR, RWE}),
        fail_on="commitTransaction",
        fail_data=HOST_UNREACHABLE,
        mode="alwaysOn",
        clock_step=10.0,
    ),
    Scenario(  # the driver's own retryable-write retry hides one dropped connection
        "network_error_mid_commit",
        COMMITTED,
        fail_on="commitTransaction",
        fail_data={"closeConnection": True},
    ),
    Scenario(  # labelled "unknown", but MaxTimeMSExpired is never retried, by any driver
        "max_time_ms_expired_on_commit",
        Expect(
            ("failed",),
            "failed",
            raises="ExecutionTimeout",
            commit_attempts=1,
            labels=frozenset({UTCR}),
        ),
        fail_on="commitTransaction",
        fail_data={"errorCode": 50},
    ),
    Scenario(  # the server commits, then reports a write-concern timeout: "unknown", retried
        "write_concern_timeout_on_commit",
        Expect(
            ("committed",),
            "committed",
            documents=(1,),
            commit_attempts=2,
            labels=frozenset({UTCR}),
        ),
        # Motor's caller gets an error for a transaction that is in fact committed.
        motor=motor_commit_raises("WTimeoutError", {UTCR}, documents=(1,)),
        fail_on="commitTransaction",
        fail_data={
            "writeConcernError": {
                "code": 64,
                "codeName": "WriteConcernFailed",
                "errmsg": "waiting for replication timed out",
                "errInfo": {"wtimeout": True},
            }
        },
    ),
    Scenario(  # the server commits, then reports an unsatisfiable write concern: not retried
        "write_concern_error_on_commit",
        Expect(
            ("failed",), "failed", raises="WriteConcernError", documents=(1,), commit_attempts=1
        ),
        fail_on="commitTransaction",
        fail_data={
            "writeConcernError": {
                "code": 100,
                "codeName": "UnsatisfiableWriteConcern",
                "errmsg": "Not enough data-bearing nodes",
            }
        },
    ),
    Scenario("callback_commits_itself", COMMITTED, steps=("insert", "commit")),
    Scenario("callback_aborts_itself", Expect(("aborted",), "aborted"), steps=("insert", "abort")),
    Scenario(
        "callback_raises_value_error",
        Expect(("aborted",), "failed", raises="ValueError"),
        steps=("insert", "raise"),
    ),
    Scenario(
        "task_cancelled_mid_transaction",
        Expect(("aborted",), "failed", raises="CancelledError"),
        steps=("insert", "block"),
        asyncio_only=True,
    ),
    Scenario(
        "session_used_after_end_session",
        Expect((), "failed", raises="InvalidOperation"),
        end_session_first=True,
    ),
]

DRIVERS = ("motor", "pymongo_async", "pymongo_sync")
CASES = [
    pytest.param(driver, scenario, id=f"{scenario.name}-{driver}")
    for scenario in SCENARIOS
    for driver in DRIVERS
    if not (scenario.asyncio_only and driver == "pymongo_sync")
]


class CommandRecorder(monitoring.CommandListener):
    """The command names a client sends while ``active``: what the application did on the wire."""

    def __init__(self) -> None:
        self.active = False
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.active:
            self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def describe(exc: BaseException) -> tuple[Any, ...]:
    """What a caller can tell about an exception: type, code, error labels."""
    labels = sorted(getattr(exc, "_error_labels", None) or ())
    return ("raised", type(exc).__qualname__, getattr(exc, "code", None), labels)


@dataclass
class Run:
    """State of one run of one scenario, shared by the async and sync drivers."""

    scenario: Scenario
    collection: str
    recorder: CommandRecorder = field(default_factory=CommandRecorder)
    calls: int = 0

    def observed(
        self, result: tuple[Any, ...], commits: int | None, documents: Sequence[Any]
    ) -> Observed:
        return {
            "result": result,
            "calls": self.calls,
            "commands": self.recorder.names,
            "commits": commits,
            "documents": sorted(d["call"] for d in documents),
        }


async def run_async(
    driver: str,
    run: Run,
    uri: str,
    provider: TracerProvider | None,
    commits: Callable[[], int | None],
    fake_clock: ClockFactory,
    mode: str = "driver",
) -> Observed:
    """One scenario through Motor or AsyncMongoClient."""
    options = {**CLIENT_OPTIONS, "event_listeners": [run.recorder]}
    client: Any = (
        AsyncIOMotorClient(uri, **options)
        if driver == "motor"
        else pymongo.AsyncMongoClient(uri, **options)
    )
    if provider is not None:
        instrument_client(client, tracer_provider=provider, with_transaction=mode)
    scenario = run.scenario
    coll = client[DB][run.collection]
    reached = asyncio.Event()
    try:
        await coll.drop()
        before = commits()

        async def callback(session: Any) -> tuple[str, int]:
            run.calls += 1
            for step in scenario.steps:
                if step == "insert":
                    await coll.insert_one({"call": run.calls}, session=session)
                elif step == "commit":
                    await session.commit_transaction()
                elif step == "abort":
                    await session.abort_transaction()
                elif step == "raise":
                    raise ValueError("the application's own error")
                elif step == "block":
                    reached.set()
                    await asyncio.Event().wait()  # until cancelled
            return ("done", run.calls)

        session = await client.start_session() if driver == "motor" else client.start_session()
        if scenario.end_session_first:
            await session.end_session()

        async def body() -> Any:
            if scenario.end_session_first:
                return await session.with_transaction(callback)
            async with session:
                return await session.with_transaction(callback)

        fail_point = scenario.fail_point()
        if fail_point is not None:
            await client.admin.command(fail_point)
        run.recorder.active = True
        clock = fake_clock(scenario.clock_step) if scenario.clock_step else contextlib.nullcontext()
        with clock as fake:
            if fake is not None and isinstance(session, InstrumentedAsyncIOMotorClientSession):
                session.clock = fake.monotonic  # "spec" mode's own loop reads the session's clock
            task = asyncio.create_task(body())
            if "block" in scenario.steps:  # cancel once the callback is inside the transaction
                waiter = asyncio.create_task(reached.wait())
                await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                task.cancel()
            try:
                result: tuple[Any, ...] = ("returned", await task)
            except (Exception, asyncio.CancelledError) as exc:
                result = describe(exc)
        run.recorder.active = False
        after = commits()
        documents = await coll.find({}, {"_id": 0}).to_list(None)
    finally:
        run.recorder.active = False
        await client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        if driver == "motor":
            client.close()
        else:
            await client.close()
    committed = None if before is None or after is None else after - before
    return run.observed(result, committed, documents)


def run_sync(
    run: Run,
    uri: str,
    provider: TracerProvider | None,
    commits: Callable[[], int | None],
    fake_clock: ClockFactory,
) -> Observed:
    """One scenario through the sync MongoClient."""
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(
        uri, **CLIENT_OPTIONS, event_listeners=[run.recorder]
    )
    if provider is not None:
        instrument_client(client, tracer_provider=provider)
    scenario = run.scenario
    coll = client[DB][run.collection]
    try:
        coll.drop()
        before = commits()

        def callback(session: Any) -> tuple[str, int]:
            run.calls += 1
            for step in scenario.steps:
                if step == "insert":
                    coll.insert_one({"call": run.calls}, session=session)
                elif step == "commit":
                    session.commit_transaction()
                elif step == "abort":
                    session.abort_transaction()
                elif step == "raise":
                    raise ValueError("the application's own error")
            return ("done", run.calls)

        session = client.start_session()
        if scenario.end_session_first:
            session.end_session()
        fail_point = scenario.fail_point()
        if fail_point is not None:
            client.admin.command(fail_point)
        run.recorder.active = True
        clock = fake_clock(scenario.clock_step) if scenario.clock_step else contextlib.nullcontext()
        with clock:
            try:
                if scenario.end_session_first:
                    result: tuple[Any, ...] = ("returned", session.with_transaction(callback))
                else:
                    with session:
                        result = ("returned", session.with_transaction(callback))
            except Exception as exc:
                result = describe(exc)
        run.recorder.active = False
        after = commits()
        documents = list(coll.find({}, {"_id": 0}))
    finally:
        run.recorder.active = False
        client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        client.close()
    committed = None if before is None or after is None else after - before
    return run.observed(result, committed, documents)


async def observe(
    driver: str,
    scenario: Scenario,
    label: str,
    uri: str,
    provider: TracerProvider | None,
    commits: Callable[[], int | None],
    fake_clock: ClockFactory,
    mode: str = "driver",
) -> Observed:
    run = Run(scenario, f"{scenario.name}_{driver}_{label}")
    if driver == "pymongo_sync":
        return await asyncio.to_thread(run_sync, run, uri, provider, commits, fake_clock)
    return await run_async(driver, run, uri, provider, commits, fake_clock, mode)


def exception_events(span: ReadableSpan) -> list[tuple[str, list[str]]]:
    """(short exception type, error labels) of each ``exception`` event on the span."""
    found = []
    for event in span.events:
        if event.name == "exception":
            attrs = event.attributes or {}
            kind = str(attrs["exception.type"]).rsplit(".", 1)[-1]
            found.append((kind, sorted(attrs.get("db.mongodb.error_labels", ()))))
    return found


def check_result(expect: Expect, observed: Observed) -> None:
    """The driver did what the table says (this is the driver's behaviour, not ours)."""
    result = observed["result"]
    if expect.raises is None:
        assert result == ("returned", ("done", observed["calls"]))
    else:
        assert result[:2] == ("raised", expect.raises)
    assert tuple(observed["documents"]) == expect.documents
    if observed["commits"] is not None:  # the server counted; else the documents must do
        assert observed["commits"] == len(expect.documents)


def check_spans(
    driver: str,
    scenario: Scenario,
    observed: Observed,
    spans: Sequence[ReadableSpan],
    mode: str = "driver",
) -> None:
    """The instrumented run's span tree tells what happened."""
    expect = scenario.pymongo if mode == "spec" else scenario.expect(driver)
    (wt,) = named(spans, "withTransaction")
    attrs = wt.attributes or {}
    attempts = [s for s in children(spans, wt) if s.name == "transaction"]
    outcomes = tuple((a.attributes or {})["db.mongodb.transaction.outcome"] for a in attempts)
    commit_ops = [
        op for a in attempts for op in children(spans, a) if op.name == "commitTransaction admin"
    ]

    assert attrs["db.mongodb.transaction.mode"] == mode
    if expect.repeated:
        assert len(outcomes) >= 2
        assert set(outcomes) == set(expect.attempts)
    else:
        assert outcomes == expect.attempts
    assert attrs["db.mongodb.transaction.attempts"] == len(attempts) == observed["calls"]
    assert [(a.attributes or {})["db.mongodb.transaction.attempt"] for a in attempts] == list(
        range(1, len(attempts) + 1)
    )
    assert attrs["db.mongodb.transaction.outcome"] == expect.outcome
    commit_attempts = attrs["db.mongodb.transaction.commit_attempts"]
    assert commit_attempts == len(commit_ops)
    if expect.commit_attempts is None:
        assert commit_attempts >= 2
    else:
        assert commit_attempts == expect.commit_attempts
    wt_labels = set(attrs.get("db.mongodb.error_labels", ()))
    attempt_labels = {
        label for a in attempts for label in (a.attributes or {}).get("db.mongodb.error_labels", ())
    }
    assert expect.labels <= wt_labels
    assert attempt_labels <= wt_labels

    # Every command the client sent is a span in this tree, under this withTransaction.
    in_tree = [s for s in spans if wt in ancestors(spans, s)]
    sent = [
        s.name for s in in_tree if s.name in ("insert", "commitTransaction", "abortTransaction")
    ]
    assert sorted(sent) == sorted(observed["commands"])

    # The exception the caller saw is on the withTransaction span (with its labels), and only then.
    if observed["result"][0] == "raised":
        _, kind, _, labels = observed["result"]
        assert exception_events(wt) == [(kind, labels)]
        assert wt.status.status_code is StatusCode.ERROR
    else:
        assert exception_events(wt) == []
        assert wt.status.status_code is StatusCode.UNSET
    not_retried = [e for e in wt.events if e.name == "commit_not_retried"]
    assert len(not_retried) == int(expect.commit_not_retried)
    for event in not_retried:
        assert expect.labels <= set((event.attributes or {})["db.mongodb.error_labels"])

    # A commit error ends (or, when "unknown", marks) its attempt: recorded there with its labels.
    for attempt in attempts:
        failed_commits = [
            op
            for op in children(spans, attempt)
            if op.name == "commitTransaction admin" and op.status.status_code is StatusCode.ERROR
        ]
        recorded = exception_events(attempt)
        for op in failed_commits:
            assert exception_events(op)[0] in recorded
        if (attempt.attributes or {})["db.mongodb.transaction.outcome"] == "failed":
            assert attempt.status.status_code is StatusCode.ERROR
            assert recorded


@pytest.mark.parametrize(("driver", "scenario"), CASES)
async def test_fault_matrix(
    driver: str,
    scenario: Scenario,
    mongodb_uri: str,
    server_commits: Callable[[], int | None],
    fake_clock: ClockFactory,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """Instrumentation changes nothing the application sees, and the spans tell what happened."""
    plain = await observe(driver, scenario, "plain", mongodb_uri, None, server_commits, fake_clock)
    traced = await observe(
        driver, scenario, "otel", mongodb_uri, tracer_provider, server_commits, fake_clock
    )
    assert traced == plain
    check_result(scenario.expect(driver), plain)
    check_spans(driver, scenario, traced, exporter.get_finished_spans())


@pytest.mark.parametrize("scenario", [pytest.param(s, id=s.name) for s in SCENARIOS])
async def test_motor_in_spec_mode_behaves_as_pymongo(
    scenario: Scenario,
    mongodb_uri: str,
    server_commits: Callable[[], int | None],
    fake_clock: ClockFactory,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """with_transaction="spec": Motor does what a plain AsyncMongoClient does, deviations included."""
    pymongo_run = await observe(
        "pymongo_async", scenario, "plain", mongodb_uri, None, server_commits, fake_clock
    )
    spec_run = await observe(
        "motor", scenario, "spec", mongodb_uri, tracer_provider, server_commits, fake_clock, "spec"
    )
    # Nothing differs, not even the exception classes: Motor raises PyMongo's own, and the
    # scenarios where Motor's own loop deviates (``Scenario.motor``) are exactly what "spec" mode
    # exists to fix. The loops bounded by the fake 120 s clock also match call for call: "spec"
    # mode reads the session's clock where PyMongo reads ``time.monotonic``.
    assert pymongo_run == spec_run
    check_result(scenario.pymongo, spec_run)
    check_spans("motor", scenario, spec_run, exporter.get_finished_spans(), mode="spec")
