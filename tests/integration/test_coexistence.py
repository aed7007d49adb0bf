"""Other producers of MongoDB spans: opentelemetry-instrumentation-pymongo and PyMongo's own."""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from motor_otel import MotorInstrumentor, coexistence, instrument_client, uninstrument_client
from tests.conftest import CLIENT_OPTIONS

CONTRIB_SCOPE = "opentelemetry.instrumentation.pymongo"


class Contrib:
    """The contrib instrumentation with its own in-memory exporter, switched on by the test.

    Its ``CommandTracer`` keeps the tracer of the process's first ``instrument()``, so a fresh
    one is built here and the previous one put back afterwards.
    """

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.instrumentor = PymongoInstrumentor()

    def instrument(self) -> None:
        self.instrumentor.instrument(tracer_provider=self.provider)

    def commands(self) -> list[str]:
        return [
            s.name
            for s in self.exporter.get_finished_spans()
            if s.instrumentation_scope is not None and s.instrumentation_scope.name == CONTRIB_SCOPE
        ]


@pytest.fixture
def contrib() -> Iterator[Contrib]:
    instance = Contrib()
    assert not instance.instrumentor.is_instrumented_by_opentelemetry
    previous = instance.instrumentor._commandtracer_instance
    instance.instrumentor._commandtracer_instance = None
    yield instance
    instance.instrumentor.uninstrument()
    instance.instrumentor._commandtracer_instance = previous


async def _insert_and_find(client: Any) -> None:
    coll = client.coexist.items
    await coll.insert_one({"x": 1})
    await coll.find_one({"x": 1})


def _our_commands(exporter: InMemorySpanExporter) -> list[str]:
    return [s.name for s in exporter.get_finished_spans() if " " not in s.name]


async def test_instrument_client_takes_contrib_spans_off_that_client_only(
    contrib: Contrib,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    mongodb_uri: str,
) -> None:
    """One span per command on our client; other clients keep the contrib spans; undone after."""
    contrib.instrument()
    ours: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    other: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    try:
        instrument_client(ours, tracer_provider=tracer_provider)
        await _insert_and_find(ours)
        assert contrib.commands() == []
        assert _our_commands(exporter) == ["insert", "find"]

        await _insert_and_find(other)
        assert len(contrib.commands()) == 2

        uninstrument_client(ours)
        await _insert_and_find(ours)
        assert len(contrib.commands()) == 4
    finally:
        ours.close()
        other.close()


@pytest.mark.parametrize("contrib_first", [True, False], ids=["contrib-first", "motor-otel-first"])
async def test_global_instrumentation_suppresses_contrib_in_either_order(
    contrib: Contrib,
    contrib_first: bool,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    mongodb_uri: str,
) -> None:
    """Whichever instrumentor runs first, each command is one span (ours) until we uninstrument."""
    ours = MotorInstrumentor()
    try:
        if contrib_first:
            contrib.instrument()
            ours.instrument(tracer_provider=tracer_provider)
        else:
            ours.instrument(tracer_provider=tracer_provider)
            contrib.instrument()
        client: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
        await _insert_and_find(client)
        assert contrib.commands() == []
        assert _our_commands(exporter) == ["insert", "find"]

        ours.uninstrument()
        await _insert_and_find(client)
        assert len(contrib.commands()) == 2
        client.close()
    finally:
        if ours.is_instrumented_by_opentelemetry:
            ours.uninstrument()


# -- PyMongo's native tracing (a stand-in for the unreleased pymongo._otel) ----------------------
@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A ``pymongo._otel`` stand-in whose ``_is_tracing_enabled`` answers what the test says."""
    state: dict[str, Any] = {"enabled": True, "seen": []}

    def _is_tracing_enabled(options: Any) -> bool:
        state["seen"].append(options)
        if isinstance(state["enabled"], Exception):
            raise state["enabled"]
        return bool(state["enabled"])

    module = types.ModuleType("pymongo._otel")
    module._is_tracing_enabled = _is_tracing_enabled  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pymongo._otel", module)
    coexistence.forget_native_module()
    yield state
    coexistence.forget_native_module()


async def _traced_transaction(
    client_class: Any, uri: str, tracer_provider: TracerProvider
) -> InMemoryMetricReader:
    reader = InMemoryMetricReader()
    client = client_class(uri, **CLIENT_OPTIONS)
    instrument_client(
        client, tracer_provider=tracer_provider, meter_provider=MeterProvider([reader])
    )
    session = client.start_session()  # a coroutine with Motor, a session with PyMongo
    if inspect.isawaitable(session):
        session = await session
    async with session:

        async def callback(s: Any) -> None:
            await client.native.items.insert_one({"x": 1}, session=s)

        await session.with_transaction(callback)
    await client.native.items.find_one({})
    if client_class is AsyncIOMotorClient:
        client.close()
    else:
        await client.close()
    return reader


def _metric_names(reader: InMemoryMetricReader) -> set[str]:
    data = reader.get_metrics_data()
    assert data is not None
    return {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


@pytest.mark.parametrize("client_class", [AsyncIOMotorClient, pymongo.AsyncMongoClient])
async def test_native_tracing_on_leaves_operations_and_commands_to_pymongo(
    native: dict[str, Any],
    client_class: Any,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    mongodb_uri: str,
) -> None:
    """With PyMongo tracing itself: our transaction spans and metrics stay, our op/command spans go."""
    reader = await _traced_transaction(client_class, mongodb_uri, tracer_provider)
    assert sorted(s.name for s in exporter.get_finished_spans()) == [
        "transaction",
        "withTransaction",
    ]
    assert {
        "db.client.operation.duration",
        "db.client.mongodb.transaction.duration",
    } <= _metric_names(reader)
    assert native["seen"], "the stand-in's check was consulted"


async def test_native_tracing_off_keeps_our_full_tree(
    native: dict[str, Any],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    mongodb_uri: str,
) -> None:
    """The module alone is not enough: its switch must be on for us to step back."""
    native["enabled"] = False
    await _traced_transaction(AsyncIOMotorClient, mongodb_uri, tracer_provider)
    names = {s.name for s in exporter.get_finished_spans()}
    assert {"insert native.items", "insert", "find native.items", "find"} <= names


async def test_a_failing_native_check_means_we_trace(
    native: dict[str, Any],
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    mongodb_uri: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broken or changed ``pymongo._otel`` never costs the user their spans."""
    native["enabled"] = RuntimeError("moved on")
    await _traced_transaction(AsyncIOMotorClient, mongodb_uri, tracer_provider)
    assert "insert native.items" in {s.name for s in exporter.get_finished_spans()}
    assert "_is_tracing_enabled failed" in caplog.text


def test_without_the_module_there_is_no_native_tracing() -> None:
    """PyMongo 4.20 has no ``pymongo._otel``: detection says no."""
    coexistence.forget_native_module()
    assert "pymongo._otel" not in sys.modules
    assert coexistence.native_tracing(None) is False
