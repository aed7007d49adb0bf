"""pytest fixtures for testing your own transaction code (the ``motor_otel`` pytest11 plugin).

pytest loads this module in every project where motor-otel is installed, so it must never cost or
break anything there: it imports only pytest and the standard library at import time (the
simulator's mockupdb and mongomock and the OpenTelemetry SDK are imported when a fixture is first
used), and without the ``testing`` extra each fixture skips its test with the install hint instead
of failing it.

- ``mongodb_replica_set``: one :class:`~motor_otel.testing.SimulatedReplicaSet` per test session,
  or the server at ``MONGODB_URI`` when that is set; connect to its ``.uri``.
- ``mongodb_fail_point``: ``await mongodb_fail_point("insert", error_code=112)`` takes
  :func:`~motor_otel.testing.fail_command`'s arguments and configures the fail point; every fail
  point set during the test is turned off when it ends.
- ``motor_otel_spans``: Motor and PyMongo instrumented for the test, spans kept in memory; yields
  the ``InMemorySpanExporter`` (``.get_finished_spans()``) and uninstruments afterwards. Create the
  clients in the test, after the fixture has instrumented the drivers.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

INSTALL_HINT = "pip install 'motor-otel[testing]'"

__all__ = [
    "INSTALL_HINT",
    "FailPoint",
    "MongoDBServer",
    "mongodb_fail_point",
    "mongodb_replica_set",
    "motor_otel_spans",
]


class MongoDBServer(Protocol):
    """What ``mongodb_replica_set`` yields: a :class:`SimulatedReplicaSet` or :class:`RealServer`."""

    @property
    def uri(self) -> str: ...


@dataclass(frozen=True)
class RealServer:
    """The server at ``MONGODB_URI``, standing where the simulated replica set would."""

    uri: str


FailPoint = Callable[..., Awaitable[dict[str, Any]]]


def _skip_without(exc: ImportError, fixture: str) -> None:
    """Skip the test: what is missing and the one command that installs it."""
    missing = exc.name or getattr(exc.__cause__, "name", None)  # motor_otel.testing re-raises
    pytest.skip(f"the {fixture} fixture needs {missing!r}: {INSTALL_HINT}")


@pytest.fixture(scope="session")
def mongodb_replica_set() -> Iterator[MongoDBServer]:
    """One simulated replica set for the whole test session, or the server at ``MONGODB_URI``."""
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield RealServer(uri)
        return
    try:
        from motor_otel.testing import SimulatedReplicaSet
    except ImportError as exc:  # without the testing extra: skip, naming what to install
        _skip_without(exc, "mongodb_replica_set")
        raise  # not reached: pytest.skip raises
    with SimulatedReplicaSet() as rs:
        yield rs


@pytest.fixture
def mongodb_fail_point(mongodb_replica_set: MongoDBServer) -> Iterator[FailPoint]:
    """``await mongodb_fail_point(*commands, mode=1, error_code=None, error_labels=None, **data)``.

    Configures the fail point on ``mongodb_replica_set`` and returns the document it sent. A
    synchronous client in a worker thread sends it, so the fail points can be turned off when the
    test ends whatever happened to the test's event loop.
    """
    import pymongo

    from motor_otel.testing import fail_command

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        mongodb_replica_set.uri, serverSelectionTimeoutMS=10_000
    )
    names: set[str] = set()

    async def configure(
        *commands: str,
        mode: int | str | Mapping[str, int] = 1,
        error_code: int | None = None,
        error_labels: Sequence[str] | None = None,
        **data: Any,
    ) -> dict[str, Any]:
        document = fail_command(
            *commands, mode=mode, error_code=error_code, error_labels=error_labels, **data
        )
        names.add(document["configureFailPoint"])  # before sending: off at teardown regardless
        await asyncio.to_thread(client.admin.command, document)
        return document

    try:
        yield configure
    finally:
        try:
            for name in sorted(names):
                client.admin.command({"configureFailPoint": name, "mode": "off"})
        finally:
            client.close()


@pytest.fixture
def motor_otel_spans() -> Iterator[InMemorySpanExporter]:
    """Motor and PyMongo instrumented for this test; the exporter holding its finished spans."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
    except ImportError as exc:
        _skip_without(exc, "motor_otel_spans")
        raise  # not reached: pytest.skip raises

    from motor_otel import MotorInstrumentor

    instrumentor = MotorInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        pytest.fail(
            "motor_otel_spans instruments Motor and PyMongo for the test itself, but "
            "MotorInstrumentor is already instrumented (by the application or a conftest); "
            "uninstrument it first, or read that instrumentation's exporter instead",
            pytrace=False,
        )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield exporter
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
