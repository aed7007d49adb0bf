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
from typing import Any

from pymongo import monitoring

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
_UNKNOWN = object()
_native_module: Any = _UNKNOWN


def _native() -> Any:
    global _native_module
    if _native_module is _UNKNOWN:
        try:
            _native_module = importlib.import_module(_NATIVE)
        except ImportError:
            _native_module = None
    return _native_module


def forget_native_module() -> None:
    """Look for ``pymongo._otel`` again (after an upgrade in place, or in tests)."""
    global _native_module
    _native_module = _UNKNOWN


def native_tracing(client: Any | None) -> bool:
    """Whether PyMongo traces this client's operations and commands itself.

    Feature-detected: the module and its ``_is_tracing_enabled(tracing_options)`` check, fed with
    the client's ``tracing`` option when it has one (``None``: the environment decides).
    """
    module = _native()
    check = getattr(module, "_is_tracing_enabled", None)
    if not callable(check):
        return False
    options = None
    if client is not None:
        delegate = vars(client).get("delegate", client)  # Motor wraps a PyMongo client
        client_options = vars(delegate).get("_options")
        options = getattr(client_options, "tracing", None) or getattr(
            client_options, "tracing_options", None
        )
    try:
        return bool(check(options))
    except Exception:  # a moving target: never let its check break ours
        _logger.warning("pymongo._otel._is_tracing_enabled failed", exc_info=True)
        return False
