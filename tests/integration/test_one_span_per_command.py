"""One operation span and one command span per command, however a client is instrumented.

``MotorInstrumentor().instrument()`` and ``instrument_client()`` on one client, in either order,
either of them twice, the client created before or after ``instrument()``, with contrib's pymongo
instrumentation on or off, for Motor, ``AsyncMongoClient`` and ``MongoClient``: the client has one
listener and one scope, its own (``instrument_client``'s settings win for it).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import monitoring

from motor_otel import MotorInstrumentor, uninstrument_client
from motor_otel import instrumentor as instrumentor_module
from motor_otel.listener import TracingCommandListener
from tests.conftest import CLIENT_OPTIONS, maybe_await
from tests.integration.test_coexistence import Contrib
from tests.signals import Signals, make_signals

DRIVERS = {
    "Motor": AsyncIOMotorClient,
    "AsyncMongoClient": pymongo.AsyncMongoClient,
    "MongoClient": pymongo.MongoClient,
}
# (when the client is created, which call comes first). "first-ever": as if no instrument() had
# run in this process yet, so PyMongo did not copy our global listener into the new client.
ORDERS = {
    "client-then-instrument_client-then-instrument": ("before", "client"),
    "client-then-instrument-then-instrument_client": ("before", "global"),
    "first-ever-client-then-instrument_client-then-instrument": ("first-ever", "client"),
    "first-ever-client-then-instrument-then-instrument_client": ("first-ever", "global"),
    "instrument-then-client-then-instrument_client": ("after", "global"),
}


def _new_client(driver: str, uri: str, created: str, **options: Any) -> Any:
    """A client of ``driver``; ``first-ever``: without the global listener ``monitoring.register``
    put into every client created since this process's first ``instrument()``."""
    client = DRIVERS[driver](uri, **CLIENT_OPTIONS, **options)
    if created == "first-ever":
        commands = instrumentor_module._command_listeners(client)
        commands[:] = [c for c in commands if not isinstance(c, TracingCommandListener)]
    return client


class Sent(monitoring.CommandListener):
    """The commands a client really sent, from PyMongo's own command monitoring."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def instrumentor() -> Iterator[MotorInstrumentor]:
    instance = MotorInstrumentor()
    assert not instance.is_instrumented_by_opentelemetry
    yield instance
    if instance.is_instrumented_by_opentelemetry:
        instance.uninstrument()


@pytest.fixture
def contrib() -> Iterator[Contrib]:
    """Contrib's ``PymongoInstrumentor`` with its own exporter; put back as it was afterwards."""
    instance = Contrib()
    previous = instance.instrumentor._commandtracer_instance
    instance.instrumentor._commandtracer_instance = None
    yield instance
    if instance.instrumentor.is_instrumented_by_opentelemetry:
        instance.instrumentor.uninstrument()
    instance.instrumentor._commandtracer_instance = previous


async def _workload(client: Any) -> None:
    """A transaction of one insert, a find outside it, then close (``endSessions``)."""
    coll = client.matrix.items
    if isinstance(client, pymongo.MongoClient):
        with client.start_session() as session:
            session.with_transaction(lambda s: coll.insert_one({"n": 1}, session=s))
        coll.find_one({"n": 1})
        client.close()
        return
    async with await maybe_await(client.start_session()) as session:
        await session.with_transaction(lambda s: coll.insert_one({"n": 1}, session=s))
    await coll.find_one({"n": 1})
    await maybe_await(client.close())


async def _warm_up(client: Any) -> None:
    """A session and a command between the two calls (a session attaches the global listener)."""
    if isinstance(client, pymongo.MongoClient):
        with client.start_session() as session:
            client.matrix.items.find_one({}, session=session)
        return
    async with await maybe_await(client.start_session()) as session:
        await client.matrix.items.find_one({}, session=session)


async def _set_up(
    instrumentor: MotorInstrumentor,
    everyone: Signals,
    own: Signals,
    driver: str,
    order: str,
    twice: bool,
    sent: Sent,
    uri: str,
) -> Any:
    """The client, instrumented in ``order``: ``everyone`` gets ``instrument()``'s spans, ``own``
    ``instrument_client()``'s (in ``spec`` mode); a session runs between the two calls."""
    created, first = ORDERS[order]
    calls = 2 if twice else 1

    def global_calls() -> None:
        for _ in range(calls):
            instrumentor.instrument(**everyone.providers())

    def client_calls() -> None:
        for _ in range(calls):
            own.instrument(client, with_transaction="spec")

    if created == "after":
        global_calls()
    client = _new_client(driver, uri, created, event_listeners=[sent])
    if created != "after":
        global_calls() if first == "global" else client_calls()
    await _warm_up(client)
    client_calls() if first == "global" else global_calls()
    return client


def _kinds(signals: Signals) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """(command spans, operation spans, transaction spans) by name."""
    commands: Counter[str] = Counter()
    operations: Counter[str] = Counter()
    transactions: Counter[str] = Counter()
    for span in signals.spans():
        attrs = span.attributes or {}
        if "db.command.name" in attrs:
            commands[span.name] += 1
        elif "db.operation.name" in attrs:
            operations[span.name] += 1
        else:
            transactions[span.name] += 1
    return commands, operations, transactions


async def test_every_way_of_instrumenting_gives_one_span_per_command(
    instrumentor: MotorInstrumentor, contrib: Contrib, mongodb_uri: str
) -> None:
    """Driver x order x each call once or twice x contrib off/on: one operation span per call,
    one command span per command sent, all from the client's own settings."""
    failures: list[str] = []
    for driver, order, twice, with_contrib in itertools.product(
        DRIVERS, ORDERS, (False, True), (False, True)
    ):
        case = f"{driver}, {order}, {'twice' if twice else 'once'}, contrib {with_contrib}"
        if with_contrib:
            contrib.instrument()
        everyone, own = make_signals(), make_signals()  # instrument()'s, instrument_client()'s
        sent = Sent()

        client = await _set_up(instrumentor, everyone, own, driver, order, twice, sent, mongodb_uri)
        own.exporter.clear()
        everyone.exporter.clear()
        sent.names.clear()

        await _workload(client)
        commands, operations, transactions = _kinds(own)
        seen = (
            dict(commands),
            dict(operations),
            dict(transactions),
            len(everyone.spans()),
            contrib.commands(),
        )
        wanted = (
            dict(Counter(sent.names)),
            {"insert matrix.items": 1, "commitTransaction admin": 1, "find matrix.items": 1},
            {"withTransaction": 1, "transaction": 1},
            0,
            [],
        )
        if seen != wanted:
            failures.append(f"{case}: {seen} != {wanted}")
        mode = next(s for s in own.spans() if s.name == "withTransaction").attributes
        if mode is None or mode["db.mongodb.transaction.mode"] != "spec":
            failures.append(f"{case}: the client's own with_transaction setting did not win")
        uninstrument_client(client)
        instrumentor.uninstrument()
        if with_contrib:
            contrib.instrumentor.uninstrument()
    assert not failures, "\n".join(failures)
    assert sorted(set(sent.names)) == ["commitTransaction", "endSessions", "find", "insert"]


async def test_uninstrument_leaves_explicitly_instrumented_clients_traced(
    instrumentor: MotorInstrumentor, mongodb_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    """After ``uninstrument()`` an ``instrument_client`` client keeps its spans, one per command,
    and the log says so; after ``uninstrument_client`` it is the global scope's again."""
    caplog.set_level("INFO", logger="motor_otel")
    everyone, own = make_signals(), make_signals()
    for driver, created in itertools.product(DRIVERS, ("first-ever", "before", "after")):
        case = (driver, f"created {created} instrument()")
        everyone.exporter.clear()
        own.exporter.clear()
        if created != "after":
            client = _new_client(driver, mongodb_uri, created)
        instrumentor.instrument(**everyone.providers())
        if created == "after":
            client = _new_client(driver, mongodb_uri, created)
        own.instrument(client)
        caplog.clear()
        instrumentor.uninstrument()
        assert [r.getMessage() for r in caplog.records] == [
            "motor-otel: uninstrumented; clients given to instrument_client() stay traced"
            " with their own settings until uninstrument_client()"
        ]
        await _find(client)
        assert (case, dict(_kinds(own)[0])) == (case, {"find": 1})

        instrumentor.instrument(**everyone.providers())
        uninstrument_client(client)
        own.exporter.clear()
        await _find(client)  # no session first: the global listener is back at once
        everyone_commands = _kinds(everyone)[0]
        assert (case, own.spans(), dict(everyone_commands)) == (case, (), {"find": 1})
        instrumentor.uninstrument()
        await maybe_await(client.close())


async def _find(client: Any) -> None:
    """One find, outside any session of ours."""
    await maybe_await(client.matrix.items.find_one({}))
