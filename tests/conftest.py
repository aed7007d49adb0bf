"""Shared fixtures: a MongoDB to talk to, and an in-memory span exporter."""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pymongo
import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from motor_otel.config import forget_warnings
from motor_otel.testing import SimulatedReplicaSet
from tests.signals import Signals, make_signals

CLIENT_OPTIONS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 5000,
    "socketTimeoutMS": 20000,
    "connectTimeoutMS": 5000,
}


@pytest.fixture(autouse=True)
def _env_warnings_anew() -> None:
    """Each test sees the bad-variable warnings afresh (a process gets each one once)."""
    forget_warnings()


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatedReplicaSet | None]:
    """The embedded replica set, or None when MONGODB_URI points at a real one."""
    if os.environ.get("MONGODB_URI"):
        yield None
        return
    with SimulatedReplicaSet() as rs:
        yield rs


@pytest.fixture(scope="session")
def mongodb_uri(simulator: SimulatedReplicaSet | None) -> str:
    return os.environ.get("MONGODB_URI") or simulator.uri  # type: ignore[union-attr]


@pytest.fixture
def exporter(signals: Signals) -> InMemorySpanExporter:
    """The ``signals`` fixture's span exporter."""
    return signals.exporter


@pytest.fixture
def tracer_provider(signals: Signals) -> TracerProvider:
    """The ``signals`` fixture's tracer provider, exporting to ``exporter``."""
    return signals.tracer_provider


@pytest.fixture
def signals() -> Signals:
    """Spans in memory and metric points in a reader, fresh per test (``tests/signals.py``)."""
    return make_signals()


@pytest.fixture
async def motor_client(mongodb_uri: str) -> AsyncIterator[AsyncIOMotorClient]:
    client: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    try:
        yield client
    finally:
        await client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        client.close()


@pytest.fixture
async def async_client(mongodb_uri: str) -> AsyncIterator[pymongo.AsyncMongoClient[Any]]:
    client: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(mongodb_uri, **CLIENT_OPTIONS)
    yield client
    await client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    await client.close()


ASYNC_DRIVERS = {"Motor": AsyncIOMotorClient, "AsyncMongoClient": pymongo.AsyncMongoClient}


async def maybe_await(value: Any) -> Any:
    """Motor's ``start_session`` is a coroutine, ``AsyncMongoClient``'s is not: accept both."""
    return await value if inspect.isawaitable(value) else value


@pytest.fixture(params=sorted(ASYNC_DRIVERS))
async def async_driver_client(
    request: pytest.FixtureRequest, mongodb_uri: str
) -> AsyncIterator[Any]:
    """Each asynchronous driver in turn (Motor, ``AsyncMongoClient``), fail points off afterwards."""
    client = ASYNC_DRIVERS[request.param](mongodb_uri, **CLIENT_OPTIONS)
    yield client
    await client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    await maybe_await(client.close())


@pytest.fixture
def sync_client(mongodb_uri: str) -> Iterator[pymongo.MongoClient[Any]]:
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongodb_uri, **CLIENT_OPTIONS)
    yield client
    client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    client.close()


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector that keeps every request body by path (``/v1/traces``, ...)."""

    bodies: dict[str, list[bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.bodies.setdefault(self.path, []).append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def otlp_collector() -> Iterator[tuple[str, dict[str, list[bytes]]]]:
    """Base URL of a loopback OTLP/HTTP collector, and the bodies it received by path."""
    bodies: dict[str, list[bytes]] = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("C", (_Collector,), {"bodies": bodies}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    server.shutdown()
    server.server_close()
