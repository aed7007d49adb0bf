"""Other producers of MongoDB spans: opentelemetry-instrumentation-pymongo and PyMongo's own."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import sys
import types
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any

import pymongo
import pytest
import structlog
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry import trace
from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from pymongo import monitoring

from motor_otel import MotorInstrumentor, coexistence, instrument_client, uninstrument_client
from motor_otel.testing import fail_command
from tests.conftest import CLIENT_OPTIONS
from tests.signals import Signals, make_signals
from tests.spans import children, named

CONTRIB_SCOPE = "opentelemetry.instrumentation.pymongo"


class Contrib:
    """The contrib instrumentation with its own in-memory exporter, switched on by the test.

    Its ``CommandTracer`` keeps the tracer of the process's first ``instrument()``, so a fresh
    one is built here and the previous one put back afterwards.
    """

    def __init__(self) -> None:
        signals = make_signals()
        self.exporter = signals.exporter
        self.provider = signals.tracer_provider
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
ENABLED_ENV = "OTEL_PYTHON_INSTRUMENTATION_MONGODB_ENABLED"


class NativeTracing(monitoring.CommandListener):
    """A ``pymongo._otel`` stand-in that traces as PyMongo's tracing branch does.

    Modelled on ``PYTHON-5947-otel-5-error-type`` at 8a91f4e (see README, "Living with other
    MongoDB tracers"), on PyMongo 4.20, which cannot call into it:

    * a ``tracing`` client option, into which ``OTEL_PYTHON_INSTRUMENTATION_MONGODB_ENABLED`` is
      folded once, when the client is built (``client.options.tracing``); ``_is_tracing_enabled``
      reads that, and is false for ``None``;
    * a ``transaction`` span per ``with_transaction`` call, or per ``start_transaction`` outside
      one (and a fresh one for a commit retried by hand), kept in ``session._transaction.span``
      and ended by the commit or abort, unless ``with_transaction`` owns it;
    * an operation span per ``_retry_internal`` call (PyMongo's operation boundary), made current,
      with ``session._transaction.span`` as its explicit parent inside a transaction, renamed
      ``insert db.coll`` by its first command;
    * a command span per command, started from the current context (the operation span). Here a
      command listener on the client (``event_listeners=[native]``) stands in for the driver's
      own call.
    """

    def __init__(self, tracer_provider: TracerProvider) -> None:
        self.failure: Exception | None = None  # what _is_tracing_enabled raises, if anything
        self.seen: list[Any] = []
        self.tracer = tracer_provider.get_tracer(NATIVE_SCOPE)
        self.operation: ContextVar[str | None] = ContextVar("stand_in_operation", default=None)
        self._commands: dict[tuple[Any, int], Any] = {}
        module: Any = types.ModuleType("pymongo._otel")
        module._is_tracing_enabled = self._is_tracing_enabled
        module._resolve_tracing_options = self._resolve
        module.start_transaction_span = self.start_transaction_span
        module.end_transaction_span = self.end_transaction_span
        module._CURRENT_OPERATION_NAME = self.operation
        self.module = module

    # pymongo._otel
    def _is_tracing_enabled(self, options: Any) -> bool:
        self.seen.append(options)
        if self.failure is not None:
            raise self.failure
        return options is not None and bool(options["enabled"])

    @staticmethod
    def _resolve(options: dict[str, Any]) -> dict[str, Any]:
        from_env = os.environ.get(ENABLED_ENV, "").strip().lower() in ("1", "true", "yes")
        return {"enabled": bool(options["enabled"]) or from_env, "query_text_max_length": 0}

    def start_transaction_span(self, options: Any) -> Any:
        if not self._is_tracing_enabled(options):
            return None
        return self.tracer.start_span(
            "transaction", kind=SpanKind.CLIENT, attributes={"db.system.name": "mongodb"}
        )

    @staticmethod
    def end_transaction_span(span: Any) -> None:
        if span is not None:
            span.end()

    # installing it
    def patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from pymongo import client_options, common
        from pymongo.asynchronous import client_session as async_session
        from pymongo.synchronous import client_session as sync_session

        monkeypatch.setitem(sys.modules, "pymongo._otel", self.module)
        monkeypatch.setitem(common.VALIDATORS, "tracing", lambda _option, value: value)
        options_init = client_options.ClientOptions.__init__
        resolve = self._resolve

        def init(options_self: Any, *args: Any, **kwargs: Any) -> None:
            options_init(options_self, *args, **kwargs)
            given = inspect.signature(options_init).bind(options_self, *args, **kwargs)
            wanted = given.arguments["options"].get("tracing") or {"enabled": False}
            options_self._stand_in_tracing = resolve(wanted)  # the environment, read once

        monkeypatch.setattr(client_options.ClientOptions, "__init__", init)
        monkeypatch.setattr(
            client_options.ClientOptions,
            "tracing",
            property(lambda options_self: options_self._stand_in_tracing),
            raising=False,
        )
        for module in (async_session, sync_session):
            monkeypatch.setattr(module._Transaction, "span", None, raising=False)
            session_cls = (
                module.AsyncClientSession if module is async_session else module.ClientSession
            )
            monkeypatch.setattr(session_cls, "_with_transaction_span", None, raising=False)
            for name in ("start_transaction", "commit_transaction", "abort_transaction"):
                wrap = getattr(self, f"_{name}")
                monkeypatch.setattr(session_cls, name, wrap(getattr(session_cls, name)))
            monkeypatch.setattr(
                session_cls,
                "with_transaction",
                self._with_transaction(session_cls.with_transaction),
            )
        for client_cls in (pymongo.AsyncMongoClient, pymongo.MongoClient):
            original = client_cls._retry_internal
            monkeypatch.setattr(client_cls, "_retry_internal", self._operation_span(original))
            end_sessions = self._operation_span(client_cls._end_sessions, "endSessions")
            monkeypatch.setattr(client_cls, "_end_sessions", end_sessions)

    @staticmethod
    def _on(session: Any) -> Any:
        return session._client.options.tracing

    def _around(self, original: Any, before: Any, after: Any) -> Any:
        """``original`` wrapped, sync or async alike, between ``before(self)`` and ``after(self)``."""
        if inspect.iscoroutinefunction(original):

            async def async_wrapper(session: Any, *args: Any, **kwargs: Any) -> Any:
                before(session)
                try:
                    return await original(session, *args, **kwargs)
                finally:
                    after(session)

            return async_wrapper

        def wrapper(session: Any, *args: Any, **kwargs: Any) -> Any:
            before(session)
            try:
                return original(session, *args, **kwargs)
            finally:
                after(session)

        return wrapper

    def _end_own(self, session: Any) -> None:
        if session._transaction.span is not None and session._with_transaction_span is None:
            self.end_transaction_span(session._transaction.span)
            session._transaction.span = None

    def _start_transaction(self, original: Any) -> Any:
        def open_span(session: Any) -> None:
            if session._with_transaction_span is not None:
                session._transaction.span = session._with_transaction_span
            else:
                session._transaction.span = self.start_transaction_span(self._on(session))

        return self._around(original, lambda session: None, open_span)

    def _commit_transaction(self, original: Any) -> Any:
        def reopen(session: Any) -> None:  # a commit retried by hand gets a fresh span
            if (
                session._transaction.state is sync_state().COMMITTED
                and session._transaction.span is None
            ):
                session._transaction.span = self.start_transaction_span(self._on(session))

        return self._around(original, reopen, self._end_own)

    def _abort_transaction(self, original: Any) -> Any:
        return self._around(original, lambda session: None, self._end_own)

    def _with_transaction(self, original: Any) -> Any:
        def open_span(session: Any) -> None:
            if not session.in_transaction:
                session._with_transaction_span = self.start_transaction_span(self._on(session))

        def close_span(session: Any) -> None:
            span, session._with_transaction_span = session._with_transaction_span, None
            self.end_transaction_span(span)
            if session._transaction.span is span:
                session._transaction.span = None

        return self._around(original, open_span, close_span)

    def _operation_span(self, original: Any, operation: str | None = None) -> Any:
        """``original`` (``_retry_internal``, or ``_end_sessions`` named by ``operation``) in an
        operation span, when the client traces."""
        signature = inspect.signature(original)

        @contextlib.contextmanager
        def span(client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[None]:
            if not self._is_tracing_enabled(client.options.tracing):
                yield
                return
            arguments = signature.bind(client, *args, **kwargs).arguments
            name = operation or arguments["operation"]
            name = str(getattr(name, "value", name))  # PyMongo's _Op enum
            session = arguments.get("session")
            parent = session._transaction.span if session and session.in_transaction else None
            with self.tracer.start_as_current_span(
                name,
                context=trace.set_span_in_context(parent) if parent is not None else None,
                kind=SpanKind.CLIENT,
                attributes={"db.system.name": "mongodb", "db.operation.name": name},
            ):
                token = self.operation.set(name)
                try:
                    yield
                finally:
                    self.operation.reset(token)

        if inspect.iscoroutinefunction(original):

            async def traced_async(client: Any, *args: Any, **kwargs: Any) -> Any:
                with span(client, args, kwargs):
                    return await original(client, *args, **kwargs)

            return traced_async

        def traced(client: Any, *args: Any, **kwargs: Any) -> Any:
            with span(client, args, kwargs):
                return original(client, *args, **kwargs)

        return traced

    # the command spans
    def started(self, event: monitoring.CommandStartedEvent) -> None:
        operation = self.operation.get()
        if operation is None:
            return
        collection = event.command.get(event.command_name)
        db = event.database_name
        summary = (
            f"{operation} {db}.{collection}" if isinstance(collection, str) else f"{operation} {db}"
        )
        trace.get_current_span().update_name(summary)
        attributes = {"db.system.name": "mongodb", "db.command.name": event.command_name}
        self._commands[(event.connection_id, event.request_id)] = self.tracer.start_span(
            event.command_name, kind=SpanKind.CLIENT, attributes=attributes
        )

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        span = self._commands.pop((event.connection_id, event.request_id), None)
        if span is not None:
            span.end()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        span = self._commands.pop((event.connection_id, event.request_id), None)
        if span is not None:
            span.set_attribute("error.type", str(event.failure.get("code")))
            span.set_status(Status(StatusCode.ERROR))
            span.end()


def sync_state() -> Any:
    from pymongo.client_session_shared import _TxnState

    return _TxnState


@pytest.fixture
def native(
    monkeypatch: pytest.MonkeyPatch, tracer_provider: TracerProvider
) -> Iterator[NativeTracing]:
    """The stand-in installed as ``pymongo._otel``, exporting to the test's provider."""
    monkeypatch.delenv(ENABLED_ENV, raising=False)
    stand_in = NativeTracing(tracer_provider)
    stand_in.patch(monkeypatch)
    coexistence.forget_native_module()
    yield stand_in
    coexistence.forget_native_module()


RETRY = fail_command("insert", error_code=112, error_labels=["TransientTransactionError"])


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _transaction(client: Any, kind: str) -> None:
    """A plain transaction or a with_transaction (any async client), then a find outside it."""
    session = await _maybe(client.start_session())  # a coroutine with Motor
    async with session:
        if kind == "plain":
            await _maybe(session.start_transaction())
            await client.native.items.insert_one({"x": 1}, session=session)
            await session.commit_transaction()
        else:

            async def callback(s: Any) -> None:
                await client.native.items.insert_one({"x": 1}, session=s)

            await session.with_transaction(callback)
    await client.native.items.find_one({})


def _transaction_sync(client: pymongo.MongoClient[Any], kind: str) -> None:
    """The same through the sync MongoClient."""
    coll = client.native.items
    with client.start_session() as session:
        if kind == "plain":
            session.start_transaction()
            coll.insert_one({"x": 1}, session=session)
            session.commit_transaction()
        else:
            session.with_transaction(lambda s: coll.insert_one({"x": 1}, session=s))
    coll.find_one({})


async def _run(client: Any, kind: str = "with_transaction", exporter: Any = None) -> None:
    """Run one scenario and close the client; a retried one fails its first insert once."""
    if kind == "retried":
        await _maybe(client.admin.command(RETRY))
        if exporter is not None:
            exporter.clear()  # the fail point's own spans are not the story
    if isinstance(client, pymongo.MongoClient):
        await asyncio.to_thread(_transaction_sync, client, kind)
        client.close()
        return
    await _transaction(client, kind)
    await _maybe(client.close())


def _scope(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.instrumentation_scope and s.instrumentation_scope.name == name]


def scoped_tree(spans: Sequence[ReadableSpan]) -> list[str]:
    """The tree as indented ``name [ours|pymongo]`` lines, roots and siblings in start order."""
    ids = {s.context.span_id for s in spans}
    lines: list[str] = []

    def walk(span: ReadableSpan, depth: int) -> None:
        scope = span.instrumentation_scope.name if span.instrumentation_scope else ""
        lines.append(
            f"{'  ' * depth}{span.name} [{'pymongo' if scope == NATIVE_SCOPE else 'ours'}]"
        )
        for child in children(spans, span):
            walk(child, depth + 1)

    roots = [s for s in spans if s.parent is None or s.parent.span_id not in ids]
    for root in sorted(roots, key=lambda s: s.start_time or 0):
        walk(root, 0)
    return lines


def _attempt(end: str) -> list[str]:
    return [
        "transaction [ours]",
        "  insert native.items [pymongo]",
        "    insert [pymongo]",
        f"  {end}Transaction admin [pymongo]",
        f"    {end}Transaction [pymongo]",
    ]


FIND = [
    "find native.items [pymongo]",
    "  find [pymongo]",
    "endSessions admin [pymongo]",  # at close, outside any operation of ours
    "  endSessions [pymongo]",
]
ONE_STORY = {
    "plain": [*_attempt("commit"), *FIND],
    "with_transaction": [
        "withTransaction [ours]",
        *("  " + line for line in _attempt("commit")),
        *FIND,
    ],
    "retried": [
        "withTransaction [ours]",
        *("  " + line for line in _attempt("abort")),
        *("  " + line for line in _attempt("commit")),
        *FIND,
    ],
}
CLIENTS = {
    "motor_driver": (AsyncIOMotorClient, "driver"),
    "motor_spec": (AsyncIOMotorClient, "spec"),
    "pymongo_async": (pymongo.AsyncMongoClient, "driver"),
    "pymongo_sync": (pymongo.MongoClient, "driver"),
}


@pytest.mark.parametrize("kind", ["plain", "with_transaction", "retried"])
@pytest.mark.parametrize("switch", ["env+global", "option+global", "env+client", "option+client"])
@pytest.mark.parametrize("client_kind", list(CLIENTS))
async def test_both_tracers_on_tell_one_story(
    native: NativeTracing,
    monkeypatch: pytest.MonkeyPatch,
    client_kind: str,
    switch: str,
    kind: str,
    signals: Signals,
    mongodb_uri: str,
) -> None:
    """One ``transaction`` span per attempt, ours, with PyMongo's operations and commands under it.

    PyMongo's tracing switched on by the environment (read when the client is built) or by its
    ``tracing`` option; ours by ``MotorInstrumentor`` or ``instrument_client``. Nothing is traced
    twice, and our labels, attempts, outcomes, metrics and logs are all there.
    """
    client_class, mode = CLIENTS[client_kind]
    pymongo_switch, ours_switch = switch.split("+")
    ours = {
        **signals.providers(),
        "with_transaction": mode,
        "log_lifecycle": True,
    }
    options: dict[str, Any] = {**CLIENT_OPTIONS, "event_listeners": [native]}
    if pymongo_switch == "env":
        monkeypatch.setenv(ENABLED_ENV, "true")
    else:
        options["tracing"] = {"enabled": True}
    instrumentor = MotorInstrumentor()
    if ours_switch == "global":
        instrumentor.instrument(**ours)
    try:
        client = client_class(mongodb_uri, **options)
        monkeypatch.delenv(ENABLED_ENV, raising=False)  # read once: the client keeps its answer
        if ours_switch == "client":
            instrument_client(client, **ours)
        with structlog.testing.capture_logs() as logs:
            await _run(client, kind, signals.exporter)
    finally:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()

    spans = signals.spans()
    assert scoped_tree(spans) == ONE_STORY[kind]
    attempts = [s.attributes or {} for s in named(_scope(spans, "motor_otel"), "transaction")]
    assert [a["db.mongodb.transaction.attempt"] for a in attempts] == list(
        range(1, len(attempts) + 1)
    )
    expected_events = ["transaction.started", "transaction.committed"]
    if kind == "retried":  # the labels come from PyMongo's failed insert, through our listener
        assert [a["db.mongodb.transaction.outcome"] for a in attempts] == ["aborted", "committed"]
        assert attempts[0]["db.mongodb.error_labels"] == ("TransientTransactionError",)
        (wt,) = named(spans, "withTransaction")
        assert (wt.attributes or {})["db.mongodb.error_labels"] == ("TransientTransactionError",)
        expected_events = ["transaction.started", "transaction.retry", *expected_events]
        retry = [e for e in logs if e["event"] == "transaction.retry"]
        assert retry[0]["db.mongodb.error_labels"] == ["TransientTransactionError"]
    assert [e["event"] for e in logs] == expected_events
    points = signals.points()
    (committed,) = points["db.client.mongodb.transactions"]
    assert committed.attributes["db.mongodb.transaction.outcome"] == "committed"
    if kind == "retried":
        (retries,) = points["db.client.mongodb.transaction.retries"]
        assert retries.attributes["db.mongodb.error_label"] == "TransientTransactionError"
    operations = {p.attributes["db.operation.name"] for p in points["db.client.operation.duration"]}
    assert {"insert", "commitTransaction", "find"} <= operations
    # PyMongo makes the command spans, yet each point names the server that answered.
    assert all("server.port" in p.attributes for p in points["db.client.operation.duration"])


async def test_a_commit_retried_by_hand_stays_in_its_attempt(
    native: NativeTracing,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    mongodb_uri: str,
) -> None:
    """PyMongo opens a fresh ``transaction`` span for a retried commit: ours is lent again."""
    client: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(
        mongodb_uri, **CLIENT_OPTIONS, event_listeners=[native], tracing={"enabled": True}
    )
    instrument_client(client, tracer_provider=tracer_provider)
    await client.admin.command(fail_command("commitTransaction", mode=2, error_code=91))
    exporter.clear()
    async with client.start_session() as session:
        await session.start_transaction()
        await client.native.items.insert_one({"x": 1}, session=session)
        with pytest.raises(pymongo.errors.PyMongoError):  # the commit and PyMongo's own retry
            await session.commit_transaction()
        await session.commit_transaction()
    await client.close()
    assert scoped_tree(exporter.get_finished_spans()) == [
        "transaction [ours]",
        "  insert native.items [pymongo]",
        "    insert [pymongo]",
        "  commitTransaction admin [pymongo]",
        "    commitTransaction [pymongo]",
        "    commitTransaction [pymongo]",
        "  commitTransaction admin [pymongo]",
        "    commitTransaction [pymongo]",
    ]


async def test_the_global_instrumentor_asks_each_client(
    native: NativeTracing,
    monkeypatch: pytest.MonkeyPatch,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    mongodb_uri: str,
) -> None:
    """PyMongo reads the environment when it builds a client: the client built before the
    variable was set is ours alone, the one built after is PyMongo's, under one instrumentor."""
    ours = MotorInstrumentor()
    ours.instrument(tracer_provider=tracer_provider)
    try:
        before: AsyncIOMotorClient = AsyncIOMotorClient(
            mongodb_uri, **CLIENT_OPTIONS, event_listeners=[native]
        )
        monkeypatch.setenv(ENABLED_ENV, "true")
        after: AsyncIOMotorClient = AsyncIOMotorClient(
            mongodb_uri, **CLIENT_OPTIONS, event_listeners=[native]
        )
        await before.native.items.insert_one({"x": 1})
        await after.native.items.insert_one({"x": 2})
        before.close()
        after.close()
    finally:
        ours.uninstrument()
    assert scoped_tree(exporter.get_finished_spans()) == [
        "insert native.items [ours]",
        "  insert [ours]",
        "insert native.items [pymongo]",
        "  insert [pymongo]",
        "endSessions [ours]",  # we make no operation span for endSessions
        "endSessions admin [pymongo]",
        "  endSessions [pymongo]",
    ]
    assert None not in native.seen  # never the always-false global question


async def test_native_tracing_off_keeps_our_full_tree(
    native: NativeTracing,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    mongodb_uri: str,
) -> None:
    """The module alone is not enough: its switch must be on for us to step back."""
    client: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    instrument_client(client, tracer_provider=tracer_provider)
    await _run(client)
    assert scoped_tree(exporter.get_finished_spans()) == [
        "withTransaction [ours]",
        "  transaction [ours]",
        "    insert native.items [ours]",
        "      insert [ours]",
        "    commitTransaction admin [ours]",
        "      commitTransaction [ours]",
        "find native.items [ours]",
        "  find [ours]",
        "endSessions [ours]",
    ]


async def test_a_failing_native_check_means_we_trace(
    native: NativeTracing,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    mongodb_uri: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broken or changed ``pymongo._otel`` never costs the user their spans."""
    client: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    native.failure = RuntimeError("moved on")
    instrument_client(client, tracer_provider=tracer_provider)
    native.failure = None  # the stand-in's own spans stay off (no tracing option)
    await _run(client)
    assert "insert native.items" in {s.name for s in exporter.get_finished_spans()}
    assert "_is_tracing_enabled failed" in caplog.text


async def test_a_pymongo_shaped_otherwise_gets_our_spans(
    native: NativeTracing,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    mongodb_uri: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without the transaction spans we lend ours to, we do not step back (and say so once)."""
    del native.module.start_transaction_span
    coexistence.forget_native_module()
    client: AsyncIOMotorClient = AsyncIOMotorClient(
        mongodb_uri, **CLIENT_OPTIONS, tracing={"enabled": True}
    )
    instrument_client(client, tracer_provider=tracer_provider)
    assert coexistence.native_tracing(client) is False
    await client.native.items.insert_one({"x": 1})
    client.close()
    assert "insert native.items" in {
        s.name for s in _scope(exporter.get_finished_spans(), "motor_otel")
    }
    assert "pymongo._otel has no transaction spans" in caplog.text


def test_without_the_module_there_is_no_native_tracing() -> None:
    """PyMongo 4.20 has no ``pymongo._otel``: detection says no, for a client and by default."""
    coexistence.forget_native_module()
    assert "pymongo._otel" not in sys.modules
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(connect=False)
    assert coexistence.native_tracing(client) is False
    assert coexistence.native_default() is False
    client.close()


def test_a_session_without_the_transaction_span_slot_is_left_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Lending leans on PyMongo's private ``_transaction.span``: without it, a warning, no error."""
    coexistence.forget_native_module()
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(connect=False)
    session = client.start_session()  # PyMongo 4.20: no span slot on its _Transaction
    coexistence.lend_transaction_span(session, trace.INVALID_SPAN)
    coexistence.lend_transaction_span(object(), trace.INVALID_SPAN)
    assert not hasattr(session._transaction, "span")
    assert caplog.text.count("no transaction span slot") == 1
    session.end_session()
    client.close()
