"""What tracing costs the client: uninstrumented vs contrib pymongo vs motor-otel, one process.

Run ``python benchmarks/overhead.py [--quick]``. The simulated replica set runs in a subprocess
(``python -m motor_otel.testing``) so its CPU time does not hide ours. Each round runs every
workload once per variant, interleaved (a b c a b c ...); the table shows medians over rounds of
client CPU (``time.process_time``, all threads: Motor's executor and the span processor's worker
included) and wall time per operation or per transaction.

(a) the driver alone; (b) the driver + opentelemetry-instrumentation-pymongo's ``CommandTracer``
passed as an event listener (command spans only); (c) the driver + ``motor_otel.instrument_client``
(withTransaction, transaction-attempt, operation and command spans). (b) and (c) each have an SDK
``TracerProvider`` + ``BatchSpanProcessor`` + an exporter that drops and counts spans; the timed
region ends with ``force_flush`` so export work is charged to the variant that caused it.

A fourth client, (l), the driver + a command listener that does nothing, runs interleaved too: it
is what PyMongo charges any listener for building and publishing command events, (b) and (c)
alike, and the last table splits (c)'s added CPU into that, the SDK's own cost for the spans (c)
emits (bare spans), and the rest (our code, plus what the SDK costs beyond a bare span in a loop).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from _common import CLIENT_OPTIONS, CountingExporter, counting_provider, simulator_process
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry.instrumentation.pymongo import CommandTracer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from pymongo import AsyncMongoClient, monitoring

import motor_otel
from motor_otel.testing import fail_command

VARIANTS = ("a", "b", "c")  # the table's columns
MEASURED = ("a", "l", "b", "c")  # interleaved in this order; (l) only feeds the breakdown
HEADERS = {"a": "(a) uninstrumented", "b": "(b) contrib pymongo", "c": "(c) motor-otel"}
FAIL_ONCE = fail_command("insert", error_code=112, error_labels=["TransientTransactionError"])


@dataclass
class Sizes:
    rounds: int
    single_ops: int  # insert_one + find_one pairs per sample
    txn_serial: int  # transactions one after another per sample
    txn_batches: int  # batches of 100 concurrent transactions per sample
    txn_retry: int  # transactions whose first attempt fails, per sample
    bare_spans: int


QUICK = Sizes(rounds=3, single_ops=40, txn_serial=20, txn_batches=1, txn_retry=10, bare_spans=2000)
FULL = Sizes(
    rounds=7, single_ops=300, txn_serial=120, txn_batches=2, txn_retry=60, bare_spans=20000
)


@dataclass
class Variant:
    key: str
    client: Any
    provider: TracerProvider | None = None
    exporter: CountingExporter | None = None


@dataclass
class Sample:
    cpu: float
    wall: float
    spans: float


@dataclass
class Series:
    samples: dict[str, list[Sample]] = field(default_factory=lambda: {k: [] for k in MEASURED})

    def median(self, key: str, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in self.samples[key])


def _client(driver: str, uri: str, key: str) -> Variant:
    kwargs: dict[str, Any] = dict(CLIENT_OPTIONS)
    provider, exporter = counting_provider() if key in ("b", "c") else (None, None)
    if key == "l":
        kwargs["event_listeners"] = [_SilentListener()]
    if key == "b":
        assert provider is not None
        kwargs["event_listeners"] = [CommandTracer(provider.get_tracer("bench.contrib"))]
    client: Any = (AsyncIOMotorClient if driver == "motor" else AsyncMongoClient)(uri, **kwargs)
    if key == "c":
        motor_otel.instrument_client(client, tracer_provider=provider)
    return Variant(key, client, provider, exporter)


class _SilentListener(monitoring.CommandListener):
    """Makes PyMongo build and publish command events, and does nothing with them."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def _close(driver: str, variant: Variant) -> None:
    if driver == "motor":
        variant.client.close()
    else:
        await variant.client.close()
    if variant.provider is not None:
        variant.provider.shutdown()


# -- workloads: each returns (units, excluded cpu, excluded wall) --------------------------------
Workload = Callable[[Variant, Any, Sizes], Awaitable[tuple[int, float, float]]]


async def _three_writes(client: Any, n: int) -> None:
    coll = client.bench.items
    async with client.start_session() if _is_pymongo(client) else await client.start_session() as s:

        async def callback(session: Any) -> None:
            await coll.insert_one({"n": n, "k": 1}, session=session)
            await coll.insert_one({"n": n, "k": 2}, session=session)
            await coll.insert_one({"n": n, "k": 3}, session=session)

        await s.with_transaction(callback)


def _is_pymongo(client: Any) -> bool:
    return isinstance(client, AsyncMongoClient)


async def single_ops(v: Variant, admin: Any, sizes: Sizes) -> tuple[int, float, float]:
    coll = v.client.bench.items
    for i in range(sizes.single_ops):
        result = await coll.insert_one({"i": i, "name": "widget"})
        await coll.find_one({"_id": result.inserted_id})
    return 2 * sizes.single_ops, 0.0, 0.0


async def txn_serial(v: Variant, admin: Any, sizes: Sizes) -> tuple[int, float, float]:
    for i in range(sizes.txn_serial):
        await _three_writes(v.client, i)
    return sizes.txn_serial, 0.0, 0.0


async def txn_concurrent(v: Variant, admin: Any, sizes: Sizes) -> tuple[int, float, float]:
    for _ in range(sizes.txn_batches):
        await asyncio.gather(*(_three_writes(v.client, i) for i in range(100)))
    return 100 * sizes.txn_batches, 0.0, 0.0


async def txn_retry(v: Variant, admin: Any, sizes: Sizes) -> tuple[int, float, float]:
    cpu = wall = 0.0
    for i in range(sizes.txn_retry):
        c0, w0 = time.process_time(), time.perf_counter()
        await admin.admin.command(FAIL_ONCE)  # set-up, not charged: the same for every variant
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        await _three_writes(v.client, i)
    return sizes.txn_retry, cpu, wall


WORKLOADS: list[tuple[str, str, str, Workload]] = [
    ("motor", "single op (insert_one/find_one)", "op", single_ops),
    ("motor", "with_transaction x1, 3 writes", "txn", txn_serial),
    ("motor", "with_transaction x100 concurrent", "txn", txn_concurrent),
    ("motor", "with_transaction, 1 retry", "txn", txn_retry),
    ("pymongo", "single op (insert_one/find_one)", "op", single_ops),
    ("pymongo", "with_transaction x1, 3 writes", "txn", txn_serial),
    ("pymongo", "with_transaction, 1 retry", "txn", txn_retry),
]


async def _measure(v: Variant, admin: Any, sizes: Sizes, work: Workload) -> Sample:
    await admin.bench.items.drop()  # keep the server's collection small: same cost every sample
    gc.collect()
    spans0 = v.exporter.spans if v.exporter else 0
    c0, w0 = time.process_time(), time.perf_counter()
    units, cpu_skip, wall_skip = await work(v, admin, sizes)
    if v.provider is not None:
        v.provider.force_flush()
    cpu = time.process_time() - c0 - cpu_skip
    wall = time.perf_counter() - w0 - wall_skip
    spans = (v.exporter.spans - spans0) if v.exporter else 0
    return Sample(cpu / units, wall / units, spans / units)


def bare_span(n: int, attributes: int, after: int = 0) -> Sample:
    """A bare SDK span: ``attributes`` at start, ``after`` more set once started (as a reply's).

    With motor-otel's average attribute count it is the yardstick of the per-span target; with
    12 + 2 it is shaped like our command spans, what the SDK alone charges for one of those.
    """
    provider, exporter = counting_provider()
    tracer = provider.get_tracer("bench.bare")
    attrs: dict[str, str | int] = {
        f"bench.attribute.{i}": (i if i % 2 else f"value-{i}") for i in range(attributes)
    }
    later: dict[str, str | int] = {f"bench.reply.{i}": i << 32 for i in range(after)}
    gc.collect()
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        span = tracer.start_span("bench.bare", kind=SpanKind.CLIENT, attributes=attrs)
        if later:
            span.set_attributes(later)
        span.end()
    provider.force_flush()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    provider.shutdown()
    assert exporter.spans == n, "the bare-span processor dropped spans"
    return Sample(cpu / n, wall / n, 1.0)


async def run(uri: str, sizes: Sizes) -> tuple[dict[int, Series], list[float], float, list[float]]:
    admin: Any = AsyncIOMotorClient(uri, **CLIENT_OPTIONS)
    await admin.admin.command("ping")
    clients = {
        driver: {key: _client(driver, uri, key) for key in MEASURED}
        for driver in ("motor", "pymongo")
    }
    results = {i: Series() for i in range(len(WORKLOADS))}
    bare: list[Sample] = []
    command_like: list[Sample] = []
    attrs_per_span: list[float] = []
    try:
        for round_no in range(sizes.rounds + 1):  # round 0 warms pools, caches and the JIT-less VM
            for i, (driver, _name, _unit, work) in enumerate(WORKLOADS):
                for key in MEASURED:
                    v = clients[driver][key]
                    a0 = (v.exporter.spans, v.exporter.attributes) if v.exporter else (0, 0)
                    sample = await _measure(v, admin, sizes, work)
                    if round_no:
                        results[i].samples[key].append(sample)
                    if key == "c" and v.exporter and v.exporter.spans > a0[0]:
                        attrs_per_span.append(
                            (v.exporter.attributes - a0[1]) / (v.exporter.spans - a0[0])
                        )
            if round_no:
                attributes = round(statistics.median(attrs_per_span))
                bare.append(bare_span(sizes.bare_spans, attributes))
                command_like.append(bare_span(sizes.bare_spans, 12, after=2))
            print(f"round {round_no}/{sizes.rounds} done", file=sys.stderr, flush=True)
    finally:
        await admin.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        for per_driver in clients.items():
            for v in per_driver[1].values():
                await _close(per_driver[0], v)
        admin.close()
    return (
        results,
        [s.cpu for s in bare],
        statistics.median(attrs_per_span),
        [s.cpu for s in command_like],
    )


def _us(x: float) -> str:
    return f"{x * 1e6:,.1f}"


def report(
    results: dict[int, Series],
    bare_cpu: list[float],
    attrs: float,
    sizes: Sizes,
    command_like_cpu: list[float],
) -> str:
    bare = statistics.median(bare_cpu)
    lines = [
        f"motor-otel overhead: medians of {sizes.rounds} interleaved rounds; client CPU "
        "(time.process_time) and wall time per unit; server in another process",
        "",
        f"{'workload':<52}{'metric':<12}"
        + "".join(f"{HEADERS[k]:>22}" for k in VARIANTS)
        + f"{'c/a':>8}{'c/b':>8}",
    ]
    targets = [
        f"{'targets (added client CPU vs (a))':<52}{'(b) added':>12}{'(c) added':>12}"
        f"{'c<=b':>8}{'(b)/span':>10}{'(c)/span':>10}{'x bare':>8}{'<=1.5x':>8}{'c/a CPU':>9}{'<=1.25':>8}"
    ]
    breakdown = [
        f"{'where (c) added CPU goes, per unit':<52}{'(c) added':>12}{'PyMongo events':>16}"
        f"{'SDK, bare':>12}{'the rest':>12}{'rest/span':>11}"
    ]
    for i, (driver, name, unit, _work) in enumerate(WORKLOADS):
        series = results[i]
        label = f"{'Motor' if driver == 'motor' else 'AsyncMongoClient'}: {name}"
        first = label
        for metric, attr in (("CPU", "cpu"), ("wall", "wall")):
            m = {k: series.median(k, attr) for k in VARIANTS}
            lines.append(
                f"{label:<52}{metric + ' us/' + unit:<12}"
                + "".join(f"{_us(m[k]):>22}" for k in VARIANTS)
                + f"{m['c'] / m['a']:>8.2f}{m['c'] / m['b']:>8.2f}"
            )
            label = ""
        spans = {k: series.median(k, "spans") for k in VARIANTS}
        lines.append(
            f"{'':<52}{'spans/' + unit:<12}" + "".join(f"{spans[k]:>22.1f}" for k in VARIANTS)
        )
        cpu = {k: series.median(k, "cpu") for k in VARIANTS}
        over_b, over_c = cpu["b"] - cpu["a"], cpu["c"] - cpu["a"]
        per_span = over_c / spans["c"] if spans["c"] else float("nan")
        per_b_span = over_b / spans["b"] if spans["b"] else float("nan")
        ratio = cpu["c"] / cpu["a"]
        targets.append(
            f"{first:<52}{_us(over_b) + ' us':>12}{_us(over_c) + ' us':>12}"
            f"{_verdict(over_c <= over_b):>8}{_us(per_b_span) + ' us':>10}{_us(per_span) + ' us':>10}{per_span / bare:>7.2f}x"
            f"{_verdict(per_span <= 1.5 * bare):>8}{ratio:>9.2f}{_verdict(ratio <= 1.25):>8}"
        )
        events = series.median("l", "cpu") - cpu["a"]
        sdk = bare * spans["c"]
        rest = over_c - events - sdk
        breakdown.append(
            f"{first:<52}{_us(over_c) + ' us':>12}{_us(events) + ' us':>16}{_us(sdk) + ' us':>12}"
            f"{_us(rest) + ' us':>12}{_us(rest / spans['c']) + ' us' if spans['c'] else '':>11}"
        )
    lines += [
        "",
        f"bare SDK span (start_span + {round(attrs)} attributes + end, BatchSpanProcessor, "
        f"same exporter): {_us(bare)} us CPU",
        "an SDK span shaped like our command spans (12 attributes at start, 2 from the reply): "
        f"{_us(statistics.median(command_like_cpu))} us CPU",
        "(c)/span = ((c) - (a)) CPU per unit / (c) spans per unit; x bare = that / bare SDK span;",
        "(b)/span = the same for the contrib instrumentation, for comparison",
        "",
        *targets,
        "",
        "PyMongo events = (l) - (a): PyMongo building and publishing command events to a listener",
        "that does nothing ((b) pays it too); SDK, bare = (c) spans per unit x bare SDK span; the",
        "rest = our code, plus what the SDK costs in place beyond a bare span in a tight loop",
        "",
        *breakdown,
    ]
    return "\n".join(lines)


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds, small samples (~30 s)")
    parser.add_argument("--rounds", type=int, help="override the number of measured rounds")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.rounds:
        sizes.rounds = args.rounds
    started = time.perf_counter()
    with simulator_process() as uri:
        results, bare, attrs, command_like = asyncio.run(run(uri, sizes))
    print(report(results, bare, attrs, sizes, command_like))
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
