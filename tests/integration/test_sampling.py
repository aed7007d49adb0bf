"""Cost follows sampling: what is not recorded is not built, and nothing is lost that counts.

Through Motor and PyMongo's ``AsyncMongoClient`` against the simulator: a custom sampler that
records children of unsampled parents still gets complete spans; a 1 % ratio sampler over 500
concurrent transactions exports only complete, correctly parented traces and leaves no state;
metrics count every transaction whatever the sampler; hooks run only for recorded spans.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import pymongo
import pytest
from opentelemetry.context import Context
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from motor_otel import instrument_client
from motor_otel.instrumentor import telemetry_of
from motor_otel.testing import fail_command
from tests.conftest import maybe_await as _maybe
from tests.signals import make_signals
from tests.spans import children, named

TRANSIENT_INSERT = fail_command(
    "insert", error_code=112, error_labels=["TransientTransactionError"]
)


@pytest.fixture
def client(async_driver_client: Any) -> Any:
    return async_driver_client


async def _transaction(client: Any, n: int, collection: str = "items") -> None:
    """with_transaction of three inserts."""
    coll = client.sampling[collection]
    async with await _maybe(client.start_session()) as session:

        async def callback(s: Any) -> None:
            for k in range(3):
                await coll.insert_one({"n": n, "k": k}, session=s)

        await session.with_transaction(callback)


class RecordsChildren(Sampler):
    """Drops every root and records every child, sampled parent or not."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = get_current_span(parent_context).get_span_context()
        decision = Decision.RECORD_AND_SAMPLE if parent.is_valid else Decision.DROP
        return SamplingResult(decision, attributes)

    def get_description(self) -> str:
        return "RecordsChildren"


def _shape(spans: Sequence[ReadableSpan]) -> dict[str, set[str]]:
    """Attribute names per span name (values differ from run to run: lsid, times)."""
    shape: dict[str, set[str]] = defaultdict(set)
    for span in spans:
        shape[span.name] |= set(span.attributes or {})
    return dict(shape)


async def test_a_sampler_that_records_children_of_unsampled_parents_gets_complete_spans(
    client: Any,
) -> None:
    """Root dropped, children recorded: every span below has what an ALWAYS_ON run has."""
    always = make_signals(ALWAYS_ON)
    instrument_client(client, tracer_provider=always.tracer_provider)
    await _transaction(client, 0)
    custom = make_signals(RecordsChildren())
    instrument_client(client, tracer_provider=custom.tracer_provider)
    await _transaction(client, 1)

    expected = _shape([s for s in always.spans() if s.name != "withTransaction"])
    recorded = custom.spans()
    assert named(recorded, "withTransaction") == []  # the root, dropped
    assert expected == _shape(recorded)
    (attempt,) = named(recorded, "transaction")
    assert [s.name for s in children(recorded, attempt)] == [
        "insert sampling.items",
        "insert sampling.items",
        "insert sampling.items",
        "commitTransaction admin",
    ]
    for operation in children(recorded, attempt):
        assert len(children(recorded, operation)) == 1  # its command span


class SeededIds(IdGenerator):
    """Random ids from a seeded generator: the same traces are sampled on every run."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def generate_span_id(self) -> int:
        return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._random.getrandbits(128) or 1


async def test_one_percent_of_500_concurrent_transactions_are_complete_traces(
    client: Any,
) -> None:
    """Every sampled trace is a whole, correctly parented tree; every transaction is counted."""
    signals = make_signals(TraceIdRatioBased(0.01), SeededIds(20261129))
    signals.instrument(client)
    # One collection each: the simulator snapshots a collection per transaction that touches it.
    await asyncio.gather(*(_transaction(client, n, f"c{n}") for n in range(500)))

    spans = signals.spans()
    traces: dict[int, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        traces[span.context.trace_id].append(span)
    assert 0 < len(traces) < 25, len(traces)  # ~1 % of 500, and not everything
    for trace_spans in traces.values():
        (root,) = [s for s in trace_spans if s.parent is None]
        assert root.name == "withTransaction"
        (attempt,) = children(trace_spans, root)
        assert attempt.name == "transaction"
        operations = children(trace_spans, attempt)
        assert [s.name.split()[0] for s in operations] == ["insert"] * 3 + ["commitTransaction"]
        for operation in operations:
            (command,) = children(trace_spans, operation)
            assert command.name == operation.name.split()[0]
            assert command.attributes["db.mongodb.lsid"] == attempt.attributes["db.mongodb.lsid"]
        assert len(trace_spans) == 10
    telemetry = telemetry_of(client)
    assert telemetry is not None
    assert telemetry.correlator.sizes() == (0, 0)
    (done,) = signals.points()["db.client.mongodb.transactions"]
    assert done.value == 500


async def _scripted_run(client: Any, sampler: Sampler) -> tuple[dict[str, Any], int]:
    """Five transactions, the third retried once, and a failed insert outside any transaction."""
    signals = make_signals(sampler)
    signals.instrument(client)
    for n in range(5):
        if n == 2:
            await client.admin.command(TRANSIENT_INSERT)
        await _transaction(client, n)
    await client.admin.command(fail_command("insert", error_code=2))
    with pytest.raises(pymongo.errors.OperationFailure):
        await client.sampling.items.insert_one({"bad": True})
    points = signals.points()
    summary = {
        "transactions": {
            (p.attributes["db.mongodb.transaction.outcome"], p.attributes["db.mongodb.error_labels"]): p.value
            for p in points["db.client.mongodb.transactions"]
        },
        "retries": {
            p.attributes["db.mongodb.error_label"]: p.value
            for p in points["db.client.mongodb.transaction.retries"]
        },
        "attempts": [(p.count, p.sum) for p in points["db.client.mongodb.transaction.attempts"]],
        "durations": [p.count for p in points["db.client.mongodb.transaction.duration"]],
        "operations": sorted(
            (p.attributes["db.operation.name"], p.attributes.get("error.type", ""), p.count)
            for p in points["db.client.operation.duration"]
        ),
    }  # fmt: skip
    return summary, len(signals.spans())


async def test_metrics_are_exact_under_always_off(client: Any) -> None:
    """ParentBased(ALWAYS_OFF): no span at all, and the same metric points as ALWAYS_ON."""
    recorded, recorded_spans = await _scripted_run(client, ALWAYS_ON)
    unsampled, unsampled_spans = await _scripted_run(client, ParentBased(ALWAYS_OFF))
    assert recorded_spans > 0
    assert unsampled_spans == 0
    assert recorded == unsampled
    assert (unsampled["transactions"]) == {
        ("committed", "none"): 4,
        ("committed", "TransientTransactionError"): 1,
    }
    assert unsampled["retries"] == {"TransientTransactionError": 1}
    assert unsampled["attempts"] == [(5, 6)]
    failed = {(error, n) for op, error, n in unsampled["operations"] if op == "insert" and error}
    assert failed == {("112", 1), ("2", 1)}  # the transient one (then retried), the bad one


async def test_hooks_run_only_for_recorded_spans(client: Any) -> None:
    """No request, response or transaction hook call for spans nobody records."""
    calls: list[str] = []
    unrecorded = make_signals(ParentBased(ALWAYS_OFF))
    instrument_client(
        client,
        tracer_provider=unrecorded.tracer_provider,
        request_hook=lambda span, event: calls.append("request"),
        response_hook=lambda span, event: calls.append("response"),
        transaction_hook=lambda span, session: calls.append("transaction"),
    )
    await _transaction(client, 0)
    assert calls == []
    recorded = make_signals(ALWAYS_ON)
    instrument_client(
        client,
        tracer_provider=recorded.tracer_provider,
        request_hook=lambda span, event: calls.append("request"),
        transaction_hook=lambda span, session: calls.append("transaction"),
    )
    await _transaction(client, 1)
    assert calls == ["transaction", "request", "request", "request", "request"]


async def test_the_no_op_meter_is_noticed_once(client: Any) -> None:
    """The API's no-op meter provider: no metrics observer at all, so nothing is built for it."""
    signals = make_signals(ALWAYS_ON)
    instrument_client(
        client, tracer_provider=signals.tracer_provider, meter_provider=NoOpMeterProvider()
    )
    telemetry = telemetry_of(client)
    assert telemetry is not None
    assert telemetry.observers == []
    assert not telemetry.observed()
    await _transaction(client, 0)
    assert len(signals.spans()) == 10  # tracing is untouched
