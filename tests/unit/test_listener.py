"""The command listener's parent and link rules, fed real ``pymongo.monitoring`` events."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator

import pytest
from bson.binary import Binary, UuidRepresentation
from bson.timestamp import Timestamp
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pymongo import monitoring

from motor_otel.config import Settings
from motor_otel.correlation import Attempt, Telemetry
from motor_otel.listener import TracingCommandListener
from tests.signals import Signals

LSID = uuid.UUID(int=42)
ADDRESS = ("127.0.0.1", 27017)


@pytest.fixture
def telemetry(signals: Signals) -> Iterator[Telemetry]:
    provider = signals.tracer_provider
    yield Telemetry(tracer=provider.get_tracer("test"), settings=Settings.resolve())
    provider.shutdown()


def _send(listener: TracingCommandListener, txn_number: int, request_id: int) -> None:
    """One ``insert`` in transaction ``txn_number`` of session ``LSID``, and its reply."""
    command = {
        "insert": "items",
        "documents": [{"x": 1}],
        "lsid": {"id": Binary.from_uuid(LSID, UuidRepresentation.STANDARD)},
        "txnNumber": txn_number,
        "$db": "shop",
    }
    listener.started(monitoring.CommandStartedEvent(command, "shop", request_id, ADDRESS, None))
    reply = {"ok": 1, "n": 1, "operationTime": Timestamp(1_700_000_000, 3)}
    listener.succeeded(
        monitoring.CommandSucceededEvent(
            datetime.timedelta(milliseconds=1), reply, "insert", request_id, ADDRESS, None
        )
    )


def _insert(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "insert"]
    return span


def test_command_of_an_open_attempt_nests_under_it_without_a_link_to_itself(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    """With the attempt's own span current, the command is its child and links to nothing."""
    attempt = telemetry.tracer.start_span("transaction")
    telemetry.correlator.open_attempt(Attempt(attempt, str(LSID), 5, 1))
    with trace.use_span(attempt):
        _send(TracingCommandListener(telemetry), 5, 1)
    span = _insert(exporter)
    assert span.parent is not None
    assert attempt.get_span_context().span_id == span.parent.span_id
    assert tuple(span.links) == ()
    assert (span.attributes or {})["db.mongodb.operation_time"] == 1_700_000_000 << 32 | 3


def test_command_sent_under_another_span_nests_under_the_attempt_and_links_to_it(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    """Sent from elsewhere (another task's span current): child of the attempt, linked to that."""
    attempt = telemetry.tracer.start_span("transaction")
    telemetry.correlator.open_attempt(Attempt(attempt, str(LSID), 5, 1))
    elsewhere = telemetry.tracer.start_span("elsewhere")
    with trace.use_span(elsewhere):
        _send(TracingCommandListener(telemetry), 5, 1)
    span = _insert(exporter)
    assert span.parent is not None
    assert attempt.get_span_context().span_id == span.parent.span_id
    assert [elsewhere.get_span_context()] == [link.context for link in span.links]


def test_another_txn_number_of_the_same_session_is_not_the_attempts(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    """Only lsid and txnNumber together pick an attempt: a later txnNumber stays outside it."""
    attempt = telemetry.tracer.start_span("transaction")
    telemetry.correlator.open_attempt(Attempt(attempt, str(LSID), 5, 1))
    _send(TracingCommandListener(telemetry), 6, 1)
    assert _insert(exporter).parent is None


def test_a_forgotten_session_parents_nothing(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    """Once its own session is forgotten (ended or collected), an attempt adopts no command."""
    attempt = telemetry.tracer.start_span("transaction")
    session = object()
    telemetry.correlator.open_attempt(Attempt(attempt, str(LSID), 5, 1, owner=session))
    telemetry.correlator.forget_session(str(LSID), object())  # another session's: kept
    assert telemetry.correlator.sizes() == (1, 0)
    telemetry.correlator.forget_session(str(LSID), session)
    _send(TracingCommandListener(telemetry), 5, 1)
    assert _insert(exporter).parent is None
    assert telemetry.correlator.sizes() == (0, 0)


def _reply_to_insert(listener: TracingCommandListener, reply: dict[str, object]) -> None:
    command = {"insert": "items", "documents": [{"x": 1}], "$db": "shop"}
    listener.started(monitoring.CommandStartedEvent(command, "shop", 7, ADDRESS, None))
    listener.succeeded(
        monitoring.CommandSucceededEvent(
            datetime.timedelta(milliseconds=1), reply, "insert", 7, ADDRESS, None
        )
    )


@pytest.mark.parametrize(
    ("reply", "error_type", "status_code"),
    [
        ({"ok": 1, "n": 1}, None, None),
        ({"ok": 1, "n": 1, "writeErrors": []}, None, None),
        (
            {"ok": 1, "n": 0, "writeErrors": [{"index": 0, "code": 121, "errmsg": "invalid"}]},
            "121",
            "121",
        ),
        (
            {
                "ok": 1,
                "n": 1,
                "writeConcernError": {"code": 64, "errmsg": "timed out"},
                "errorLabels": ["RetryableWriteError"],
            },
            "64",
            "64",
        ),
        (
            {"ok": 1, "n": 0, "writeErrors": [{"index": 0, "errmsg": "no code"}]},
            "pymongo.errors.WriteError",
            None,
        ),
    ],
)
def test_an_ok_1_reply_is_a_failure_when_it_reports_failed_writes(
    telemetry: Telemetry,
    exporter: InMemorySpanExporter,
    reply: dict[str, object],
    error_type: str | None,
    status_code: str | None,
) -> None:
    """writeErrors / writeConcernError in an ok:1 reply: error.type, status code, ERROR, event."""
    _reply_to_insert(TracingCommandListener(telemetry), reply)
    span = _insert(exporter)
    attrs = span.attributes or {}
    assert (error_type, status_code) == (
        attrs.get("error.type"),
        attrs.get("db.response.status_code"),
    )
    failed = error_type is not None
    assert (trace.StatusCode.ERROR if failed else trace.StatusCode.UNSET) is span.status.status_code
    assert (["exception"] if failed else []) == [e.name for e in span.events]
    if "errorLabels" in reply:
        assert attrs["db.mongodb.error_labels"] == ("RetryableWriteError",)
