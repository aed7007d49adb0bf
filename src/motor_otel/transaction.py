"""The transaction story: attempts, ``withTransaction`` calls and the spec-mode loop.

One ``transaction`` span per attempt (opened by ``start_transaction``, ended by the commit or
abort that settles it) and one ``withTransaction`` span per ``with_transaction`` call. The
attempt is registered with the correlator under the session's lsid + txnNumber, which is how
commands sent from anywhere find it. The logic lives once, in :class:`TransactionTracer`; the
three session classes of :mod:`motor_otel.session` only wire it around their drivers' calls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextvars import Token
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from pymongo.errors import PyMongoError

from motor_otel import attributes as A
from motor_otel import errors as E
from motor_otel._guard import call_hook, guard, report
from motor_otel.coexistence import lend_transaction_span
from motor_otel.correlation import Attempt, Telemetry
from motor_otel.events import AttemptInfo, AttemptTimes, Outcome, RetryCause, TransactionSummary
from motor_otel.kept import BufferedSpan, KeptStory, buffered, buffered_root, promote, start_span
from motor_otel.operations import (
    error_labels,
    exception_attributes,
    operation_span,
    record_exception,
)
from motor_otel.timing import AttemptTimer, Totals, attempt_attributes

T = TypeVar("T")

TTE = "TransientTransactionError"
UTCR = "UnknownTransactionCommitResult"

# The convenient transactions API's limits (transactions-convenient-api.md), as PyMongo has them.
WITH_TRANSACTION_TIME_LIMIT = 120.0
BACKOFF_INITIAL = 0.005
BACKOFF_MAX = 0.5

Clock = Callable[[], float]
_Token = Token[otel_context.Context]
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
    last_attempt_end: float | None = None
    backoff_ms: float = 0.0  # summed over retries
    lost_s: float = 0.0  # time in attempts that did not commit
    causes: list[RetryCause | None] = field(default_factory=list)  # one per such attempt
    totals: Totals = field(default_factory=Totals)  # server, app and write-window time summed
    silent: bool = False  # nothing under its span records: its attempts are stand-ins too
    story: KeptStory | None = None  # its span is a buffered root, kept if a rule matches


@dataclass(slots=True, eq=False)
class _SessionTrace:
    """Everything an instrumented session remembers about its transactions."""

    telemetry: Telemetry | None
    session: Any  # the PyMongo session (Motor's delegate, or the session itself)
    lsid: str | None
    attempt: Attempt | None = None
    wt: _WithTransaction | None = None
    tx_start: float = 0.0
    tx_labels: list[str] = field(default_factory=list)
    tx_commits: int = 0
    attempt_commits: int = 0
    story: KeptStory | None = None  # the buffer of a lone transaction (or, briefly, a call's)
    untold: list[tuple[Span, AttemptTimes]] | None = None  # attempts that ended buffered
    owner: object = field(default_factory=object)  # marks this session's attempts
    finalizer: weakref.finalize[Any, Any] | None = None  # forgets them if never ended


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


def _tell(t: Telemetry, span: Span, method: str, fact: object) -> None:
    """Hand a fact to every observer with ``span`` current, so log lines carry its ids (and
    metric exemplars its trace, ended or not: a summary comes after its span's end); a span
    that is not sampled is made current only for logs."""
    token = None
    if t.attribute_observers or span.is_recording() or span.get_span_context().trace_flags.sampled:
        token = otel_context.attach(trace.set_span_in_context(span))
    try:
        for observer in t.observers:
            try:
                getattr(observer, method)(fact)
            except Exception as exc:
                report(f"observer.{method}", exc)
    finally:
        if token is not None:
            otel_context.detach(token)


class TransactionTracer:
    """Span bookkeeping shared by every instrumented session class; no I/O here."""

    __slots__ = ()

    _otel: _SessionTrace
    _motor_loop = False  # Motor's own with_transaction loop, which does not retry commits

    def _otel_init(self, telemetry: Telemetry | None, pymongo_session: Any) -> None:
        # One attribute, set past __slots__: PyMongo's sessions are re-classed in place.
        object.__setattr__(self, "_otel", _SessionTrace(telemetry, pymongo_session, None))

    def _session_lsid(self) -> str:
        """The lsid, read when the first transaction starts, not at creation.

        Reading ``session_id`` takes a server session from the pool; PyMongo does that lazily, at
        the first command, and so must we (the fault matrix caught the difference).
        """
        t = self._otel.telemetry
        if self._otel.lsid is None and t is not None:
            self._otel.lsid = A.lsid_to_str(self._otel.session.session_id)
            if self._otel.lsid is not None:  # must not reference self, or it never runs
                self._otel.finalizer = weakref.finalize(
                    self, _forget_session, t, self._otel.lsid, self._otel.owner
                )
        return self._otel.lsid or ""

    def _txn_number(self) -> int | None:
        """The session's txnNumber; None once it has ended (PyMongo then has no server session)."""
        session = self._otel.session
        return None if session.has_ended else int(session._transaction_id)

    def _tracing(self) -> Telemetry | None:
        t = self._otel.telemetry
        if t is None or not (t.enabled and t.settings.enabled):
            return None
        return t

    # -- attempts ------------------------------------------------------------------------
    def _transaction_started(self, *options: Any) -> None:
        t = self._tracing()
        if t is not None:
            with guard("session.start_transaction"):
                self._open_attempt(t, options)

    def _open_attempt(self, t: Telemetry, options: tuple[Any, ...]) -> None:
        if self._otel.attempt is not None:  # an unsettled commit: nobody retried it
            self._close_attempt("failed", None)
        started = t.clock()
        wt = self._otel.wt
        self._otel.attempt_commits = 0
        backoff: dict[str, Any] = {}
        if wt is not None:
            wt.attempts += 1
            number = wt.attempts
            parent_span = wt.span
            if wt.last_attempt_end is not None:  # the driver's backoff sleep, as it happened
                waited = round((started - wt.last_attempt_end) * 1000.0, 3)
                wt.backoff_ms += waited
                backoff[A.TXN_BACKOFF_MS] = waited
            if number > 1:
                if wt.story is not None and t.settings.keep.retried:
                    self._keep(t, wt.span, "retried")  # before the retry's metric point
                self._notify("transaction_retry", wt.labels, wt.span, backoff, _last_cause(wt))
        else:
            number = 1
            parent_span = trace.get_current_span()
            self._otel.tx_start = started
            self._otel.tx_labels = []
            self._otel.tx_commits = 0
        lsid = self._session_lsid()
        txn_number = int(self._otel.session._transaction_id)
        # Decided once per attempt: a parent that does not record and whose children would not
        # either stands in for the attempt's span, and nothing below it builds anything.
        silent = wt.silent if wt is not None else t.decider.children_dropped(parent_span)
        # A lone transaction under a trace that is not sampled is buffered when keep rules apply.
        keep = wt is None and not parent_span.is_recording() and t.keeping()
        attrs: dict[str, Any] = {}
        if not silent or keep or t.attribute_observers:
            attrs = {
                A.DB_SYSTEM_NAME: A.MONGODB,
                A.TXN_ATTEMPT: number,
                A.MONGODB_LSID: lsid,
                A.MONGODB_TXN_NUMBER: txn_number,
                **_option_attributes(*options),
                **backoff,
            }
        span: Span
        if keep and silent:
            span = self._buffered_root(parent_span, "transaction", attrs)
            silent = False
        elif silent:
            span = parent_span
        else:
            span = start_span(
                t.tracer,
                "transaction",
                context=trace.set_span_in_context(parent_span) if wt is not None else None,
                attributes=attrs,
            )
            if keep and not span.is_recording():  # a root the head sampler did not sample
                span = self._buffered_root(span, "transaction", attrs)
        recording = span.is_recording()
        attempt = Attempt(
            span,
            lsid,
            txn_number,
            number,
            attributes=attrs,
            owner=self._otel.owner,
            recording=recording,
            silent=silent or (not recording and t.decider.children_dropped(span)),
            started=started,
            timer=AttemptTimer(started),
        )
        t.correlator.open_attempt(attempt)
        t.open_transactions.opened(self._otel.owner, started)
        self._otel.attempt = attempt
        if t.native:  # PyMongo traces this client: our attempt is its transaction span too
            lend_transaction_span(self._otel.session, span)
        if recording:
            call_hook("transaction_hook", t.settings.transaction_hook, span, self)
        if t.observed():
            _tell(
                t,
                span,
                "transaction_started",
                AttemptInfo(number, lsid, txn_number, attributes=attrs),
            )

    def _close_attempt(self, outcome: Outcome, exc: BaseException | None) -> None:
        attempt, self._otel.attempt = self._otel.attempt, None
        t = self._otel.telemetry
        if attempt is None or t is None:
            return
        now = t.clock()
        t.correlator.close_attempt(attempt.lsid, attempt.txn_number)
        t.open_transactions.closed(self._otel.owner)
        times = attempt.timer.finish(now, outcome, t.settings.long_transaction_ms / 1000.0)
        span = attempt.span
        labels = list(attempt.error_labels)
        if exc is not None:
            A.add_labels(labels, error_labels(exc))
        unsettled = False
        if exc is None and outcome != "committed" and attempt.unsettled is not None:
            exc, unsettled = attempt.unsettled, True  # nobody retried the unknown commit
        failure: dict[str, str] = {}
        if exc is not None:
            if attempt.recording:  # an unsettled commit's event is already there
                failure = record_exception(span, exc, event=not unsettled)
            elif t.attribute_observers:
                failure = E.error_attributes(exc)
        attrs: dict[str, Any] = {A.TXN_OUTCOME: outcome, **failure}
        if attempt.recording or t.attribute_observers:
            attrs.update(_timestamp_attributes(self._otel.session))
            attrs.update(attempt_attributes(times))
        if labels:
            attrs[A.ERROR_LABELS] = labels
        if outcome != "committed" and attempt.retry_cause is not None:
            attrs[A.TXN_RETRY_CAUSE] = attempt.retry_cause.summary
        if attempt.recording:
            if times.long:  # the write window passed long_transaction_ms
                span.add_event("transaction.long", attempt_attributes(times))
            span.set_attributes(attrs)
            span.end()
        if t.observed():
            if t.attribute_observers:
                times = dataclasses.replace(times, attributes={**attempt.attributes, **attrs})
            if buffered(span):  # told once kept (in the kept trace), or when its story ends
                if self._otel.untold is None:
                    self._otel.untold = []
                self._otel.untold.append((span, times))
            else:
                _tell(t, span, "attempt_ended", times)
        wt = self._otel.wt
        if wt is not None:
            wt.last_outcome = outcome
            wt.last_attempt_end = now
            wt.totals.add(times)
            A.add_labels(wt.labels, labels)
            _count_lost_attempt(wt, attempt, outcome)
        else:
            A.add_labels(self._otel.tx_labels, labels)
            story = self._otel.story
            if story is not None:  # a lone transaction's buffer: kept, or dropped now
                self._otel.story = None
                failed = outcome == "failed" or (
                    outcome == "aborted" and (attempt.failed_operations > 0 or story.errors > 0)
                )
                self._settle(t, span, story, failed, False, now - self._otel.tx_start)
            self._emit_summary(
                t,
                span,
                outcome,
                1,
                self._otel.tx_commits,
                self._otel.tx_labels,
                now - self._otel.tx_start,
                exc,
                {**attempt.attributes, **attrs},
            )

    def _settle(
        self,
        t: Telemetry,
        span: Span,
        story: KeptStory,
        failed: bool,
        not_retried: bool,
        duration: float,
    ) -> None:
        """A buffered transaction ended: kept by the first rule that matches, else dropped; either
        way its buffer is emptied and the points it held are told."""
        rules = t.settings.keep
        if rules.failed and failed:
            self._keep(t, span, "failed")
        elif rules.commit_not_retried and not_retried:
            self._keep(t, span, "commit_not_retried")
        elif rules.slow_ms is not None and duration * 1000.0 > rules.slow_ms:
            self._keep(t, span, f"slow:{rules.slow_ms:g}")
        story.close(span)
        self._tell_untold(t)

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
        attributes: dict[str, Any],
        wasted_s: float = 0.0,
        cause: RetryCause | None = None,
    ) -> None:
        if not t.observed():
            return
        summary = TransactionSummary(
            outcome=outcome,
            duration_s=duration,
            attempts=attempts,
            commit_attempts=commits,
            lsid=self._otel.lsid,
            txn_number=self._txn_number(),
            error_labels=tuple(labels),
            error_type=E.error_type(exc) if exc is not None else None,
            attributes=attributes,
            wasted_s=wasted_s,
            retry_cause=cause,
        )
        _tell(t, span, "transaction_ended", summary)

    def _notify(
        self,
        what: str,
        labels: list[str],
        span: Span,
        attributes: dict[str, Any] | None = None,
        cause: RetryCause | None = None,
        error_type: str | None = None,
    ) -> None:
        t = self._otel.telemetry
        if t is None or not t.observed():
            return
        wt = self._otel.wt
        info = AttemptInfo(
            wt.attempts if wt is not None else 1,
            self._otel.lsid,
            self._txn_number(),
            error_labels=tuple(labels),
            attributes=attributes or {},
            retry_cause=cause,
            error_type=error_type,
        )
        _tell(t, span, what, info)

    # -- commit / abort bookkeeping ------------------------------------------------------
    @contextlib.contextmanager
    def _committing(self, t: Telemetry, attempt: Attempt) -> Iterator[None]:
        """Around one ``commit_transaction`` call: counts, retry facts, the attempt's end."""
        wt = self._otel.wt
        if wt is not None:
            wt.commit_attempts += 1
        else:
            self._otel.tx_commits += 1
        if t.native:  # else PyMongo opens a span of its own for a commit retried by hand
            lend_transaction_span(self._otel.session, attempt.span)
        if self._otel.attempt_commits:
            root = wt.span if wt is not None else attempt.span
            if t.settings.keep.retried and (wt.story if wt is not None else self._otel.story):
                self._keep(t, root, "retried")  # before the retry's metric point
            self._notify("commit_retry", attempt.error_labels, attempt.span)
        self._otel.attempt_commits += 1
        try:
            with operation_span(t, "commitTransaction", db="admin", collection=None, session=self):
                yield
        except BaseException as exc:
            if wt is not None:
                wt.last_commit_error = exc
            with guard("session.commit_failed"):
                labels = error_labels(exc)
                A.add_labels(attempt.error_labels, labels)
                if UTCR not in labels:  # a commit that might be retried keeps its attempt open
                    self._close_attempt("failed", exc)
                else:  # the event now; ERROR status only if no retry commits it after all
                    if attempt.recording:
                        attempt.span.add_event("exception", exception_attributes(exc))
                    attempt.unsettled = exc
            raise
        with guard("session.committed"):
            self._close_attempt("committed", None)

    @contextlib.contextmanager
    def _aborting(self, t: Telemetry) -> Iterator[None]:
        try:
            with operation_span(t, "abortTransaction", db="admin", collection=None, session=self):
                yield
        finally:
            with guard("session.aborted"):
                self._close_attempt("aborted", None)

    def _session_ending(self) -> None:
        with guard("session.end"):
            self._close_attempt("failed", None)
            state = self._otel
            if state.finalizer is not None:
                state.finalizer()  # forgets this session's attempts, once, and is then dead

    # -- with_transaction bookkeeping ----------------------------------------------------
    def _with_transaction_starting(self, t: Telemetry) -> tuple[_WithTransaction, _Token | None]:
        """The ``withTransaction`` span, made current for the driver's loop.

        Under a caller's span that does not record, and whose children would not either, that
        span stands in: nothing is started and it is already current. When keep rules apply
        (``motor_otel.kept``), the call is buffered instead, and its buffered root is not made
        current: the application's code sees the unsampled span it would see without us.
        """
        caller = trace.get_current_span()
        attrs = {A.DB_SYSTEM_NAME: A.MONGODB, A.TXN_MODE: t.settings.with_transaction}
        story = None
        if t.decider.children_dropped(caller):
            if not t.keeping():
                wt = _WithTransaction(caller, t.clock(), silent=True)
                self._otel.wt = wt
                return wt, None
            span: Span = self._buffered_root(caller, "withTransaction", attrs)
        else:
            span = t.tracer.start_span("withTransaction", kind=SpanKind.CLIENT, attributes=attrs)
            if not span.is_recording() and t.keeping():  # a root the head sampler did not sample
                span = self._buffered_root(span, "withTransaction", attrs)
        if buffered(span):
            story, self._otel.story = self._otel.story, None
        silent = story is None and t.decider.children_dropped(span)
        wt = _WithTransaction(span, t.clock(), silent=silent, story=story)
        self._otel.wt = wt
        if story is not None:  # not made current: the app keeps seeing its unsampled span
            return wt, None
        return wt, otel_context.attach(trace.set_span_in_context(span))

    def _buffered_root(self, stand_in: Span, name: str, attrs: dict[str, Any]) -> BufferedSpan:
        """Buffer this transaction (its story in ``_otel.story``) under a trace not sampled."""
        story = self._otel.story = KeptStory(stand_in.get_span_context())
        return buffered_root(story, name, attrs, stand_in.get_span_context())

    def _tell_untold(self, t: Telemetry) -> None:
        """Kept, or its story ended: the times of attempts that ended buffered go to the observers
        now, under their spans, which are the kept trace's when a rule matched (so exemplars and
        log lines point there)."""
        untold, self._otel.untold = self._otel.untold, None
        for span, times in untold or ():
            _tell(t, span, "attempt_ended", times)

    def _keep(self, t: Telemetry, root: Span, rule: str) -> None:
        """A keep rule matched: the buffered transaction becomes a kept trace, live from now."""
        if isinstance(root, BufferedSpan):
            with guard("kept.promote"):
                promote(t.tracer, root, rule)
            self._tell_untold(t)  # the attempts that ended buffered, in the kept trace now

    def _with_transaction_ended(
        self, t: Telemetry, wt: _WithTransaction, token: _Token | None, exc: BaseException | None
    ) -> None:
        if token is not None:
            otel_context.detach(token)
        try:
            self._finish_with_transaction(t, wt, exc)
        except Exception as error:
            report("session.with_transaction", error)

    def _enter_attempt(self) -> _Token | None:
        """Make the current attempt's span current while the user's callback runs.

        Not ``trace.use_span``: exceptions are ours to record, without document values.
        """
        attempt = self._otel.attempt
        if attempt is None or attempt.silent or buffered(attempt.span):  # not recorded (yet)
            return None
        return otel_context.attach(attempt.context)

    def _commit_not_retried(self, t: Telemetry, wt: _WithTransaction, exc: BaseException) -> bool:
        """A commit error escaped Motor's loop where the documented loop would have retried."""
        labels = error_labels(exc)
        return (
            t.settings.with_transaction == "driver"
            and self._motor_loop
            and exc is wt.last_commit_error
            and (TTE in labels or (UTCR in labels and getattr(exc, "code", None) != 50))
        )  # MaxTimeMSExpired is "unknown" too, but the documented loop never retries it

    def _finish_with_transaction(
        self, t: Telemetry, wt: _WithTransaction, exc: BaseException | None
    ) -> None:
        self._otel.wt = None
        if self._otel.attempt is not None:  # e.g. Motor gave up on an unknown commit
            self._otel.wt = wt
            self._close_attempt("failed", None)
            self._otel.wt = None
        outcome: Outcome = "failed" if exc is not None else (wt.last_outcome or "committed")
        span = wt.span
        not_retried = exc is not None and self._commit_not_retried(t, wt, exc)
        duration = t.clock() - wt.started
        if wt.story is not None:  # kept now if a rule matches: the end and its points go there
            self._settle(t, span, wt.story, exc is not None, not_retried, duration)
        recording = span.is_recording()
        attrs: dict[str, Any] = {
            A.TXN_ATTEMPTS: wt.attempts,
            A.TXN_COMMIT_ATTEMPTS: wt.commit_attempts,
            A.TXN_OUTCOME: outcome,
        }
        if recording or t.attribute_observers:
            attrs.update(_timestamp_attributes(self._otel.session))
            if wt.attempts:
                attrs.update(wt.totals.attributes())
        if wt.attempts > 1:
            attrs[A.TXN_BACKOFF_MS] = round(wt.backoff_ms, 3)
        if exc is not None:
            labels = error_labels(exc)
            A.add_labels(wt.labels, labels)
            if recording:
                attrs.update(record_exception(span, exc))
            elif t.attribute_observers:
                attrs.update(E.error_attributes(exc))
            if not_retried:
                if recording:
                    span.add_event("commit_not_retried", {A.ERROR_LABELS: labels})
                self._notify("commit_not_retried", labels, span, error_type=E.error_type(exc))
        if wt.labels:
            attrs[A.ERROR_LABELS] = list(wt.labels)
        wasted_s = _wasted_s(wt)
        if wasted_s > 0:
            attrs[A.TXN_WASTED_MS] = round(wasted_s * 1000.0, 3)
        if recording:
            span.set_attributes(attrs)
            span.end()
        self._emit_summary(
            t,
            span,
            outcome,
            wt.attempts,
            wt.commit_attempts,
            wt.labels,
            duration,
            exc,
            {A.DB_SYSTEM_NAME: A.MONGODB, A.TXN_MODE: t.settings.with_transaction, **attrs},
            wasted_s,
            _one_cause(wt) if wasted_s > 0 else None,
        )


def _forget_session(t: Telemetry, lsid: str, owner: object) -> None:
    """A session object was collected without ending: drop its open attempt and transaction."""
    t.correlator.forget_session(lsid, owner)
    t.open_transactions.closed(owner)


# -- time lost to retries, and what caused them ----------------------------------------------


def _count_lost_attempt(wt: _WithTransaction, attempt: Attempt, outcome: Outcome) -> None:
    """An attempt of a ``with_transaction`` call ended: if it did not commit, its time is lost."""
    if outcome != "committed" and wt.last_attempt_end is not None:
        wt.lost_s += wt.last_attempt_end - attempt.started
        wt.causes.append(attempt.retry_cause)


def _last_cause(wt: _WithTransaction) -> RetryCause | None:
    """What ended the attempt just before this retry."""
    return wt.causes[-1] if wt.causes else None


def _wasted_s(wt: _WithTransaction) -> float:
    """Time lost to retries: 0 for a call that did not retry; else its attempts that did not
    commit plus the backoff between them."""
    if wt.attempts < 2:
        return 0.0
    return wt.lost_s + wt.backoff_ms / 1000.0


def _one_cause(wt: _WithTransaction) -> RetryCause | None:
    """The cause every retry shared (by collection and operation), if there was one."""
    retried = wt.causes[: wt.attempts - 1]  # not a failed call's last attempt: nothing retried it
    found = {(c.collection, c.operation): c for c in retried if c is not None}
    if len(found) != 1 or None in retried:
        return None
    return next(iter(found.values()))


# -- the spec-mode loop (Motor) ----------------------------------------------------------------


async def spec_loop(
    self: Any,
    callback: Callable[[Any], Coroutine[Any, Any, T]],
    read_concern: Any,
    write_concern: Any,
    read_preference: Any,
    max_commit_time_ms: Any,
) -> T:
    """The documented loop (transactions-convenient-api.md), as PyMongo implements it."""
    start = self.clock()

    def within_limit(backoff: float = 0.0) -> bool:
        return bool(self.clock() + backoff - start < WITH_TRANSACTION_TIME_LIMIT)

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


def _max_time_expired(exc: PyMongoError) -> bool:
    return getattr(exc, "code", None) == 50


def _timeout_error(error: BaseException) -> BaseException:
    """What PyMongo raises when the 120 s limit ends the loop."""
    try:
        from pymongo.client_session_shared import _make_timeout_error
    except ImportError:  # older PyMongo re-raises the last error itself
        return error
    return _make_timeout_error(error)
