"""How the simulator scales with open transactions: N at once on one collection of 10 000 docs.

Run ``python benchmarks/snapshots.py [--quick] [--transactions 100,250,500] [--documents N]``.
Each measurement runs in a fresh process holding the simulator and one PyMongo ``MongoClient``:
the collection is filled, then N sessions each start a transaction and update their own document
(the transaction's snapshot is taken and its first version written), so all N are open at once;
then each reads another document and commits. Two workloads: documents found by ``_id``, and by
a field without an index. "time" is that phase; "peak RSS" is the most resident memory above the
resident memory before it (VmHWM, reset after the fill), "peak traced" the same from tracemalloc
in a second run of the ``_id`` workload (Python allocations only, exact to the byte; tracemalloc
slows that run, so its time is not shown; the scan writes the same documents). A simulator that copies a collection per transaction pays N copies of 10 000
documents; one that keeps versions pays for the N written documents. The last lines of each table
say whether time and traced peak per transaction stay flat (within 1.5x from the smallest N to
the largest): linear in N.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from pymongo import MongoClient

from motor_otel.testing import SimulatedReplicaSet

LINEAR = 1.5  # per-transaction cost at the largest N within this factor of the smallest N
MIB = 1024 * 1024


def _status(field: str) -> float:
    """A VmRSS/VmHWM field of /proc/self/status, in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(transactions: int, documents: int, field: str, traced: bool) -> str:
    """One measurement in this process: prints ``seconds peak_mib committed``.

    Untraced, the peak is VmHWM over VmRSS (reset through /proc/self/clear_refs after the
    fill); traced, it is tracemalloc's peak over what was allocated after the fill.
    """
    # All N stay open while the slowest workload runs: past mongod's default 60 s lifetime limit.
    with SimulatedReplicaSet(transaction_lifetime_limit_seconds=3600) as rs:
        client: MongoClient[dict[str, object]] = MongoClient(rs.uri, maxPoolSize=1)
        coll = client.bench.snapshots
        coll.insert_many([{"_id": i, "k": i, "n": 0, "pad": "x" * 100} for i in range(documents)])
        gc.collect()
        if traced:
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0] / MIB
        else:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS from here
            base = _status("VmRSS")
        started = time.perf_counter()
        sessions = [client.start_session() for _ in range(transactions)]
        for i, session in enumerate(sessions):
            session.start_transaction()
            coll.update_one({field: i % documents}, {"$inc": {"n": 1}}, session=session)
        for i, session in enumerate(sessions):
            coll.find_one({field: (i + 1) % documents}, session=session)
            session.commit_transaction()
            session.end_session()
        elapsed = time.perf_counter() - started
        if traced:
            peak = tracemalloc.get_traced_memory()[1] / MIB - base
            tracemalloc.stop()
        else:
            peak = _status("VmHWM") - base
        committed = sum(d["n"] for d in coll.find({"n": {"$gt": 0}}, {"n": 1}))
        client.close()
    return f"{elapsed:.3f} {peak:.3f} {committed}"


def _run_child(transactions: int, documents: int, field: str, traced: bool) -> tuple[float, float]:
    command = [sys.executable, __file__, "--child", str(transactions)]
    command += ["--documents", str(documents), "--field", field] + ["--traced"] * traced
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
    if int(out[2]) != transactions:
        raise RuntimeError(f"{out[2]} of {transactions} transactions committed")
    return float(out[0]), float(out[1])


Row = tuple[int, float, float, float | None]  # N, seconds, peak RSS MiB, peak traced MiB


def measure(transactions: int, documents: int, field: str, trace: bool) -> Row:
    """Time and peak RSS from one run, traced peak from another (tracemalloc slows it)."""
    seconds, rss = _run_child(transactions, documents, field, False)
    traced = _run_child(transactions, documents, field, True)[1] if trace else None
    return transactions, seconds, rss, traced


def report(title: str, rows: list[Row]) -> str:
    lines = [
        f"### {title}",
        "",
        "| transactions | time s | ms per txn | peak RSS MiB | peak traced MiB | KiB per txn |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n, s, r, t in rows:
        traced = "- | -" if t is None else f"{t:.2f} | {t / n * 1024:.1f}"
        lines.append(f"| {n} | {s:.2f} | {s / n * 1000:.2f} | {r:.1f} | {traced} |")
    (n0, s0, _, t0), (n1, s1, _, t1) = rows[0], rows[-1]
    time_ratio = (s1 / n1) / (s0 / n0)
    lines += [
        "",
        f"time: {'linear' if time_ratio <= LINEAR else 'NOT linear'} in N (per transaction at "
        f"N={n1} is {time_ratio:.2f}x that at N={n0}; linear means <= {LINEAR}x)",
    ]
    if t0 is not None and t1 is not None:
        peak_ratio = (t1 / n1) / (t0 / n0)
        lines.append(
            f"peak memory: {'linear' if peak_ratio <= LINEAR else 'NOT linear'} in N (traced, "
            f"per transaction at N={n1} is {peak_ratio:.2f}x that at N={n0})"
        )
    lines.append("")
    return "\n".join(lines)


# field -> (title, whether to trace memory too: the scan's writes are the same as by _id)
WORKLOADS = {
    "_id": ("by _id (the simulator reads one document, as mongod's _id index would)", True),
    "k": ("by k, a field without an index (every operation matches every document)", False),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 20, 50, 100 on 1 000 docs")
    parser.add_argument("--transactions", help="comma-separated N (default 100,250,500)")
    parser.add_argument("--documents", type=int, help="collection size (default 10 000)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--field", default="_id", help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    documents = args.documents or (1_000 if args.quick else 10_000)
    if args.child is not None:
        print(child(args.child, documents, args.field, args.traced))
        return 0
    default = "20,50,100" if args.quick else "100,250,500"
    counts = [int(n) for n in (args.transactions or default).split(",")]
    if max(counts) > documents:
        parser.error("each transaction writes its own document: N must not exceed --documents")
    print(f"simulator: N transactions open at once on one collection of {documents} documents\n")
    for field, (title, trace) in WORKLOADS.items():
        print(report(title, [measure(n, documents, field, trace) for n in counts]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
