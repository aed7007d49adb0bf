"""What both benchmarks share: the simulator in another process and a span-counting exporter."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

CLIENT_OPTIONS = {"serverSelectionTimeoutMS": 10_000, "socketTimeoutMS": 60_000}


def server_cpus() -> set[int] | None:
    """The CPUs the servers may use when the client is pinned (``BENCH_SERVER_CPUS``)."""
    value = os.environ.get("BENCH_SERVER_CPUS")
    return {int(cpu) for cpu in value.split(",")} if value else None


def _unpin(pid: int) -> None:
    cpus = server_cpus()
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, cpus)  # off the client's core: it inherited the client's pin


@contextmanager
def simulator_process() -> Iterator[str]:
    """Run ``python -m motor_otel.testing`` and yield its URI.

    The server has its own process so its CPU time is not charged to the client we measure.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "motor_otel.testing"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    _unpin(proc.pid)
    try:
        assert proc.stdout is not None
        uri = proc.stdout.readline().strip()
        if not uri.startswith("mongodb://"):
            raise RuntimeError(f"simulator did not start (got {uri!r})")
        yield uri
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # the simulator exits when its stdin closes
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class CountingExporter(SpanExporter):
    """Drops spans, counts them and their attributes: the export side costs ~nothing."""

    def __init__(self) -> None:
        self.spans = 0
        self.attributes = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        self.attributes += sum(len(span.attributes or ()) for span in spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def counting_provider(sampler: Any = None) -> tuple[TracerProvider, CountingExporter]:
    """An SDK provider with a BatchSpanProcessor large enough never to drop a span here."""
    exporter = CountingExporter()
    provider = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 16))
    return provider, exporter


_SINK = r"""
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counts = {"requests": 0, "bytes": 0}


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a collector would

    def do_POST(self):
        size = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(size)
        counts["requests"] += 1
        counts["bytes"] += size
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
threading.Thread(target=server.serve_forever, daemon=True).start()
print(server.server_address[1], flush=True)
sys.stdin.read()
print(counts["requests"], counts["bytes"], flush=True)
"""


@contextmanager
def otlp_sink_process() -> Iterator[tuple[str, dict[str, int]]]:
    """A loopback OTLP/HTTP endpoint in another process that accepts and drops every export.

    Yields the traces URL and a dict filled, once the block ends, with the requests and bytes
    the sink received (so a run can show the exporter really sent them).
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", _SINK], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    _unpin(proc.pid)
    received: dict[str, int] = {}
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/v1/traces", received
    finally:
        out, _ = proc.communicate("", timeout=10)
        fields = out.split()
        if len(fields) == 2:
            received.update(requests=int(fields[0]), bytes=int(fields[1]))
