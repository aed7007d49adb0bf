"""Reading exported span trees in tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from opentelemetry.sdk.trace import ReadableSpan


def named(spans: Iterable[ReadableSpan], name: str) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.name == name), key=lambda s: s.start_time or 0)


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    pid = parent.context.span_id
    found = [s for s in spans if s.parent is not None and s.parent.span_id == pid]
    return sorted(found, key=lambda s: s.start_time or 0)


def ancestors(spans: Sequence[ReadableSpan], span: ReadableSpan) -> list[ReadableSpan]:
    by_id = {s.context.span_id: s for s in spans}
    chain = []
    current = span
    while current.parent is not None and current.parent.span_id in by_id:
        current = by_id[current.parent.span_id]
        chain.append(current)
    return chain


def render(spans: Sequence[ReadableSpan]) -> list[str]:
    """The tree as indented names, roots in start order."""
    ids = {s.context.span_id for s in spans}
    lines: list[str] = []

    def walk(span: ReadableSpan, depth: int) -> None:
        lines.append("  " * depth + span.name)
        for child in children(spans, span):
            walk(child, depth + 1)

    roots = [s for s in spans if s.parent is None or s.parent.span_id not in ids]
    for root in sorted(roots, key=lambda s: s.start_time or 0):
        walk(root, 0)
    return lines
