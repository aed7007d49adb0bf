"""Other producers of MongoDB spans: ``opentelemetry-instrumentation-pymongo`` and PyMongo itself.

Two command spans for one command is noise, and the contrib one sits outside the transaction tree.
Where we trace, we switch the contrib instrumentation's command spans off (ours carry what its do,
plus the correlation). PyMongo's own tracing (its ``pymongo._otel`` module, on a development
branch as of PyMongo 4.20) is the other way round: when it is on, it owns operation and command
spans and we keep only what it lacks (``withTransaction`` and attempt spans, metrics, logs).
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from contextvars import ContextVar
from typing import Any

from opentelemetry.trace import NonRecordingSpan, Span
from pymongo import monitoring

from motor_otel._guard import report

_logger = logging.getLogger(__name__)
_CONTRIB = "opentelemetry.instrumentation.pymongo"
_NATIVE = "pymongo._otel"


def is_contrib_tracer(listener: object) -> bool:
    """The contrib instrumentation's ``CommandTracer``, recognised without importing it."""
    cls = type(listener)
    return (
        cls.__name__ == "CommandTracer"
        and cls.__module__.startswith(_CONTRIB)
        and hasattr(listener, "is_enabled")
    )


def _contrib_instrumented() -> bool:
    module = sys.modules.get(_CONTRIB)
    instrumentor = getattr(module, "PymongoInstrumentor", None)
    if instrumentor is None:
        return True
    return bool(getattr(instrumentor(), "_is_instrumented_by_opentelemetry", True))


class ContribSuppressor:
    """Keeps the globally registered contrib ``CommandTracer`` off while we trace globally.

    PyMongo cannot unregister a listener, and the contrib instrumentor may run before or after
    ours, so :meth:`enforce` runs on every command we trace: it rescans only when the global
    listener list has grown, and otherwise just checks a flag or two.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tracers: list[Any] = []
        self._seen = -1
        self.active = False

    def activate(self) -> None:
        self.active = True
        self._seen = -1
        self.enforce()

    def enforce(self) -> None:
        if not self.active:
            return
        listeners = monitoring._LISTENERS.command_listeners
        if len(listeners) != self._seen:
            with self._lock:
                self._seen = len(listeners)
                for listener in listeners:
                    if is_contrib_tracer(listener) and all(
                        t is not listener for t in self._tracers
                    ):
                        self._tracers.append(listener)
                        _logger.info(
                            "opentelemetry-instrumentation-pymongo is active too: motor-otel "
                            "suppresses its command spans while it traces (one span per command)"
                        )
        for tracer in self._tracers:
            if tracer.is_enabled:
                tracer.is_enabled = False

    def release(self) -> None:
        """Give the contrib tracers back, unless the contrib instrumentor was uninstrumented."""
        self.active = False
        enabled = _contrib_instrumented()
        with self._lock:
            for tracer in self._tracers:
                tracer.is_enabled = enabled
            self._tracers.clear()


def strip_contrib(command_listeners: list[Any]) -> list[Any]:
    """Remove contrib tracers from one client's listener list; returns them for :func:`restore`."""
    removed = [listener for listener in command_listeners if is_contrib_tracer(listener)]
    for listener in removed:
        command_listeners.remove(listener)
    return removed


def restore_contrib(command_listeners: list[Any], removed: list[Any]) -> None:
    for listener in removed:
        if listener not in command_listeners:
            command_listeners.insert(0, listener)


# -- PyMongo's native tracing ----------------------------------------------------------------
# What the branch this was checked against looks like (mongodb/mongo-python-driver,
# PYTHON-5947-otel-5-error-type at 8a91f4e): ``pymongo._otel._is_tracing_enabled(options)`` is
# ``options["enabled"]`` for a client's ``options.tracing``, into which ``_resolve_tracing_options``
# folded ``OTEL_PYTHON_INSTRUMENTATION_MONGODB_ENABLED`` once, when the client was built (``None``,
# no client, is always off). ``start_transaction_span`` opens a ``transaction`` span that the
# session keeps in ``_transaction.span`` (one per ``with_transaction`` call, kept in
# ``_with_transaction_span``; one per ``start_transaction`` otherwise); operation spans inside the
# transaction take it as their explicit parent; ``end_transaction_span`` ends it. All private:
# every name is feature-detected, and a PyMongo shaped differently gets our own spans.
_UNKNOWN = object()
_native_module: Any = _UNKNOWN
_NATIVE_ATTR = "_motor_otel_native"  # per client: PyMongo fixes its tracing when it builds one
_logged: set[str] = set()
_operation_name: ContextVar[Any] | None = None  # the branch's "an operation span is current"


def _native() -> Any:
    """``pymongo._otel`` if it has everything we rely on, else ``None``."""
    global _native_module
    if _native_module is _UNKNOWN:
        try:
            module: Any = importlib.import_module(_NATIVE)
        except ImportError:
            module = None
        if module is not None and not (
            callable(getattr(module, "_is_tracing_enabled", None))
            and callable(getattr(module, "start_transaction_span", None))
        ):
            _log_once("shape", "pymongo._otel has no transaction spans: motor-otel traces alone")
            module = None
        global _operation_name
        name = getattr(module, "_CURRENT_OPERATION_NAME", None)
        _operation_name = name if isinstance(name, ContextVar) else None
        _native_module = module
    return _native_module


def pymongo_traces_command(default: bool) -> bool:
    """For a command outside our operations (``endSessions`` at close, say): is PyMongo tracing it?

    Yes while one of PyMongo's operation spans is current (the branch marks that with its
    ``_CURRENT_OPERATION_NAME``); otherwise we cannot tell whose client it is, and ``default``
    (what the environment says for a client built now) decides.
    """
    if _native() is None:
        return False
    if _operation_name is not None and _operation_name.get() is not None:
        return True
    return default


def forget_native_module() -> None:
    """Look for ``pymongo._otel`` again (after an upgrade in place, or in tests)."""
    global _native_module
    _native_module = _UNKNOWN
    _logged.clear()


def _log_once(key: str, message: str) -> None:
    if key not in _logged:
        _logged.add(key)
        _logger.warning(message, exc_info=key == "check")


def _check(options: Any) -> bool:
    module = _native()
    if module is None:
        return False
    try:
        return bool(module._is_tracing_enabled(options))
    except Exception:  # a moving target: never let its check break ours
        _log_once("check", "pymongo._otel._is_tracing_enabled failed: motor-otel traces alone")
        return False


def native_tracing(client: Any) -> bool:
    """Whether PyMongo traces this client's operations and commands itself.

    Asked per client, from the client's own ``options.tracing``: PyMongo reads the environment
    once, when it builds the client, and ``_is_tracing_enabled(None)`` is always false, so a
    global answer would be wrong both ways. Remembered on the client, since it cannot change.
    """
    known = vars(client).get(_NATIVE_ATTR)
    if known is not None:
        return bool(known)
    delegate = vars(client).get("delegate", client)  # Motor wraps a PyMongo client
    client_options = vars(delegate).get("_options")
    options = getattr(client_options, "tracing", None)
    answer = options is not None and _check(options)
    vars(client)[_NATIVE_ATTR] = answer
    return answer


def native_default() -> bool:
    """Whether a client built now with no ``tracing`` option would be traced by PyMongo.

    For commands that reach the global listener outside any operation we know of (``endSessions``
    at close, say), where the client is not known: the environment, resolved as PyMongo resolves
    it for a new client.
    """
    module = _native()
    if module is None:
        return False
    resolve = getattr(module, "_resolve_tracing_options", None)
    try:
        options = resolve({"enabled": False, "query_text_max_length": None}) if resolve else None
    except Exception:
        options = None
    return _check(options)


def lend_transaction_span(pymongo_session: Any, span: Span) -> None:
    """Make our attempt's span the one PyMongo parents this transaction's operations to.

    PyMongo's ``transaction`` span would tell a second story beside our attempt's, so its slot
    gets a non-recording handle on ours instead: PyMongo's operation spans (and, under them, its
    command spans) nest under our attempt, and PyMongo's ``end_transaction_span`` on the handle
    does nothing, since the attempt is ours to end with its outcome. The span PyMongo had already
    started for the slot is dropped unended, so it is never exported. Called when an attempt
    opens and again before each commit (PyMongo starts a fresh span for a commit retried by hand).
    """
    try:
        transaction = getattr(pymongo_session, "_transaction", None)
        if transaction is None or not hasattr(transaction, "span"):
            _log_once("slot", "PyMongo sessions have no transaction span slot: two stories")
            return
        theirs = transaction.span
        if (
            isinstance(theirs, _AttemptHandle)
            and theirs.get_span_context() == span.get_span_context()
        ):
            return
        handle = _AttemptHandle(span.get_span_context())
        transaction.span = handle
        if (
            theirs is not None
            and getattr(pymongo_session, "_with_transaction_span", None) is theirs
        ):
            pymongo_session._with_transaction_span = handle  # reused by the loop's next attempt
    except Exception as exc:
        report("coexistence.lend_transaction_span", exc)


class _AttemptHandle(NonRecordingSpan):
    """Our attempt's span context, for PyMongo to parent to and to "end" (a no-op)."""
