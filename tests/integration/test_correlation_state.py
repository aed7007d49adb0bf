"""Correlation state is freed: nothing stays in the correlator once sessions end or are collected.

Through Motor, PyMongo's ``AsyncMongoClient`` and ``MongoClient``; ``sizes()`` is (open attempts,
in-flight command spans).
"""

from __future__ import annotations

import gc
from typing import Any

import pymongo
import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry.sdk.trace import TracerProvider
from pymongo.errors import PyMongoError

from motor_otel import instrument_client
from motor_otel.correlation import Correlator
from motor_otel.instrumentor import telemetry_of
from motor_otel.testing import fail_command
from tests.conftest import CLIENT_OPTIONS
from tests.conftest import maybe_await as _maybe

# Twice: the driver retries a retryable commit error once itself, then the result is unknown.
# HostUnreachable, not ShutdownInProgress: no server rediscovery, so no half-second wait.
UNKNOWN_COMMIT = fail_command("commitTransaction", mode=2, error_code=6)


@pytest.fixture
def client(async_driver_client: Any) -> Any:
    return async_driver_client


def _correlator(client: Any, tracer_provider: TracerProvider) -> Correlator:
    instrument_client(client, tracer_provider=tracer_provider)
    telemetry = telemetry_of(client)
    assert telemetry is not None
    return telemetry.correlator


async def _open_transaction(client: Any, session: Any) -> None:
    """Start a transaction and send its first statement: the attempt is open on both sides."""
    await _maybe(session.start_transaction())
    await client.corr_state.items.insert_one({"x": 1}, session=session)


async def test_end_session_frees_the_open_attempt(
    client: Any, tracer_provider: TracerProvider
) -> None:
    """end_session with a transaction open: the attempt is forgotten, no command span is left."""
    correlator = _correlator(client, tracer_provider)
    session = await _maybe(client.start_session())
    await _open_transaction(client, session)
    assert correlator.sizes() == (1, 0)
    await session.end_session()
    assert correlator.sizes() == (0, 0)


async def test_end_session_frees_an_unsettled_commit(
    client: Any, tracer_provider: TracerProvider
) -> None:
    """A commit with an unknown result keeps its attempt open; end_session still frees it."""
    correlator = _correlator(client, tracer_provider)
    session = await _maybe(client.start_session())
    await _open_transaction(client, session)
    await client.admin.command(UNKNOWN_COMMIT)
    with pytest.raises(PyMongoError) as info:
        await session.commit_transaction()
    assert info.value.has_error_label("UnknownTransactionCommitResult")
    assert correlator.sizes() == (1, 0)  # it may still be retried
    await session.end_session()
    assert correlator.sizes() == (0, 0)


async def test_leaving_async_with_frees_the_open_attempt(
    client: Any, tracer_provider: TracerProvider
) -> None:
    """Leaving `async with` with a transaction open frees its attempt."""
    correlator = _correlator(client, tracer_provider)
    async with await _maybe(client.start_session()) as session:
        await _open_transaction(client, session)
        assert correlator.sizes() == (1, 0)
    assert correlator.sizes() == (0, 0)


async def _sessions_in_transaction(client: Any, count: int) -> list[Any]:
    sessions = [await _maybe(client.start_session()) for _ in range(count)]
    for session in sessions:
        await _open_transaction(client, session)
    return sessions


async def test_abandoned_sessions_are_freed_when_collected(
    client: Any, tracer_provider: TracerProvider
) -> None:
    """Sessions dropped with a transaction open and never ended: freed once collected."""
    correlator = _correlator(client, tracer_provider)
    sessions = await _sessions_in_transaction(client, 3)
    lsids = [session.session_id for session in sessions]
    try:
        assert correlator.sizes() == (3, 0)
        del sessions  # the last references: never ended, never aborted
        gc.collect()  # PyMongo's sessions sit in reference cycles; Motor's go at once
        assert correlator.sizes() == (0, 0)
    finally:  # on a real server, end their transactions rather than wait for them to expire
        await client.admin.command({"killSessions": lsids})


def _open_sync_transaction(client: pymongo.MongoClient[Any], session: Any) -> None:
    session.start_transaction()
    client.corr_state.items.insert_one({"x": 1}, session=session)


def test_sync_end_session_and_with_free_the_open_attempt(
    sync_client: pymongo.MongoClient[Any], tracer_provider: TracerProvider
) -> None:
    """MongoClient: end_session, an unsettled commit then end_session, and leaving `with`."""
    correlator = _correlator(sync_client, tracer_provider)
    # Each session is kept referenced: see test_a_freed_ended_session_keeps_its_successors_attempt.
    ended = sync_client.start_session()
    _open_sync_transaction(sync_client, ended)
    assert correlator.sizes() == (1, 0)
    ended.end_session()
    assert correlator.sizes() == (0, 0)

    unsettled = sync_client.start_session()
    _open_sync_transaction(sync_client, unsettled)
    sync_client.admin.command(UNKNOWN_COMMIT)
    with pytest.raises(PyMongoError) as info:
        unsettled.commit_transaction()
    assert info.value.has_error_label("UnknownTransactionCommitResult")
    assert correlator.sizes() == (1, 0)
    unsettled.end_session()
    assert correlator.sizes() == (0, 0)

    with sync_client.start_session() as left:
        _open_sync_transaction(sync_client, left)
        assert correlator.sizes() == (1, 0)
    assert correlator.sizes() == (0, 0)


def _sync_sessions_in_transaction(client: pymongo.MongoClient[Any], count: int) -> list[Any]:
    sessions = [client.start_session() for _ in range(count)]
    for session in sessions:
        _open_sync_transaction(client, session)
    return sessions


def test_sync_abandoned_sessions_are_freed_when_collected(
    sync_client: pymongo.MongoClient[Any], tracer_provider: TracerProvider
) -> None:
    """MongoClient sessions dropped with a transaction open: freed once collected."""
    correlator = _correlator(sync_client, tracer_provider)
    sessions = _sync_sessions_in_transaction(sync_client, 3)
    lsids = [session.session_id for session in sessions]
    try:
        assert correlator.sizes() == (3, 0)
        del sessions
        gc.collect()
        assert correlator.sizes() == (0, 0)
    finally:
        sync_client.admin.command({"killSessions": lsids})


async def test_a_freed_ended_session_keeps_its_successors_attempt(
    mongodb_uri: str, tracer_provider: TracerProvider
) -> None:
    """Freeing an ended session leaves alone the open attempt of a newer one reusing its lsid."""
    client: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    correlator = _correlator(client, tracer_provider)
    try:
        old = await client.start_session()
        await _open_transaction(client, old)
        lsid = old.session_id
        await old.end_session()  # its server session goes back to the pool
        new = await client.start_session()  # ... and comes out again: same lsid
        await _open_transaction(client, new)
        assert lsid == new.session_id
        assert correlator.sizes() == (1, 0)
        del old  # the ended session is freed: its finalizer forgets the lsid
        assert correlator.sizes() == (1, 0)
        await new.end_session()
    finally:
        client.close()
