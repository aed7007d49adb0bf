"""Transaction spans: the instrumented Motor session.

One ``transaction`` span per attempt (started by ``start_transaction``, ended by the commit or
abort that settles it) and one ``withTransaction`` span per ``with_transaction`` call. The
attempt is registered with the correlator under the session's lsid + txnNumber, which is how
commands sent from anywhere find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from motor.motor_asyncio import AsyncIOMotorClientSession
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from pymongo.errors import PyMongoError

from motor_otel import attributes as A
from motor_otel._guard import call_hook, guard
from motor_otel.correlation import Attempt, Correlator, Telemetry
from motor_otel.events import AttemptInfo, Outcome, TransactionSummary
from motor_otel.operations import error_labels, operation_span, record_exception

T = TypeVar("T")

TTE = "TransientTransactionError"
UTCR = "UnknownTransactionCommitResult"

# The convenient transactions API's limits (transactions-convenient-api.md), as PyMongo has them.
WITH_TRANSACTION_TIME_LIMIT = 120.0
BACKOFF_INITIAL = 0.005
BACKOFF_MAX = 0.5

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True, eq=False)
class _WithTransaction:
    """State of one ``with_transaction`` call, for its span and summary."""

    span: Span
    started: float
    attempts: int = 0
    commit_attempts: int = 0
    labels: list[str] = field(default_factory=list)
    last_outcome: Outcome | None = None
    last_commit_error: BaseException | None = None


def _timestamp_attributes(session: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    cluster = session.cluster_time
    if cluster is not None:
        value = A.timestamp_to_int(cluster.get("clusterTime"))
        if value is not None:
            attrs[A.CLUSTER_TIME] = value
    op_time = A.timestamp_to_int(session.operation_time)
    if op_time is not None:
        attrs[A.OPERATION_TIME] = op_time
    return attrs


def _option_attributes(
    read_concern: Any, write_concern: Any, read_preference: Any, max_commit_time_ms: Any
) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if read_concern is not None and getattr(read_concern, "level", None):
        attrs[A.TXN_READ_CONCERN] = str(read_concern.level)
    if write_concern is not None and getattr(write_concern, "document", None):
        attrs[A.TXN_WRITE_CONCERN] = ",".join(f"{k}={v}" for k, v in write_concern.document.items())
    if read_preference is not None:
        attrs[A.TXN_READ_PREFERENCE] = str(getattr(read_preference, "mongos_mode", read_preference))
    if max_commit_time_ms is not None:
        attrs[A.TXN_MAX_COMMIT_TIME_MS] = int(max_commit_time_ms)
    return attrs


def _add_labels(target: list[str], labels: list[str]) -> None:
    for label in labels:
        if label not in target:
            target.append(label)


def _tell(t: Telemetry, span: Span, method: str, fact: object) -> None:
    """Hand a fact to every observer with ``span`` current, so log lines carry its ids."""
    with trace.use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    ):
        for observer in t.observers:
            with guard(f"observer.{method}"):
                getattr(observer, method)(fact)


def _forget(correlator: Correlator, lsid: str) -> None:
    correlator.forget_session(lsid)


class InstrumentedAsyncIOMotorClientSession(AsyncIOMotorClientSession):
    """A Motor session whose transactions are traced.

    A subclass, so ``isinstance(s, AsyncIOMotorClientSession)`` and type hints keep working; the
    name ends in ``MotorClientSession`` because Motor unwraps ``session=`` by that suffix.
    """

    def __init__(self, delegate: Any, motor_client: Any, telemetry: Telemetry | None = None):
        super().__init__(delegate, motor_client)
        self._motor_otel = telemetry
        self._motor_otel_attempt: Attempt | None = None
        self._motor_otel_wt: _WithTransaction | None = None
        self._motor_otel_lsid: str | None = None
        self._motor_otel_tx_start = 0.0
        self._motor_otel_tx_labels: list[str] = []
        self._motor_otel_tx_commits = 0
        self._motor_otel_attempt_commits = 0
        self.clock: Clock = time.monotonic
        self.sleep: Sleep = asyncio.sleep
        if telemetry is not None:
            lsid = A.lsid_to_str(delegate.session_id)
            self._motor_otel_lsid = lsid
            if lsid is not None:
                weakref.finalize(self, _forget, telemetry.correlator, lsid)

    # -- attempts ------------------------------------------------------------------------
    def _tracing(self) -> Telemetry | None:
        t = self._motor_otel
        if t is None or not (t.enabled and t.settings.enabled):
            return None
        return t

    def start_transaction(
        self,
        read_concern: Any = None,
        write_concern: Any = None,
        read_preference: Any = None,
        max_commit_time_ms: Any = None,
    ) -> Any:
        context = super().start_transaction(
            read_concern, write_concern, read_preference, max_commit_time_ms
        )
        t = self._tracing()
        if t is not None:
            with guard("session.start_transaction"):
                self._open_attempt(
                    t,
                    _option_attributes(
                        read_concern, write_concern, read_preference, max_commit_time_ms
                    ),
                )
        return context

    def _open_attempt(self, t: Telemetry, options: dict[str, Any]) -> None:
        if self._motor_otel_attempt is not None:  # an unsettled commit: nobody retried it
            self._close_attempt("failed", None)
        wt = self._motor_otel_wt
        self._motor_otel_attempt_commits = 0
        if wt is not None:
            wt.attempts += 1
            number = wt.attempts
            parent = trace.set_span_in_context(wt.span)
            if number > 1:
                self._notify("transaction_retry", wt.labels, wt.span)
        else:
            number = 1
            parent = None
            self._motor_otel_tx_start = time.perf_counter()
            self._motor_otel_tx_labels = []
            self._motor_otel_tx_commits = 0
        lsid = self._motor_otel_lsid or ""
        txn_number = int(self.delegate._transaction_id)
        attrs: dict[str, Any] = {
            A.DB_SYSTEM_NAME: A.MONGODB,
            A.TXN_ATTEMPT: number,
            A.MONGODB_LSID: lsid,
            A.MONGODB_TXN_NUMBER: txn_number,
            **options,
        }
        span = t.tracer.start_span(
            "transaction", context=parent, kind=SpanKind.CLIENT, attributes=attrs
        )
        attempt = Attempt(span, lsid, txn_number, number)
        t.correlator.open_attempt(attempt)
        self._motor_otel_attempt = attempt
        call_hook("transaction_hook", t.settings.transaction_hook, span, self)
        if t.observers:
            _tell(
                t,
                span,
                "transaction_started",
                AttemptInfo(number, lsid, txn_number, attributes=attrs),
            )

    def _close_attempt(self, outcome: Outcome, exc: BaseException | None) -> None:
        attempt, self._motor_otel_attempt = self._motor_otel_attempt, None
        t = self._motor_otel
        if attempt is None or t is None:
            return
        t.correlator.close_attempt(attempt.lsid, attempt.txn_number)
        span = attempt.span
        labels = list(attempt.error_labels)
        if exc is not None:
            _add_labels(labels, error_labels(exc))
            record_exception(span, exc)
        attrs = {A.TXN_OUTCOME: outcome, **_timestamp_attributes(self)}
        if labels:
            attrs[A.ERROR_LABELS] = labels
        span.set_attributes(attrs)
        span.end()
        wt = self._motor_otel_wt
        if wt is not None:
            wt.last_outcome = outcome
            _add_labels(wt.labels, labels)
        else:
            _add_labels(self._motor_otel_tx_labels, labels)
            self._emit_summary(
                t,
                span,
                outcome,
                1,
                self._motor_otel_tx_commits,
                self._motor_otel_tx_labels,
                time.perf_counter() - self._motor_otel_tx_start,
                exc,
            )

    def _emit_summary(
        self,
        t: Telemetry,
        span: Span,
        outcome: Outcome,
        attempts: int,
        commits: int,
        labels: list[str],
        duration: float,
        exc: BaseException | None,
    ) -> None:
        if not t.observers:
            return
        summary = TransactionSummary(
            outcome=outcome,
            duration_s=duration,
            attempts=attempts,
            commit_attempts=commits,
            lsid=self._motor_otel_lsid,
            txn_number=int(self.delegate._transaction_id),
            error_labels=tuple(labels),
            error_type=type(exc).__name__ if exc is not None else None,
        )
        _tell(t, span, "transaction_ended", summary)

    # -- commit / abort ------------------------------------------------------------------
    async def commit_transaction(self) -> None:
        t = self._tracing()
        attempt = self._motor_otel_attempt
        if t is None or attempt is None:
            await super().commit_transaction()
            return
        wt = self._motor_otel_wt
        if wt is not None:
            wt.commit_attempts += 1
        else:
            self._motor_otel_tx_commits += 1
        if self._motor_otel_attempt_commits:
            self._notify("commit_retry", attempt.error_labels, attempt.span)
        self._motor_otel_attempt_commits += 1
        try:
            with operation_span(t, "commitTransaction", db="admin", collection=None, session=self):
                await super().commit_transaction()
        except BaseException as exc:
            if wt is not None:
                wt.last_commit_error = exc
            with guard("session.commit_failed"):
                labels = error_labels(exc)
                _add_labels(attempt.error_labels, labels)
                if UTCR not in labels:  # a commit that might be retried keeps its attempt open
                    self._close_attempt("failed", exc)
                else:
                    record_exception(attempt.span, exc)
            raise
        with guard("session.committed"):
            self._close_attempt("committed", None)

    async def abort_transaction(self) -> None:
        t = self._tracing()
        if t is None or self._motor_otel_attempt is None:
            await super().abort_transaction()
            return
        try:
            with operation_span(t, "abortTransaction", db="admin", collection=None, session=self):
                await super().abort_transaction()
        finally:
            with guard("session.aborted"):
                self._close_attempt("aborted", None)

    async def end_session(self) -> None:
        # Motor's end_session aborts through PyMongo directly: abort through self so it is traced.
        if self._motor_otel_attempt is not None and self.delegate.in_transaction:
            with contextlib.suppress(PyMongoError):  # as PyMongo's own end_session does
                await self.abort_transaction()
        with guard("session.end"):
            self._close_attempt("failed", None)
            if self._motor_otel is not None and self._motor_otel_lsid is not None:
                self._motor_otel.correlator.forget_session(self._motor_otel_lsid)
        await super().end_session()

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        await self.end_session()

    # -- with_transaction ----------------------------------------------------------------
    async def with_transaction(
        self,
        coro: Callable[[Any], Coroutine[Any, Any, T]],
        read_concern: Any = None,
        write_concern: Any = None,
        read_preference: Any = None,
        max_commit_time_ms: Any = None,
    ) -> T:
        t = self._tracing()
        if t is None or self._motor_otel_wt is not None:
            return await super().with_transaction(
                coro, read_concern, write_concern, read_preference, max_commit_time_ms
            )
        mode = t.settings.with_transaction
        span = t.tracer.start_span(
            "withTransaction",
            kind=SpanKind.CLIENT,
            attributes={A.DB_SYSTEM_NAME: A.MONGODB, A.TXN_MODE: mode},
        )
        wt = _WithTransaction(span, time.perf_counter())
        self._motor_otel_wt = wt
        callback = self._traced_callback(coro)
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False):
                if mode == "spec":
                    result = await self._spec_loop(
                        callback, read_concern, write_concern, read_preference, max_commit_time_ms
                    )
                else:
                    result = await super().with_transaction(
                        callback, read_concern, write_concern, read_preference, max_commit_time_ms
                    )
        except BaseException as exc:
            with guard("session.with_transaction_failed"):
                self._finish_with_transaction(t, wt, exc)
            raise
        with guard("session.with_transaction_done"):
            self._finish_with_transaction(t, wt, None)
        return result

    def _traced_callback(
        self, coro: Callable[[Any], Coroutine[Any, Any, T]]
    ) -> Callable[[Any], Coroutine[Any, Any, T]]:
        """Run the user's callback with the current attempt span current, so its spans nest."""

        async def callback(session: Any) -> T:
            attempt = self._motor_otel_attempt
            if attempt is None:
                return await coro(session)
            with trace.use_span(attempt.span, end_on_exit=False):
                return await coro(session)

        return callback

    def _finish_with_transaction(
        self, t: Telemetry, wt: _WithTransaction, exc: BaseException | None
    ) -> None:
        self._motor_otel_wt = None
        pending = self._motor_otel_attempt
        if pending is not None:  # e.g. Motor gave up on an unknown commit result
            self._motor_otel_wt = wt
            self._close_attempt("failed", None)
            self._motor_otel_wt = None
        outcome: Outcome = "failed" if exc is not None else (wt.last_outcome or "committed")
        span = wt.span
        attrs: dict[str, Any] = {
            A.TXN_ATTEMPTS: wt.attempts,
            A.TXN_COMMIT_ATTEMPTS: wt.commit_attempts,
            A.TXN_OUTCOME: outcome,
            **_timestamp_attributes(self),
        }
        if exc is not None:
            _add_labels(wt.labels, error_labels(exc))
            record_exception(span, exc)
            labels = error_labels(exc)
            if (
                t.settings.with_transaction == "driver"
                and exc is wt.last_commit_error
                and (TTE in labels or UTCR in labels)
            ):
                span.add_event("commit_not_retried", {A.ERROR_LABELS: labels})
        if wt.labels:
            attrs[A.ERROR_LABELS] = list(wt.labels)
        span.set_attributes(attrs)
        span.end()
        self._emit_summary(
            t,
            span,
            outcome,
            wt.attempts,
            wt.commit_attempts,
            wt.labels,
            time.perf_counter() - wt.started,
            exc,
        )

    async def _spec_loop(
        self,
        callback: Callable[[Any], Coroutine[Any, Any, T]],
        read_concern: Any,
        write_concern: Any,
        read_preference: Any,
        max_commit_time_ms: Any,
    ) -> T:
        """The documented loop (transactions-convenient-api.md), as PyMongo implements it."""
        start = self.clock()

        def within_limit(backoff: float = 0.0) -> bool:
            return self.clock() + backoff - start < WITH_TRANSACTION_TIME_LIMIT

        retry = 0
        last_error: BaseException | None = None
        while True:
            if retry:
                backoff = random.random() * min(BACKOFF_INITIAL * (1.5**retry), BACKOFF_MAX)
                if not within_limit(backoff):
                    assert last_error is not None
                    raise _timeout_error(last_error) from last_error
                await self.sleep(backoff)
            retry += 1
            self.start_transaction(read_concern, write_concern, read_preference, max_commit_time_ms)
            try:
                ret = await callback(self)
            except BaseException as exc:
                last_error = exc
                if self.delegate.in_transaction:
                    await self.abort_transaction()
                if isinstance(exc, PyMongoError) and exc.has_error_label(TTE):
                    if within_limit():
                        continue
                    raise _timeout_error(exc) from exc
                raise
            if not self.delegate.in_transaction:
                return ret  # the callback committed or aborted itself
            while True:
                try:
                    await self.commit_transaction()
                except PyMongoError as exc:
                    last_error = exc
                    if exc.has_error_label(UTCR) and not _max_time_expired(exc):
                        if not within_limit():
                            raise _timeout_error(exc) from exc
                        continue
                    if exc.has_error_label(TTE):
                        if not within_limit():
                            raise _timeout_error(exc) from exc
                        break
                    raise
                return ret

    def _notify(self, what: str, labels: list[str], span: Span) -> None:
        t = self._motor_otel
        if t is None or not t.observers:
            return
        wt = self._motor_otel_wt
        info = AttemptInfo(
            wt.attempts if wt is not None else 1,
            self._motor_otel_lsid,
            int(self.delegate._transaction_id),
            error_labels=tuple(labels),
        )
        _tell(t, span, what, info)


def _max_time_expired(exc: PyMongoError) -> bool:
    return getattr(exc, "code", None) == 50


def _timeout_error(error: BaseException) -> BaseException:
    """What PyMongo raises when the 120 s limit ends the loop."""
    try:
        from pymongo.client_session_shared import _make_timeout_error
    except ImportError:  # older PyMongo re-raises the last error itself
        return error
    return _make_timeout_error(error)
