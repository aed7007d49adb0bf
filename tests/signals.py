"""One set-up for what a test observes: spans in memory, metric points in a reader.

Tests used to build an ``InMemorySpanExporter`` + ``TracerProvider`` and an
``InMemoryMetricReader`` + ``MeterProvider`` by hand, then walk ``get_metrics_data()`` in a
private ``_points`` of their own. :class:`Signals` is that set-up once; the ``signals`` fixture in
``tests/conftest.py`` gives a fresh one per test, and :func:`make_signals` takes a sampler or id
generator for tests that need one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric, ScopeMetrics
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import Sampler

from motor_otel import instrument_client


@dataclass(eq=False)
class Signals:
    """A tracer provider exporting to memory and a meter provider read in memory."""

    exporter: InMemorySpanExporter
    tracer_provider: TracerProvider
    reader: InMemoryMetricReader
    meter_provider: MeterProvider

    def instrument(self, client: Any, **settings: Any) -> Any:
        """``instrument_client(client, ...)`` with both providers; returns the client."""
        instrument_client(
            client,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            **settings,
        )
        return client

    def providers(self) -> dict[str, Any]:
        """The keywords for ``instrument()``/``instrument_client()``."""
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}

    def tracer_provider_with(self, sampler: Sampler) -> TracerProvider:
        """Another tracer provider, with ``sampler``, exporting to the same exporter."""
        provider = TracerProvider(sampler=sampler)
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        return provider

    def spans(self) -> Sequence[ReadableSpan]:
        return self.exporter.get_finished_spans()

    def points(self) -> dict[str, list[Any]]:
        """Every metric's data points by metric name (empty when nothing was recorded)."""
        return metric_points(self.reader)

    def text(self) -> str:
        """Every finished span and everything the reader collects, as one JSON string: what a
        scan for leaked values (documents, credentials) reads."""
        spans = [json.loads(s.to_json()) for s in self.spans()]
        data = self.reader.get_metrics_data()
        collected = json.loads(data.to_json()) if data is not None else {}
        return json.dumps({"spans": spans, "metrics": collected}, default=str)

    def metrics(self, scope: str | None = None) -> list[Metric]:
        """Every metric collected, with its unit and data kind (see :func:`metrics`)."""
        return metrics(self.reader, scope)


def scope_metrics(reader: InMemoryMetricReader) -> list[ScopeMetrics]:
    """What the reader collects, one entry per instrumentation scope (name, schema URL), across
    resources; empty when nothing was recorded."""
    data = reader.get_metrics_data()
    if data is None:
        return []
    return [scoped for resource in data.resource_metrics for scoped in resource.scope_metrics]


def metrics(reader: InMemoryMetricReader, scope: str | None = None) -> list[Metric]:
    """Every metric the reader collects (of instrumentation scope ``scope`` when given).

    For tests that check a metric's unit or kind (``type(metric.data)``), not only its points.
    """
    return [
        metric
        for scoped in scope_metrics(reader)
        if scope is None or scoped.scope.name == scope
        for metric in scoped.metrics
    ]


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """Every metric's data points by metric name, across resources and scopes."""
    points: dict[str, list[Any]] = {}
    for metric in metrics(reader):
        points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


def make_signals(
    sampler: Sampler | None = None, id_generator: IdGenerator | None = None
) -> Signals:
    """A fresh :class:`Signals`; ``sampler``/``id_generator`` go to the ``TracerProvider``."""
    options: dict[str, Any] = {}
    if sampler is not None:
        options["sampler"] = sampler
    if id_generator is not None:
        options["id_generator"] = id_generator
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(**options)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    return Signals(exporter, tracer_provider, reader, MeterProvider(metric_readers=[reader]))
