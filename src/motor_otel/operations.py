"""Operation spans (``insert db.coll``) around public driver methods.

An operation span is the parent of the command spans its method sends (retries included).
Inside a transaction it nests under the attempt's span, found from the ``session=`` argument,
whatever the caller's current span is (that one is linked instead).
"""

from __future__ import annotations

import functools
import inspect
import time
import traceback
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import Link, Span, Status, StatusCode

from motor_otel import attributes as A
from motor_otel import errors as E
from motor_otel._guard import guard, report
from motor_otel.correlation import Attempt, Telemetry
from motor_otel.events import OperationSummary, RetryCause
from motor_otel.kept import buffered, start_span


@dataclass(slots=True, eq=False)
class OperationScope:
    """One operation in flight; whether it records is decided once, here, for all it sends."""

    span: Span
    attempt: Attempt | None
    attrs: Mapping[str, Any]  # the metric's attributes (shared: copied before any change)
    native: bool = False  # PyMongo traces this operation itself: ours is a non-recording span
    recording: bool = True  # the span records: attributes, exceptions, links are worth building
    silent: bool = False  # nothing under it would record either: commands get no span
    context: otel_context.Context | None = None  # the span as a parent, built once
    address: Any = None  # (host, port) of the connection that served its last command


CURRENT_OPERATION: ContextVar[OperationScope | None] = ContextVar(
    "motor_otel_current_operation", default=None
)

# Public collection method -> spec operation name.
COLLECTION_OPERATIONS: dict[str, str] = {
    "insert_one": "insert",
    "insert_many": "insert",
    "find_one": "find",
    "find_one_and_update": "findAndModify",
    "find_one_and_replace": "findAndModify",
    "find_one_and_delete": "findAndModify",
    "update_one": "update",
    "update_many": "update",
    "replace_one": "update",
    "delete_one": "delete",
    "delete_many": "delete",
    "count_documents": "aggregate",
    "estimated_document_count": "count",
    "distinct": "distinct",
    "bulk_write": "bulkWrite",
    "create_index": "createIndexes",
    "create_indexes": "createIndexes",
    "drop_index": "dropIndexes",
    "drop_indexes": "dropIndexes",
    "index_information": "listIndexes",
    "drop": "dropCollection",
}
# Methods returning a cursor synchronously: the span covers the commands sent while iterating.
COLLECTION_CURSORS: dict[str, str] = {
    "find": "find",
    "aggregate": "aggregate",
    "list_indexes": "listIndexes",
}
DATABASE_OPERATIONS: dict[str, str] = {
    "create_collection": "createCollection",
    "drop_collection": "dropCollection",
    "list_collection_names": "listCollections",
    "list_collections": "listCollections",
    "command": "runCommand",
}
CLIENT_OPERATIONS: dict[str, str] = {
    "list_databases": "listDatabases",
    "list_database_names": "listDatabases",
    "drop_database": "dropDatabase",
    "bulk_write": "bulkWrite",  # MongoDB 8.0's client-level bulk write
}


def attempt_of(session: Any) -> Attempt | None:
    """The open attempt of an instrumented session, if it is in one."""
    state = getattr(session, "_otel", None)
    attempt = getattr(state, "attempt", None)
    return attempt if isinstance(attempt, Attempt) else None


def start_operation(
    telemetry: Telemetry,
    operation: str,
    *,
    db: str,
    collection: str | None,
    session: Any,
    parent: otel_context.Context | None = None,
) -> OperationScope | None:
    """Start (but do not activate) an operation span; ``None`` when not tracing."""
    if not (telemetry.enabled and telemetry.settings.enabled and is_instrumentation_enabled()):
        return None
    if CURRENT_OPERATION.get() is not None:
        return None  # a public method called by another one: the outer operation owns it
    attempt = attempt_of(session)
    span_attrs, attrs = A.operation_attributes(operation, db, collection)
    if telemetry.native:
        return OperationScope(trace.INVALID_SPAN, attempt, attrs, native=True, recording=False)
    # The parent: the session's attempt, else the caller's span. One that does not record, and
    # whose children provably would not either, stands in for the span: nothing is started.
    if attempt is not None:
        if attempt.silent:
            return OperationScope(attempt.span, attempt, attrs, recording=False, silent=True)
        caller = trace.get_current_span(parent)
    else:
        caller = trace.get_current_span(parent)
        if telemetry.decider.children_dropped(caller):
            return OperationScope(caller, None, attrs, recording=False, silent=True)
    links: list[Link] | None = None
    ctx: otel_context.Context | None = parent
    if attempt is not None and caller is not attempt.span:  # in the callback it is: no link
        ctx = attempt.context
        caller_ctx = caller.get_span_context()
        if caller_ctx.is_valid and caller_ctx != attempt.span.get_span_context():
            links = [Link(caller_ctx)]
    span = start_span(  # under a buffered attempt: buffered too (motor_otel.kept)
        telemetry.tracer,
        span_attrs[A.DB_OPERATION_SUMMARY],  # type: ignore[arg-type]
        context=ctx,
        parent=attempt.span if attempt is not None else caller,
        attributes=A.with_old_names(dict(span_attrs)) if telemetry.old_names else span_attrs,
        links=links,
    )
    if buffered(span):  # not made current, as its attempt is not: the app's span stays current
        return OperationScope(span, attempt, attrs)
    if span.is_recording():
        return OperationScope(span, attempt, attrs, context=trace.set_span_in_context(span))
    silent = telemetry.decider.children_dropped(span)
    return OperationScope(span, attempt, attrs, recording=False, silent=silent)


def finish_operation(
    telemetry: Telemetry, scope: OperationScope, started: float, exc: BaseException | None
) -> None:
    span = scope.span
    attrs = scope.attrs  # shared by every operation on this namespace: never changed in place
    if exc is not None:
        failure = record_exception(span, exc) if scope.recording else E.error_attributes(exc)
        attrs = {**attrs, **failure}
        if scope.attempt is not None:
            scope.attempt.failed_operations += 1
            note_retry_cause(scope.attempt, attrs, exc)
    if scope.recording:
        span.end()
    if telemetry.observed():
        if scope.address is not None:
            attrs = {**attrs, **A.server_attributes(scope.address)}
        summary = OperationSummary(time.perf_counter() - started, attrs)
        for observer in telemetry.observers:
            try:
                observer.operation_ended(summary)
            except Exception as error:
                report("observer.operation_ended", error)


TTE = "TransientTransactionError"


def note_retry_cause(attempt: Attempt, attrs: dict[str, Any], exc: BaseException) -> None:
    """Remember the first operation whose TransientTransactionError ends ``attempt``.

    The first, not the last: once the server has aborted the transaction, later operations
    (the commit included) fail only because of it. ``error.type`` as on every other signal.
    """
    if attempt.retry_cause is None and TTE in error_labels(exc):
        operation, collection = attrs[A.DB_OPERATION_NAME], attrs.get(A.DB_COLLECTION_NAME)
        attempt.retry_cause = RetryCause(
            summary=A.summary(operation, attrs[A.DB_NAMESPACE], collection),
            operation=operation,
            collection=collection,
            error_type=E.error_type(exc),
        )


def record_exception(span: Span, exc: BaseException, *, event: bool = True) -> dict[str, str]:
    """Exception event, ERROR status, the spec's exception attributes and ``error.type`` (with
    ``db.response.status_code`` when there is a code) on the span itself.

    Not ``span.record_exception``: it would put ``str(exc)`` (for PyMongo, the whole server reply,
    documents included) in the event; our message and stack trace leave document values out.
    Returns the ``error.type``/``db.response.status_code`` pair, for the metric point.
    """
    attrs = exception_attributes(exc)
    if event:
        span.add_event("exception", attrs)
    failure = E.error_attributes(exc)
    span.set_attributes({**attrs, **failure})
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {attrs[A.EXCEPTION_MESSAGE]}"))
    return failure


def exception_attributes(exc: BaseException) -> dict[str, Any]:
    message = A.exception_message(exc)
    frames = A.stack_text(traceback.walk_tb(exc.__traceback__))
    attrs: dict[str, Any] = {
        A.EXCEPTION_TYPE: type(exc).__qualname__,
        A.EXCEPTION_MESSAGE: message,
        A.EXCEPTION_STACKTRACE: f"Traceback (most recent call last):\n{frames}"
        f"{type(exc).__module__}.{type(exc).__qualname__}: {message}\n",
    }
    labels = error_labels(exc)
    if labels:
        attrs[A.ERROR_LABELS] = labels
    return attrs


def error_labels(exc: BaseException) -> list[str]:
    labels = getattr(exc, "_error_labels", None)
    return sorted(str(label) for label in labels) if labels else []


_Tokens = tuple[Token[OperationScope | None], Token[otel_context.Context] | None]


def enter(scope: OperationScope) -> _Tokens:
    """Make the span current (for OTel and for our listener); undo with :func:`leave`.

    A pair of plain calls rather than a context manager: it runs around every driver call.
    """
    token = CURRENT_OPERATION.set(scope)
    if scope.context is None:  # not recording (or native: PyMongo's span needs its real parent)
        return token, None
    return token, otel_context.attach(scope.context)


def leave(tokens: _Tokens) -> None:
    token, ctx_token = tokens
    if ctx_token is not None:
        otel_context.detach(ctx_token)
    CURRENT_OPERATION.reset(token)


@contextmanager
def activated(scope: OperationScope) -> Iterator[None]:
    """:func:`enter` … :func:`leave` as a context manager, for the paths that are not hot."""
    tokens = enter(scope)
    try:
        yield
    finally:
        leave(tokens)


class operation_span:
    """``with operation_span(...) as scope:`` runs a block as one operation span (sessions use it
    for commit/abort). A class, not ``@contextmanager``: no generator on every commit."""

    __slots__ = ("_scope", "_started", "_telemetry", "_tokens")

    def __init__(
        self, telemetry: Telemetry, operation: str, *, db: str, collection: str | None, session: Any
    ) -> None:
        self._telemetry = telemetry
        self._scope = start_operation(
            telemetry, operation, db=db, collection=collection, session=session
        )

    def __enter__(self) -> OperationScope | None:
        scope = self._scope
        if scope is not None:
            self._started = time.perf_counter()
            self._tokens = enter(scope)
        return scope

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        scope = self._scope
        if scope is not None:
            leave(self._tokens)
            finish_operation(self._telemetry, scope, self._started, exc)


# -- patching Motor ----------------------------------------------------------------------------


def _session_getter(fn: Callable[..., Any]) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    """Find ``session`` among a call's arguments without binding the signature per call."""
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        params = []
    index = params.index("session") - 1 if "session" in params else -1

    def get(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if "session" in kwargs:
            return kwargs["session"]
        return args[index] if 0 <= index < len(args) else None

    return get


Target = Callable[[Any], tuple[str, str | None]]  # instance -> (db, collection)


def _collection_target(coll: Any) -> tuple[str, str | None]:
    return coll.database.name, coll.name


def _database_target(db: Any) -> tuple[str, str | None]:
    return db.name, None


def _client_target(client: Any) -> tuple[str, str | None]:
    return "admin", None


def _wrap_async(
    telemetry_of: Callable[[Any], Telemetry | None],
    original: Callable[..., Any],
    operation: str,
    target: Target,
    collection_arg: bool,
) -> Callable[..., Any]:
    get_session = _session_getter(original)

    @functools.wraps(original)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        telemetry = telemetry_of(self)
        if telemetry is None:
            return await original(self, *args, **kwargs)
        scope = _start(
            telemetry, self, args, kwargs, operation, target, collection_arg, get_session
        )
        if scope is None:
            return await original(self, *args, **kwargs)
        started = time.perf_counter()
        tokens = enter(scope)
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as exc:
            leave(tokens)
            _finish(telemetry, scope, started, exc)
            raise
        leave(tokens)
        _finish(telemetry, scope, started, None, result)
        return result

    return wrapper


def _wrap_sync(
    telemetry_of: Callable[[Any], Telemetry | None],
    original: Callable[..., Any],
    operation: str,
    target: Target,
    collection_arg: bool,
) -> Callable[..., Any]:
    get_session = _session_getter(original)

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        telemetry = telemetry_of(self)
        if telemetry is None:
            return original(self, *args, **kwargs)
        scope = _start(
            telemetry, self, args, kwargs, operation, target, collection_arg, get_session
        )
        if scope is None:
            return original(self, *args, **kwargs)
        started = time.perf_counter()
        tokens = enter(scope)
        try:
            result = original(self, *args, **kwargs)
        except BaseException as exc:
            leave(tokens)
            _finish(telemetry, scope, started, exc)
            raise
        leave(tokens)
        _finish(telemetry, scope, started, None, result)
        return result

    return wrapper


def _start(
    telemetry: Telemetry,
    obj: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    operation: str,
    target: Target,
    collection_arg: bool,
    get_session: Callable[[tuple[Any, ...], dict[str, Any]], Any],
) -> OperationScope | None:
    """The wrappers' start: the operation span, or ``None`` (and the call goes on untraced)."""
    try:
        db, coll = target(obj)
        if collection_arg and args:
            coll = args[0] if isinstance(args[0], str) else getattr(args[0], "name", coll)
        return start_operation(
            telemetry, operation, db=db, collection=coll, session=get_session(args, kwargs)
        )
    except Exception as exc:
        report("operations.start", exc)
        return None


def _finish(
    telemetry: Telemetry,
    scope: OperationScope,
    started: float,
    exc: BaseException | None,
    result: Any = None,
) -> None:
    """The wrappers' end; a PyMongo cursor with batches left keeps the span for its getMores."""
    try:
        if exc is not None or not _hand_over(telemetry, scope, started, result):
            finish_operation(telemetry, scope, started, exc)
    except Exception as error:
        report("operations.finish", error)


@dataclass(slots=True, eq=False)
class _PendingCursorOperation:
    """A cursor's operation, started at its first fetch so never-iterated cursors cost nothing."""

    telemetry: Telemetry
    operation: str
    db: str
    collection: str | None
    session: Any
    parent: otel_context.Context
    scope: OperationScope | None = None
    started: float = 0.0
    done: bool = False

    def begin(self) -> OperationScope | None:
        if self.scope is None and not self.done:
            self.started = time.perf_counter()
            self.scope = start_operation(
                self.telemetry,
                self.operation,
                db=self.db,
                collection=self.collection,
                session=self.session,
                parent=self.parent,
            )
            if self.scope is None:
                self.done = True
        return self.scope

    def finish(self, exc: BaseException | None) -> None:
        if self.scope is not None and not self.done:
            self.done = True
            finish_operation(self.telemetry, self.scope, self.started, exc)


def _wrap_cursor_factory(
    telemetry_of: Callable[[Any], Telemetry | None], original: Callable[..., Any], operation: str
) -> Callable[..., Any]:
    get_session = _session_getter(original)

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        cursor = original(self, *args, **kwargs)
        telemetry = telemetry_of(self)
        if telemetry is not None:
            with guard("operations.cursor"):
                db, coll = _collection_target(self)
                pending = _PendingCursorOperation(
                    telemetry,
                    operation,
                    db,
                    coll,
                    get_session(args, kwargs),
                    otel_context.get_current(),
                )
                cursor._motor_otel_op = pending
                # Abandoned half-read (a `break`, an exception): end the span when it is collected.
                weakref.finalize(cursor, _finish_abandoned, pending)
        return cursor

    return wrapper


def _finish_abandoned(pending: _PendingCursorOperation) -> None:
    with guard("operations.cursor_abandoned"):
        pending.finish(None)


def _hand_over(telemetry: Telemetry, scope: OperationScope, started: float, result: Any) -> bool:
    """A PyMongo command cursor with batches left keeps its operation open for its getMores."""
    if not (
        hasattr(result, "_refresh")
        and getattr(result, "alive", False)
        and getattr(result, "cursor_id", 0)
    ):
        return False
    pending = _PendingCursorOperation(
        telemetry, "", "", None, None, otel_context.get_current(), scope, started
    )
    result._motor_otel_op = pending
    weakref.finalize(result, _finish_abandoned, pending)
    return True


def _pending_scope(cursor: Any) -> tuple[_PendingCursorOperation | None, OperationScope | None]:
    pending: _PendingCursorOperation | None = getattr(cursor, "_motor_otel_op", None)
    if pending is None or CURRENT_OPERATION.get() is not None or not is_instrumentation_enabled():
        return None, None  # (the listener trusts a current operation to have checked that)
    with guard("operations.cursor_fetch"):
        return pending, pending.begin()
    return pending, None


def _after_refresh(
    cursor: Any, pending: _PendingCursorOperation, exc: BaseException | None
) -> None:
    with guard("operations.cursor_done"):
        if exc is not None or not cursor.alive or not cursor.cursor_id:
            pending.finish(exc)


def _wrap_refresh_sync(original: Callable[..., Any]) -> Callable[..., Any]:
    """PyMongo's sync ``Cursor._refresh``: the initial find and each getMore."""

    @functools.wraps(original)
    def _refresh(self: Any) -> Any:
        pending, scope = _pending_scope(self)
        if pending is None or scope is None:
            return original(self)
        try:
            with activated(scope):
                result = original(self)
        except BaseException as exc:
            _after_refresh(self, pending, exc)
            raise
        _after_refresh(self, pending, None)
        return result

    return _refresh


def _wrap_refresh_async(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def _refresh(self: Any) -> Any:
        pending, scope = _pending_scope(self)
        if pending is None or scope is None:
            return await original(self)
        try:
            with activated(scope):
                result = await original(self)
        except BaseException as exc:
            _after_refresh(self, pending, exc)
            raise
        _after_refresh(self, pending, None)
        return result

    return _refresh


def _wrap_get_more(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _get_more(self: Any) -> Any:
        pending: _PendingCursorOperation | None = getattr(self, "_motor_otel_op", None)
        if pending is None or not is_instrumentation_enabled():
            return original(self)
        scope = None
        with guard("operations.cursor_fetch"):
            scope = pending.begin()
        if scope is None:
            return original(self)
        try:
            with activated(scope):
                future = original(self)
        except BaseException as exc:
            with guard("operations.finish"):
                pending.finish(exc)
            raise

        def fetched(fut: Any) -> None:
            with guard("operations.cursor_done"):
                exc = None if fut.cancelled() else fut.exception()
                if exc is not None or fut.cancelled() or _cursor_finished(self):
                    pending.finish(exc)

        future.add_done_callback(fetched)
        return future

    return _get_more


def _cursor_finished(cursor: Any) -> bool:
    try:
        return bool(cursor._killed())
    except Exception:
        return not getattr(cursor, "alive", False)


def _closed(cursor: Any) -> None:
    pending: _PendingCursorOperation | None = getattr(cursor, "_motor_otel_op", None)
    if pending is not None:
        with guard("operations.cursor_close"):
            pending.finish(None)


def _wrap_close(original: Callable[..., Any]) -> Callable[..., Any]:
    """A cursor closed before it is exhausted ends its operation span there."""

    @functools.wraps(original)
    async def close(self: Any) -> Any:
        try:
            return await original(self)
        finally:
            _closed(self)

    return close


def _wrap_close_sync(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def close(self: Any) -> Any:
        try:
            return original(self)
        finally:
            _closed(self)

    return close


_INHERITED = object()


class Patcher:
    """Replaces class attributes and puts every one of them back."""

    def __init__(self) -> None:
        self._saved: list[tuple[type, str, Any]] = []

    def replace(self, cls: type, name: str, value: Any) -> None:
        self._saved.append((cls, name, cls.__dict__.get(name, _INHERITED)))
        setattr(cls, name, value)

    def extend(self, other: Patcher) -> None:
        """Take over another patcher's saved originals (restored last-in, first-out)."""
        self._saved.extend(other._saved)
        other._saved = []

    def restore(self) -> None:
        while self._saved:
            cls, name, value = self._saved.pop()
            if value is _INHERITED:
                delattr(cls, name)
            else:
                setattr(cls, name, value)


def patch_motor(telemetry_of: Callable[[Any], Telemetry | None]) -> Patcher:
    """Operation spans on Motor's asyncio collection, database, client and cursor classes.

    ``telemetry_of(obj)`` picks the instrumentation scope for the object's client (or ``None``
    to leave that call alone), so global and per-client instrumentation share the patch.
    """
    from motor import core
    from motor.motor_asyncio import (
        AsyncIOMotorClient,
        AsyncIOMotorCollection,
        AsyncIOMotorDatabase,
    )

    patcher = Patcher()
    for cls, table, target, coll_arg in (
        (AsyncIOMotorCollection, COLLECTION_OPERATIONS, _collection_target, False),
        (AsyncIOMotorDatabase, DATABASE_OPERATIONS, _database_target, True),
        (AsyncIOMotorClient, CLIENT_OPERATIONS, _client_target, False),
    ):
        for method, operation in table.items():
            if hasattr(cls, method):
                arg = coll_arg and method in ("create_collection", "drop_collection")
                patcher.replace(
                    cls,
                    method,
                    _wrap_async(telemetry_of, getattr(cls, method), operation, target, arg),
                )
    for method, operation in COLLECTION_CURSORS.items():
        if hasattr(AsyncIOMotorCollection, method):
            original = getattr(AsyncIOMotorCollection, method)
            patcher.replace(
                AsyncIOMotorCollection,
                method,
                _wrap_cursor_factory(telemetry_of, original, operation),
            )
    for cursor_cls in (core.AgnosticBaseCursor, core.AgnosticLatentCommandCursor):
        patcher.replace(cursor_cls, "_get_more", _wrap_get_more(cursor_cls.__dict__["_get_more"]))
    patcher.replace(
        core.AgnosticBaseCursor, "close", _wrap_close(core.AgnosticBaseCursor.__dict__["close"])
    )
    return patcher


def patch_pymongo(telemetry_of: Callable[[Any], Telemetry | None]) -> Patcher:
    """Operation spans on PyMongo's async and sync collection, database and client classes."""
    import pymongo
    from pymongo.asynchronous.collection import AsyncCollection
    from pymongo.asynchronous.command_cursor import AsyncCommandCursor
    from pymongo.asynchronous.cursor import AsyncCursor
    from pymongo.asynchronous.database import AsyncDatabase
    from pymongo.synchronous.collection import Collection
    from pymongo.synchronous.command_cursor import CommandCursor
    from pymongo.synchronous.cursor import Cursor
    from pymongo.synchronous.database import Database

    patcher = Patcher()
    for wrap, classes in (
        (_wrap_async, (AsyncCollection, AsyncDatabase, pymongo.AsyncMongoClient)),
        (_wrap_sync, (Collection, Database, pymongo.MongoClient)),
    ):
        coll_cls, db_cls, client_cls = classes
        for cls, table, target, coll_arg in (
            (coll_cls, COLLECTION_OPERATIONS, _collection_target, False),
            (db_cls, DATABASE_OPERATIONS, _database_target, True),
            (client_cls, CLIENT_OPERATIONS, _client_target, False),
        ):
            for method, operation in table.items():
                if hasattr(cls, method):
                    arg = coll_arg and method in ("create_collection", "drop_collection")
                    original = getattr(cls, method)
                    patcher.replace(
                        cls, method, wrap(telemetry_of, original, operation, target, arg)
                    )
        for method in ("aggregate", "list_indexes"):  # run their command before returning
            operation = COLLECTION_CURSORS[method]
            original = getattr(coll_cls, method)
            patcher.replace(
                coll_cls, method, wrap(telemetry_of, original, operation, _collection_target, False)
            )
        patcher.replace(coll_cls, "find", _wrap_cursor_factory(telemetry_of, coll_cls.find, "find"))
    patcher.replace(AsyncCursor, "_refresh", _wrap_refresh_async(AsyncCursor._refresh))
    patcher.replace(Cursor, "_refresh", _wrap_refresh_sync(Cursor._refresh))
    for async_cls, sync_cls in ((AsyncCursor, Cursor), (AsyncCommandCursor, CommandCursor)):
        patcher.replace(async_cls, "close", _wrap_close(async_cls.close))
        patcher.replace(sync_cls, "close", _wrap_close_sync(sync_cls.close))
    # aggregate, list_*: their getMores come after the method has returned the cursor
    patcher.replace(
        AsyncCommandCursor, "_refresh", _wrap_refresh_async(AsyncCommandCursor._refresh)
    )
    patcher.replace(CommandCursor, "_refresh", _wrap_refresh_sync(CommandCursor._refresh))
    return patcher
