"""MotorInstrumentor: the global lifecycle (instrument, uninstrument, instrument again)."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import entry_points

import pytest
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorClientSession
from opentelemetry.instrumentation.distro import DefaultDistro
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from motor_otel import InstrumentedAsyncIOMotorClientSession, MotorInstrumentor
from tests.conftest import CLIENT_OPTIONS
from tests.signals import make_signals


@pytest.fixture
def instrumentor() -> Iterator[MotorInstrumentor]:
    instance = MotorInstrumentor()
    yield instance
    if instance.is_instrumented_by_opentelemetry:
        instance.uninstrument()


async def _one_transaction(uri: str) -> AsyncIOMotorClientSession:
    client: AsyncIOMotorClient = AsyncIOMotorClient(uri, **CLIENT_OPTIONS)
    async with await client.start_session() as session:
        await session.with_transaction(lambda s: client.glob.items.insert_one({}, session=s))
    client.close()
    return session


async def test_instrument_uninstrument_instrument_again(
    instrumentor: MotorInstrumentor,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    mongodb_uri: str,
) -> None:
    """New clients are traced while instrumented, untouched after uninstrument, traced again."""
    instrumentor.instrument(tracer_provider=tracer_provider)
    session = await _one_transaction(mongodb_uri)
    assert isinstance(session, InstrumentedAsyncIOMotorClientSession)
    names = {s.name for s in exporter.get_finished_spans()}
    assert {"withTransaction", "transaction", "insert glob.items", "insert"} <= names

    instrumentor.uninstrument()
    exporter.clear()
    session = await _one_transaction(mongodb_uri)
    assert type(session) is not InstrumentedAsyncIOMotorClientSession
    assert exporter.get_finished_spans() == ()

    instrumentor.instrument(tracer_provider=tracer_provider, with_transaction="spec")
    await _one_transaction(mongodb_uri)
    (wt,) = [s for s in exporter.get_finished_spans() if s.name == "withTransaction"]
    assert wt.attributes["db.mongodb.transaction.mode"] == "spec"


async def test_second_instrument_is_a_noop_with_warning(
    instrumentor: MotorInstrumentor,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    mongodb_uri: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """BaseInstrumentor semantics: instrumenting twice warns, and the first settings stay."""
    instrumentor.instrument(tracer_provider=tracer_provider)
    other = make_signals()
    instrumentor.instrument(tracer_provider=other.tracer_provider, with_transaction="spec")
    assert "already instrumented" in caplog.text.lower()
    assert MotorInstrumentor() is instrumentor

    await _one_transaction(mongodb_uri)
    (wt,) = [s for s in exporter.get_finished_spans() if s.name == "withTransaction"]
    assert wt.attributes["db.mongodb.transaction.mode"] == "driver"
    assert other.spans() == ()


def test_only_pymongo_gates_auto_instrumentation(instrumentor: MotorInstrumentor) -> None:
    """Motor is our own dependency: the gate is PyMongo's range, so PyMongo-only apps qualify."""
    assert list(instrumentor.instrumentation_dependencies()) == ["pymongo >= 4.9, < 5"]


def test_a_misspelt_keyword_raises_and_names_it(
    instrumentor: MotorInstrumentor, tracer_provider: TracerProvider
) -> None:
    """instrument() rejects what it does not know, as instrument_client does, and stays off."""
    with pytest.raises(TypeError, match="with_transacton"):
        instrumentor.instrument(tracer_provider=tracer_provider, with_transacton="spec")
    assert not instrumentor.is_instrumented_by_opentelemetry


async def test_base_instrumentor_keywords_are_accepted(
    instrumentor: MotorInstrumentor,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    mongodb_uri: str,
) -> None:
    """skip_dep_check and raise_exception_on_conflict are BaseInstrumentor's, not settings."""
    instrumentor.instrument(
        tracer_provider=tracer_provider, skip_dep_check=True, raise_exception_on_conflict=True
    )
    assert instrumentor.is_instrumented_by_opentelemetry
    await _one_transaction(mongodb_uri)
    assert "withTransaction" in {s.name for s in exporter.get_finished_spans()}


async def test_the_auto_instrumentation_loader_path(
    instrumentor: MotorInstrumentor, mongodb_uri: str
) -> None:
    """What opentelemetry-instrument does: load our entry point, instrument(skip_dep_check=True)."""
    (entry_point,) = [
        e for e in entry_points(group="opentelemetry_instrumentor") if e.name == "motor"
    ]
    DefaultDistro().load_instrumentor(entry_point, skip_dep_check=True)
    assert instrumentor.is_instrumented_by_opentelemetry
    session = await _one_transaction(mongodb_uri)
    assert isinstance(session, InstrumentedAsyncIOMotorClientSession)
