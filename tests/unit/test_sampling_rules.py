"""Which non-recording parents provably have non-recording children, per tracer and sampler."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from motor_otel._sampling import Decider

LOW = 1  # a trace id that a 1 % ratio sampler samples
HIGH = (1 << 64) - 1  # one it drops


def _unsampled(trace_id: int, *, remote: bool = False) -> NonRecordingSpan:
    return NonRecordingSpan(
        SpanContext(trace_id, 0x1234, is_remote=remote, trace_flags=TraceFlags(0))
    )


def _decider(sampler: Sampler) -> Decider:
    return Decider(TracerProvider(sampler=sampler).get_tracer("test"))


class Custom(Sampler):
    """Records everything: children of unsampled parents included."""

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
        return SamplingResult(Decision.RECORD_AND_SAMPLE)

    def get_description(self) -> str:
        return "Custom"


class SubclassedOff(ParentBased):
    """A ParentBased whose should_sample is its own: nothing can be assumed about it."""

    def should_sample(self, *args: object, **kwargs: object) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE)


def test_parent_based_always_off_drops_children_of_unsampled_parents() -> None:
    """The SDK default shape: an unsampled parent, local or remote, has unsampled children."""
    decider = _decider(ParentBased(ALWAYS_ON))
    assert decider.children_dropped(_unsampled(HIGH))
    assert decider.children_dropped(_unsampled(HIGH, remote=True))


def test_a_root_is_sampled_afresh() -> None:
    """No valid parent: the sampler decides anew, so nothing is skipped."""
    assert not _decider(ParentBased(ALWAYS_ON)).children_dropped(trace.INVALID_SPAN)
    assert not _decider(TraceIdRatioBased(0.01)).children_dropped(trace.INVALID_SPAN)


def test_always_off_drops_even_roots() -> None:
    """ALWAYS_OFF records nothing at all."""
    assert _decider(ALWAYS_OFF).children_dropped(trace.INVALID_SPAN)


def test_ratio_sampling_follows_the_trace_id() -> None:
    """TraceIdRatioBased decides by trace id: an unsampled parent with a low id has sampled kids."""
    decider = _decider(TraceIdRatioBased(0.01))
    assert decider.children_dropped(_unsampled(HIGH))
    assert not decider.children_dropped(_unsampled(LOW))


def test_unknown_samplers_are_never_second_guessed() -> None:
    """A custom sampler, or a subclass overriding should_sample: every span is started."""
    assert not _decider(Custom()).children_dropped(_unsampled(HIGH))
    assert not _decider(SubclassedOff(ALWAYS_OFF)).children_dropped(_unsampled(HIGH))
    assert not _decider(ParentBased(ALWAYS_ON, local_parent_not_sampled=Custom())).children_dropped(
        _unsampled(HIGH)
    )


def test_a_recording_parent_is_never_skipped() -> None:
    """Children of a recording span are started, whatever the sampler."""
    provider = TracerProvider()
    span = provider.get_tracer("test").start_span("parent")
    assert not Decider(provider.get_tracer("test")).children_dropped(span)


def test_no_op_and_proxy_tracers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API's no-op tracer records nothing; its proxy, until a provider is set, neither."""
    assert Decider(trace.NoOpTracer()).children_dropped(trace.INVALID_SPAN)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)  # as before any set_tracer_provider
    decider = Decider(trace.ProxyTracer("test"))
    assert decider.children_dropped(trace.INVALID_SPAN)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", TracerProvider(sampler=ALWAYS_ON))
    assert not decider.children_dropped(trace.INVALID_SPAN)  # a provider now: asked again
