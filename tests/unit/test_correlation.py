"""The correlator's maps are bounded: past the bound the oldest entries go first."""

from __future__ import annotations

from opentelemetry.trace import INVALID_SPAN_CONTEXT, NonRecordingSpan, Span

from motor_otel.correlation import Attempt, Correlator


def _span() -> Span:
    return NonRecordingSpan(INVALID_SPAN_CONTEXT)


def _attempt(lsid: str, txn_number: int = 1) -> Attempt:
    return Attempt(_span(), lsid, txn_number, 1)


def test_open_attempts_beyond_the_bound_evict_the_oldest() -> None:
    """With room for two attempts, opening a third forgets the first one opened."""
    correlator = Correlator(max_attempts=2, max_commands=2)
    attempts = [_attempt(f"lsid-{i}") for i in range(3)]
    for attempt in attempts[:2]:
        correlator.open_attempt(attempt)
    assert correlator.sizes() == (2, 0)
    correlator.open_attempt(attempts[2])
    assert correlator.sizes() == (2, 0)
    assert [None, attempts[1], attempts[2]] == [
        correlator.find_attempt(a.lsid, a.txn_number) for a in attempts
    ]


def test_in_flight_commands_beyond_the_bound_evict_the_oldest() -> None:
    """With room for two command spans, a third drops the oldest; the others still pop."""
    correlator = Correlator(max_attempts=2, max_commands=2)
    spans = [_span() for _ in range(3)]
    attempt = _attempt("lsid")
    for request_id, span in enumerate(spans):
        correlator.start_command(("host", request_id), span, attempt)
    assert correlator.sizes() == (0, 2)
    popped = [correlator.pop_command(("host", request_id)) for request_id in range(3)]
    assert [None, (spans[1], attempt, 0, None), (spans[2], attempt, 0, None)] == popped
    assert correlator.sizes() == (0, 0)


def test_the_bound_holds_under_churn() -> None:
    """Thousands of never-closed attempts and commands leave at most the bound behind."""
    correlator = Correlator(max_attempts=3, max_commands=5)
    for i in range(2_000):
        correlator.open_attempt(_attempt(f"lsid-{i}", i))
        correlator.start_command(("host", i), _span(), None)
    assert correlator.sizes() == (3, 5)
    newest = [correlator.find_attempt(f"lsid-{i}", i) for i in range(1_997, 2_000)]
    assert None not in newest
    assert correlator.find_attempt("lsid-1996", 1996) is None
