"""Whether a span we would start under a parent that does not record would record either.

Cost follows sampling: when the answer is provably "no", we start no span at all and reuse the
parent (it already carries the right trace id and the unsampled flag) for everything below it.
"Provably" means the tracer is a no-op, or it is the OpenTelemetry SDK's and its sampler is one
whose decision for such a child we can compute without asking it: ``ALWAYS_OFF``/``ALWAYS_ON``,
``TraceIdRatioBased`` (the trace id decides), ``ParentBased`` made of those, and our
``KeepTransactionsSampler`` around any of them (unmarked spans get its delegate's answer, so the
cheap path stays cheap behind it). Anything else
(a custom sampler, a subclass that overrides ``should_sample``, another SDK) gets its span
started as before, so a sampler that records children of unsampled parents still sees them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanContext, Tracer

Rule = Callable[[SpanContext], bool]
"""``rule(parent)``: a child of this non-recording parent would not record either."""


def _never(parent: SpanContext) -> bool:
    return False


def _always(parent: SpanContext) -> bool:
    return True


_UNKNOWN = object()


def _real_tracer(tracer: Tracer) -> Tracer | None:
    """The tracer behind the API's proxy, or ``None`` while no provider is set."""
    if isinstance(tracer, trace.ProxyTracer):
        real = getattr(tracer, "_tracer", None)  # resolves once a global provider is set
        if real is None or real is getattr(tracer, "_noop_tracer", None):
            return None  # no provider yet: ask again next time, one may be set later
        return real  # type: ignore[no-any-return]
    return tracer


def _sdk_sampler(tracer: Tracer) -> Any:
    """The SDK tracer's sampler, or ``_UNKNOWN`` for any other tracer."""
    try:
        from opentelemetry.sdk.trace import Tracer as SdkTracer
    except ImportError:  # pragma: no cover - another API implementation
        return _UNKNOWN
    return tracer.sampler if isinstance(tracer, SdkTracer) else _UNKNOWN


def unsampled_child_rule(tracer: Tracer) -> Rule | None:
    """The rule for ``tracer``, or ``None`` while it cannot be known yet (a proxy tracer)."""
    real = _real_tracer(tracer)
    if real is None:
        return None
    if isinstance(real, trace.NoOpTracer):
        return _always
    sampler = _sdk_sampler(real)
    if sampler is _UNKNOWN:
        return _never
    try:
        return _sampler_rule(sampler) or _never
    except Exception:  # an SDK shaped differently: never take the shortcut
        return _never


def keeps_transactions(tracer: Tracer) -> bool | None:
    """The provider's sampler is our ``KeepTransactionsSampler``, possibly inside the SDK's
    ``ParentBased`` (as its root or one of its delegates): it can honour the keep mark.
    ``None`` while a proxy tracer has no provider yet."""
    real = _real_tracer(tracer)
    if real is None:
        return None
    try:
        return _ours(_sdk_sampler(real))
    except Exception:  # an SDK shaped differently: keep nothing
        return False


def _ours(sampler: Any) -> bool:
    if sampler is _UNKNOWN:
        return False
    from opentelemetry.sdk.trace.sampling import ParentBased

    from motor_otel.sampling import KeepTransactionsSampler

    if isinstance(sampler, KeepTransactionsSampler):
        return True
    if isinstance(sampler, ParentBased):
        return any(_ours(getattr(sampler, name, None)) for name in _PARENT_BASED_DELEGATES)
    return False


_PARENT_BASED_DELEGATES = (
    "_root",
    "_remote_parent_sampled",
    "_remote_parent_not_sampled",
    "_local_parent_sampled",
    "_local_parent_not_sampled",
)


def _sampler_rule(sampler: Any) -> Rule | None:
    from opentelemetry.sdk.trace.sampling import (
        Decision,
        ParentBased,
        StaticSampler,
        TraceIdRatioBased,
    )

    from motor_otel.sampling import KeepTransactionsSampler

    should_sample = type(sampler).should_sample
    if should_sample is KeepTransactionsSampler.should_sample:  # unmarked: its delegate decides
        return _sampler_rule(sampler.delegate)
    if should_sample is StaticSampler.should_sample:
        return _always if sampler._decision is Decision.DROP else _never
    if should_sample is TraceIdRatioBased.should_sample:
        bound, limit = sampler.bound, TraceIdRatioBased.TRACE_ID_LIMIT
        return lambda parent: parent.trace_id & limit >= bound
    if should_sample is ParentBased.should_sample:
        local = _sampler_rule(sampler._local_parent_not_sampled)
        remote = _sampler_rule(sampler._remote_parent_not_sampled)
        if local is None or remote is None:
            return None

        def parent_based(parent: SpanContext) -> bool:
            if parent.trace_flags.sampled:  # a sampled parent that does not record: unusual
                return False
            return remote(parent) if parent.is_remote else local(parent)

        return parent_based
    return None


class Decider:
    """Per instrumentation scope: which non-recording parents have non-recording children."""

    __slots__ = ("_keeps", "_rule", "_tracer")

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._rule = unsampled_child_rule(tracer)
        self._keeps = keeps_transactions(tracer)

    def keeps(self) -> bool:
        """The provider's sampler honours the keep mark (decided once a provider is known)."""
        keeps = self._keeps
        if keeps is None:
            keeps = self._keeps = keeps_transactions(self._tracer)
        return bool(keeps)

    def children_dropped(self, parent: trace.Span) -> bool:
        """``parent`` does not record, and no child of it would: start none, use ``parent``."""
        if parent.is_recording():
            return False
        rule = self._rule
        if rule is None:
            rule = unsampled_child_rule(self._tracer)
            if rule is None:
                return True  # the API's proxy before any provider: every span is a no-op
            self._rule = rule
        context = parent.get_span_context()
        if not context.is_valid:  # a root would be sampled afresh, unless nothing ever records
            return rule is _always
        return rule(context)
