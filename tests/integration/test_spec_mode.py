"""The "spec" with_transaction loop on an injected clock and sleep: the 120 s limit and backoff.

``session.clock`` and ``session.sleep`` stand in for ``time.monotonic`` and ``asyncio.sleep``, so
two minutes of retries take milliseconds and nothing really sleeps.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator

import pytest
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorClientSession
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pymongo.client_session_shared import _make_timeout_error
from pymongo.errors import OperationFailure, PyMongoError

from motor_otel import InstrumentedAsyncIOMotorClientSession, instrument_client
from motor_otel.testing import fail_command
from tests.conftest import CLIENT_OPTIONS
from tests.spans import named

TTE = "TransientTransactionError"
UTCR = "UnknownTransactionCommitResult"


class FakeTime:
    """The session's clock and sleep: time moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


# Far more attempts than the limit allows: a loop that never stops fails instead of hanging.
RUNAWAY = 1_000


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
async def client(
    mongodb_uri: str, fake: FakeTime, tracer_provider: TracerProvider
) -> AsyncIterator[AsyncIOMotorClient]:
    client: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    instrument_client(client, tracer_provider=tracer_provider, with_transaction="spec")
    yield client
    await client.admin.command(fail_command(mode="off"))
    client.close()


async def _session(
    client: AsyncIOMotorClient, fake: FakeTime
) -> InstrumentedAsyncIOMotorClientSession:
    session = await client.start_session()
    assert isinstance(session, InstrumentedAsyncIOMotorClientSession)
    session.clock = fake.clock
    session.sleep = fake.sleep
    return session


def _same_as_pymongo(raised: BaseException, last: PyMongoError) -> None:
    """What PyMongo's own loop raises at the limit: its timeout error, made from the last error."""
    expected = _make_timeout_error(last)
    assert (type(expected), str(expected)) == (type(raised), str(raised))
    assert sorted(expected._error_labels) == sorted(getattr(raised, "_error_labels", ()))
    assert last is raised.__cause__


async def test_transient_callback_errors_stop_at_the_time_limit(
    client: AsyncIOMotorClient, fake: FakeTime, exporter: InMemorySpanExporter
) -> None:
    """A callback failing forever with TTE is retried until 120 s, then raises as PyMongo does."""
    coll = client.spec_mode_limit.items
    await client.admin.command(
        fail_command("insert", mode="alwaysOn", error_code=112, error_labels=[TTE])
    )
    errors: list[PyMongoError] = []

    async def callback(session: AsyncIOMotorClientSession) -> None:
        assert len(errors) < RUNAWAY, "the loop ignores its time limit"
        fake.now += 1.0  # each attempt takes a second: the k-th one fails at k s
        try:
            await coll.insert_one({"x": 1}, session=session)
        except PyMongoError as exc:
            errors.append(exc)
            raise

    session = await _session(client, fake)
    try:
        with pytest.raises(PyMongoError) as info:
            await session.with_transaction(callback)
    finally:
        await session.end_session()
    assert len(errors) == 120  # failures at 1, 2, ... 119 s are retried; at 120 s it stops
    assert len(fake.sleeps) == 119  # a backoff before each retry
    assert errors[-1].has_error_label(TTE)
    _same_as_pymongo(info.value, errors[-1])

    (wt,) = named(exporter.get_finished_spans(), "withTransaction")
    assert wt.attributes is not None
    assert (
        wt.attributes["db.mongodb.transaction.attempts"],
        wt.attributes["db.mongodb.transaction.commit_attempts"],
        wt.attributes["db.mongodb.transaction.outcome"],
    ) == (120, 0, "failed")
    assert type(info.value).__qualname__ == wt.attributes["exception.type"]


async def test_unknown_commit_results_stop_at_the_time_limit(
    client: AsyncIOMotorClient, fake: FakeTime, exporter: InMemorySpanExporter
) -> None:
    """A commit result unknown forever is retried until 120 s, then raises as PyMongo does."""
    coll = client.spec_mode_limit.items
    # HostUnreachable: retryable, so the result is unknown, but not a state change that makes
    # the driver rediscover the server (ShutdownInProgress would cost half a second a commit).
    await client.admin.command(fail_command("commitTransaction", mode="alwaysOn", error_code=6))
    commit_errors: list[PyMongoError] = []
    session = await _session(client, fake)
    commit = session.commit_transaction

    async def recording_commit() -> None:
        assert len(commit_errors) < RUNAWAY, "the loop ignores its time limit"
        fake.now += 1.0  # each commit takes a second: the k-th one fails at k s
        try:
            await commit()
        except PyMongoError as exc:
            commit_errors.append(exc)
            raise

    session.commit_transaction = recording_commit  # type: ignore[method-assign]

    async def callback(session: AsyncIOMotorClientSession) -> None:
        await coll.insert_one({"x": 1}, session=session)

    try:
        with pytest.raises(PyMongoError) as info:
            await session.with_transaction(callback)
    finally:
        await session.end_session()
    assert len(commit_errors) == 120  # unknown results at 1 ... 119 s are retried, not at 120 s
    assert all(e.has_error_label(UTCR) for e in commit_errors)
    assert fake.sleeps == []  # commit retries do not back off
    _same_as_pymongo(info.value, commit_errors[-1])

    (wt,) = named(exporter.get_finished_spans(), "withTransaction")
    assert wt.attributes is not None
    assert (
        wt.attributes["db.mongodb.transaction.attempts"],
        wt.attributes["db.mongodb.transaction.commit_attempts"],
        wt.attributes["db.mongodb.transaction.outcome"],
    ) == (1, 120, "failed")


def _transient() -> OperationFailure:
    return OperationFailure("transient", 112, {"errorLabels": [TTE], "code": 112})


async def _retry_then_commit(
    client: AsyncIOMotorClient, fake: FakeTime, failures: int
) -> tuple[str, int]:
    """A callback raising TransientTransactionError ``failures`` times, then succeeding."""
    calls = 0

    async def callback(session: AsyncIOMotorClientSession) -> str:
        nonlocal calls
        calls += 1
        if calls <= failures:
            raise _transient()  # before any command: the abort is client-side only
        return "done"

    session = await _session(client, fake)
    try:
        return await session.with_transaction(callback), calls
    finally:
        await session.end_session()


def _bound(retry: int) -> float:
    return min(0.005 * 1.5**retry, 0.5)


async def test_backoff_sleeps_stay_within_their_growing_bound(
    client: AsyncIOMotorClient, fake: FakeTime
) -> None:
    """Before retry n the loop asks to sleep a random time in [0, min(5 ms * 1.5**n, 500 ms)]."""
    started = time.monotonic()
    assert await _retry_then_commit(client, fake, 14) == ("done", 15)
    elapsed = time.monotonic() - started
    assert len(fake.sleeps) == 14
    for retry, seconds in enumerate(fake.sleeps, start=1):
        assert 0.0 <= seconds <= _bound(retry), (retry, seconds)
    assert len(set(fake.sleeps)) > 1  # jittered, not a constant
    assert elapsed < sum(_bound(r) for r in range(1, 15))  # nothing really slept


async def test_backoff_bound_grows_to_its_cap(
    client: AsyncIOMotorClient, fake: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the jitter at its top, the sleeps are the bound itself: x1.5 per retry, capped at 0.5 s."""
    monkeypatch.setattr(random, "random", lambda: 1.0)
    assert await _retry_then_commit(client, fake, 14) == ("done", 15)
    assert [_bound(r) for r in range(1, 15)] == pytest.approx(fake.sleeps)
    assert fake.sleeps == sorted(fake.sleeps)
    assert 0.5 == fake.sleeps[-1] == fake.sleeps[-2]  # 0.005 * 1.5**12 > 0.5: capped
