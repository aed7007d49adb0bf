"""MotorInstrumentor: the global lifecycle (instrument, uninstrument, instrument again)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorClientSession
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from motor_otel import InstrumentedAsyncIOMotorClientSession, MotorInstrumentor
from tests.conftest import CLIENT_OPTIONS


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


def test_second_instrument_is_a_noop_with_warning(
    instrumentor: MotorInstrumentor,
    tracer_provider: TracerProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """BaseInstrumentor semantics: instrumenting twice warns and changes nothing."""
    instrumentor.instrument(tracer_provider=tracer_provider)
    instrumentor.instrument(tracer_provider=tracer_provider, with_transaction="spec")
    assert "already instrumented" in caplog.text.lower()
    assert MotorInstrumentor() is instrumentor
    assert list(instrumentor.instrumentation_dependencies()) == ["pymongo >= 4.9, < 5"]
