"""Kept transactions: the buffer of a transaction whose trace is not sampled, and its replay.

Under a ``KeepTransactionsSampler``, a transaction whose caller's trace is not sampled is told
in :class:`BufferedSpan` objects instead of SDK spans: a ``withTransaction`` (or a lone
``transaction``) root, its attempts, operations and commands, each holding its name, start
writes, in order, and ``time.time_ns()`` start and end. What is costly to build (a command's
attributes and query text, its reply's, an attempt's end) is not built for them: the core hands
the builder and the raw facts it reads (the driver's event, a reply, a session's cluster time) to
:func:`write`, which runs it at once on a recorded span and, on a buffered one, only if the
transaction is kept, on its real span. So the kept path and the live path build the same
attributes with the same code, and a transaction that is not kept builds none of them.

When a keep rule matches (:mod:`motor_otel.transaction` decides when), :func:`promote` starts
the root as a new trace (the keep mark among its start attributes, a link to the caller's span
context), replays what has finished with its real timestamps and leaves what is still open
running as real spans: from then on each ``BufferedSpan`` forwards to its real span, so the
references the core holds (the attempt in the correlator, an operation's scope, a command in
flight) need no update, and new children start as ordinary SDK spans under a sampled parent.
A transaction that matches no rule drops its buffer when it ends; no SDK span is built for it.

At most :data:`MAX_BUFFERED` spans and events are buffered per transaction; what the cap drops is
counted on the kept root as ``db.mongodb.transaction.kept_dropped``.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, Status
from opentelemetry.util.types import Attributes

from motor_otel import attributes as A
from motor_otel._guard import guard

MAX_BUFFERED = 512
"""Spans and events buffered per transaction before the kept trace would be cut."""

_open: weakref.WeakSet[KeptStory] = weakref.WeakSet()


def open_buffers() -> int:
    """Transactions whose buffer is alive now: 0 when every one has ended (or was collected)."""
    return len(_open)


class KeptStory:
    """One transaction's buffer: the caller it came from, what it holds, and its fate."""

    __slots__ = ("__weakref__", "caller", "count", "dropped", "errors", "rule")

    def __init__(self, caller: SpanContext) -> None:
        self.caller = caller  # not sampled: the kept root links to it
        self.count = 0  # spans and events buffered
        self.dropped = 0  # what MAX_BUFFERED cut
        self.errors = 0  # spans given ERROR status: an error ended something in it
        self.rule: str | None = None  # the keep rule that matched, once one has
        _open.add(self)

    def room(self) -> bool:
        """Count one more span or event; ``False`` (and counted as dropped) past the cap."""
        if self.count >= MAX_BUFFERED:
            self.dropped += 1
            return False
        self.count += 1
        return True

    def close(self, root: Span) -> None:
        """The transaction (whose buffered root is ``root``) ended: nothing is buffered for it
        any more.

        Unkept, its spans let go of what they hold (the driver's events and documents) and
        become stand-ins for the caller's span: a reference that outlives the transaction (an
        operation left in a context copied by a pending timer) keeps no document alive, and
        what reaches such a span late is not recorded.
        """
        _open.discard(self)
        if type(root) is not BufferedSpan or self.rule is not None:
            return
        stand_in = NonRecordingSpan(self.caller)
        spans = [root]
        while spans:
            span = spans.pop()
            span.real, span._log = stand_in, None
            if span.children:
                spans.extend(span.children)
            span.children = None


class BufferedSpan(Span):
    """A span of a transaction not (yet) kept; after :func:`promote`, its real span's proxy."""

    __slots__ = (
        "_context",
        "_log",
        "children",
        "end_ns",
        "kind",
        "links",
        "name",
        "real",
        "start_attrs",
        "start_ns",
        "story",
    )

    def __init__(
        self,
        story: KeptStory,
        name: str,
        kind: SpanKind,
        attributes: Attributes,
        links: Sequence[Link] | None,
        context: SpanContext,
    ) -> None:
        self.story = story
        self.name = name
        self.kind = kind
        self.start_attrs: Attributes = attributes  # a shared mapping, never changed
        self.links = links  # the caller's list, not changed after
        self._context = context  # the caller's: children of an unkept span stay unsampled
        self.start_ns = time.time_ns()
        self.end_ns: int | None = None
        self._log: list[tuple[Writer, tuple[Any, ...]]] | None = None  # writes, in order
        self.children: list[BufferedSpan] | None = None  # most have none: made at the first
        self.real: Span | None = None

    def child(
        self, name: str, kind: SpanKind, attributes: Attributes, links: Sequence[Link] | None
    ) -> Span:
        """A buffered child, or a non-recording stand-in once the story is full."""
        story = self.story
        if story.count >= MAX_BUFFERED:  # KeptStory.room, inline: this runs for every span
            story.dropped += 1
            return NonRecordingSpan(self._context)
        story.count += 1
        span = BufferedSpan(story, name, kind, attributes, links, self._context)
        if self.children is None:
            self.children = [span]
        else:
            self.children.append(span)
        return span

    # -- the Span API: recorded while buffered, forwarded once promoted -----------------------
    def get_span_context(self) -> SpanContext:
        real = self.real
        return self._context if real is None else real.get_span_context()

    def is_recording(self) -> bool:
        real = self.real
        return True if real is None else real.is_recording()

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        real = self.real
        if real is not None:
            real.set_attributes(attributes)
        else:
            write(self, _set_attributes, dict(attributes))

    def set_attribute(self, key: str, value: Any) -> None:
        self.set_attributes({key: value})

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        real = self.real
        if real is not None:
            real.add_event(name, attributes, timestamp)
        elif self.story.room():
            stamp = time.time_ns() if timestamp is None else timestamp
            write(self, _add_event, name, attributes, stamp)

    def update_name(self, name: str) -> None:
        real = self.real
        if real is not None:
            real.update_name(name)
        else:
            self.name = name

    def set_status(self, status: Any, description: str | None = None) -> None:
        real = self.real
        if real is not None:
            real.set_status(status, description)
            return
        if not isinstance(status, Status):
            status = Status(status, description)
        if status.status_code is trace.StatusCode.ERROR:
            self.story.errors += 1
        write(self, _set_status, status)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        real = self.real
        if real is not None:
            real.record_exception(exception, attributes, timestamp, escaped)
        else:  # never called by motor-otel (its own exception event leaves documents out)
            self.add_event("exception", {A.EXCEPTION_TYPE: type(exception).__qualname__})

    def end(self, end_time: int | None = None) -> None:
        real = self.real
        if real is not None:
            real.end(end_time)
        elif self.end_ns is None:
            self.end_ns = time.time_ns() if end_time is None else end_time


Writer = Callable[..., None]
"""``writer(span, *facts)``: writes what it builds from ``facts`` to ``span``."""


def _set_attributes(span: Span, attributes: Mapping[str, Any]) -> None:
    span.set_attributes(attributes)


def _add_event(span: Span, name: str, attributes: Attributes, timestamp: int) -> None:
    span.add_event(name, attributes, timestamp)


def _set_status(span: Span, status: Status) -> None:
    span.set_status(status)


def buffered(span: Span) -> bool:
    """``span`` is a buffered span not promoted (yet)."""
    return type(span) is BufferedSpan and span.real is None


def write(span: Span, writer: Writer, *facts: Any) -> None:
    """``writer(span, *facts)`` now on a recorded span; on a buffered one, only if it is kept.

    The one way the core writes what is costly to build (attributes, query text, hooks) to a
    span that may be buffered: the builder runs once, on the span that is exported, and never
    for a transaction no rule keeps. ``facts`` are references the driver handed us (events,
    replies, documents), held until the transaction ends and never changed. Failures are
    written at once (``set_status`` counts them: the ``failed`` rule reads that count).
    """
    if type(span) is BufferedSpan and span.real is None:
        log = span._log
        if log is None:
            span._log = [(writer, facts)]
        else:
            log.append((writer, facts))
    else:
        writer(span, *facts)


def start_span(
    tracer: trace.Tracer,
    name: str,
    *,
    context: Context | None,
    parent: Span | None = None,
    kind: SpanKind = SpanKind.CLIENT,
    attributes: Attributes = None,
    links: Sequence[Link] | None = None,
) -> Span:
    """Start a span under ``context``: a buffered child when its parent is buffered, else the
    tracer's span (a promoted parent forwards its real span context to the SDK). ``parent``,
    when the caller has it at hand, is the span ``context`` holds (the current one when
    ``context`` is ``None``), so it is not looked up again."""
    if parent is None and context is not None:
        parent = trace.get_current_span(context)
    if type(parent) is BufferedSpan and parent.real is None:
        return parent.child(name, kind, attributes, links)
    return tracer.start_span(name, context=context, kind=kind, attributes=attributes, links=links)


def buffered_root(
    story: KeptStory, name: str, attributes: Mapping[str, Any], context: SpanContext
) -> BufferedSpan:
    """The root of a transaction's buffer (``withTransaction`` or a lone ``transaction``)."""
    story.count += 1
    return BufferedSpan(story, name, SpanKind.CLIENT, attributes, None, context)


def promote(tracer: trace.Tracer, root: BufferedSpan, rule: str) -> None:
    """Keep the transaction: ``root`` starts a new trace with the keep mark and a link to the
    caller's span; everything buffered is replayed with its real times. Idempotent."""
    story = root.story
    if root.real is not None or story.rule is not None:
        return
    story.rule = rule
    links = list(root.links or ())
    if story.caller.is_valid:
        links.append(Link(story.caller))
    attrs = {**(root.start_attrs or {}), A.TXN_KEPT: rule}
    if story.dropped:  # nothing is buffered once kept: the count is final
        attrs[A.TXN_KEPT_DROPPED] = story.dropped
    _replay(tracer, root, Context(), attrs, links)


def _replay(
    tracer: trace.Tracer,
    span: BufferedSpan,
    context: Context,
    attributes: Attributes,
    links: Sequence[Link] | None,
) -> None:
    real = tracer.start_span(
        span.name,
        context=context,
        kind=span.kind,
        attributes=attributes,
        links=links or None,
        start_time=span.start_ns,
    )
    log, span._log = span._log, None
    for writer, facts in log or ():
        with guard("kept.replay"):  # one builder's failure costs only what it writes
            writer(real, *facts)
    span.real = real  # from here on it forwards: nothing more is buffered in it
    inner = trace.set_span_in_context(real)
    children, span.children = span.children, None
    for child in children or ():
        _replay(tracer, child, inner, child.start_attrs, child.links)
    if span.end_ns is not None:
        real.end(span.end_ns)
