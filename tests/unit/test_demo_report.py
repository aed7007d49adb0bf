"""What the demo prints, computed from real SDK metric points and spans."""

from __future__ import annotations

from motor_otel._demo_report import conflict_table, metrics_summary, retry_table
from tests.signals import Signals


def test_quiet_labels_show_when_they_tell_points_apart(signals: Signals) -> None:
    """Two points that differ only in server.port: the port is shown; the constant
    db.system.name and server.address are not."""
    counter = signals.meter_provider.get_meter("t").create_counter("ops")
    for port in (27017, 27018):
        counter.add(1, {"db.system.name": "mongodb", "server.address": "h", "server.port": port})
    expected = ["ops {server.port=27017} 1", "ops {server.port=27018} 1"]
    assert expected == metrics_summary(signals.reader)


def test_colliding_short_names_fall_back_to_full_ones(signals: Signals) -> None:
    """db.outcome and db.mongodb.transaction.outcome would both read "outcome": both stay whole."""
    counter = signals.meter_provider.get_meter("t").create_counter("ops")
    counter.add(2, {"db.outcome": "a", "db.mongodb.transaction.outcome": "b"})
    expected = ["ops {db.mongodb.transaction.outcome=b, db.outcome=a} 2"]
    assert expected == metrics_summary(signals.reader)


def test_retry_table_counts_retried_attempts_by_cause(signals: Signals) -> None:
    """An aborted attempt followed by another counts for its cause, with its duration plus the
    next attempt's backoff; a commit Motor let escape is listed apart."""
    tracer = signals.tracer_provider.get_tracer("t")
    cause = "db.mongodb.transaction.retry_cause"
    with tracer.start_as_current_span("withTransaction"):
        tracer.start_span(
            "transaction",
            attributes={
                "db.mongodb.transaction.outcome": "aborted",
                cause: "update shop.stock",
                "db.mongodb.transaction.write_window_ms": 1.5,
            },
            start_time=0,
        ).end(end_time=2_000_000)
        tracer.start_span(
            "transaction",
            attributes={
                "db.mongodb.transaction.outcome": "committed",
                "db.mongodb.transaction.backoff_ms": 0.5,
            },
            start_time=3_000_000,
        ).end(end_time=4_000_000)
    with tracer.start_as_current_span("withTransaction") as call:
        call.add_event(
            "commit_not_retried", {"db.mongodb.error_labels": ["TransientTransactionError"]}
        )
        tracer.start_span(
            "transaction",
            attributes={
                "db.mongodb.transaction.outcome": "failed",
                cause: "commitTransaction admin",
            },
        ).end()
    expected = [
        "cause              retries  time lost  median write window",
        "update shop.stock        1     2.5 ms            1.5 ms",
        "total                    1     2.5 ms            1.5 ms",
        "commits Motor did not retry (with_transaction raised): 1 (TransientTransactionError 1)",
    ]
    assert expected == retry_table(signals.spans())


def test_conflict_table_reads_app_time_window_and_retries_per_group(signals: Signals) -> None:
    """Per group: attempts, the committed attempts' median app time and write window, retries
    (attempts beyond one per call) and the time they lost."""
    tracer = signals.tracer_provider.get_tracer("t")
    outcome = "db.mongodb.transaction.outcome"
    app, window = "db.mongodb.transaction.app_ms", "db.mongodb.transaction.write_window_ms"
    with tracer.start_as_current_span(
        "withTransaction", attributes={"db.mongodb.transaction.wasted_ms": 3.0}
    ):
        tracer.start_span(
            "transaction", attributes={outcome: "aborted", app: 0.1, window: 0.2}
        ).end()
        tracer.start_span(
            "transaction", attributes={outcome: "committed", app: 50.0, window: 52.0}
        ).end()
    with tracer.start_as_current_span("withTransaction"):
        tracer.start_span(
            "transaction", attributes={outcome: "committed", app: 60.0, window: 62.0}
        ).end()
    spans = signals.spans()
    expected = [
        "buyers  attempts  app ms  write window ms  retries  time lost",
        "slow           3    55.0             57.0        1     3.0 ms",
        "none           0       -                -        0     0.0 ms",
    ]
    assert expected == conflict_table([("slow", spans), ("none", [])])
