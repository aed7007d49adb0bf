"""Other producers of MongoDB spans: opentelemetry-instrumentation-pymongo and PyMongo's own."""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import types
from collections.abc import Iterator, Sequence
from typing import Any

import pymongo
import pytest
import structlog
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pymongo import monitoring

from motor_otel import MotorInstrumentor, coexistence, instrument_client, uninstrument_client
from tests.conftest import CLIENT_OPTIONS
from tests.spans import ancestors, named

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
NATIVE_SCOPE = "PyMongo"


class NativeTracing(monitoring.CommandListener):
    """A ``pymongo._otel`` stand-in that traces as PyMongo's development branch does.

    ``_is_tracing_enabled`` answers what the test says (``"env"``: from
    ``OTEL_PYTHON_INSTRUMENTATION_MONGODB_ENABLED``, as the real one does). While it says yes,
    every ``_retry_internal`` call (PyMongo's operation boundary) runs inside an operation span
    made current, and every command gets a command span started from the current context, both
    from a tracer named "PyMongo". PyMongo 4.20 cannot call into the stand-in, so the operation
    span comes from patching ``_retry_internal`` and the command span from a command listener on
    the client (``event_listeners=[native]``), which PyMongo calls where it would start its own.
    """

    def __init__(self, tracer_provider: TracerProvider) -> None:
        self.enabled: bool | str | Exception = True
        self.seen: list[Any] = []
        self.tracer = tracer_provider.get_tracer(NATIVE_SCOPE)
        self._commands: dict[tuple[Any, int], Any] = {}
        self.module = types.ModuleType("pymongo._otel")
        self.module._is_tracing_enabled = self._is_tracing_enabled  # type: ignore[attr-defined]

    def _on(self) -> bool:
        if isinstance(self.enabled, Exception):
            raise self.enabled
        if self.enabled == "env":
            value = os.environ.get("OTEL_PYTHON_INSTRUMENTATION_MONGODB_ENABLED", "")
            return value.strip().lower() in ("1", "true", "yes")
        return bool(self.enabled)

    def _is_tracing_enabled(self, options: Any) -> bool:
        self.seen.append(options)
        return self._on()

    def patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "pymongo._otel", self.module)
        for cls in (pymongo.AsyncMongoClient, pymongo.MongoClient):
            monkeypatch.setattr(cls, "_retry_internal", self._operation_span(cls._retry_internal))

    def _operation_span(self, original: Any) -> Any:
        signature = inspect.signature(original)

        def span(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            operation = signature.bind(*args, **kwargs).arguments["operation"]
            operation = str(getattr(operation, "value", operation))  # PyMongo's _Op enum
            attributes = {"db.system.name": "mongodb", "db.operation.name": operation}
            return self.tracer.start_as_current_span(
                operation, kind=SpanKind.CLIENT, attributes=attributes
            )

        if inspect.iscoroutinefunction(original):

            async def retry_internal_async(*args: Any, **kwargs: Any) -> Any:
                if not self._on():
                    return await original(*args, **kwargs)
                with span(args, kwargs):
                    return await original(*args, **kwargs)

            return retry_internal_async

        def retry_internal(*args: Any, **kwargs: Any) -> Any:
            if not self._on():
                return original(*args, **kwargs)
            with span(args, kwargs):
                return original(*args, **kwargs)

        return retry_internal

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self._on():
            attributes = {"db.system.name": "mongodb", "db.command.name": event.command_name}
            self._commands[(event.connection_id, event.request_id)] = self.tracer.start_span(
                event.command_name, kind=SpanKind.CLIENT, attributes=attributes
            )

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        span = self._commands.pop((event.connection_id, event.request_id), None)
        if span is not None:
            span.end()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.succeeded(event)  # type: ignore[arg-type]


@pytest.fixture
def native(
    monkeypatch: pytest.MonkeyPatch, tracer_provider: TracerProvider
) -> Iterator[NativeTracing]:
    """The stand-in installed as ``pymongo._otel``, exporting to the test's provider."""
    stand_in = NativeTracing(tracer_provider)
    stand_in.patch(monkeypatch)
    coexistence.forget_native_module()
    yield stand_in
    coexistence.forget_native_module()


async def _in_transaction(client: Any) -> None:
    """One with_transaction inserting a document, then a find outside it (any async client)."""
    session = client.start_session()  # a coroutine with Motor, a session with PyMongo
    if inspect.isawaitable(session):
        session = await session
    async with session:

        async def callback(s: Any) -> None:
            await client.native.items.insert_one({"x": 1}, session=s)

        await session.with_transaction(callback)
    await client.native.items.find_one({})


def _in_transaction_sync(client: pymongo.MongoClient[Any]) -> None:
    """The same through the sync MongoClient."""
    with client.start_session() as session:
        session.with_transaction(lambda s: client.native.items.insert_one({"x": 1}, session=s))
    client.native.items.find_one({})


async def _run(client: Any) -> None:
    if isinstance(client, pymongo.MongoClient):
        await asyncio.to_thread(_in_transaction_sync, client)
        client.close()
        return
    await _in_transaction(client)
    if isinstance(client, AsyncIOMotorClient):
        client.close()
    else:
        await client.close()


def _metric_names(reader: InMemoryMetricReader) -> set[str]:
    data = reader.get_metrics_data()
    assert data is not None
    return {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


def _scope(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.instrumentation_scope and s.instrumentation_scope.name == name]


def check_native_tree(spans: Sequence[ReadableSpan]) -> None:
    """Ours: only withTransaction and its attempt; PyMongo's operation and command spans under them."""
    ours = _scope(spans, "motor_otel")
    assert sorted(s.name for s in ours) == ["transaction", "withTransaction"]
    (wt,) = named(ours, "withTransaction")
    (attempt,) = named(ours, "transaction")
    native = _scope(spans, NATIVE_SCOPE)
    operations = [s for s in native if "db.operation.name" in (s.attributes or {})]
    commands = [s for s in native if "db.command.name" in (s.attributes or {})]
    assert len(operations) + len(commands) == len(native)

    (insert_op,) = [s for s in operations if s.name == "insert"]
    assert attempt == ancestors(spans, insert_op)[0]
    (insert_cmd,) = [s for s in commands if s.name == "insert"]
    assert [insert_op, attempt, wt] == ancestors(spans, insert_cmd)[:3]
    (commit_cmd,) = [s for s in commands if s.name == "commitTransaction"]
    assert wt in ancestors(spans, commit_cmd)
    (find_op,) = [s for s in operations if s.name == "find"]
    (find_cmd,) = [s for s in commands if s.name == "find"]
    assert [find_op] == ancestors(spans, find_cmd)[:1]
    assert wt not in ancestors(spans, find_op)


@pytest.mark.parametrize(
    "client_class",
    [AsyncIOMotorClient, pymongo.AsyncMongoClient, pymongo.MongoClient],
    ids=["motor", "pymongo_async", "pymongo_sync"],
)
async def test_native_tracing_on_leaves_operations_and_commands_to_pymongo(
    native: NativeTracing,
    client_class: Any,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    mongodb_uri: str,
) -> None:
    """instrument_client: PyMongo's spans nest under our transaction spans; our logs, metrics stay."""
    reader = InMemoryMetricReader()
    client = client_class(mongodb_uri, **CLIENT_OPTIONS, event_listeners=[native])
    instrument_client(
        client,
        tracer_provider=tracer_provider,
        meter_provider=MeterProvider([reader]),
        log_lifecycle=True,
    )
    with structlog.testing.capture_logs() as logs:
        await _run(client)
    check_native_tree(exporter.get_finished_spans())
    assert {
        "db.client.operation.duration",
        "db.client.mongodb.transaction.duration",
        "db.client.mongodb.transactions",
    } <= _metric_names(reader)
    assert [e["event"] for e in logs] == ["transaction.started", "transaction.committed"]
    assert native.seen, "the stand-in's check was consulted"


async def test_native_tracing_from_the_environment_under_the_global_instrumentor(
    native: NativeTracing,
    monkeypatch: pytest.MonkeyPatch,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    mongodb_uri: str,
) -> None:
    """MONGODB_ENABLED=true switches PyMongo's tracing on: MotorInstrumentor steps back the same way."""
    native.enabled = "env"
    monkeypatch.setenv("OTEL_PYTHON_INSTRUMENTATION_MONGODB_ENABLED", "true")
    reader = InMemoryMetricReader()
    ours = MotorInstrumentor()
    ours.instrument(
        tracer_provider=tracer_provider, meter_provider=MeterProvider([reader]), log_lifecycle=True
    )
    try:
        client: AsyncIOMotorClient = AsyncIOMotorClient(
            mongodb_uri, **CLIENT_OPTIONS, event_listeners=[native]
        )
        with structlog.testing.capture_logs() as logs:
            await _run(client)
    finally:
        ours.uninstrument()
    assert native.seen == [None]  # the global scope asks once, with no client options
    check_native_tree(exporter.get_finished_spans())
    assert "db.client.mongodb.transactions" in _metric_names(reader)
    assert [e["event"] for e in logs] == ["transaction.started", "transaction.committed"]


async def test_native_tracing_off_keeps_our_full_tree(
    native: NativeTracing,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    mongodb_uri: str,
) -> None:
    """The module alone is not enough: its switch must be on for us to step back."""
    native.enabled = False
    client: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    instrument_client(client, tracer_provider=tracer_provider)
    await _run(client)
    names = {s.name for s in exporter.get_finished_spans()}
    assert {"insert native.items", "insert", "find native.items", "find"} <= names
    assert _scope(exporter.get_finished_spans(), NATIVE_SCOPE) == []


async def test_a_failing_native_check_means_we_trace(
    native: NativeTracing,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    mongodb_uri: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broken or changed ``pymongo._otel`` never costs the user their spans."""
    client: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    native.enabled = RuntimeError("moved on")
    instrument_client(client, tracer_provider=tracer_provider)
    native.enabled = False  # the stand-in's own spans stay off for the rest of the run
    await _run(client)
    assert "insert native.items" in {s.name for s in exporter.get_finished_spans()}
    assert "_is_tracing_enabled failed" in caplog.text


def test_without_the_module_there_is_no_native_tracing() -> None:
    """PyMongo 4.20 has no ``pymongo._otel``: detection says no."""
    coexistence.forget_native_module()
    assert "pymongo._otel" not in sys.modules
    assert coexistence.native_tracing(None) is False
