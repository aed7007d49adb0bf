"""What tracing costs the client: the driver alone, contrib pymongo and motor-otel, one process.

Run ``python benchmarks/overhead.py [--quick]``. The simulated replica set runs in a subprocess
(``python -m motor_otel.testing``) so its CPU time does not hide ours; where ``taskset`` exists
the script re-runs itself pinned to one core and moves the servers to the others. Each round
runs every workload once per variant, interleaved; the tables show, per variant, the median over
rounds of client CPU (``time.process_time``: all threads, Motor's executor and the span
processor's worker included) per transaction or operation, its spread, and the ratio to the
driver alone (median of the per-round ratios, with their range).

Variants: the driver alone; opentelemetry-instrumentation-pymongo's ``CommandTracer`` (contrib)
and motor-otel, each recorded (SDK ``TracerProvider`` + ``BatchSpanProcessor`` + an exporter
that drops and counts), unsampled (``ParentBased(ALWAYS_OFF)``) and under a 1 %
``TraceIdRatioBased`` sampler; motor-otel under ``KeepTransactionsSampler(ParentBased(
TraceIdRatioBased(0.01)))`` (the default keep rules: retried and failed transactions become kept
traces; the others are buffered and dropped); motor-otel with ``command_detail="events"``; both recorded with
the real OTLP/HTTP exporter sending to a sink in another process over loopback; motor-otel with
``OTEL_SEMCONV_STABILITY_OPT_IN=database/dup`` (old attribute names beside the stable ones).
Each timed region ends with ``force_flush``, so export work is charged to the variant that
caused it.

The floor: the SDK alone replaying the span tree motor-otel recorded for the same workload
(names, kinds, attributes, events, links, parents; same processor and exporter), no driver and
no instrumentation code: what these spans cost at the very least.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

from _common import (
    CLIENT_OPTIONS,
    CountingExporter,
    otlp_sink_process,
    simulator_process,
)
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.pymongo import CommandTracer
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from pymongo import AsyncMongoClient

import motor_otel
from motor_otel import KeepTransactionsSampler
from motor_otel.instrumentor import telemetry_of
from motor_otel.testing import fail_command

FAIL_ONCE = fail_command("insert", error_code=112, error_labels=["TransientTransactionError"])
PINNED = "BENCH_PINNED_CPU"


@dataclass(frozen=True)
class VariantSpec:
    key: str
    label: str
    tracer: str  # "none", "contrib" or "ours"
    sampler: Callable[[], Sampler] | None = None
    otlp: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    semconv_opt_in: str | None = None  # OTEL_SEMCONV_STABILITY_OPT_IN while it is instrumented


SPECS = [
    VariantSpec("plain", "driver alone", "none"),
    VariantSpec("contrib", "contrib, recorded", "contrib"),
    VariantSpec("ours", "motor-otel, recorded", "ours"),
    VariantSpec("contrib_off", "contrib, ParentBased(ALWAYS_OFF)", "contrib", lambda: ParentBased(ALWAYS_OFF)),
    VariantSpec("ours_off", "motor-otel, ParentBased(ALWAYS_OFF)", "ours", lambda: ParentBased(ALWAYS_OFF)),
    VariantSpec("contrib_1pct", "contrib, 1 % TraceIdRatioBased", "contrib", lambda: TraceIdRatioBased(0.01)),
    VariantSpec("ours_1pct", "motor-otel, 1 % TraceIdRatioBased", "ours", lambda: TraceIdRatioBased(0.01)),
    VariantSpec("ours_1pct_keep", "motor-otel, 1 % KeepTransactionsSampler", "ours", lambda: KeepTransactionsSampler(ParentBased(TraceIdRatioBased(0.01)))),
    VariantSpec("ours_events", 'motor-otel, command_detail="events"', "ours", settings={"command_detail": "events"}),
    VariantSpec("ours_dup", "motor-otel, recorded, database/dup", "ours", semconv_opt_in="database/dup"),
    VariantSpec("contrib_otlp", "contrib, recorded, OTLP/HTTP export", "contrib", otlp=True),
    VariantSpec("ours_otlp", "motor-otel, recorded, OTLP/HTTP export", "ours", otlp=True),
]  # fmt: skip
FLOOR = "floor"


@dataclass
class Sizes:
    rounds: int
    txn_serial: int  # transactions one after another per sample
    concurrent: int  # transactions in one concurrent batch
    txn_retry: int  # transactions whose first attempt fails, per sample
    single_ops: int  # insert_one + find_one pairs per sample


QUICK = Sizes(rounds=2, txn_serial=6, concurrent=20, txn_retry=3, single_ops=10)
FULL = Sizes(rounds=11, txn_serial=80, concurrent=100, txn_retry=30, single_ops=150)


class _Counting(SpanExporter):
    """Counts spans on their way to another exporter (the OTLP one)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return self.inner.export(spans)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


@dataclass
class Variant:
    spec: VariantSpec
    client: Any
    provider: TracerProvider | None
    counter: CountingExporter | _Counting | None

    @property
    def spans(self) -> int:
        return self.counter.spans if self.counter is not None else 0


def _provider(spec: VariantSpec, otlp_url: str) -> tuple[TracerProvider, Any]:
    sampler = spec.sampler() if spec.sampler else None
    provider = TracerProvider(sampler=sampler) if sampler else TracerProvider()
    counter: CountingExporter | _Counting = (
        _Counting(OTLPSpanExporter(endpoint=otlp_url)) if spec.otlp else CountingExporter()
    )
    provider.add_span_processor(BatchSpanProcessor(counter, max_queue_size=1 << 16))
    return provider, counter


def _client(driver: str, uri: str, spec: VariantSpec, otlp_url: str) -> Variant:
    kwargs: dict[str, Any] = dict(CLIENT_OPTIONS)
    provider, counter = (None, None) if spec.tracer == "none" else _provider(spec, otlp_url)
    if spec.tracer == "contrib":
        assert provider is not None
        kwargs["event_listeners"] = [CommandTracer(provider.get_tracer("bench.contrib"))]
    client: Any = (AsyncIOMotorClient if driver == "motor" else AsyncMongoClient)(uri, **kwargs)
    if spec.tracer == "ours":
        with _semconv_opt_in(spec.semconv_opt_in):
            motor_otel.instrument_client(client, tracer_provider=provider, **spec.settings)
        telemetry = telemetry_of(client)
        assert telemetry is not None and telemetry.old_names == bool(spec.semconv_opt_in)
    return Variant(spec, client, provider, counter)


@contextmanager
def _semconv_opt_in(value: str | None) -> Iterator[None]:
    """``OTEL_SEMCONV_STABILITY_OPT_IN=value`` for one ``instrument_client`` call.

    motor-otel reads it once per call through contrib's helper, which caches what it read for
    the whole process: so the helper is made to read it afresh here, and again afterwards.
    """
    if value is None:
        yield
        return
    from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability

    name = "OTEL_SEMCONV_STABILITY_OPT_IN"
    saved = os.environ.get(name)
    os.environ[name] = value
    _OpenTelemetrySemanticConventionStability._initialized = False
    try:
        yield
    finally:
        if saved is None:
            del os.environ[name]
        else:
            os.environ[name] = saved
        _OpenTelemetrySemanticConventionStability._initialized = False


async def _close(client: Any) -> None:
    if isinstance(client, AsyncMongoClient):
        await client.close()
    else:
        client.close()


# -- workloads: each returns (units, excluded cpu) ------------------------------------------
Workload = Callable[[Any, Any, Sizes], Awaitable[tuple[int, float]]]


async def _three_writes(client: Any, n: int) -> None:
    coll = client.bench.items
    pymongo = isinstance(client, AsyncMongoClient)
    async with client.start_session() if pymongo else await client.start_session() as s:

        async def callback(session: Any) -> None:
            await coll.insert_one({"n": n, "k": 1}, session=session)
            await coll.insert_one({"n": n, "k": 2}, session=session)
            await coll.insert_one({"n": n, "k": 3}, session=session)

        await s.with_transaction(callback)


async def txn_serial(client: Any, admin: Any, sizes: Sizes) -> tuple[int, float]:
    for i in range(sizes.txn_serial):
        await _three_writes(client, i)
    return sizes.txn_serial, 0.0


async def txn_concurrent(client: Any, admin: Any, sizes: Sizes) -> tuple[int, float]:
    await asyncio.gather(*(_three_writes(client, i) for i in range(sizes.concurrent)))
    return sizes.concurrent, 0.0


async def txn_retry(client: Any, admin: Any, sizes: Sizes) -> tuple[int, float]:
    cpu = 0.0
    for i in range(sizes.txn_retry):
        c0 = time.process_time()
        await admin.admin.command(FAIL_ONCE)  # set-up, not charged: the same for every variant
        cpu += time.process_time() - c0
        await _three_writes(client, i)
    return sizes.txn_retry, cpu


async def txn_tenth_retried(client: Any, admin: Any, sizes: Sizes) -> tuple[int, float]:
    """One transaction in ten retries once (its first insert fails with a WriteConflict)."""
    cpu = 0.0
    for i in range(sizes.txn_serial):
        if i % 10 == 0:
            c0 = time.process_time()
            await admin.admin.command(FAIL_ONCE)  # set-up, not charged
            cpu += time.process_time() - c0
        await _three_writes(client, i)
    return sizes.txn_serial, cpu


async def single_ops(client: Any, admin: Any, sizes: Sizes) -> tuple[int, float]:
    coll = client.bench.items
    for i in range(sizes.single_ops):
        result = await coll.insert_one({"i": i, "name": "widget"})
        await coll.find_one({"_id": result.inserted_id})
    return 2 * sizes.single_ops, 0.0


WORKLOADS: list[tuple[str, str, str, Workload]] = [
    ("motor", "Motor: with_transaction, 3 writes", "txn", txn_serial),
    ("motor", "Motor: with_transaction x{concurrent} concurrent", "txn", txn_concurrent),
    ("motor", "Motor: with_transaction, 1 retry", "txn", txn_retry),
    ("motor", "Motor: with_transaction, 10 % retried", "txn", txn_tenth_retried),
    ("pymongo", "AsyncMongoClient: with_transaction, 3 writes", "txn", txn_serial),
    ("pymongo", "AsyncMongoClient: insert_one + find_one", "op", single_ops),
]


# -- the floor: the SDK alone replaying our span tree ---------------------------------------
@dataclass
class _Planned:
    name: str
    kind: SpanKind
    parent: int | None
    attributes: dict[str, Any]
    links: list[Link]
    events: list[tuple[str, dict[str, Any]]]
    error: bool


@dataclass
class Replay:
    spans: list[_Planned]
    steps: list[tuple[bool, int]]  # (start?, span index) in the recorded order
    units: int


async def capture(driver: str, uri: str, admin: Any, work: Workload, sizes: Sizes) -> Replay:
    """Run the workload once through motor-otel and keep the span tree it recorded."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client: Any = (AsyncIOMotorClient if driver == "motor" else AsyncMongoClient)(
        uri, **CLIENT_OPTIONS
    )
    motor_otel.instrument_client(client, tracer_provider=provider)
    units, _ = await work(client, admin, sizes)
    await _close(client)
    spans = list(exporter.get_finished_spans())
    index = {span.context.span_id: i for i, span in enumerate(spans) if span.context}
    planned = [
        _Planned(
            span.name,
            span.kind,
            index.get(span.parent.span_id) if span.parent else None,
            dict(span.attributes or {}),
            [Link(link.context, link.attributes) for link in span.links],
            [(event.name, dict(event.attributes or {})) for event in span.events],
            span.status.status_code is StatusCode.ERROR,
        )
        for span in spans
    ]
    order = sorted(
        [(span.start_time or 0, 0, i) for i, span in enumerate(spans)]
        + [(span.end_time or 0, 1, i) for i, span in enumerate(spans)]
    )
    return Replay(planned, [(kind == 0, i) for _, kind, i in order], units)


def replay(plan: Replay, tracer: trace.Tracer, times: int) -> None:
    root = Context()
    error = Status(StatusCode.ERROR, "replayed")
    for _ in range(times):
        live: list[Any] = [None] * len(plan.spans)
        for start, i in plan.steps:
            p = plan.spans[i]
            if start:
                parent = p.parent
                ctx = trace.set_span_in_context(live[parent]) if parent is not None else root
                live[i] = tracer.start_span(
                    p.name, context=ctx, kind=p.kind, attributes=p.attributes, links=p.links
                )
            else:
                span = live[i]
                for name, attrs in p.events:
                    span.add_event(name, attrs)
                if p.error:
                    span.set_status(error)
                span.end()


@dataclass
class Sample:
    cpu: float  # per unit
    spans: float  # per unit


def measure_floor(plan: Replay, units_wanted: int) -> Sample:
    counter = CountingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(counter, max_queue_size=1 << 16))
    tracer = provider.get_tracer("bench.floor")
    times = max(1, round(units_wanted / plan.units))
    gc.collect()
    c0 = time.process_time()
    replay(plan, tracer, times)
    provider.force_flush()
    cpu = time.process_time() - c0
    provider.shutdown()
    units = times * plan.units
    return Sample(cpu / units, counter.spans / units)


async def _measure(v: Variant, admin: Any, sizes: Sizes, work: Workload) -> Sample:
    await admin.bench.items.drop()  # keep the server's collection small: same cost every sample
    gc.collect()
    spans0 = v.spans
    c0 = time.process_time()
    units, cpu_skip = await work(v.client, admin, sizes)
    if v.provider is not None:
        v.provider.force_flush()
    cpu = time.process_time() - c0 - cpu_skip
    return Sample(cpu / units, (v.spans - spans0) / units)


Results = dict[int, dict[str, list[Sample]]]


async def run(uri: str, otlp_url: str, sizes: Sizes, specs: list[VariantSpec]) -> Results:
    admin: Any = AsyncIOMotorClient(uri, **CLIENT_OPTIONS)
    await admin.admin.command("ping")
    clients = {
        driver: [_client(driver, uri, spec, otlp_url) for spec in specs]
        for driver in ("motor", "pymongo")
    }
    plans = {
        i: await capture(driver, uri, admin, work, sizes)
        for i, (driver, _name, _unit, work) in enumerate(WORKLOADS)
    }
    results: Results = {i: {s.key: [] for s in [*specs, VariantSpec(FLOOR, "", "")]} for i in plans}
    try:
        for round_no in range(sizes.rounds + 1):  # round 0 warms pools, caches, connections
            for i, (driver, _name, _unit, work) in enumerate(WORKLOADS):
                per_round = clients[driver] if round_no % 2 else clients[driver][::-1]
                for v in per_round:
                    sample = await _measure(v, admin, sizes, work)
                    if round_no:
                        results[i][v.spec.key].append(sample)
                floor = measure_floor(plans[i], sizes.txn_serial)
                if round_no:
                    results[i][FLOOR].append(floor)
            print(f"round {round_no}/{sizes.rounds} done", file=sys.stderr, flush=True)
    finally:
        await admin.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        for per_driver in clients.values():
            for v in per_driver:
                await _close(v.client)
                if v.provider is not None:
                    v.provider.shutdown()
        admin.close()
    return results


# -- report -----------------------------------------------------------------------------------
def _us(x: float) -> str:
    return f"{x * 1e6:,.1f}"


def _median(samples: list[Sample] | None, attr: str = "cpu") -> float:
    if not samples:
        return float("nan")  # a partial run (--variants) without this variant
    return statistics.median(getattr(s, attr) for s in samples)


def _ratios(samples: list[Sample], plain: list[Sample]) -> list[float]:
    return [s.cpu / p.cpu for s, p in zip(samples, plain, strict=True)]


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def report(results: Results, sizes: Sizes, specs: list[VariantSpec], pinned: str) -> str:
    keys = [s.key for s in specs]
    labels = {s.key: s.label for s in specs}
    labels[FLOOR] = "floor: the SDK alone replaying motor-otel's span tree"
    lines = [
        f"motor-otel overhead: {sizes.rounds} interleaved rounds; client CPU "
        "(time.process_time, all threads) per unit; server and OTLP sink in other processes",
        f"{pinned}; Python {platform.python_version()}, PyMongo {version('pymongo')}, "
        f"Motor {version('motor')}, OpenTelemetry SDK {version('opentelemetry-sdk')}, "
        f"contrib pymongo {version('opentelemetry-instrumentation-pymongo')}",
        "",
        "CPU = median over rounds (min-max); x plain = median of per-round ratios (min-max);",
        "added = variant - driver alone, per unit and per exported span",
    ]
    summary: list[str] = []
    for i, (_driver, name, unit, _work) in enumerate(WORKLOADS):
        r = results[i]
        plain = r["plain"]
        p = _median(plain)
        title = name.format(concurrent=sizes.concurrent)
        lines += [
            "",
            f"### {title}",
            "",
            f"| variant | CPU µs/{unit} | x plain | spans/{unit} | added µs/{unit} | added µs/span |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for key in [*keys, FLOOR]:
            samples = r[key]
            cpu = _median(samples)
            spans = _median(samples, "spans")
            lo, hi = min(s.cpu for s in samples), max(s.cpu for s in samples)
            if key == FLOOR:
                ratio, added = "", cpu
            else:
                rs = _ratios(samples, plain)
                ratio = f"{statistics.median(rs):.2f} ({min(rs):.2f}-{max(rs):.2f})"
                added = cpu - p
            per_span = _us(added / spans) if spans >= 0.5 and key != "plain" else ""
            lines.append(
                f"| {labels[key]} | {_us(cpu)} ({_us(lo)}-{_us(hi)}) | {ratio} | {spans:.1f} | "
                f"{_us(added) if key != 'plain' else ''} | {per_span} |"
            )
        summary.append(_targets(title, r, unit))
    lines += [
        "",
        "### Targets (reported, not asserted)",
        "",
        "| workload | ours/plain ≤ 1.35 (goal 1.25) | ours/span ≤ contrib/span | "
        "unsampled ours/plain ≤ 1.05: ALWAYS_OFF, 1 % | events added ≤ contrib added | "
        "ours added / floor (goal ≤ 2) | export adds per span: ours, contrib | "
        "database/dup adds | keep 1 % / plain 1 % ≤ 1.05, keep adds vs 1 % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *summary,
    ]
    return "\n".join(lines)


def _targets(title: str, r: dict[str, list[Sample]], unit: str) -> str:
    plain = r["plain"]
    p = _median(plain)

    def ratio(key: str) -> float:
        return statistics.median(_ratios(r[key], plain)) if r.get(key) else float("nan")

    def added(key: str) -> float:
        return _median(r[key]) - p if r.get(key) else float("nan")

    def per_span(key: str) -> float:
        spans = _median(r.get(key), "spans")
        return added(key) / spans if spans else float("nan")

    ours = ratio("ours")
    # the keep sampler against plain 1 %: per-round ratio of the two, median
    keep = (
        statistics.median(
            k.cpu / o.cpu for k, o in zip(r["ours_1pct_keep"], r["ours_1pct"], strict=True)
        )
        if r.get("ours_1pct_keep") and r.get("ours_1pct")
        else float("nan")
    )
    span_ours, span_contrib = per_span("ours"), per_span("contrib")
    off, pct = ratio("ours_off"), ratio("ours_1pct")
    events, contrib = added("ours_events"), added("contrib")
    floor = _median(r[FLOOR])
    spans = _median(r.get("ours"), "spans")
    contrib_spans = _median(r.get("contrib"), "spans")
    export_ours = (added("ours_otlp") - added("ours")) / spans if spans else float("nan")
    export_contrib = (
        (added("contrib_otlp") - added("contrib")) / contrib_spans
        if contrib_spans
        else float("nan")
    )
    return (
        f"| {title} | {ours:.2f} {_verdict(ours <= 1.35)} | {_us(span_ours)} vs "
        f"{_us(span_contrib)} µs {_verdict(span_ours <= span_contrib)} | {off:.2f}, {pct:.2f} "
        f"{_verdict(off <= 1.05 and pct <= 1.05)} | {_us(events)} vs {_us(contrib)} µs/{unit} "
        f"{_verdict(events <= contrib)} | {_us(added('ours'))} / {_us(floor)} = "
        f"{added('ours') / floor:.2f} {_verdict(added('ours') / floor <= 2)} | "
        f"{_us(export_ours)}, {_us(export_contrib)} µs | "
        f"{_us(added('ours_dup') - added('ours'))} µs/{unit} | "
        f"{keep:.2f} {_verdict(keep <= 1.05)}, {_us(added('ours_1pct_keep') - added('ours_1pct'))}"
        f" µs/{unit} |"
    )


def _pin(argv: list[str]) -> str:
    """Re-run under ``taskset`` on the last CPU; the servers get the others."""
    pinned = os.environ.get(PINNED)
    if pinned is not None:
        return f"client pinned to CPU {pinned} with taskset; servers on CPUs {os.environ.get('BENCH_SERVER_CPUS')}"
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if shutil.which("taskset") is None or len(cpus) < 2:
        return "not pinned (no taskset, or one CPU)"
    cpu, others = cpus[-1], cpus[:-1]
    env = dict(os.environ, **{PINNED: str(cpu), "BENCH_SERVER_CPUS": ",".join(map(str, others))})
    script = os.path.abspath(__file__)
    os.execvpe("taskset", ["taskset", "-c", str(cpu), sys.executable, script, *argv], env)
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small rounds: a smoke run")
    parser.add_argument("--rounds", type=int, help="override the number of measured rounds")
    parser.add_argument("--no-pin", action="store_true", help="do not re-run under taskset")
    parser.add_argument(
        "--variants", help="comma-separated variant keys, for a partial run (plain is kept)"
    )
    args = parser.parse_args(argv)
    specs = SPECS
    if args.variants:
        wanted = {"plain", *args.variants.split(",")}
        specs = [spec for spec in SPECS if spec.key in wanted]
    pinned = "not pinned (--no-pin)" if args.no_pin else _pin(argv)
    sizes = QUICK if args.quick else FULL
    if args.rounds:
        sizes.rounds = args.rounds
    started = time.perf_counter()
    with simulator_process() as uri, otlp_sink_process() as (otlp_url, received):
        results = asyncio.run(run(uri, otlp_url, sizes, specs))
    print(report(results, sizes, specs, pinned))
    print(
        f"\nOTLP sink received {received.get('requests', 0)} requests, "
        f"{received.get('bytes', 0):,} bytes; total {time.perf_counter() - started:.0f} s"
    )
    print("command: .venv/bin/python benchmarks/overhead.py " + " ".join(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
