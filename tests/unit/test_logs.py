"""The structlog processor, called directly."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider

from motor_otel.logs import add_trace_context


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
