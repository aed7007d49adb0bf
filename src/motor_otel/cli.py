"""``motor-otel demo``: a small shop on the embedded simulator, with real contention and injected
failures, traced.

Real spans from real driver calls: the instrumented Motor client talks to
:class:`~motor_otel.testing.SimulatedReplicaSet` over the wire protocol. Fail points inject
transient callback errors and unknown commit results; then several buyers order the same item at
once, and their transactions really conflict on its stock document; then two groups of checkouts
at once, one of which awaits a slow payment service inside its transactions. The terminal shows
trace trees, where the retries came from and what they cost, why the checkouts conflicted (app
time, write window, retries), and a metrics summary; ``--otlp-endpoint``
sends the same to a collector or Jaeger (and says so when it could not), ``--json`` writes the
spans as OTLP JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from motor_otel._demo_report import (
    children_of,
    conflict_table,
    kept_summary,
    metrics_summary,
    otlp_json,
    render_tree,
    retry_table,
)

__all__ = ["main", "metrics_summary", "otlp_json", "render_tree", "retry_table"]

NEEDS = (
    "motor-otel demo needs the OpenTelemetry SDK, the OTLP exporter and the simulator: "
    "pip install 'motor-otel[demo]'"
)
ITEMS = ("apple", "pear", "plum", "fig")
CONTENDED = "fig"
QUICK, SLOW = "pear", "plum"  # checkouts without, and with, a payment call in the transaction
PAYMENT_S = 0.05
"""How long the demo's "payment service" takes to answer (an HTTP call, in a real shop)."""
EXPORT_TIMEOUT_S = 2.0
"""Per OTLP request, retries included: an endpoint that does not answer fails the demo fast."""


async def _shop(client: Any, transactions: int, progress: bool) -> list[tuple[int, str]]:
    """Run the workload; returns (transaction number, what was injected) for retried ones."""
    stock, orders = client.shop.stock, client.shop.orders
    await stock.delete_many({})
    await stock.insert_many([{"_id": item, "qty": 1000} for item in ITEMS])
    injected: list[tuple[int, str]] = []
    for n in range(1, transactions + 1):
        item = ITEMS[n % len(ITEMS)]
        if n % 5 == 0:
            injected.append((n, "WriteConflict on the stock update (a fail point)"))
            await client.admin.command(
                {
                    "configureFailPoint": "failCommand",
                    "mode": {"times": 1},
                    "data": {"failCommands": ["update"], "errorCode": 112},
                }
            )
        elif n % 7 == 0:
            injected.append((n, "unknown commit result (ShutdownInProgress twice)"))
            await client.admin.command(
                {
                    "configureFailPoint": "failCommand",
                    "mode": {"times": 2},
                    "data": {"failCommands": ["commitTransaction"], "errorCode": 91},
                }
            )

        async def buy(session: Any, item: str = item, n: int = n) -> None:
            await stock.update_one({"_id": item}, {"$inc": {"qty": -1}}, session=session)
            await orders.insert_one({"order": n, "item": item}, session=session)

        async with await client.start_session() as session:
            try:
                await session.with_transaction(buy)
            except Exception as exc:  # what the application would see, shown not hidden
                print(f"transaction {n}: with_transaction raised {type(exc).__name__}")
                await _release(client, session)
        if progress and (n % 10 == 0 or n == transactions):
            print(f"[{n}/{transactions}] transactions done", flush=True)
    return injected


async def _release(client: Any, session: Any) -> None:
    """End the server session of a transaction ``with_transaction`` gave up on.

    A commit that failed and was not retried (Motor's loop, ``driver`` mode) may leave the
    transaction open on the server, holding its documents until mongod's
    ``transactionLifetimeLimitSeconds`` (60 s) expires it; every later writer of those documents
    then conflicts. ``killSessions`` aborts it at once (MongoDB manual, "killSessions").
    """
    from pymongo.errors import PyMongoError

    try:
        await client.admin.command({"killSessions": [session.session_id]})
    except PyMongoError as exc:
        print(f"  (killSessions failed: {type(exc).__name__})")


async def _transact(client: Any, buy: Any) -> str:
    """One buyer's ``with_transaction``: what its caller saw (``committed``, or what it raised;
    a transaction given up on is released on the server)."""
    from pymongo.errors import PyMongoError

    async with await client.start_session() as session:
        try:
            await session.with_transaction(buy)
        except PyMongoError as exc:
            await _release(client, session)
            code = getattr(exc, "code", None)
            return f"raised {type(exc).__name__}" + (f" (code {code})" if code else "")
    return "committed"


async def _contention(client: Any, buyers: int) -> list[str]:
    """``buyers`` transactions at once on one stock document; what each one's caller saw.

    Every buyer's first attempt writes the document and then waits until all of them have
    written (or failed to), so their transactions overlap for sure; retries do not wait. A
    server that finds the conflict at the write (mongod) fails the later writers at once; one
    that finds it at commit lets every write through and fails the later commits. Motor's own
    loop (``driver`` mode) does not retry a failed commit: that buyer's ``with_transaction``
    raises, which is counted here as the application would see it.
    """

    stock, orders = client.shop.stock, client.shop.orders
    arrived = 0
    everyone_wrote = asyncio.Event()

    def arrive() -> None:
        nonlocal arrived
        arrived += 1
        if arrived == buyers:
            everyone_wrote.set()

    async def buyer(k: int) -> str:
        first = True

        async def buy(session: Any) -> None:
            nonlocal first
            was_first, first = first, False
            try:
                await stock.update_one({"_id": CONTENDED}, {"$inc": {"qty": -1}}, session=session)
            finally:
                if was_first:
                    arrive()
            if was_first:
                await everyone_wrote.wait()
            await orders.insert_one({"buyer": k, "item": CONTENDED}, session=session)

        return await _transact(client, buy)

    return list(await asyncio.gather(*(buyer(k) for k in range(1, buyers + 1))))


async def _payment_service(order: str) -> None:
    """Charge the card: a remote call that takes PAYMENT_S (the demo's stand-in for HTTP)."""
    await asyncio.sleep(PAYMENT_S)


async def _checkout(client: Any, buyers: int, item: str, pay_inside: bool) -> list[str]:
    """``buyers`` checkouts of ``item`` at once, each one transaction: reserve the stock, then
    record the order. With ``pay_inside``, the callback awaits the payment service between the
    two, the way a checkout often grows: the stock document stays written, and every other
    buyer's write of it conflicts, for as long as the payment takes.
    """
    stock, orders = client.shop.stock, client.shop.orders

    async def buyer(k: int) -> str:
        async def buy(session: Any) -> None:
            await stock.update_one({"_id": item}, {"$inc": {"qty": -1}}, session=session)
            if pay_inside:
                await _payment_service(f"{item}-{k}")
            await orders.insert_one({"buyer": k, "item": item}, session=session)

        return await _transact(client, buy)

    return list(await asyncio.gather(*(buyer(k) for k in range(1, buyers + 1))))


def _checkout_groups(
    spans: list[Any], transactions: int, buyers: int
) -> list[tuple[str, list[Any]]]:
    """The spans of the two checkout groups, which ran one after the other after the rest."""
    roots = sorted(
        (s for s in spans if s.name == "withTransaction"), key=lambda s: s.start_time or 0
    )
    first = transactions + buyers
    groups = []
    for i, name in enumerate((f"{QUICK}: no call inside", f"{SLOW}: awaits payment inside")):
        traces = {r.context.trace_id for r in roots[first + i * buyers : first + (i + 1) * buyers]}
        groups.append((name, [s for s in spans if s.context.trace_id in traces]))
    return groups


def _export_failure(
    endpoint: str, spans: int, span_exporter: Any, metric_exporter: Any
) -> str | None:
    """What did not reach the endpoint, in one line; ``None`` when everything did."""
    lost = spans - span_exporter.delivered
    if lost <= 0 and not metric_exporter.failed:
        return None
    metrics = "the metrics were not delivered" if metric_exporter.failed else "metrics delivered"
    return (
        f"export to {endpoint} failed: {lost} of {spans} spans lost, {metrics} "
        f"(is a collector listening there? OTLP/HTTP, e.g. port 4318)"
    )


def _otlp_exporters(base: str) -> tuple[Any, Any]:
    """OTLP/HTTP exporters that remember what they delivered, with a short timeout."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics.export import MetricExportResult
    from opentelemetry.sdk.trace.export import SpanExportResult

    class CountingSpanExporter(OTLPSpanExporter):
        delivered = 0

        def export(self, spans: Any) -> SpanExportResult:
            result = super().export(spans)
            if result is SpanExportResult.SUCCESS:
                self.delivered += len(spans)
            return result

    class CountingMetricExporter(OTLPMetricExporter):
        failed = False

        def export(
            self, metrics_data: Any, timeout_millis: float | None = 10_000, **kwargs: Any
        ) -> Any:
            result = super().export(metrics_data, timeout_millis, **kwargs)
            if result is not MetricExportResult.SUCCESS:
                self.failed = True
            return result

    spans = CountingSpanExporter(endpoint=f"{base}/v1/traces", timeout=EXPORT_TIMEOUT_S)
    metrics = CountingMetricExporter(endpoint=f"{base}/v1/metrics", timeout=EXPORT_TIMEOUT_S)
    return spans, metrics


def _print_trees(spans: list[Any], transactions: int, injected: list[tuple[int, str]]) -> None:
    roots = sorted(
        (s for s in spans if s.name == "withTransaction"), key=lambda s: s.start_time or 0
    )
    for n, what in injected[:3]:
        root = roots[n - 1]
        print(f"\n--- transaction {n}: injected {what}")
        print(
            "\n".join(
                render_tree([s for s in spans if s.context.trace_id == root.context.trace_id])
            )
        )
    buyers = roots[transactions:]
    by_parent = children_of(spans)
    shown = next(
        (
            r
            for r in buyers
            if len([c for c in by_parent.get(r.context.span_id, []) if c.name == "transaction"]) > 1
        ),
        next((r for r in buyers if any(e.name == "commit_not_retried" for e in r.events)), None),
    )
    if shown is not None:
        k = buyers.index(shown) + 1
        print(f"\n--- buyer {k}: contention on stock {CONTENDED!r}")
        print(
            "\n".join(
                render_tree([s for s in spans if s.context.trace_id == shown.context.trace_id])
            )
        )


def _keep_sampler(sample: float | None) -> Any:
    """``--sample``: the keep sampler around a ratio; None (the SDK default) without it."""
    if sample is None:
        return None
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from motor_otel.sampling import KeepTransactionsSampler

    return KeepTransactionsSampler(ParentBased(TraceIdRatioBased(sample)))


def _print_kept(spans: list[Any], sample: float) -> None:
    """``--sample``: every retried (or kept) transaction's tree, and how many were kept by rule
    and sampled by the ratio. A retried one the ratio sampled anyway is recorded, not kept."""
    _, line = kept_summary(spans)
    by_parent = children_of(spans)
    for root in sorted(
        (s for s in spans if s.name == "withTransaction" and s.parent is None),
        key=lambda s: s.start_time or 0,
    ):
        attrs = root.attributes or {}
        rule = attrs.get("db.mongodb.transaction.kept")
        attempts = [c for c in by_parent.get(root.context.span_id, []) if c.name == "transaction"]
        if rule is None and len(attempts) < 2 and attrs.get(_COMMITS, 1) < 2:
            continue
        print(f"\n--- kept ({rule})" if rule else "\n--- sampled by the ratio, retried")
        print(
            "\n".join(
                render_tree([s for s in spans if s.context.trace_id == root.context.trace_id])
            )
        )
    print(f"\nKeepTransactionsSampler(ParentBased(TraceIdRatioBased({sample:g}))): {line}")


_COMMITS = "db.mongodb.transaction.commit_attempts"


def _contention_note(spans: list[Any], transactions: int, mode: str) -> list[str]:
    """Where the buyers' conflicts were found, read from their attempts' retry causes."""
    roots = sorted(
        (s for s in spans if s.name == "withTransaction"), key=lambda s: s.start_time or 0
    )
    by_parent = children_of(spans)
    at_write = at_commit = 0
    for root in roots[transactions:]:
        for attempt in by_parent.get(root.context.span_id, []):
            cause = str((attempt.attributes or {}).get("db.mongodb.transaction.retry_cause", ""))
            if cause.startswith("commitTransaction"):
                at_commit += 1
            elif cause:
                at_write += 1
    lines = [
        f"buyers' conflicts found at the write: {at_write}, at commit: {at_commit};"
        " the other retries are injected with fail points"
    ]
    if at_commit:
        lines.append(
            "(This simulator finds a write conflict at commit; mongod finds it at the write.)"
        )
        if mode == "driver":
            lines += [
                "Motor's own loop does not retry a failed commit: those buyers got the error,",
                "counted by db.client.mongodb.transaction.commit_not_retried.",
            ]
    return lines


async def demo(
    mode: str,
    transactions: int,
    buyers: int,
    otlp_endpoint: str | None,
    json_path: Path | None,
    sample: float | None = None,
) -> int:
    from motor.motor_asyncio import AsyncIOMotorClient
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from motor_otel import instrument_client
    from motor_otel.testing import SimulatedReplicaSet

    resource = Resource.create({"service.name": "motor-otel-demo"})
    memory = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource, sampler=_keep_sampler(sample))
    tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
    reader = InMemoryMetricReader()
    readers: list[Any] = [reader]
    exporters: tuple[Any, Any] | None = None
    if otlp_endpoint:
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        # The exporter's "retrying in 1s" warnings say nothing the line at the end does not.
        logging.getLogger("opentelemetry.exporter").setLevel(logging.ERROR)
        exporters = _otlp_exporters(otlp_endpoint.rstrip("/"))
        tracer_provider.add_span_processor(BatchSpanProcessor(exporters[0]))
        readers.append(PeriodicExportingMetricReader(exporters[1]))
    meter_provider = MeterProvider(metric_readers=readers, resource=resource)

    async with SimulatedReplicaSet() as rs:
        print(f"simulated replica set at {rs.uri}; with_transaction mode: {mode}")
        client: Any = AsyncIOMotorClient(rs.uri, serverSelectionTimeoutMS=5000)
        instrument_client(
            client,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            with_transaction=mode,
        )
        injected = await _shop(client, transactions, progress=True)
        seen = await _contention(client, buyers) if buyers else []
        quick = await _checkout(client, buyers, QUICK, pay_inside=False) if buyers else []
        slow = await _checkout(client, buyers, SLOW, pay_inside=True) if buyers else []
        client.close()
    for item, outcome in ((CONTENDED, seen), (QUICK, quick), (SLOW, slow)):
        if outcome:
            counts = {what: outcome.count(what) for what in sorted(set(outcome))}
            said = ", ".join(f"{n} {what}" for what, n in counts.items())
            print(f"{buyers} buyers of {item!r} at once: {said}")

    spans = list(memory.get_finished_spans())
    if sample is None:
        _print_trees(spans, transactions, injected)
    else:
        _print_kept(spans, sample)
    print("\n--- where retries came from")
    print("\n".join(retry_table(spans)))
    if sample is None:  # it reads every buyer's trace, which a sampled run does not keep
        print("\n".join(_contention_note(spans, transactions, mode)))
    if buyers and sample is None:  # the same: the medians need every checkout's trace
        print(
            f"\n--- why transactions conflict: {buyers} checkouts of {QUICK!r} at once, and"
            f" {buyers} of {SLOW!r} that await a {PAYMENT_S * 1000:.0f} ms payment service"
            " between reserving the stock and recording the order"
        )
        print("\n".join(conflict_table(_checkout_groups(spans, transactions, buyers))))
        print("(app ms and write window ms: medians over the committed attempts)")
    print("\n--- metrics")
    print("\n".join(metrics_summary(reader)))
    if json_path is not None:
        try:
            json_path.write_text(json.dumps(otlp_json(spans), indent=1))
        except OSError as exc:  # checked before the run; changed since
            print(f"motor-otel demo: cannot write --json {json_path}: {exc}", file=sys.stderr)
            return 1
        print(f"\nwrote {len(spans)} spans as OTLP JSON to {json_path}")
    tracer_provider.shutdown()
    meter_provider.shutdown()
    if otlp_endpoint and exporters is not None:
        failure = _export_failure(otlp_endpoint, len(spans), *exporters)
        if failure is not None:
            print(failure, file=sys.stderr)
            return 1
        print(f"sent {len(spans)} spans and the metrics to {otlp_endpoint}")
    return 0


# -- arguments ---------------------------------------------------------------------------------
# Every argument is checked here, by its ``type=`` (or ``choices=``), while argparse parses: a bad
# one is reported before anything runs, by the demo's own parser (its usage, then one line
# ``motor-otel demo: error: argument --NAME: why``), exit 2, no traceback. A new argument gets
# the same by giving it a ``type=`` that raises ``argparse.ArgumentTypeError``.


def _whole_number(text: str, least: int) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if number < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {number}")
    return number


def _at_least_one(text: str) -> int:
    return _whole_number(text, 1)


def _zero_or_more(text: str) -> int:
    return _whole_number(text, 0)


def _ratio(text: str) -> float:
    try:
        ratio = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a ratio between 0 and 1, got {text!r}"
        ) from None
    if not 0.0 <= ratio <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a ratio between 0 and 1, got {text}")
    return ratio


def _otlp_endpoint(text: str) -> str:
    """An OTLP/HTTP base URL: ``http(s)://host[:port][/path]``."""
    from urllib.parse import urlsplit

    url = urlsplit(text)
    try:
        url.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}") from None
    if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment:
        raise argparse.ArgumentTypeError(
            f"expected an http:// or https:// URL such as http://localhost:4318, got {text!r}"
        )
    return text


def _output_file(text: str) -> Path:
    """A file the demo can create or overwrite at the end: its folder exists and is writable."""
    path = Path(text)
    folder = path.parent
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"directory {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {text} (permission denied)")
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="motor-otel")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="trace a shop workload with contention and injected failures")
    p.add_argument("--mode", choices=("driver", "spec"), default="spec")
    p.add_argument("--transactions", type=_at_least_one, default=20, help="how many (default 20)")
    p.add_argument(
        "--buyers",
        type=_zero_or_more,
        default=4,
        help="concurrent transactions on one stock document at the end (default 4, 0: none)",
    )
    p.add_argument(
        "--otlp-endpoint",
        type=_otlp_endpoint,
        help="OTLP/HTTP base URL, e.g. http://localhost:4318",
    )
    p.add_argument("--json", type=_output_file, help="write the spans as OTLP JSON to this file")
    p.add_argument(
        "--sample",
        type=_ratio,
        metavar="RATIO",
        help="head-sample at RATIO (e.g. 0.05) under KeepTransactionsSampler: retried and "
        "failed transactions are kept whatever the ratio decided",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        import mockupdb  # noqa: F401
        import opentelemetry.exporter.otlp.proto.http
        import opentelemetry.sdk  # noqa: F401
    except ImportError:
        print(NEEDS, file=sys.stderr)
        return 2
    return asyncio.run(
        demo(args.mode, args.transactions, args.buyers, args.otlp_endpoint, args.json, args.sample)
    )


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
