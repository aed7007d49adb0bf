"""Command spans from PyMongo's command monitoring, parented by correlation.

Events arrive synchronously on the thread that sent the command, so the per-event path is kept
short: nothing is built for a span that does not record, and no span is started under a parent
whose children provably would not record (decided once, when the operation or attempt started).
In ``command_detail="events"`` mode a command is an event on its operation (or attempt) span.
"""

from __future__ import annotations

import itertools
import sys
import time
import traceback
from collections.abc import Mapping
from types import CodeType, FrameType
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import Link, Span, Status, StatusCode
from pymongo import monitoring
from pymongo.errors import OperationFailure

from motor_otel import attributes as A
from motor_otel import errors as E
from motor_otel._guard import call_hook, guard, report
from motor_otel.coexistence import ContribSuppressor, pymongo_traces_command
from motor_otel.correlation import Attempt, Telemetry
from motor_otel.kept import buffered, start_span, write
from motor_otel.operations import CURRENT_OPERATION, OperationScope


class TracingCommandListener(monitoring.CommandListener):
    """One span per command sent (retries included), under the operation or attempt it serves.

    PyMongo cannot unregister a listener, so :attr:`enabled` switches it off instead.
    """

    def __init__(self, telemetry: Telemetry, suppressor: ContribSuppressor | None = None) -> None:
        self.telemetry = telemetry
        self.suppressor = suppressor

    @property
    def enabled(self) -> bool:
        return self.telemetry.enabled

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        t = self.telemetry
        if not (t.enabled and t.settings.enabled):
            return
        scope = CURRENT_OPERATION.get()
        # Inside an operation of ours, suppression was checked when it started (no user code
        # runs between then and its commands); elsewhere, ask now.
        if scope is None and not is_instrumentation_enabled():
            return
        try:  # not `with guard(...)`: this runs for every command, and try costs nothing
            if self.suppressor is not None:
                self.suppressor.enforce()
            if scope is not None and scope.silent:  # nothing under it records: labels only
                scope.address = event.connection_id  # the metric's server.*
                attempt = scope.attempt  # the session's: the one its commands carry
                if attempt is not None:
                    attempt.timer.command_started(
                        t.clock(), event.command_name, event.command, event.database_name
                    )
                    t.correlator.start_command(
                        (event.connection_id, event.request_id), None, attempt
                    )
            elif scope.native if scope is not None else pymongo_traces_command(t.native):
                if scope is not None:  # our metric's server.*, though PyMongo makes the span
                    scope.address = event.connection_id
                self._native_started(event)
            else:
                self._started(event, scope, sys._getframe(1))
        except Exception as exc:
            report("listener.started", exc)

    def _started(
        self,
        event: monitoring.CommandStartedEvent,
        scope: OperationScope | None,
        publisher: FrameType,
    ) -> None:
        command = event.command
        name = event.command_name
        if A.is_sensitive(name, command):
            return
        t = self.telemetry
        key = (event.connection_id, event.request_id)
        # Parent, per the correlation rules in docs/architecture.md; whether anything under it
        # records was decided when it started (its `silent`), so nothing is built for nobody.
        ctx = None
        attempt: Attempt | None
        lsid: str | None
        txn: int | None
        if scope is not None and scope.attempt is not None and buffered(scope.span):
            # A buffered operation's commands are its attempt's, as a silent one's are: no
            # lookup and no context; they are buffered too (motor_otel.kept).
            attempt = scope.attempt
            lsid, txn = attempt.lsid, attempt.txn_number
            scope.address = event.connection_id  # the metric's server.*: its last command's
            parent: Span = scope.span
            silent = False
        else:
            lsid = A.lsid_to_str(command.get("lsid"))
            txn = A.txn_number_of(command)
            attempt = None
            if lsid is not None and txn is not None:
                attempt = t.correlator.find_attempt(lsid, txn)
            if attempt is not None and (scope is None or scope.attempt is not attempt):
                parent = attempt.span
                silent = attempt.silent
                if not silent:
                    ctx = attempt.context
            elif scope is not None:
                scope.address = event.connection_id
                parent, silent, ctx = scope.span, scope.silent, scope.context
                if not silent and ctx is None:
                    ctx = trace.set_span_in_context(parent)
            else:
                parent = trace.get_current_span()
                silent = t.decider.children_dropped(parent)
        if attempt is not None:  # its in-flight time and first write (timing.py)
            attempt.timer.command_started(t.clock(), name, command, event.database_name)
        if t.events:  # no span: an event on the operation (or attempt) span, at the reply,
            # stamped when sent. Never on a span that is not ours (a command outside any
            # operation or transaction of ours, e.g. PyMongo's own endSessions): none then.
            if (scope is not None or attempt is not None) and parent.is_recording():
                cursor = _sent_cursor_id(name, command)
                t.correlator.start_command(key, parent, attempt, time.time_ns(), cursor)
            elif attempt is not None:
                t.correlator.start_command(key, None, attempt)
            return
        if silent:
            if attempt is not None:  # its replies' error labels still count, for the metrics
                t.correlator.start_command(key, None, attempt)
            return
        link = None
        if attempt is not None and parent is attempt.span:
            caller = trace.get_current_span().get_span_context()
            if caller.is_valid and caller != attempt.span.get_span_context():
                link = [Link(caller)]
        span = start_span(t.tracer, name, context=ctx, parent=parent, links=link)  # buffered
        if span.is_recording():  # built now, or for a buffered span only once it is kept
            write(span, self._write_started, event, lsid, txn, _driver_connection_id(publisher))
            if t.settings.request_hook is not None:  # hooks see only spans that are exported
                write(span, _call_hook, "request_hook", t.settings.request_hook, event)
        t.correlator.start_command(key, span, attempt)

    def _write_started(
        self,
        span: Span,
        event: monitoring.CommandStartedEvent,
        lsid: str | None,
        txn: int | None,
        driver_id: int | None,
    ) -> None:
        """A command span's start attributes."""
        attrs = self._start_attributes(event, event.command_name, event.command, lsid, txn)
        if driver_id is not None:
            attrs[A.MONGODB_DRIVER_CONNECTION_ID] = driver_id
        span.set_attributes(attrs)

    def _native_started(self, event: monitoring.CommandStartedEvent) -> None:
        """PyMongo makes this command's span; we only follow it for its attempt's error labels."""
        command = event.command
        txn = A.txn_number_of(command)
        if txn is None:
            return
        lsid = A.lsid_to_str(command.get("lsid"))
        attempt = self.telemetry.correlator.find_attempt(lsid, txn) if lsid is not None else None
        if attempt is not None:
            t = self.telemetry
            attempt.timer.command_started(
                t.clock(), event.command_name, command, event.database_name
            )
            t.correlator.start_command((event.connection_id, event.request_id), None, attempt)

    def _start_attributes(
        self,
        event: monitoring.CommandStartedEvent,
        name: str,
        command: Any,
        lsid: str | None,
        txn: int | None,
    ) -> dict[str, Any]:
        db = event.database_name
        coll = A.collection_of(name, command, db)
        attrs: dict[str, Any] = dict(A.command_attributes(name, db, coll, event.connection_id))
        if lsid is not None:
            attrs[A.MONGODB_LSID] = lsid
        if txn is not None:
            attrs[A.MONGODB_TXN_NUMBER] = txn
        if event.server_connection_id is not None:
            attrs[A.MONGODB_SERVER_CONNECTION_ID] = int(event.server_connection_id)
        cursor = _sent_cursor_id(name, command)
        if cursor is not None:
            attrs[A.MONGODB_CURSOR_ID] = cursor
        settings = self.telemetry.settings
        text = A.query_text(command, settings.query_text_max_length, settings.query_text_raw_values)
        if text is not None:
            attrs[A.DB_QUERY_TEXT] = text
        return A.with_old_names(attrs) if self.telemetry.old_names else attrs

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        found = self.telemetry.correlator.pop_command((event.connection_id, event.request_id))
        if found is None:
            return
        span, attempt, event_at, sent_cursor = found
        try:
            if attempt is not None:
                attempt.timer.command_ended(self.telemetry.clock())
            reply = event.reply
            if span is None or not span.is_recording():
                # Not ours to record (PyMongo's, or unsampled): its error labels only.
                labels = A.error_labels_of(reply)
                if labels:  # e.g. a writeConcernError on an ok:1 commit
                    _note_labels(attempt, labels)
            else:
                labels = A.error_labels_of(reply)
                if labels:  # e.g. a writeConcernError on an ok:1 commit
                    _note_labels(attempt, labels)
                error = (  # an ok:1 reply can still report failed writes
                    E.reply_error(reply)
                    if "writeErrors" in reply or "writeConcernError" in reply
                    else None
                )
                if event_at:
                    attrs = _reply_attributes(reply, sent_cursor, labels)
                    _command_event(span, event, event_at, attrs, error)
                    return
                if error is None:  # built now, or for a buffered span only once it is kept
                    write(span, self._write_succeeded, event, sent_cursor, labels, None)
                else:  # at once: the stack is where the reply came, and ERROR counts now
                    self._write_succeeded(span, event, sent_cursor, labels, error)
                hook = self.telemetry.settings.response_hook
                if hook is not None:
                    write(span, _call_hook, "response_hook", hook, event)
        except Exception as exc:
            report("listener.succeeded", exc)
        if span is not None and not event_at:
            span.end()

    def _write_succeeded(
        self,
        span: Span,
        event: monitoring.CommandSucceededEvent,
        sent_cursor: int | None,
        labels: list[str],
        error: tuple[str, int | None] | None,
    ) -> None:
        """A command span's reply attributes (its failure, for an ok:1 reply that reports
        one)."""
        reply = event.reply
        attrs = _reply_attributes(reply, sent_cursor, labels)
        _times(reply, attrs)
        if error is None:
            span.set_attributes(attrs)
        else:
            _record_failure(span, _write_failure(reply), error, attrs, labels)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        found = self.telemetry.correlator.pop_command((event.connection_id, event.request_id))
        if found is None:
            return
        span, attempt, event_at, sent_cursor = found
        with guard("listener.failed"):
            if attempt is not None:
                attempt.timer.command_ended(self.telemetry.clock())
            failure = event.failure
            labels = A.error_labels_of(failure)
            if labels:
                _note_labels(attempt, labels)
            if span is not None and span.is_recording():
                attrs: dict[str, Any] = {}
                if labels:
                    attrs[A.ERROR_LABELS] = labels
                error = E.reply_error(failure) or (E.class_name(OperationFailure), None)
                if event_at:
                    if sent_cursor is not None:
                        attrs[A.MONGODB_CURSOR_ID] = sent_cursor
                    _command_event(span, event, event_at, attrs, error)
                    return
                _times(failure, attrs)
                _record_failure(span, failure, error, attrs, labels)
                hook = self.telemetry.settings.failed_hook
                if hook is not None:
                    write(span, _call_hook, "failed_hook", hook, event)
        if span is not None and not event_at:
            span.end()


def _call_hook(span: Span, where: str, hook: Any, event: Any) -> None:
    """A user hook on a command span, through :func:`motor_otel.kept.write`: now, or for a
    buffered span on its kept span (hooks see only spans that are exported)."""
    call_hook(where, hook, span, event)


def _command_event(
    span: Span,
    event: monitoring.CommandSucceededEvent | monitoring.CommandFailedEvent,
    event_at: int,
    attrs: dict[str, Any],
    error: tuple[str, int | None] | None,
) -> None:
    """``command_detail="events"``: the command as one event on its operation (or attempt)
    span, stamped when it was sent; a failure's ``error.type`` is the one its span would have."""
    attrs[A.MONGODB_COMMAND_DURATION_MS] = event.duration_micros / 1000.0
    if event.server_connection_id is not None:
        attrs[A.MONGODB_SERVER_CONNECTION_ID] = int(event.server_connection_id)
    if error is not None:
        attrs[A.ERROR_TYPE] = error[0]
        if error[1] is not None:
            attrs[A.DB_RESPONSE_STATUS_CODE] = str(error[1])
    span.add_event(event.command_name, attrs, timestamp=event_at)


def _sent_cursor_id(name: str, command: Any) -> int | None:
    """The cursor a getMore or killCursors command names."""
    if name == "getMore":
        cursor = command.get(name)
    elif name == "killCursors":
        cursors = command.get("cursors")
        cursor = cursors[0] if isinstance(cursors, list) and cursors else None
    else:
        return None
    return int(cursor) if isinstance(cursor, int) and not isinstance(cursor, bool) else None


def _reply_attributes(reply: Any, sent_cursor: int | None, labels: list[str]) -> dict[str, Any]:
    """A reply's cursor (else the one the command named) and error labels."""
    attrs: dict[str, Any] = {}
    cursor_id = _reply_cursor_id(reply) or sent_cursor
    if cursor_id is not None:
        attrs[A.MONGODB_CURSOR_ID] = cursor_id
    if labels:
        attrs[A.ERROR_LABELS] = labels
    return attrs


def _reply_cursor_id(reply: Any) -> int | None:
    """The (non-zero) cursor a reply opened or continued."""
    cursor = reply.get("cursor")
    cursor_id = cursor.get("id") if isinstance(cursor, dict) else None
    if isinstance(cursor_id, int) and not isinstance(cursor_id, bool) and cursor_id:
        return int(cursor_id)
    return None


def _record_failure(
    span: Span,
    failure: Mapping[str, Any],
    error: tuple[str, int | None],
    attrs: dict[str, Any],
    labels: list[str],
) -> None:
    """A command's failure on its span: ``error.type`` and status code, exception event, ERROR.

    ``failure`` is an ``ok: 0`` failure document, or an ``ok: 1`` reply's first write error (or
    its ``writeConcernError``): mongod reports write errors in a successful reply.
    """
    message = A.error_message(str(failure.get("errmsg") or "command failed"))
    exception_type = str(failure.get("codeName") or failure.get("errtype") or error[0])
    error_type, code = error
    attrs[A.EXCEPTION_TYPE] = exception_type
    attrs[A.EXCEPTION_MESSAGE] = message
    # No Python exception exists yet: where the driver was when the reply came.
    attrs[A.EXCEPTION_STACKTRACE] = A.stack_text(
        reversed(list(itertools.islice(traceback.walk_stack(sys._getframe()), 20)))
    )
    attrs[A.ERROR_TYPE] = error_type
    if code is not None:
        attrs[A.DB_RESPONSE_STATUS_CODE] = str(code)
    span.set_attributes(attrs)
    event_attrs: dict[str, Any] = {A.EXCEPTION_TYPE: exception_type, A.EXCEPTION_MESSAGE: message}
    if labels:
        event_attrs[A.ERROR_LABELS] = labels
    span.add_event("exception", event_attrs)
    span.set_status(Status(StatusCode.ERROR, message))


def _write_failure(reply: Mapping[str, Any]) -> Mapping[str, Any]:
    """The document an ``ok: 1`` reply's error is described by: first write error, else the
    ``writeConcernError``."""
    errors = reply.get("writeErrors")
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
        return errors[0]
    wce = reply.get("writeConcernError")
    return wce if isinstance(wce, Mapping) else reply


def _times(reply: Any, attrs: dict[str, Any]) -> None:
    """Cluster and operation time from a reply, as int64 attributes of the command span."""
    cluster = A.cluster_time_of(reply)
    if cluster is not None:
        attrs[A.CLUSTER_TIME] = cluster
    op_time = A.timestamp_to_int(reply.get("operationTime"))
    if op_time is not None:
        attrs[A.OPERATION_TIME] = op_time


def _note_labels(attempt: Attempt | None, labels: list[str]) -> None:
    if attempt is not None:
        A.add_labels(attempt.error_labels, labels)


_CONN_DEPTH: dict[CodeType, int] = {}  # publishing function -> frames up to the connection


def _driver_connection_id(frame: FrameType | None) -> int | None:
    """PyMongo's own id for the sending connection.

    Command events carry only the address, but PyMongo publishes them from its command
    telemetry object, which holds the connection: read it from the publishing frames (three at
    most), and give up quietly where a PyMongo version is shaped differently. Which frame held
    it is remembered per publishing function, so the next time only that frame's locals are read.
    """
    if frame is None:
        return None
    code = frame.f_code
    depth = _CONN_DEPTH.get(code)
    if depth is not None:
        found = _connection_id_in(_up(frame, depth))
        if found is not None:
            return found
    holder: FrameType | None = frame
    for depth in range(3):
        found = _connection_id_in(holder)
        if found is not None:
            if len(_CONN_DEPTH) < 64:
                _CONN_DEPTH[code] = depth
            return found
        holder = holder.f_back if holder is not None else None
    return None


def _up(frame: FrameType | None, depth: int) -> FrameType | None:
    for _ in range(depth):
        frame = frame.f_back if frame is not None else None
    return frame


def _connection_id_in(frame: FrameType | None) -> int | None:
    if frame is None:
        return None
    local = frame.f_locals
    conn = getattr(local.get("self"), "_conn", None) or local.get("conn")
    conn_id = getattr(conn, "id", None)
    return conn_id if isinstance(conn_id, int) else None
