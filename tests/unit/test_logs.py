"""The structlog processor and the lifecycle logger, called directly."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from motor_otel.events import AttemptInfo, RetryCause, TransactionSummary
from motor_otel.logs import LifecycleLogger, add_trace_context


def test_adds_hex_ids_inside_a_span() -> None:
    """trace_id is 32 hex digits and span_id 16, those of the current span."""
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        event = add_trace_context(None, "info", {"event": "hello"})
    ctx = span.get_span_context()
    expected = {
        "event": "hello",
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
    }
    assert expected == event
    assert len(event["trace_id"]) == 32 and len(event["span_id"]) == 16


def test_leaves_events_alone_outside_spans() -> None:
    """No current span: the event is returned unchanged."""
    assert add_trace_context(None, "info", {"event": "x"}) == {"event": "x"}


# -- LifecycleLogger: structlog when configured, stdlib otherwise -------------------------------
FAILED = TransactionSummary(
    outcome="failed",
    duration_s=0.25,
    attempts=1,
    commit_attempts=1,
    lsid="a-session",
    txn_number=3,
    error_labels=("UnknownTransactionCommitResult",),
    error_type="91",
)


@pytest.fixture
def unconfigured() -> Iterator[None]:
    """structlog on its defaults (``capture_logs`` elsewhere leaves it "configured")."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def test_unconfigured_structlog_means_stdlib_records_not_prints(
    unconfigured: None, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """The event is the message, the level is kept, the fields are record attributes."""
    caplog.set_level(logging.DEBUG, logger="motor_otel")
    LifecycleLogger().transaction_ended(FAILED)
    (record,) = caplog.records
    assert (
        record.name,
        record.levelno,
        record.getMessage(),
    ) == ("motor_otel", logging.ERROR, "transaction.failed")
    assert getattr(record, "error.type") == "91"
    assert getattr(record, "db.mongodb.error_labels") == ["UnknownTransactionCommitResult"]
    assert record.duration_s == 0.25
    assert capsys.readouterr() == ("", "")


def test_stdlib_level_filtering_applies(
    unconfigured: None, caplog: pytest.LogCaptureFixture
) -> None:
    """At INFO the debug ``started`` is dropped and the error ``failed`` kept, as for any record."""
    caplog.set_level(logging.INFO, logger="motor_otel")
    logger = LifecycleLogger()
    logger.transaction_started(AttemptInfo(1, "a-session", 3))
    logger.transaction_ended(FAILED)
    assert [r.getMessage() for r in caplog.records] == ["transaction.failed"]


def test_configured_structlog_gets_the_events_and_stdlib_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Once the application configures structlog, its processors see the event, stdlib does not."""
    caplog.set_level(logging.DEBUG, logger="motor_otel")
    with structlog.testing.capture_logs() as logs:
        LifecycleLogger().transaction_ended(FAILED)
    expected = {
        "event": "transaction.failed",
        "log_level": "error",
        "db.mongodb.transaction.outcome": "failed",
        "db.mongodb.transaction.attempts": 1,
        "db.mongodb.transaction.commit_attempts": 1,
        "db.mongodb.lsid": "a-session",
        "db.mongodb.txn_number": 3,
        "duration_s": 0.25,
        "db.mongodb.error_labels": ["UnknownTransactionCommitResult"],
        "error.type": "91",
    }
    assert [expected] == logs
    assert caplog.records == []


def test_span_attributes_fill_in_and_override_nothing() -> None:
    """Attributes handed over with a fact add fields; the fact's own fields keep their values."""
    summary = TransactionSummary(
        outcome="committed",
        duration_s=0.1,
        attempts=2,
        commit_attempts=1,
        lsid="a-session",
        txn_number=4,
        attributes={
            "db.mongodb.transaction.attempts": 99,
            "db.mongodb.transaction.mode": "spec",
            "db.mongodb.error_labels": ("TransientTransactionError",),
        },
    )
    retry = AttemptInfo(2, "a-session", 4, attributes={"db.mongodb.transaction.backoff_s": 0.01})
    with structlog.testing.capture_logs() as logs:
        LifecycleLogger().transaction_ended(summary)
        LifecycleLogger().transaction_retry(retry)
    ended, retried = logs
    assert ended["db.mongodb.transaction.attempts"] == 2
    assert ended["db.mongodb.transaction.mode"] == "spec"
    assert ended["db.mongodb.error_labels"] == ["TransientTransactionError"]
    assert retried["db.mongodb.transaction.backoff_s"] == 0.01
    assert "error_type" not in ended and "error.type" not in ended


def test_retry_event_names_its_cause() -> None:
    """transaction.retry carries the cause's summary, collection, operation and error.type."""
    cause = RetryCause("update shop.stock", "update", "stock", "112")
    info = AttemptInfo(2, "a-session", 4, ("TransientTransactionError",), retry_cause=cause)
    with structlog.testing.capture_logs() as logs:
        LifecycleLogger().transaction_retry(info)
    expected = [
        {
            "event": "transaction.retry",
            "log_level": "warning",
            "db.mongodb.transaction.attempt": 2,
            "db.mongodb.lsid": "a-session",
            "db.mongodb.txn_number": 4,
            "db.mongodb.error_labels": ["TransientTransactionError"],
            "db.mongodb.transaction.retry_cause": "update shop.stock",
            "db.operation.name": "update",
            "db.collection.name": "stock",
            "error.type": "112",
        }
    ]
    assert expected == logs


def test_commit_not_retried_event() -> None:
    """Motor's unretried commit is a warning with the labels and error.type of the commit error."""
    info = AttemptInfo(1, "a-session", 5, ("TransientTransactionError",), error_type="112")
    with structlog.testing.capture_logs() as logs:
        LifecycleLogger().commit_not_retried(info)
    expected = [
        {
            "event": "transaction.commit_not_retried",
            "log_level": "warning",
            "db.mongodb.transaction.attempt": 1,
            "db.mongodb.lsid": "a-session",
            "db.mongodb.txn_number": 5,
            "db.mongodb.error_labels": ["TransientTransactionError"],
            "error.type": "112",
        }
    ]
    assert expected == logs
