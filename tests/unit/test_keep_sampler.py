"""KeepTransactionsSampler: the delegate decides, except for spans started with the keep mark;
the entry point builds it from OTEL_TRACES_SAMPLER_ARG; keep rules parse as documented."""

from __future__ import annotations

import pytest
from opentelemetry.sdk._configuration import _import_sampler
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    TraceIdRatioBased,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

import motor_otel
from motor_otel._sampling import Decider, keeps_transactions
from motor_otel.config import KeepRules, Settings
from motor_otel.sampling import KEPT, KeepTransactionsSampler, parentbased_traceidratio

HIGH = (1 << 64) - 1  # a trace id a 1 % ratio drops


def _unsampled() -> NonRecordingSpan:
    return NonRecordingSpan(SpanContext(HIGH, 0x1234, is_remote=False, trace_flags=TraceFlags(0)))


def test_unmarked_spans_get_the_delegates_decision() -> None:
    """Without the mark, the answer is the delegate's, for roots and children alike."""
    sampler = KeepTransactionsSampler(ParentBased(TraceIdRatioBased(0.01)))
    child = sampler.should_sample(set_span_in_context(_unsampled()), HIGH, "transaction")
    root = sampler.should_sample(None, HIGH, "withTransaction", attributes={"a": 1})
    assert (child.decision, root.decision) == (Decision.DROP, Decision.DROP)
    assert sampler.should_sample(None, 1, "root").decision is Decision.RECORD_AND_SAMPLE


def test_a_marked_span_is_recorded_and_sampled_whatever_the_delegate_says() -> None:
    """The keep mark given at start_span wins over ALWAYS_OFF, and stays on the span."""
    provider = TracerProvider(sampler=KeepTransactionsSampler(ALWAYS_OFF))
    tracer = provider.get_tracer("test")
    kept = tracer.start_span("withTransaction", attributes={KEPT: "retried"})
    dropped = tracer.start_span("withTransaction")
    assert kept.is_recording() and kept.get_span_context().trace_flags.sampled
    assert not dropped.is_recording()
    assert kept.attributes[KEPT] == "retried"  # type: ignore[attr-defined]


def test_description_names_the_delegate() -> None:
    """get_description() wraps the delegate's, as ParentBased does."""
    assert (
        KeepTransactionsSampler(ALWAYS_ON).get_description() == "KeepTransactions{AlwaysOnSampler}"
    )


def test_entry_point_builds_the_ratio_from_the_sampler_arg(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_TRACES_SAMPLER=motor_otel_parentbased_traceidratio with OTEL_TRACES_SAMPLER_ARG=0.01,
    loaded the way the SDK's configurator loads it."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.01")
    sampler = _import_sampler("motor_otel_parentbased_traceidratio")
    assert isinstance(sampler, KeepTransactionsSampler)
    assert sampler.get_description().startswith(
        "KeepTransactions{ParentBased{root:TraceIdRatioBased{0.01},"
    )
    assert (
        parentbased_traceidratio(None)
        .get_description()
        .startswith("KeepTransactions{ParentBased{root:TraceIdRatioBased{1.0},")
    )
    with pytest.raises(ValueError, match="ratio"):
        parentbased_traceidratio("2")


def test_the_cheap_path_stays_cheap_behind_it() -> None:
    """_sampling proves unsampled children are dropped through our sampler as through its
    delegate, and knows the sampler honours the keep mark (also inside ParentBased)."""
    ours = TracerProvider(sampler=KeepTransactionsSampler(ParentBased(ALWAYS_ON))).get_tracer("t")
    assert Decider(ours).children_dropped(_unsampled())
    assert Decider(ours).keeps()
    wrapped = ParentBased(KeepTransactionsSampler(TraceIdRatioBased(0.5)))
    assert keeps_transactions(TracerProvider(sampler=wrapped).get_tracer("t"))
    plain = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.01))).get_tracer("t")
    assert not Decider(plain).keeps()


def test_keep_rules_parse() -> None:
    """A comma list of retried, failed, commit_not_retried, slow:<ms>, none."""
    assert KeepRules.parse("retried, slow:250") == KeepRules(
        retried=True, failed=False, commit_not_retried=False, slow_ms=250.0
    )
    assert not KeepRules.parse("none").any
    assert str(Settings.resolve({}).keep) == "retried,failed,commit_not_retried"
    env = {"OTEL_PYTHON_INSTRUMENTATION_MONGODB_KEEP": "failed"}
    assert str(Settings.resolve(env).keep) == "failed"
    assert str(Settings.resolve(env, keep=["slow:5"]).keep) == "slow:5"
    with pytest.raises(ValueError, match="slow"):
        KeepRules.parse("slow:-1")


def test_the_package_exports_the_sampler() -> None:
    """motor_otel.KeepTransactionsSampler is motor_otel.sampling's."""
    assert motor_otel.KeepTransactionsSampler is KeepTransactionsSampler
