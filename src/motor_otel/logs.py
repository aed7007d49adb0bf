"""structlog processors and transaction lifecycle log events.

``add_trace_context`` is a plain processor: put it in your chain and every log line carries the
ids of the current span, so logs and traces line up. ``LifecycleLogger`` is an observer the
instrumentation registers when ``log_lifecycle=True``: it says in logs what the spans say.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

from motor_otel import attributes as A
from motor_otel.events import AttemptInfo, OperationSummary, TransactionSummary

EventDict = MutableMapping[str, Any]
"""structlog's event dictionary."""

LOGGER_NAME = "motor_otel"


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
    """Emits ``transaction.*`` events through ``structlog.get_logger("motor_otel")``.

    Levels: ``started`` debug; ``committed``/``aborted`` info; ``retry``/``commit_retry``
    warning; ``failed`` error. Fields use the span attribute names.
    """

    __slots__ = ("_logger",)

    def __init__(self, logger: Any = None) -> None:
        self._logger = logger if logger is not None else structlog.get_logger(LOGGER_NAME)

    def _attempt_fields(self, info: AttemptInfo) -> dict[str, Any]:
        fields: dict[str, Any] = {
            A.TXN_ATTEMPT: info.attempt,
            A.MONGODB_LSID: info.lsid,
            A.MONGODB_TXN_NUMBER: info.txn_number,
        }
        if info.error_labels:
            fields[A.ERROR_LABELS] = list(info.error_labels)
        return fields

    def transaction_started(self, info: AttemptInfo) -> None:
        self._logger.debug("transaction.started", **self._attempt_fields(info))

    def transaction_retry(self, info: AttemptInfo) -> None:
        self._logger.warning("transaction.retry", **self._attempt_fields(info))

    def commit_retry(self, info: AttemptInfo) -> None:
        self._logger.warning("transaction.commit_retry", **self._attempt_fields(info))

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
            self._logger.error("transaction.failed", error_type=summary.error_type, **fields)
        else:
            self._logger.info(f"transaction.{summary.outcome}", **fields)

    def operation_ended(self, summary: OperationSummary) -> None:
        pass
