"""structlog processors and transaction lifecycle log events.

``add_trace_context`` is a plain processor: put it in your chain and every log line carries the
ids of the current span, so logs and traces line up. ``LifecycleLogger`` is an observer the
instrumentation registers when ``log_lifecycle=True``: it says in logs what the spans say.

A library must not print. While structlog is unconfigured (its defaults print to stdout), the
events go to the stdlib logger ``motor_otel`` instead, fields in ``extra``, so the application's
handlers, formatters and OTel's ``LoggingHandler`` get them; once the application configures
structlog they go through it, so its processors run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue
from structlog.stdlib import render_to_log_kwargs

from motor_otel import attributes as A
from motor_otel.events import AttemptInfo, AttemptTimes, OperationSummary, TransactionSummary

EventDict = MutableMapping[str, Any]
"""structlog's event dictionary."""

LOGGER_NAME = "motor_otel"
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def add_trace_context(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Add ``trace_id`` (32 hex digits) and ``span_id`` (16) of the current span, if any.

    .. versionadded:: 0.1.0
    """
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict["trace_id"] = format(ctx.trace_id, "032x")
        event_dict["span_id"] = format(ctx.span_id, "016x")
    return event_dict


class LifecycleLogger:
    """Emits ``transaction.*`` events, through structlog when it is configured, else stdlib.

    Levels: ``started`` debug; ``committed``/``aborted`` info; ``retry``/``commit_retry``/
    ``commit_not_retried``/``long`` warning; ``failed`` error. ``long``: an attempt whose write
    window passed ``long_transaction_ms``, with its ``app_ms``, ``server_ms`` and window. ``retry`` names its cause (the operation
    whose ``TransientTransactionError`` ended the previous attempt) when there was one. Fields are the span attribute names (the failure's class is
    ``error.type``), plus the attributes the core hands over with each fact; the one extra field
    is ``duration_s``, since a log line has no span duration.
    """

    __slots__ = ("_explicit", "_stdlib", "_structlog")

    def __init__(self, logger: Any = None) -> None:
        self._explicit = logger  # given: always used, whatever structlog's state
        self._structlog = structlog.get_logger(LOGGER_NAME)  # a lazy proxy: binds per call
        self._stdlib = logging.getLogger(LOGGER_NAME)

    def _emit(self, method: str, event: str, fields: dict[str, Any]) -> None:
        logger = self._explicit
        if logger is None and structlog.is_configured():
            logger = self._structlog
        if logger is not None:
            getattr(logger, method)(event, **fields)
            return
        level = _LEVELS[method]
        if self._stdlib.isEnabledFor(level):
            self._stdlib.log(
                level, **render_to_log_kwargs(self._stdlib, method, {"event": event, **fields})
            )

    def _attempt_fields(self, info: AttemptInfo) -> dict[str, Any]:
        fields: dict[str, Any] = {
            A.TXN_ATTEMPT: info.attempt,
            A.MONGODB_LSID: info.lsid,
            A.MONGODB_TXN_NUMBER: info.txn_number,
        }
        if info.error_labels:
            fields[A.ERROR_LABELS] = list(info.error_labels)
        cause = info.retry_cause
        if cause is not None:
            fields[A.TXN_RETRY_CAUSE] = cause.summary
            fields[A.DB_OPERATION_NAME] = cause.operation
            if cause.collection is not None:
                fields[A.DB_COLLECTION_NAME] = cause.collection
            fields[A.ERROR_TYPE] = cause.error_type
        if info.error_type is not None:
            fields[A.ERROR_TYPE] = info.error_type
        return _add_attributes(fields, info.attributes)

    def transaction_started(self, info: AttemptInfo) -> None:
        self._emit("debug", "transaction.started", self._attempt_fields(info))

    def transaction_retry(self, info: AttemptInfo) -> None:
        self._emit("warning", "transaction.retry", self._attempt_fields(info))

    def commit_retry(self, info: AttemptInfo) -> None:
        self._emit("warning", "transaction.commit_retry", self._attempt_fields(info))

    def commit_not_retried(self, info: AttemptInfo) -> None:
        self._emit("warning", "transaction.commit_not_retried", self._attempt_fields(info))

    def attempt_ended(self, times: AttemptTimes) -> None:
        if times.long:
            fields: dict[str, Any] = {A.TXN_OUTCOME: times.outcome}
            if times.write_collection is not None:
                fields[A.DB_COLLECTION_NAME] = times.write_collection
            self._emit("warning", "transaction.long", _add_attributes(fields, times.attributes))

    def transaction_ended(self, summary: TransactionSummary) -> None:
        fields: dict[str, Any] = {
            A.TXN_OUTCOME: summary.outcome,
            A.TXN_ATTEMPTS: summary.attempts,
            A.TXN_COMMIT_ATTEMPTS: summary.commit_attempts,
            A.MONGODB_LSID: summary.lsid,
            A.MONGODB_TXN_NUMBER: summary.txn_number,
            "duration_s": round(summary.duration_s, 6),
        }
        if summary.error_labels:
            fields[A.ERROR_LABELS] = list(summary.error_labels)
        if summary.outcome == "failed":
            fields[A.ERROR_TYPE] = summary.error_type
        _add_attributes(fields, summary.attributes)
        if summary.outcome == "failed":
            self._emit("error", "transaction.failed", fields)
        else:
            self._emit("info", f"transaction.{summary.outcome}", fields)

    def operation_ended(self, summary: OperationSummary) -> None:
        pass


def _add_attributes(
    fields: dict[str, Any], attributes: Mapping[str, AttributeValue]
) -> dict[str, Any]:
    """The span's attributes fill in what the fact itself does not say; they override nothing."""
    for key, value in attributes.items():
        fields.setdefault(key, list(value) if isinstance(value, tuple) else value)
    return fields
