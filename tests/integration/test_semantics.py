"""Query-text truncation, the database/dup opt-in, the schema URL and a bad variable, through
Motor and PyMongo's AsyncMongoClient alike (test_configuration.py has each setting in depth)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pymongo
import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from motor_otel import uninstrument_client
from tests.conftest import CLIENT_OPTIONS
from tests.signals import Signals, scope_metrics
from tests.spans import named

DRIVERS: dict[str, Callable[[str], Any]] = {
    "motor": lambda uri: AsyncIOMotorClient(uri, **CLIENT_OPTIONS),
    "async_pymongo": lambda uri: pymongo.AsyncMongoClient(uri, **CLIENT_OPTIONS),
}
SCHEMA_URL = "https://opentelemetry.io/schemas/1.30.0"


@pytest.fixture(autouse=True)
def fresh_semconv_opt_in() -> Iterator[None]:
    """Contrib's helper caches OTEL_SEMCONV_STABILITY_OPT_IN process-wide: re-read it here."""
    _OpenTelemetrySemanticConventionStability._initialized = False
    yield
    _OpenTelemetrySemanticConventionStability._initialized = False


@pytest.fixture(params=sorted(DRIVERS))
async def run(
    request: pytest.FixtureRequest, mongodb_uri: str, signals: Signals
) -> AsyncIterator[Callable[..., Any]]:
    """``await run(**settings)``: insert and read back through a freshly instrumented client;
    returns the metric reader."""
    clients: list[Any] = []

    async def go(**settings: Any) -> InMemoryMetricReader:
        client = DRIVERS[request.param](mongodb_uri)
        clients.append(client)
        signals.instrument(client, **settings)
        coll = client.semantics_e2e.items
        await coll.insert_one({"name": "日本語のテキスト", "padding": "x" * 40})
        assert await coll.find_one({"name": "日本語のテキスト"}) is not None
        return signals.reader

    yield go
    for client in clients:
        uninstrument_client(client)
        closed = client.close()
        if closed is not None:
            await closed


def _commands(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if "db.command.name" in (s.attributes or {})]


async def test_query_text_is_cut_then_marked(
    run: Callable[..., Any], exporter: InMemorySpanExporter
) -> None:
    """Longer than the limit: the limit's worth of characters, then "..."; raw values keep the
    multi-byte text whole up to the cut."""
    await run(query_text_max_length=30, query_text_raw_values=True)
    texts = {
        str(s.attributes["db.command.name"]): s.attributes["db.query.text"]
        for s in _commands(exporter)
    }  # type: ignore[index]
    assert {"insert", "find"} <= set(texts)
    for text in texts.values():
        assert isinstance(text, str)
        assert len(text) == 33 and text.endswith("...")
    exporter.clear()
    await run(query_text_max_length=10_000, query_text_raw_values=True)
    (insert,) = named(exporter.get_finished_spans(), "insert")
    full = str((insert.attributes or {})["db.query.text"])
    assert "日本語のテキスト" in full and not full.endswith("...")
    assert full[:30] + "..." == texts["insert"]


async def test_database_dup_and_schema_url(
    run: Callable[..., Any], exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """database/dup: old names beside the stable ones; spans and points carry semconv 1.30.0."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "database/dup")
    reader = await run(query_text_max_length=100)
    spans = exporter.get_finished_spans()
    (command,) = named(spans, "insert")
    (operation,) = named(spans, "insert semantics_e2e.items")
    for span in (command, operation):
        attrs = span.attributes or {}
        assert (attrs["db.system"], attrs["db.name"], attrs["db.mongodb.collection"]) == (
            "mongodb",
            "semantics_e2e",
            "items",
        )
    attrs = command.attributes or {}
    assert (attrs["net.peer.name"], attrs["net.peer.port"], attrs["db.statement"]) == (
        attrs["server.address"],
        attrs["server.port"],
        attrs["db.query.text"],
    )
    assert {SCHEMA_URL} == {
        s.instrumentation_scope.schema_url for s in spans if s.instrumentation_scope
    }
    assert {SCHEMA_URL} == {sm.scope.schema_url for sm in scope_metrics(reader)}


async def test_a_bad_variable_is_ignored_with_one_warning(
    run: Callable[..., Any],
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """QUERY_TEXT_MAX_LENGTH=abc: one warning naming it, no query text, spans as usual."""
    monkeypatch.setenv("OTEL_PYTHON_INSTRUMENTATION_MONGODB_QUERY_TEXT_MAX_LENGTH", "abc")
    with caplog.at_level("WARNING", logger="motor_otel"):
        await run()
    (warning,) = [r for r in caplog.records if r.name == "motor_otel"]
    assert "OTEL_PYTHON_INSTRUMENTATION_MONGODB_QUERY_TEXT_MAX_LENGTH='abc'" in warning.getMessage()
    commands = _commands(exporter)
    assert {"insert", "find"} <= {s.name for s in commands}
    assert not [s for s in commands if "db.query.text" in (s.attributes or {})]
