"""Every setting, end to end: an env var or keyword in, a visible change in spans, metrics or logs.

Each test runs twice, through ``MotorInstrumentor().instrument()`` and through
``instrument_client()``: both read the same ``OTEL_PYTHON_INSTRUMENTATION_MONGODB_*`` variables
at instrument time, and their keywords win over them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import structlog
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorClientSession
from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pymongo.errors import PyMongoError

from motor_otel import MotorInstrumentor, instrument_client, uninstrument_client
from tests.conftest import CLIENT_OPTIONS
from tests.signals import make_signals, scope_metrics
from tests.spans import children, named

ENV = "OTEL_PYTHON_INSTRUMENTATION_MONGODB_"
SECRET = "s3cret-value-42"
# The commit and PyMongo's own retry of it both fail: UnknownTransactionCommitResult.
UNKNOWN_COMMIT = {
    "configureFailPoint": "failCommand",
    "mode": {"times": 2},
    "data": {"failCommands": ["commitTransaction"], "errorCode": 91},
}
FAIL_POINT_OFF = {"configureFailPoint": "failCommand", "mode": "off"}

Traced = Callable[..., AsyncIOMotorClient]


@pytest.fixture(params=["instrument", "instrument_client"])
async def traced(
    request: pytest.FixtureRequest, tracer_provider: TracerProvider, mongodb_uri: str
) -> AsyncIterator[Traced]:
    """``traced(**settings)``: a new Motor client, instrumented one way or the other."""
    instrumentor = MotorInstrumentor()
    clients: list[AsyncIOMotorClient] = []

    def make(**settings: Any) -> AsyncIOMotorClient:
        settings.setdefault("tracer_provider", tracer_provider)
        if request.param == "instrument":
            if instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.uninstrument()
            instrumentor.instrument(**settings)
            client: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
            clients.append(client)
        else:
            client = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
            clients.append(client)
            instrument_client(client, **settings)
        return client

    yield make
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    for client in clients:
        await client.admin.command(FAIL_POINT_OFF)
        uninstrument_client(client)
        client.close()


async def _transaction(client: AsyncIOMotorClient, doc: dict[str, Any] | None = None) -> Any:
    """One with_transaction inserting ``doc``; returns what the app would read back."""

    async def callback(session: AsyncIOMotorClientSession) -> Any:
        result = await client.config_e2e.items.insert_one(
            dict(doc or {"owner": SECRET}), session=session
        )
        return result.inserted_id

    async with await client.start_session() as session:
        inserted = await session.with_transaction(callback)
    return await client.config_e2e.items.find_one({"_id": inserted}, {"_id": 0})


def _command_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if "db.command.name" in (s.attributes or {})]


def _query_texts(exporter: InMemorySpanExporter) -> dict[str, str]:
    return {
        str(s.attributes["db.command.name"]): str(s.attributes["db.query.text"])
        for s in _command_spans(exporter)
        if s.attributes and "db.query.text" in s.attributes
    }


# -- OTEL_PYTHON_INSTRUMENTATION_MONGODB_ENABLED / enabled= ----------------------------------


async def test_enabled_false_in_the_environment_traces_nothing(
    traced: Traced, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENABLED=false: the app gets the same results and no span is exported."""
    monkeypatch.setenv(ENV + "ENABLED", "false")
    client = traced()
    assert await _transaction(client, {"n": 1}) == {"n": 1}
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize(
    ("env", "keyword", "traced_spans"), [("false", True, True), ("true", False, False)]
)
async def test_enabled_keyword_overrides_the_environment(
    traced: Traced,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    env: str,
    keyword: bool,
    traced_spans: bool,
) -> None:
    """enabled= wins over OTEL_PYTHON_INSTRUMENTATION_MONGODB_ENABLED, either way."""
    monkeypatch.setenv(ENV + "ENABLED", env)
    client = traced(enabled=keyword)
    await _transaction(client)
    names = {s.name for s in exporter.get_finished_spans()}
    expected = {"withTransaction", "transaction", "insert config_e2e.items", "insert"}
    assert (expected <= names) is traced_spans
    assert bool(names) is traced_spans


# -- QUERY_TEXT_MAX_LENGTH / query_text_max_length= ------------------------------------------


async def test_no_query_text_by_default(traced: Traced, exporter: InMemorySpanExporter) -> None:
    """Out of the box no command span carries db.query.text."""
    await _transaction(traced())
    assert len(_command_spans(exporter)) >= 3
    assert _query_texts(exporter) == {}


async def test_query_text_max_length_from_the_environment_truncates(
    traced: Traced, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QUERY_TEXT_MAX_LENGTH=40: every command has text, cut to 40; a keyword lifts the limit."""
    monkeypatch.setenv(ENV + "QUERY_TEXT_MAX_LENGTH", "40")
    await _transaction(traced())
    short = _query_texts(exporter)
    assert {"insert", "commitTransaction", "find"} <= set(short)
    assert {43} == {len(text) for text in short.values()}  # all longer: cut, then "..."
    assert all(text.endswith("...") for text in short.values())
    assert short["insert"].startswith('{"insert": "items"')

    exporter.clear()
    await _transaction(traced(query_text_max_length=100_000))
    full = _query_texts(exporter)
    assert len(full["insert"]) > 40
    assert full["insert"][:40] + "..." == short["insert"]
    assert not full["insert"].endswith("...")
    for stripped in ('"lsid"', '"$db"', '"$clusterTime"', '"signature"'):
        assert stripped not in full["insert"]


async def test_query_text_keyword_zero_overrides_the_environment(
    traced: Traced, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """query_text_max_length=0 switches text off even when the environment turns it on."""
    monkeypatch.setenv(ENV + "QUERY_TEXT_MAX_LENGTH", "1000")
    await _transaction(traced(query_text_max_length=0))
    assert _command_spans(exporter)
    assert _query_texts(exporter) == {}


# -- QUERY_TEXT_RAW_VALUES / query_text_raw_values= ------------------------------------------


async def test_query_text_values_are_redacted_unless_raw_values_are_opted_in(
    traced: Traced, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RAW_VALUES=true puts the document value in db.query.text; without it, '?' stands in."""
    monkeypatch.setenv(ENV + "QUERY_TEXT_MAX_LENGTH", "10000")
    await _transaction(traced())
    redacted = _query_texts(exporter)["insert"]
    assert SECRET not in redacted
    assert '"owner": "?"' in redacted

    exporter.clear()
    monkeypatch.setenv(ENV + "QUERY_TEXT_RAW_VALUES", "true")
    await _transaction(traced())
    assert f'"owner": "{SECRET}"' in _query_texts(exporter)["insert"]

    exporter.clear()
    await _transaction(traced(query_text_raw_values=False))
    assert SECRET not in _query_texts(exporter)["insert"]


# -- WITH_TRANSACTION / with_transaction= ----------------------------------------------------


async def test_with_transaction_spec_from_the_environment_retries_the_commit(
    traced: Traced, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WITH_TRANSACTION=spec: our documented loop retries an unknown commit result and commits."""
    monkeypatch.setenv(ENV + "WITH_TRANSACTION", "spec")
    client = traced()
    await client.admin.command(UNKNOWN_COMMIT)
    assert await _transaction(client, {"mode": "spec"}) == {"mode": "spec"}
    (wt,) = named(exporter.get_finished_spans(), "withTransaction")
    assert wt.attributes is not None
    assert wt.attributes["db.mongodb.transaction.mode"] == "spec"
    assert wt.attributes["db.mongodb.transaction.commit_attempts"] == 2
    assert wt.attributes["db.mongodb.transaction.outcome"] == "committed"


async def test_with_transaction_keyword_overrides_the_environment(
    traced: Traced, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """with_transaction="driver" over WITH_TRANSACTION=spec: Motor's own loop, error and all."""
    monkeypatch.setenv(ENV + "WITH_TRANSACTION", "spec")
    client = traced(with_transaction="driver")
    await client.admin.command(UNKNOWN_COMMIT)
    with pytest.raises(PyMongoError) as raised:
        await _transaction(client)
    assert raised.value.has_error_label("UnknownTransactionCommitResult")
    (wt,) = named(exporter.get_finished_spans(), "withTransaction")
    assert wt.attributes is not None
    assert wt.attributes["db.mongodb.transaction.mode"] == "driver"
    assert wt.attributes["db.mongodb.transaction.commit_attempts"] == 1
    assert wt.attributes["db.mongodb.transaction.outcome"] == "failed"
    assert [e.name for e in wt.events] == ["exception", "commit_not_retried"]


# -- LOG_LIFECYCLE / log_lifecycle= ----------------------------------------------------------


async def test_log_lifecycle_from_the_environment(
    traced: Traced, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LOG_LIFECYCLE=true: structlog events for the transaction, with its span's lsid."""
    monkeypatch.setenv(ENV + "LOG_LIFECYCLE", "true")
    client = traced()
    with structlog.testing.capture_logs() as logs:
        await _transaction(client)
    assert [e["event"] for e in logs] == ["transaction.started", "transaction.committed"]
    (attempt,) = named(exporter.get_finished_spans(), "transaction")
    assert attempt.attributes is not None
    assert logs[0]["db.mongodb.lsid"] == attempt.attributes["db.mongodb.lsid"]


@pytest.mark.parametrize(
    ("env", "keyword", "expected"), [(None, None, 0), ("true", False, 0), ("false", True, 2)]
)
async def test_log_lifecycle_default_and_keyword_override(
    traced: Traced,
    monkeypatch: pytest.MonkeyPatch,
    env: str | None,
    keyword: bool | None,
    expected: int,
) -> None:
    """Off by default; log_lifecycle= wins over the environment either way."""
    if env is None:
        monkeypatch.delenv(ENV + "LOG_LIFECYCLE", raising=False)
    else:
        monkeypatch.setenv(ENV + "LOG_LIFECYCLE", env)
    client = traced(log_lifecycle=keyword)
    with structlog.testing.capture_logs() as logs:
        await _transaction(client)
    assert len(logs) == expected


# -- OTEL_SEMCONV_STABILITY_OPT_IN -----------------------------------------------------------

OLD_STYLE = (
    "db.system",
    "db.name",
    "db.statement",
    "db.operation",
    "net.peer.name",
    "net.peer.port",
)


@pytest.fixture
def semconv_opt_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str | None], None]]:
    """Set OTEL_SEMCONV_STABILITY_OPT_IN; contrib's helper caches it process-wide, so reset it
    (as contrib's own tests do) before and after."""

    def set_opt_in(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
        else:
            monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", value)
        _OpenTelemetrySemanticConventionStability._initialized = False

    yield set_opt_in
    _OpenTelemetrySemanticConventionStability._initialized = False


@pytest.mark.parametrize("opt_in", [None, "database", "http,database"])
async def test_only_stable_attributes_unless_database_dup(
    traced: Traced,
    exporter: InMemorySpanExporter,
    semconv_opt_in: Callable[[str | None], None],
    opt_in: str | None,
) -> None:
    """Without database/dup only the stable database conventions are emitted."""
    semconv_opt_in(opt_in)
    await _transaction(traced(query_text_max_length=1000))
    spans = exporter.get_finished_spans()
    (insert,) = named(spans, "insert")
    assert insert.attributes is not None
    assert insert.attributes["db.system.name"] == "mongodb"
    assert insert.attributes["db.namespace"] == "config_e2e"
    assert insert.attributes["server.port"] > 0
    assert all(
        s.attributes is not None and s.attributes["db.system.name"] == "mongodb" for s in spans
    )
    assert [k for s in spans for k in (s.attributes or {}) if k in OLD_STYLE] == []


@pytest.mark.parametrize("query_text", [0, 1000])
async def test_database_dup_adds_the_old_names_beside_the_stable_ones(
    traced: Traced,
    exporter: InMemorySpanExporter,
    semconv_opt_in: Callable[[str | None], None],
    query_text: int,
) -> None:
    """database/dup: db.system, db.name, db.statement (with query text), net.peer.*,
    db.mongodb.collection, each equal to its stable twin, on operation and command spans."""
    semconv_opt_in("http,database/dup")
    await _transaction(traced(query_text_max_length=query_text))
    spans = exporter.get_finished_spans()
    (command,) = named(spans, "insert")
    (operation,) = named(spans, "insert config_e2e.items")
    pairs = {
        "db.system": "db.system.name",
        "db.name": "db.namespace",
        "db.mongodb.collection": "db.collection.name",
    }
    for span in (command, operation):
        attrs = dict(span.attributes or {})
        assert {old: attrs[new] for old, new in pairs.items()} == {old: attrs[old] for old in pairs}
        assert attrs["db.system"] == "mongodb"
    command_attrs = dict(command.attributes or {})
    assert command_attrs["server.address"] == command_attrs["net.peer.name"]
    assert command_attrs["server.port"] == command_attrs["net.peer.port"]
    if query_text:
        assert command_attrs["db.query.text"] == command_attrs["db.statement"]
    else:
        assert "db.statement" not in command_attrs and "db.query.text" not in command_attrs
    assert "db.operation" not in command_attrs  # only the names the issue lists


# -- tracer_provider= / meter_provider= ------------------------------------------------------


async def test_tracer_provider_keyword_receives_the_spans(traced: Traced, mongodb_uri: str) -> None:
    """Spans go to the provider given, not to the global one."""
    signals = make_signals()
    await _transaction(traced(tracer_provider=signals.tracer_provider))
    spans = signals.spans()
    (wt,) = named(spans, "withTransaction")
    assert [c.name for c in children(spans, wt)] == ["transaction"]
    assert {s.instrumentation_scope.name for s in spans if s.instrumentation_scope} == {
        "motor_otel"
    }


async def test_meter_provider_keyword_receives_the_metrics(traced: Traced) -> None:
    """Metric points go to the meter provider given: one committed transaction, its operations."""
    signals = make_signals()
    await _transaction(traced(meter_provider=signals.meter_provider))
    points = signals.points()
    (done,) = points["db.client.mongodb.transactions"]
    assert done.attributes is not None
    assert (done.value, done.attributes["db.mongodb.transaction.outcome"]) == (1, "committed")
    operations = {
        p.attributes["db.operation.name"]
        for p in points["db.client.operation.duration"]
        if p.attributes
    }
    assert {"insert", "commitTransaction", "find"} <= operations


async def test_tracer_and_meter_carry_the_schema_url_of_the_names_we_emit(traced: Traced) -> None:
    """Spans and metric points say semconv 1.30.0: db.system.name and db.query.summary's."""
    signals = make_signals()
    await _transaction(traced(**signals.providers()))
    schema = "https://opentelemetry.io/schemas/1.30.0"
    spans = signals.spans()
    assert {schema} == {
        s.instrumentation_scope.schema_url for s in spans if s.instrumentation_scope
    }
    scopes = scope_metrics(signals.reader)
    assert {"motor_otel"} == {sm.scope.name for sm in scopes}
    assert {schema} == {sm.scope.schema_url for sm in scopes}
    assert {schema} == {sm.schema_url for sm in scopes}


# -- bad values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "setting"),
    [
        ("ENABLED", "maybe", "enabled"),
        ("QUERY_TEXT_MAX_LENGTH", "abc", "query_text_max_length"),
        ("QUERY_TEXT_RAW_VALUES", "2", "query_text_raw_values"),
        ("WITH_TRANSACTION", "sometimes", "with_transaction"),
        ("LOG_LIFECYCLE", "loud", "log_lifecycle"),
        ("KEEP", "sometimes", "keep"),
    ],
)
async def test_a_bad_environment_value_is_ignored_with_one_warning(
    traced: Traced,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    variable: str,
    value: str,
    setting: str,
) -> None:
    """A typo in a variable never stops instrument(): that setting keeps its default, one
    warning names the variable and the value, and the transaction is traced as usual."""
    monkeypatch.setenv(ENV + variable, value)
    with caplog.at_level("WARNING", logger="motor_otel"):
        client = traced()
    (warning,) = [r for r in caplog.records if r.name == "motor_otel"]
    assert ENV + variable in warning.getMessage() and repr(value) in warning.getMessage()
    assert setting in warning.getMessage()
    assert await _transaction(client, {"n": 1}) == {"n": 1}
    names = {s.name for s in exporter.get_finished_spans()}
    assert {"withTransaction", "transaction", "insert config_e2e.items", "insert"} <= names
    (wt,) = named(exporter.get_finished_spans(), "withTransaction")
    assert (wt.attributes or {})["db.mongodb.transaction.mode"] == "driver"
    assert not [s for s in _command_spans(exporter) if "db.query.text" in (s.attributes or {})]


@pytest.mark.parametrize(
    "settings",
    [
        {"query_text_max_length": "lots"},
        {"with_transaction": "sometimes"},
        {"enabled": "maybe"},
        {"keep": "retried,sometimes"},
        {"keep": "slow:fast"},
        {"qeury_text_max_length": 10},
    ],
)
async def test_a_bad_keyword_still_raises(traced: Traced, settings: dict[str, Any]) -> None:
    """A wrong keyword is the programmer's error: instrument() raises, naming it."""
    with pytest.raises((TypeError, ValueError), match=next(iter(settings))):
        traced(**settings)
