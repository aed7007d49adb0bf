"""Where a transaction attempt's time goes: the server's share, the application's, the write window.

mongod reports an open transaction's ``timeActiveMicros`` (executing a client command) and
``timeInactiveMicros`` (waiting for the client's next command) in ``$currentOp``, but only on the
server and only while it is open. This module measures the same split from the client, under any
sampler, from timestamps the instrumentation takes anyway:

- :class:`AttemptTimer` (one per attempt) keeps the union of its commands' in-flight intervals
  (overlapping commands count once: a counter of commands in flight and the moment it left 0) and
  the start of its first write command;
- :meth:`AttemptTimer.finish` turns that into an :class:`~motor_otel.events.AttemptTimes` fact, with
  span attributes the session (or a kept transaction built after the fact) puts on the attempt;
- :class:`Totals` sums attempts for the ``withTransaction`` span;
- :class:`OpenTransactions` is the registry of transactions open now, for the ``open`` and
  ``oldest_age`` metrics: by the session's token, so an abandoned session's finalizer removes its
  entry, and nothing in it keeps a session alive.

All times are seconds on one clock, :attr:`Telemetry.clock <motor_otel.correlation.Telemetry>`
(``time.perf_counter`` unless a test gives another): never mixed with the spans' wall clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from motor_otel import attributes as A
from motor_otel.events import AttemptTimes, Outcome

Clock = Callable[[], float]
"""Seconds, monotonic: ``time.perf_counter`` by default."""

WRITE_COMMANDS = frozenset({"insert", "update", "delete", "findAndModify", "bulkWrite"})
_WRITE_STAGES = ("$out", "$merge")


def is_write(name: str, command: Mapping[str, Any]) -> bool:
    """Whether a command writes documents, by what it is, not by what it changed.

    The write commands (``insert``, ``update``, ``delete``, ``findAndModify``, and 8.0's
    client-level ``bulkWrite``) and an ``aggregate`` whose last stage is ``$out`` or ``$merge``
    (mongod refuses both in a transaction, code 263, but the attempt meant to write). An update
    or ``findAndModify`` that matched nothing still counts: the client cannot tell from the
    command, and the reply's counts arrive after the window would have opened. Reads
    (``find``, ``aggregate`` without those stages, ``count``, ``distinct``, ``getMore``) and
    ``commitTransaction``/``abortTransaction`` do not open the window.
    """
    if name in WRITE_COMMANDS:
        return True
    if name != "aggregate":
        return False
    pipeline = command.get("pipeline")
    if not isinstance(pipeline, list) or not pipeline or not isinstance(pipeline[-1], Mapping):
        return False
    return any(stage in pipeline[-1] for stage in _WRITE_STAGES)


def written_collection(name: str, command: Mapping[str, Any], database: str) -> str | None:
    """The collection a write command writes to (a client ``bulkWrite``: its first namespace)."""
    if name == "bulkWrite":
        ns_info = command.get("nsInfo")
        first = ns_info[0] if isinstance(ns_info, list) and ns_info else None
        ns = first.get("ns") if isinstance(first, Mapping) else None
        return ns.split(".", 1)[1] if isinstance(ns, str) and "." in ns else None
    return A.collection_of(name, command, database)


class AttemptTimer:
    """The in-flight intervals of one attempt's commands, and its first write.

    Commands of one attempt may overlap (``asyncio.gather`` in a callback, Motor's executor
    threads): their union is kept as a count of commands in flight and the moment it last left
    zero, under a lock, since start and end events arrive on whatever thread sent the command.
    """

    __slots__ = ("_busy_since", "_in_flight", "_lock", "server_s", "started", "write_at", "written")

    def __init__(self, started: float) -> None:
        self.started = started
        self.server_s = 0.0  # closed in-flight time so far
        self.write_at: float | None = None  # when the first write command was sent
        self.written: str | None = None  # the collection of that first write
        self._in_flight = 0
        self._busy_since = 0.0
        self._lock = threading.Lock()

    def command_started(
        self, now: float, name: str, command: Mapping[str, Any], database: str
    ) -> None:
        with self._lock:
            if not self._in_flight:
                self._busy_since = now
            self._in_flight += 1
        if self.write_at is None and is_write(name, command):
            self.write_at = now
            self.written = written_collection(name, command, database)

    def command_ended(self, now: float) -> None:
        with self._lock:
            if not self._in_flight:  # an end whose start we never saw
                return
            self._in_flight -= 1
            if not self._in_flight:
                self.server_s += now - self._busy_since

    def finish(self, now: float, outcome: Outcome, long_after_s: float = 0.0) -> AttemptTimes:
        """The attempt ended at ``now`` (its commit or abort returned): its times.

        A command still in flight (its reply never came) counts up to ``now``. ``long_after_s``
        (0: never) marks a write window longer than that as long.
        """
        with self._lock:
            server = self.server_s + (now - self._busy_since if self._in_flight else 0.0)
        duration = max(now - self.started, 0.0)
        server = min(server, duration)
        window = None if self.write_at is None else max(now - self.write_at, 0.0)
        return AttemptTimes(
            outcome=outcome,
            duration_s=duration,
            server_s=server,
            write_window_s=window,
            write_collection=self.written,
            long=bool(long_after_s) and window is not None and window > long_after_s,
        )


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def time_attributes(
    server_s: float, app_s: float, write_window_s: float | None
) -> dict[str, float]:
    """``server_ms``, ``app_ms`` and (when something was written) ``write_window_ms``."""
    attrs = {A.TXN_SERVER_MS: _ms(server_s), A.TXN_APP_MS: _ms(app_s)}
    if write_window_s is not None:
        attrs[A.TXN_WRITE_WINDOW_MS] = _ms(write_window_s)
    return attrs


def attempt_attributes(times: AttemptTimes) -> dict[str, float]:
    """The attempt span's time attributes (also the ``transaction.long`` event's and log's)."""
    return time_attributes(times.server_s, times.app_s, times.write_window_s)


class Totals:
    """The sums over a ``with_transaction`` call's attempts, for its span."""

    __slots__ = ("app_s", "server_s", "write_window_s")

    def __init__(self) -> None:
        self.server_s = 0.0
        self.app_s = 0.0
        self.write_window_s: float | None = None  # None until an attempt writes

    def add(self, times: AttemptTimes) -> None:
        self.server_s += times.server_s
        self.app_s += times.app_s
        if times.write_window_s is not None:
            self.write_window_s = (self.write_window_s or 0.0) + times.write_window_s

    def attributes(self) -> dict[str, float]:
        return time_attributes(self.server_s, self.app_s, self.write_window_s)


class OpenTransactions:
    """Transactions open now, by the owning session's token: mongod's ``currentOpen`` as this
    client sees it.

    Entries are keyed by a plain token object, never the session, so the registry keeps no
    session alive; an abandoned session's finalizer calls :meth:`closed` with its token. The dict
    keeps insertion order and a reopened token moves to the end, so the oldest open transaction
    is the first entry: the gauge's callback reads one entry, whatever the number open. Each
    operation is one C-level dict call, atomic under the GIL, so no lock is taken.
    """

    __slots__ = ("__weakref__", "_open", "clock")

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self._open: dict[Hashable, float] = {}
        self.clock = clock  # the scope's: the one the start times were read on

    def opened(self, owner: Hashable, at: float) -> None:
        self._open.pop(owner, None)
        self._open[owner] = at

    def closed(self, owner: Hashable) -> None:
        self._open.pop(owner, None)

    def __len__(self) -> int:
        return len(self._open)

    def oldest_age(self) -> float | None:
        """Seconds since the oldest open transaction started, or ``None`` when none is open."""
        try:
            started = next(iter(self._open.values()))
        except (StopIteration, RuntimeError):  # empty, or changed under us: none to report now
            return None
        return max(self.clock() - started, 0.0)
