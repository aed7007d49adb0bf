"""Does instrumented Motor hold on to anything? 100 000 transactions, state and RSS after GC.

Run ``python benchmarks/memory.py [--quick] [--transactions N]``. Transactions run in concurrent
batches through one ``motor_otel.instrument_client``-ed ``AsyncIOMotorClient`` against the
simulator in a subprocess. One session in ten is never ended (``with_transaction`` then the
session is dropped) and one in ten is abandoned mid-transaction (``start_transaction``, a write,
then dropped without commit or abort): the cases that could leave an open attempt or an in-flight
command span behind. At each checkpoint, after ``gc.collect()``, we read the correlator's map
sizes (open attempts by lsid/txnNumber, in-flight command spans) and VmRSS from /proc/self/status.
"peak attempts" is the most open attempts seen while abandoned sessions were still alive since
the previous checkpoint: proof that the state is exercised, not trivially empty. The first checkpoint is
the warm-up baseline; RSS must stay within 5 % of it and the state must not exceed it by 5 %.

``--keep``: under ``KeepTransactionsSampler(ParentBased(TraceIdRatioBased(0.01)))``, with one
transaction in ten retried (a ``WriteConflict`` fail point armed for a tenth of each batch): the
retried ones become kept traces, the others are buffered and dropped. The "buffers" column is
how many transactions' buffers are alive at the checkpoint (``motor_otel.kept.open_buffers``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from typing import Any

from _common import CLIENT_OPTIONS, counting_provider, simulator_process
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

import motor_otel
from motor_otel.correlation import MAX_ATTEMPTS, Correlator
from motor_otel.kept import open_buffers
from motor_otel.testing import fail_command

TOLERANCE = 0.05
# transactions, peak open attempts in the interval, open attempts, in-flight commands, RSS MiB,
# objects, live buffers
Row = tuple[int, int, int, int, float, int, int]


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def correlator(client: Any) -> Correlator:
    """The correlator of this client's instrumentation scope (private: a benchmark may peek)."""
    return vars(client)["_motor_otel_telemetry"].correlator  # type: ignore[no-any-return]


async def one(client: Any, n: int, slot: int, peak: list[int]) -> None:
    coll = client.bench.counters
    kind = n % 10
    session = await client.start_session()

    async def callback(s: Any) -> None:
        await coll.update_one({"_id": slot}, {"$inc": {"n": 1}}, upsert=True, session=s)

    if kind == 5:  # abandoned mid-transaction: no commit, no abort, no end_session
        session.start_transaction()
        # Its own document: like mongod, the simulator keeps an abandoned transaction's write
        # locked until the transaction expires, so sharing a slot would stall the others.
        await client.bench.abandoned.update_one(  # not where --keep's fail point is armed
            {"_id": f"abandoned-{n}"}, {"$inc": {"n": 1}}, upsert=True, session=session
        )
        peak[0] = max(peak[0], correlator(client).sizes()[0])  # its attempt is held right now
        return
    await session.with_transaction(callback)
    if kind != 0:  # kind 0: the session is never ended
        await session.end_session()


async def run(uri: str, total: int, every: int, concurrency: int, keep: bool) -> list[Row]:
    sampler = motor_otel.KeepTransactionsSampler(ParentBased(TraceIdRatioBased(0.01)))
    provider, exporter = counting_provider(sampler if keep else None)
    client: Any = AsyncIOMotorClient(uri, **CLIENT_OPTIONS)
    motor_otel.instrument_client(client, tracer_provider=provider)
    rows: list[Row] = []
    done = 0
    peak = [0]
    started = time.perf_counter()
    try:
        while done < total:
            size = min(concurrency, total - done)
            if keep and size >= 10:  # a tenth of the batch retries once
                update = fail_command(
                    "update",
                    mode=size // 10,
                    error_code=112,
                    error_labels=["TransientTransactionError"],
                    namespace="bench.counters",
                )
                await client.admin.command(update)
            await asyncio.gather(*(one(client, done + i, i, peak) for i in range(size)))
            done += size
            if done % every == 0 or done == total:
                gc.collect()
                provider.force_flush()
                attempts, commands = correlator(client).sizes()
                objects = len(gc.get_objects())
                rows.append((done, peak[0], attempts, commands, rss_mib(), objects, open_buffers()))
                peak[0] = 0
                print(
                    f"{done} transactions, {time.perf_counter() - started:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        client.close()
        provider.shutdown()
    if exporter.spans == 0:
        raise RuntimeError("no spans exported: the client was not instrumented")
    return rows


def report(rows: list[Row], total: int, concurrency: int, keep: bool) -> str:
    lines = [
        f"motor-otel memory: {total} transactions through instrumented Motor, batches of "
        f"{concurrency}; 1 in 10 sessions never ended, 1 in 10 abandoned mid-transaction",
        *(
            ["KeepTransactionsSampler(ParentBased(TraceIdRatioBased(0.01))), 1 in 10 retried"]
            if keep
            else []
        ),
        "",
        f"{'transactions':>12}{'peak attempts':>17}{'open attempts':>15}{'in-flight cmds':>16}"
        f"{'RSS':>12}{'live objects':>14}{'buffers':>9}",
    ]
    lines += [
        f"{d:>12}{p:>17}{a:>15}{c:>16}{r:>8.1f} MiB{o:>14}{b:>9}" for d, p, a, c, r, o, b in rows
    ]
    base, after = rows[0], rows[1:] or rows
    base_state = base[2] + base[3]
    state = [a + c for _, _, a, c, _, _, _ in after]
    state_flat = max(state) <= base_state * (1 + TOLERANCE)
    rss = [r for *_, r, _, _ in after]
    rss_growth = max(rss) / base[4] - 1
    lines += [
        "",
        f"(warm-up baseline: the checkpoint at {base[0]} transactions; correlator bound "
        f"{MAX_ATTEMPTS} attempts)",
        f"correlation state: {'flat' if state_flat else 'GREW'} (open attempts + in-flight "
        f"commands {min(state)}..{max(state)} after warm-up, baseline {base_state})",
        f"RSS: {'flat' if rss_growth <= TOLERANCE else 'GREW'} ({min(rss):.1f}..{max(rss):.1f} "
        f"MiB after warm-up, baseline {base[4]:.1f} MiB: {rss_growth * 100:+.1f} % "
        f"{'<=' if rss_growth <= TOLERANCE else '>'} {TOLERANCE * 100:.0f} %)",
        f"buffers: {'0' if not any(row[6] for row in rows) else 'LEFT'} at every checkpoint "
        f"(max {max(row[6] for row in rows)})",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 000 transactions (~15 s)")
    parser.add_argument("--transactions", type=int, help="how many (default 100 000)")
    parser.add_argument("--concurrency", type=int, default=50, help="transactions per batch")
    parser.add_argument(
        "--keep", action="store_true", help="1 %% keep sampler, 1 in 10 transactions retried"
    )
    args = parser.parse_args(argv)
    total = args.transactions or (2_000 if args.quick else 100_000)
    every = max(args.concurrency, total // 5 // args.concurrency * args.concurrency)
    started = time.perf_counter()
    with simulator_process() as uri:
        rows = asyncio.run(run(uri, total, every, args.concurrency, args.keep))
    print(report(rows, total, args.concurrency, args.keep))
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
