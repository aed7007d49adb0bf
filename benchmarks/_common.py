"""What both benchmarks share: the simulator in another process and a span-counting exporter."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

CLIENT_OPTIONS = {"serverSelectionTimeoutMS": 10_000, "socketTimeoutMS": 60_000}


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


def counting_provider() -> tuple[TracerProvider, CountingExporter]:
    """An SDK provider with a BatchSpanProcessor large enough never to drop a span here."""
    exporter = CountingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 16))
    return provider, exporter
