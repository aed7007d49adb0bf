"""Which span a command belongs to: by ``lsid`` + ``txnNumber``, not by luck of context.

PyMongo delivers command events on whatever thread sent the command (Motor's executor, a
task that never saw the transaction start, a thread with no context). The session side
registers each open transaction attempt here; the listener looks it up by the identifiers the
command itself carries. Both maps are bounded and guarded by one lock.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Tracer

from motor_otel._sampling import Decider
from motor_otel.config import Settings
from motor_otel.events import RetryCause, TransactionObserver
from motor_otel.timing import AttemptTimer, Clock, OpenTransactions

MAX_ATTEMPTS = 100_000
MAX_COMMANDS = 100_000


@dataclass(slots=True, eq=False)
class Attempt:
    """One open transaction attempt and what its commands reported back."""

    span: Span
    lsid: str
    txn_number: int
    number: int
    error_labels: list[str] = field(default_factory=list)
    unsettled: BaseException | None = None  # a commit whose result is unknown, maybe retried
    attributes: dict[str, Any] = field(default_factory=dict)  # the span's, from its start
    owner: object = None  # the session object's token: an lsid outlives its session (pooled)
    started: float = 0.0  # perf_counter() when it opened: its share of the time lost to retries
    retry_cause: RetryCause | None = None  # the first operation that failed with TTE in it
    failed_operations: int = 0  # operations of it that raised: an error ended it, if aborted
    recording: bool = True  # decided once, when the attempt starts
    silent: bool = False  # nothing under it records either: its commands get no span
    timer: AttemptTimer = field(default_factory=lambda: AttemptTimer(0.0))  # its commands' times
    _context: otel_context.Context | None = None

    @property
    def context(self) -> otel_context.Context:
        """The attempt's span as a parent context, built once for all its children."""
        ctx = self._context
        if ctx is None:
            ctx = self._context = trace.set_span_in_context(self.span)
        return ctx


Command = tuple[Span | None, Attempt | None, int, int | None]
"""An in-flight command: (its span or its event's span, its attempt, event start ns or 0, the
cursor id it sent, for its event)."""


class Correlator:
    """Open attempts by lsid (and txnNumber), in-flight command spans by request.

    A server session runs one transaction at a time, so attempts are keyed by lsid alone and
    the txnNumber is checked on lookup: forgetting a session is one pop, however many are open.
    """

    def __init__(self, max_attempts: int = MAX_ATTEMPTS, max_commands: int = MAX_COMMANDS) -> None:
        self._lock = threading.Lock()
        self._attempts: OrderedDict[str, Attempt] = OrderedDict()
        self._commands: OrderedDict[Hashable, Command] = OrderedDict()
        self._max_attempts = max_attempts
        self._max_commands = max_commands

    def open_attempt(self, attempt: Attempt) -> None:
        with self._lock:
            self._attempts[attempt.lsid] = attempt
            self._attempts.move_to_end(attempt.lsid)
            while len(self._attempts) > self._max_attempts:
                self._attempts.popitem(last=False)

    def find_attempt(self, lsid: str, txn_number: int) -> Attempt | None:
        attempt = self._attempts.get(lsid)  # one dict read: atomic under the GIL
        return attempt if attempt is not None and attempt.txn_number == txn_number else None

    def close_attempt(self, lsid: str, txn_number: int) -> Attempt | None:
        with self._lock:
            attempt = self._attempts.get(lsid)
            if attempt is None or attempt.txn_number != txn_number:
                return None
            del self._attempts[lsid]
            return attempt

    def forget_session(self, lsid: str, owner: object) -> None:
        """Drop the attempt ``owner`` left open under ``lsid``.

        Only its own: PyMongo pools server sessions, so by the time a session object is ended
        or collected its lsid may already carry a newer session's transaction.
        """
        with self._lock:
            attempt = self._attempts.get(lsid)
            if attempt is not None and attempt.owner is owner:
                del self._attempts[lsid]

    # The in-flight command map takes no lock: each of its operations is one call into the C
    # implementation of OrderedDict, atomic under the GIL; racing evictions only drop extra
    # entries of a map that is over its bound anyway.
    def start_command(
        self,
        key: Hashable,
        span: Span | None,
        attempt: Attempt | None,
        event_at: int = 0,
        cursor_id: int | None = None,
    ) -> None:
        """Remember an in-flight command: its span (``None`` when it has none, only its
        attempt's error labels to collect), or in ``events`` mode the span its event goes on,
        when it was sent (``event_at``, ns) and the cursor it names."""
        commands = self._commands
        commands[key] = (span, attempt, event_at, cursor_id)
        if len(commands) > self._max_commands:
            with contextlib.suppress(KeyError):  # emptied meanwhile by another thread
                commands.popitem(last=False)

    def pop_command(self, key: Hashable) -> Command | None:
        return self._commands.pop(key, None)

    def sizes(self) -> tuple[int, int]:
        """(open attempts, in-flight commands): for leak checks and benchmarks."""
        with self._lock:
            return len(self._attempts), len(self._commands)


@dataclass(slots=True, eq=False)
class Telemetry:
    """Everything one instrumentation scope (the global instrumentor or one
    ``instrument_client`` call) shares between sessions, operations and the listener."""

    tracer: Tracer
    settings: Settings
    correlator: Correlator = field(default_factory=Correlator)
    observers: list[TransactionObserver] = field(default_factory=list)
    enabled: bool = True
    native: bool = False  # PyMongo's own tracing is on: it owns operation and command spans
    old_names: bool = False  # OTEL_SEMCONV_STABILITY_OPT_IN=database/dup, read at instrument()
    attribute_observers: bool = False  # an observer (the lifecycle logger) reads attributes
    clock: Clock = time.perf_counter  # every duration the core measures; tests may set another
    open_transactions: OpenTransactions = field(default_factory=OpenTransactions)
    decider: Decider = field(init=False)
    events: bool = field(init=False)  # command_detail="events": commands become span events

    def __post_init__(self) -> None:
        self.decider = Decider(self.tracer)
        self.open_transactions.clock = lambda: self.clock()  # follows a clock set later
        self.events = self.settings.command_detail == "events"

    def keeping(self) -> bool:
        """Keep rules apply: some are set and the provider's sampler honours the keep mark
        (``KeepTransactionsSampler``); PyMongo's own tracing makes spans we could not replay."""
        return self.settings.keep.any and not self.native and self.decider.keeps()

    def observed(self) -> bool:
        """Some observer would use a lifecycle fact now: no summary is built for nobody.

        Metrics behind the API's proxy meter are ``idle`` until a meter provider is set.
        """
        observers = self.observers
        if len(observers) != 1:
            return bool(observers)
        return not getattr(observers[0], "idle", False)
