"""What ``motor-otel demo`` prints: span trees, where retries came from, a metrics summary.

Read from the finished spans and the metric reader, the way a user's backend would see them, so
the terminal says exactly what the exported telemetry says.
"""

from __future__ import annotations

import base64
import statistics
from collections.abc import Sequence
from typing import Any

_OUTCOME = "db.mongodb.transaction.outcome"
_RETRY_CAUSE = "db.mongodb.transaction.retry_cause"
_BACKOFF_MS = "db.mongodb.transaction.backoff_ms"
_KEPT = "db.mongodb.transaction.kept"
_APP_MS = "db.mongodb.transaction.app_ms"
_WINDOW_MS = "db.mongodb.transaction.write_window_ms"
_WASTED_MS = "db.mongodb.transaction.wasted_ms"
_TREE_NOTES = (
    _KEPT,
    "db.mongodb.transaction.attempt",
    "db.mongodb.transaction.attempts",
    "db.mongodb.transaction.commit_attempts",
    _OUTCOME,
    _RETRY_CAUSE,
    "db.mongodb.transaction.wasted_ms",
    "db.response.status_code",
)
NO_CAUSE = "(no operation named)"
TTE = "TransientTransactionError"


def _ms(span: Any) -> float:
    return float((span.end_time - span.start_time) / 1e6)


def children_of(spans: Sequence[Any]) -> dict[Any, list[Any]]:
    """Spans by parent span id (``None`` for roots), each list in start order."""
    ids = {s.context.span_id for s in spans}
    by_parent: dict[Any, list[Any]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent and span.parent.span_id in ids else None
        by_parent.setdefault(parent, []).append(span)
    for found in by_parent.values():
        found.sort(key=lambda s: s.start_time)
    return by_parent


def render_tree(spans: Sequence[Any]) -> list[str]:
    """Span names, durations, attempts, causes and labels, indented by parentage."""
    by_parent = children_of(spans)
    lines: list[str] = []

    def walk(parent: Any, depth: int) -> None:
        for span in by_parent.get(parent, []):
            attrs = span.attributes or {}
            notes = []
            for key in _TREE_NOTES:
                if key in attrs:
                    value = attrs[key]
                    shown = f'"{value}"' if isinstance(value, str) and " " in value else value
                    notes.append(f"{key.rsplit('.', 1)[-1]}={shown}")
            if "db.mongodb.error_labels" in attrs:
                notes.append("labels=" + ",".join(attrs["db.mongodb.error_labels"]))
            notes.extend(f"[{event.name}]" for event in span.events if event.name != "exception")
            lines.append(
                f"{'  ' * depth}{span.name}  {_ms(span):.1f} ms  {' '.join(notes)}".rstrip()
            )
            walk(span.context.span_id, depth + 1)

    walk(None, 0)
    return lines


def kept_summary(spans: Sequence[Any]) -> tuple[list[Any], str]:
    """(the kept roots in start order, a line: how many kept by which rule, how many sampled by
    the ratio) for ``demo --sample``."""
    roots = sorted(
        (s for s in spans if s.name == "withTransaction" and s.parent is None),
        key=lambda s: s.start_time,
    )
    kept = [r for r in roots if _KEPT in (r.attributes or {})]
    rules: dict[str, int] = {}
    for root in kept:
        rule = str(root.attributes[_KEPT])
        rules[rule] = rules.get(rule, 0) + 1
    by_rule = ", ".join(f"{n} {rule}" for rule, n in sorted(rules.items())) or "none"
    line = f"kept by rule: {len(kept)} ({by_rule}); sampled by the ratio: {len(roots) - len(kept)}"
    return kept, line


def retry_table(spans: Sequence[Any]) -> list[str]:
    """Where retries came from: per cause, the attempts it cost and the time they took.

    An attempt that did not commit and was retried counts for its ``retry_cause``: its own
    duration plus the backoff before the next attempt (what ``wasted_ms`` sums per call), and
    its write window (first write to the abort) goes into the cause's median. An attempt whose
    commit error Motor's loop let escape (``commit_not_retried``) is listed apart: it was not
    retried, the application got the error.
    """
    by_parent = children_of(spans)
    rows: dict[str, list[float]] = {}
    windows: dict[str, list[float]] = {}
    not_retried: dict[str, int] = {}
    for call in spans:
        if call.name != "withTransaction":
            continue
        attempts = [s for s in by_parent.get(call.context.span_id, []) if s.name == "transaction"]
        for i, attempt in enumerate(attempts):
            attrs = attempt.attributes or {}
            if attrs.get(_OUTCOME) == "committed":
                continue
            cause = str(attrs.get(_RETRY_CAUSE, NO_CAUSE))
            if i + 1 < len(attempts):
                row = rows.setdefault(cause, [0, 0.0])
                row[0] += 1
                row[1] += _ms(attempt) + float(attempts[i + 1].attributes.get(_BACKOFF_MS, 0.0))
                if _WINDOW_MS in attrs:
                    windows.setdefault(cause, []).append(float(attrs[_WINDOW_MS]))
            else:
                for event in call.events:
                    if event.name == "commit_not_retried":
                        labels = (event.attributes or {}).get("db.mongodb.error_labels", ())
                        why = TTE if TTE in labels else "UnknownTransactionCommitResult"
                        not_retried[why] = not_retried.get(why, 0) + 1
    width = max([len("cause"), len("total"), *(len(c) for c in rows)])
    lines = [f"{'cause':<{width}}  retries  time lost  median write window"]
    ordered = sorted(rows.items(), key=lambda item: (-item[1][1], item[0]))
    for cause, (count, lost) in ordered:
        window = _median_ms(windows.get(cause, []))
        lines.append(f"{cause:<{width}}  {int(count):>7}  {lost:>6.1f} ms  {window:>16}")
    total_count = sum(int(c) for c, _ in rows.values())
    total_lost = sum(lost for _, lost in rows.values())
    every = [w for found in windows.values() for w in found]
    lines.append(
        f"{'total':<{width}}  {total_count:>7}  {total_lost:>6.1f} ms  {_median_ms(every):>16}"
    )
    if not_retried:
        causes = ", ".join(f"{why} {n}" for why, n in sorted(not_retried.items()))
        lines.append(
            f"commits Motor did not retry (with_transaction raised): {sum(not_retried.values())}"
            f" ({causes})"
        )
    return lines


def _median(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "-"


def _median_ms(values: Sequence[float]) -> str:
    return f"{_median(values)} ms" if values else "-"


def conflict_table(groups: Sequence[tuple[str, Sequence[Any]]]) -> list[str]:
    """Why transactions conflict, per group of ``withTransaction`` calls (by their spans).

    The medians of ``app_ms`` (open with no command in flight) and of the write window over the
    committed attempts, the ones that held their documents to the end (an attempt that lost a
    conflict at its first write held nothing); then the retries (attempts that did not commit
    and ran again) and the time they lost (``wasted_ms`` summed). The chain reads left to
    right: app time, write window, conflicts, time lost.
    """
    width = max([len("buyers"), *(len(name) for name, _ in groups)])
    lines = [f"{'buyers':<{width}}  attempts  app ms  write window ms  retries  time lost"]
    for name, group in groups:
        roots = [s for s in group if s.name == "withTransaction"]
        ids = {root.context.span_id for root in roots}
        attempts = [
            s for s in group if s.name == "transaction" and s.parent and s.parent.span_id in ids
        ]
        held = [a for a in attempts if (a.attributes or {}).get(_OUTCOME) == "committed"]
        app = [float(a.attributes[_APP_MS]) for a in held if _APP_MS in a.attributes]
        window = [float(a.attributes[_WINDOW_MS]) for a in held if _WINDOW_MS in a.attributes]
        retries = len(attempts) - len(roots)
        lost = sum(float((r.attributes or {}).get(_WASTED_MS, 0.0)) for r in roots)
        lines.append(
            f"{name:<{width}}  {len(attempts):>8}  {_median(app):>6}  {_median(window):>15}"
            f"  {retries:>7}  {lost:>6.1f} ms"
        )
    return lines


def otlp_json(spans: Sequence[Any]) -> dict[str, Any]:
    """Spans as OTLP/JSON (ids in hex, as the OTLP JSON mapping requires)."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    document: dict[str, Any] = MessageToDict(encode_spans(spans))

    def fix(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                    node[key] = base64.b64decode(value).hex()
                else:
                    fix(value)
        elif isinstance(node, list):
            for item in node:
                fix(item)

    fix(document)
    return document


_SHORT_PREFIXES = ("db.mongodb.transaction.", "db.mongodb.", "db.")
# Left out of a line when every point of the metric has the same value: they say nothing there.
_QUIET = frozenset({"db.system.name", "db.namespace", "server.address", "server.port"})


def _short_names(keys: set[str]) -> dict[str, str]:
    """Attribute names without the common prefixes, unless two would then read the same."""
    short = {}
    for key in keys:
        name = key
        for prefix in _SHORT_PREFIXES:
            if key.startswith(prefix):
                name = key[len(prefix) :]
                break
        short[key] = name
    if len(set(short.values())) < len(short):
        return {key: key for key in keys}
    return short


def metrics_summary(reader: Any) -> list[str]:
    """One line per data point, sorted.

    A label is left out only when it is one of the quiet ones and has the same value on every
    point of its metric; two points of a metric differ in some label, so that label is shown and
    no two lines look the same.
    """
    data = reader.get_metrics_data()
    lines: list[str] = []
    if data is None:
        return lines
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points = list(metric.data.data_points)
                values: dict[str, set[Any]] = {}
                for point in points:
                    for key, value in point.attributes.items():
                        values.setdefault(key, set()).add(value)
                hidden = {
                    key
                    for key in _QUIET
                    if len(values.get(key, ())) == 1
                    and all(key in point.attributes for point in points)
                }
                names = _short_names(set(values) - hidden)
                for point in points:
                    label = ", ".join(
                        sorted(
                            f"{names[key]}={value}"
                            for key, value in point.attributes.items()
                            if key in names
                        )
                    )
                    if hasattr(point, "count"):
                        mean = point.sum / point.count if point.count else 0.0
                        value = f"count={point.count} mean={mean:.4g}"
                    else:
                        value = f"{point.value}"
                    lines.append(f"{metric.name} {{{label}}} {value}")
    return sorted(lines)
