"""``KeepTransactionsSampler``: head sampling, plus the transactions worth keeping.

Production services sample 1 % or 10 % of their traces. The trace that explains a retried or
failed transaction is then thrown away with the other 99 %, although motor-otel knows, in
process and cheaply, that this transaction is worth keeping. This sampler lets it keep exactly
those: it delegates every decision to ``delegate``, except for a span started with the keep
mark (the :data:`KEPT` attribute, given at ``start_span`` so that a sampler sees it), which it
records and samples. motor-otel starts such a span only for a transaction that matched a keep
rule (``keep=`` / ``OTEL_PYTHON_INSTRUMENTATION_MONGODB_KEEP``), as the root of a new trace; its
children are sampled because their parent is, so the delegate should honour a sampled parent
(``ParentBased``, as :func:`parentbased_traceidratio` builds it).

Needs the OpenTelemetry SDK (``pip install opentelemetry-sdk``), whose ``Sampler`` it is.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from motor_otel.attributes import TXN_KEPT

KEPT = TXN_KEPT
"""The keep mark: ``db.mongodb.transaction.kept``, the rule that matched (``retried``...)."""

__all__ = ["KEPT", "KeepTransactionsSampler", "parentbased_traceidratio"]


class KeepTransactionsSampler(Sampler):
    """Samples what ``delegate`` samples, and every span started with the keep mark.

    .. versionadded:: 0.2
    """

    __slots__ = ("delegate",)

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate

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
        if attributes is not None and KEPT in attributes:
            parent = get_current_span(parent_context).get_span_context()
            state = parent.trace_state if parent.is_valid else None
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, state)
        return self.delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"KeepTransactions{{{self.delegate.get_description()}}}"


def parentbased_traceidratio(ratio: str | float | None) -> KeepTransactionsSampler:
    """The ``motor_otel_parentbased_traceidratio`` entry point (group
    ``opentelemetry_traces_sampler``): ``KeepTransactionsSampler(ParentBased(TraceIdRatioBased(
    ratio)))``, the ratio from ``OTEL_TRACES_SAMPLER_ARG``.

    The SDK hands non-SDK samplers the variable's raw string (or ``None``). Unset means 1.0, as
    for the SDK's ``parentbased_traceidratio``; a value that is not a ratio in [0, 1] raises,
    and the SDK then warns and falls back to its default sampler.
    """
    rate = 1.0 if ratio is None or (isinstance(ratio, str) and not ratio.strip()) else float(ratio)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG must be a ratio in [0, 1], got {ratio!r}")
    return KeepTransactionsSampler(ParentBased(TraceIdRatioBased(rate)))
