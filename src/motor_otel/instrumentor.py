"""Lifecycle only: patch and unpatch Motor, register the command listener, pick the scope.

Two scopes share one set of class patches: the global one (``MotorInstrumentor().instrument()``)
and per-client ones (``instrument_client(client)``), found from the client object.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Collection, Iterable
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from pymongo import monitoring

from motor_otel import attributes as A
from motor_otel._guard import guard, report
from motor_otel.coexistence import (
    ContribSuppressor,
    native_default,
    native_tracing,
    restore_contrib,
    strip_contrib,
)
from motor_otel.config import CommandDetail, Settings, WithTransactionMode
from motor_otel.correlation import Telemetry
from motor_otel.listener import TracingCommandListener
from motor_otel.logs import LifecycleLogger
from motor_otel.metrics import MongoMetrics
from motor_otel.operations import Patcher, patch_motor, patch_pymongo
from motor_otel.package import _instruments
from motor_otel.session import InstrumentedAsyncIOMotorClientSession, instrument_pymongo_session
from motor_otel.types import FailedHook, RequestHook, ResponseHook, TransactionHook
from motor_otel.version import __version__

_ATTR = "_motor_otel_telemetry"
_LISTENER_ATTR = "_motor_otel_listener"
_CONTRIB_ATTR = "_motor_otel_contrib"  # contrib tracers taken off an instrumented client
_GLOBAL_ATTR = "_motor_otel_had_global"  # the global listener was taken off this client

_logger = logging.getLogger("motor_otel")
_lock = threading.Lock()
_IN_MOTOR: ContextVar[bool] = ContextVar("motor_otel_in_motor", default=False)
_global: Telemetry | None = None
# The global scope's twin for clients PyMongo traces otherwise than ``_global.native`` says: the
# same settings, correlator and observers, and the opposite ``native``.
_global_twin: Telemetry | None = None
_global_listener: TracingCommandListener | None = None
_suppressor = ContribSuppressor()
_patcher: Patcher | None = None
_users = 0  # global instrumentor + instrumented clients that need the class patches
# Keywords BaseInstrumentor.instrument consumes itself (the auto-instrumentation loader passes
# skip_dep_check=True); everything else must be a Settings field or a provider.
_BASE_KEYWORDS = frozenset({"skip_dep_check", "raise_exception_on_conflict"})


def _build(
    tracer_provider: TracerProvider | None,
    meter_provider: MeterProvider | None,
    settings: dict[str, Any],
) -> Telemetry:
    resolved = Settings.resolve(**settings)
    tracer = trace.get_tracer("motor_otel", __version__, tracer_provider, schema_url=A.SCHEMA_URL)
    telemetry = Telemetry(tracer=tracer, settings=resolved, old_names=_old_names_opted_in())
    recorder = MongoMetrics(meter_provider, telemetry.open_transactions)
    if not recorder.noop:  # the API's no-op meter: noticed here once, so it costs nothing later
        telemetry.observers.append(recorder)
    if resolved.log_lifecycle:
        telemetry.observers.append(LifecycleLogger())
        telemetry.attribute_observers = True
    return telemetry


def _old_names_opted_in() -> bool:
    """``OTEL_SEMCONV_STABILITY_OPT_IN=database/dup``, read by contrib's own helper.

    Decided once per ``instrument()``, never per span. Contrib's default without the variable
    is the old names only; ours is the stable names only (the MongoDB tracing spec's), so only
    ``database/dup`` changes anything here. The helper is private to contrib: if it moves, we
    keep the stable names and say so once.
    """
    try:
        from opentelemetry.instrumentation._semconv import (
            _OpenTelemetrySemanticConventionStability,
            _OpenTelemetryStabilitySignalType,
            _StabilityMode,
        )

        _OpenTelemetrySemanticConventionStability._initialize()  # type: ignore[no-untyped-call]
        mode = _OpenTelemetrySemanticConventionStability._get_opentelemetry_stability_opt_in_mode(
            _OpenTelemetryStabilitySignalType.DATABASE
        )
        return bool(mode == _StabilityMode.DATABASE_DUP)
    except Exception as exc:
        report("instrumentor.semconv_opt_in", exc)
        return False


def _client_of(obj: Any) -> Any:
    """The client behind a client, database or collection (Motor or PyMongo).

    By class name, not ``getattr``: both drivers' clients turn unknown attributes into databases.
    """
    name = type(obj).__name__
    if name.endswith("Collection"):
        obj = obj.database
        name = type(obj).__name__
    if name.endswith("Database"):
        obj = obj.client
    return obj


def telemetry_of(obj: Any) -> Telemetry | None:
    """The scope that traces this Motor object, if any."""
    client = _client_of(obj)
    own = vars(client).get(_ATTR)
    if own is not None:
        return own if own.enabled else None
    scope = _global
    if scope is not None and native_tracing(client) is not scope.native:
        return _global_twin
    return scope


def _is_global(telemetry: Telemetry) -> bool:
    return telemetry is _global or telemetry is _global_twin


def _command_listeners(client: Any) -> list[Any]:
    """A client's own list of command listeners (PyMongo has no API to add to it later)."""
    delegate = vars(client).get("delegate", client)  # Motor wraps a PyMongo client
    listeners = getattr(delegate, "_event_listeners", None)
    if listeners is None:
        raise TypeError(
            f"cannot add a command listener to {type(client).__name__}: this PyMongo version "
            "does not expose _event_listeners; create the client after MotorInstrumentor()"
            ".instrument() instead"
        )
    listeners._EventListeners__enabled_for_commands = True
    commands: list[Any] = listeners._EventListeners__command_listeners
    return commands


def _attach_listener(client: Any, listener: TracingCommandListener) -> None:
    """Add a command listener to a client that already exists."""
    commands = _command_listeners(client)
    if listener not in commands:
        commands.append(listener)


def _own_listener(client: Any, listener: TracingCommandListener) -> bool:
    """Make ``listener`` the client's only listener of ours: one span per command.

    Takes off the one a previous ``instrument_client`` added and the global one (PyMongo copied
    it into every client created after ``instrument()``, and we attach it to older clients at
    their first session); returns whether the global one was there, for
    :func:`uninstrument_client` to put back.
    """
    commands = _command_listeners(client)
    had_global = False
    for other in [c for c in commands if isinstance(c, TracingCommandListener)]:
        had_global = had_global or other is _global_listener
        commands.remove(other)
    commands.append(listener)
    return had_global


def _retain_patches() -> None:
    global _patcher, _users
    with _lock:
        _users += 1
        if _patcher is None:
            _patcher = Patcher()
            if _motor_available():
                _patcher.extend(patch_motor(telemetry_of))
                _patch_motor_start_session(_patcher)
            _patcher.extend(patch_pymongo(telemetry_of))
            _patch_pymongo_start_session(_patcher)


def _release_patches() -> None:
    global _patcher, _users
    with _lock:
        _users = max(0, _users - 1)
        if _users == 0 and _patcher is not None:
            _patcher.restore()
            _patcher = None


def _motor_available() -> bool:
    try:
        import motor.motor_asyncio  # noqa: F401
    except ImportError:
        return False
    return True


def _patch_pymongo_start_session(patcher: Patcher) -> None:
    """PyMongo builds sessions in ``_start_session``: hand back the instrumented twin."""
    import pymongo

    for cls in (pymongo.MongoClient, pymongo.AsyncMongoClient):
        original = cls._start_session

        def _start_session(self: Any, implicit: bool, _original: Any = original, **kw: Any) -> Any:
            session = _original(self, implicit, **kw)
            telemetry = None if implicit or _IN_MOTOR.get() else telemetry_of(self)
            if telemetry is None:
                return session
            with guard("instrumentor.start_session"):
                if _is_global(telemetry) and _global_listener is not None:
                    _attach_listener(self, _global_listener)
                instrument_pymongo_session(session, telemetry)
            return session

        patcher.replace(cls, "_start_session", _start_session)


def _patch_motor_start_session(patcher: Patcher) -> None:
    from motor.motor_asyncio import AsyncIOMotorClient

    original = AsyncIOMotorClient.__dict__["start_session"]

    async def start_session(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = _IN_MOTOR.set(True)  # Motor's executor copies it: its PyMongo session stays plain
        try:
            session = await original(self, *args, **kwargs)
        finally:
            _IN_MOTOR.reset(token)
        telemetry = telemetry_of(self)
        if telemetry is None:
            return session
        if _is_global(telemetry) and _global_listener is not None:
            _attach_listener(self, _global_listener)  # a client created before instrument()
        return InstrumentedAsyncIOMotorClientSession(session.delegate, self, telemetry)

    start_session.__doc__ = original.__doc__
    patcher.replace(AsyncIOMotorClient, "start_session", start_session)


def instrument_client(
    client: Any,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    **settings: Any,
) -> None:
    """Trace one Motor client that already exists (``instrument()`` only reaches new ones).

    Takes the same settings as :meth:`MotorInstrumentor.instrument`; for this client they win over
    ``instrument()``'s, in either order: the client keeps one listener of ours and one scope, so
    each command is still one span. Calling it again replaces the client's settings. The client
    stays traced after ``MotorInstrumentor().uninstrument()``, until :func:`uninstrument_client`.
    """
    if not _is_client(client):
        raise TypeError(
            "instrument_client expects a Motor AsyncIOMotorClient or a PyMongo AsyncMongoClient "
            f"or MongoClient, got {type(client).__name__}"
        )
    telemetry = _build(tracer_provider, meter_provider, settings)
    telemetry.native = native_tracing(client)
    previous: Telemetry | None = vars(client).get(_ATTR)
    listener = TracingCommandListener(telemetry)
    if _own_listener(client, listener):
        vars(client)[_GLOBAL_ATTR] = True
    if telemetry.settings.enabled:  # one span per command: the contrib ones go for this client
        removed = strip_contrib(_command_listeners(client))
        vars(client).setdefault(_CONTRIB_ATTR, []).extend(removed)
    if previous is not None:
        previous.enabled = False
    else:
        _retain_patches()
    vars(client)[_ATTR] = telemetry
    vars(client)[_LISTENER_ATTR] = listener


def _is_client(client: Any) -> bool:
    import pymongo

    if isinstance(client, (pymongo.MongoClient, pymongo.AsyncMongoClient)):
        return True
    if _motor_available():
        from motor.motor_asyncio import AsyncIOMotorClient

        return isinstance(client, AsyncIOMotorClient)
    return False


def uninstrument_client(client: Any) -> None:
    """Stop tracing a client given to :func:`instrument_client`.

    While ``instrument()`` is on, the client is the global scope's again (with its settings).
    """
    telemetry: Telemetry | None = vars(client).pop(_ATTR, None)
    if telemetry is None:
        return
    telemetry.enabled = False
    commands = _command_listeners(client)
    listener = vars(client).pop(_LISTENER_ATTR, None)
    if listener in commands:
        commands.remove(listener)
    had_global = vars(client).pop(_GLOBAL_ATTR, False)
    if _global_listener is not None and (had_global or _global is not None):
        commands.append(_global_listener)  # the global scope's again, from its next command
    removed = vars(client).pop(_CONTRIB_ATTR, None)
    if removed:
        restore_contrib(commands, removed)
    _release_patches()


class MotorInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """OpenTelemetry instrumentor for Motor and PyMongo (async and sync): transactions,
    operations and commands as spans.

    A singleton, like every ``BaseInstrumentor``; a second ``instrument()`` warns and does nothing.
    ``uninstrument()`` stops the global scope only: clients given to :func:`instrument_client` stay
    traced with their own settings until :func:`uninstrument_client`.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def instrument(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        enabled: bool | None = None,
        with_transaction: WithTransactionMode | None = None,
        query_text_max_length: int | None = None,
        query_text_raw_values: bool | None = None,
        log_lifecycle: bool | None = None,
        command_detail: CommandDetail | None = None,
        keep: str | Iterable[str] | None = None,
        long_transaction_ms: float | None = None,
        request_hook: RequestHook | None = None,
        response_hook: ResponseHook | None = None,
        failed_hook: FailedHook | None = None,
        transaction_hook: TransactionHook | None = None,
        **kwargs: Any,
    ) -> None:
        """Trace every Motor client created from now on (and sessions of older ones).

        Keywords override the ``OTEL_PYTHON_INSTRUMENTATION_MONGODB_*`` variables. Beyond them
        only ``BaseInstrumentor``'s own (``skip_dep_check``, ``raise_exception_on_conflict``,
        which ``opentelemetry-instrument`` passes) are accepted: a misspelt setting raises
        ``TypeError`` instead of being silently ignored.
        """
        unknown = sorted(set(kwargs) - _BASE_KEYWORDS)
        if unknown:
            raise TypeError(f"unknown motor_otel setting(s): {', '.join(unknown)}")
        super().instrument(
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            enabled=enabled,
            with_transaction=with_transaction,
            query_text_max_length=query_text_max_length,
            query_text_raw_values=query_text_raw_values,
            log_lifecycle=log_lifecycle,
            command_detail=command_detail,
            keep=keep,
            long_transaction_ms=long_transaction_ms,
            request_hook=request_hook,
            response_hook=response_hook,
            failed_hook=failed_hook,
            transaction_hook=transaction_hook,
            **kwargs,
        )

    def _instrument(self, **kwargs: Any) -> None:
        global _global, _global_listener, _global_twin
        tracer_provider = kwargs.pop("tracer_provider", None)
        meter_provider = kwargs.pop("meter_provider", None)
        settings = {k: v for k, v in kwargs.items() if k not in _BASE_KEYWORDS}  # older bases
        telemetry = _build(tracer_provider, meter_provider, settings)  # rejects unknown keywords
        telemetry.native = native_default()
        if _global_listener is None:
            _global_listener = TracingCommandListener(telemetry, _suppressor)
            monitoring.register(_global_listener)
        else:  # PyMongo cannot unregister: the old listener takes the new scope
            _global_listener.telemetry = telemetry
        _global = telemetry
        _global_twin = dataclasses.replace(telemetry, native=not telemetry.native)
        if telemetry.settings.enabled:
            _suppressor.activate()
        _retain_patches()

    def _uninstrument(self, **kwargs: Any) -> None:
        global _global, _global_twin
        if _global is not None:
            _global.enabled = False
            _global = None
            if _global_twin is not None:
                _global_twin.enabled = False
                _global_twin = None
            _suppressor.release()
            _release_patches()
            if _users:  # what is left are clients given to instrument_client: say they stay
                _logger.info(
                    "motor-otel: uninstrumented; clients given to instrument_client() stay "
                    "traced with their own settings until uninstrument_client()"
                )
