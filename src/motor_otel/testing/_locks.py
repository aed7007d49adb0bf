"""Document-level write locks of open transactions, as mongod's storage engine takes them.

What mongod does, and this module copies (MongoDB docs, "Production Considerations",
"In-progress Transactions and Write Conflicts"; transactions spec test ``errors.json``):

- A transaction that writes a document holds it until the transaction ends.
- Another transaction writing that document fails at once with WriteConflict (112), labelled
  ``TransientTransactionError``; the server aborts that transaction.
- A transaction writing a document that a committed write changed after the transaction's
  snapshot also fails with WriteConflict.
- A write outside any transaction to a held document waits until the holder ends, bounded by
  ``maxTimeMS`` (then MaxTimeMSExpired, 50). mongod ends a transaction older than
  ``transactionLifetimeLimitSeconds`` (default 60) itself, so the wait is bounded by that too.

Callers hold the engine's lock; waiting releases it through a condition variable, so the
transaction that holds the document can commit or abort meanwhile.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable

from motor_otel.testing._errors import CommandError, write_conflict

Key = tuple[str, str, bytes]  # (database, collection, BSON-encoded {_id: ...})


class DocumentLocks:
    """Who holds each document, and when each document last changed while transactions ran."""

    def __init__(
        self,
        lock: threading.RLock,
        *,
        lifetime_limit: float,
        expire: Callable[[object], None],
    ) -> None:
        self._released = threading.Condition(lock)
        self._waiters_changed = threading.Condition(lock)
        self.waiting = 0  # writes outside transactions now waiting for a holder to end
        self._lifetime_limit = lifetime_limit
        self._expire = expire
        self._holder: dict[Key, object] = {}
        self._held: dict[object, set[Key]] = {}
        self._snapshot: dict[object, int] = {}
        self._began: dict[object, float] = {}
        # Versions only matter against an open transaction's snapshot: kept while any is open.
        self._version: dict[Key, int] = {}
        self._clock = 0

    # -- transactions ------------------------------------------------------------------------
    def begin(self, txn: object) -> None:
        """``txn`` takes its snapshot now. Transactions past the lifetime limit are aborted
        first, as mongod's periodic job does, so an abandoned one does not keep the versions its
        snapshot needs (and its documents) for longer than the limit."""
        now = time.monotonic()  # _began is in order of age: look at the lapsed ones only
        lapsed = itertools.takewhile(
            lambda t: self._began[t] + self._lifetime_limit <= now, self._began
        )
        self._expire_old(set(lapsed))
        self._snapshot[txn] = self._clock
        self._held[txn] = set()
        self._began[txn] = time.monotonic()

    def claim(self, txn: object, keys: Iterable[Key]) -> None:
        """``txn`` is about to write ``keys``: hold them, or raise WriteConflict at once."""
        keys = list(keys)
        snapshot = self._snapshot[txn]
        self._expire_old({self._holder[k] for k in keys if k in self._holder} - {txn})
        for key in keys:
            holder = self._holder.get(key)
            if (holder is not None and holder is not txn) or self._version.get(key, 0) > snapshot:
                raise write_conflict()
        for key in keys:
            self._holder[key] = txn
        self._held[txn].update(keys)

    def end(self, txn: object, *, committed: bool) -> None:
        """``txn`` committed or aborted: its documents are free, waiting writers go on."""
        keys = self._held.pop(txn, set())
        if committed:
            self.wrote(keys)
        for key in keys:
            if self._holder.get(key) is txn:
                del self._holder[key]
        self._snapshot.pop(txn, None)
        self._began.pop(txn, None)
        if not self._snapshot:
            self._version.clear()
        self._released.notify_all()

    # -- writes outside transactions ---------------------------------------------------------
    def free(self, keys: Iterable[Key], deadline: float | None) -> bool:
        """True if no transaction holds ``keys``; otherwise wait for a release and return False
        (the caller looks again: what its write matches may have changed meanwhile)."""
        holders = {self._holder[k] for k in keys if k in self._holder}
        if not holders:
            return True
        if self._expire_old(holders):
            return False
        now = time.monotonic()
        wait = min(self._began.get(h, now) for h in holders) + self._lifetime_limit - now
        if deadline is not None:
            if deadline <= now:
                raise CommandError(50, "operation exceeded time limit")
            wait = min(wait, deadline - now)
        self.waiting += 1
        self._waiters_changed.notify_all()
        try:
            self._released.wait(wait)
        finally:
            self.waiting -= 1
        return False

    def wait_for_waiting(self, count: int, timeout: float) -> bool:
        """Block until ``count`` writes wait for a transaction (True) or ``timeout`` passes."""
        return self._waiters_changed.wait_for(lambda: self.waiting >= count, timeout)

    def _expire_old(self, holders: set[object]) -> bool:
        """Abort holders past the transaction lifetime limit, as mongod's periodic job does;
        True if any was."""
        now = time.monotonic()
        old = [h for h in holders if self._began.get(h, now) + self._lifetime_limit <= now]
        for holder in old:
            self._expire(holder)
        return bool(old)

    def wrote(self, keys: Iterable[Key]) -> None:
        """Committed writes to ``keys`` happened now (they conflict with older snapshots)."""
        if not self._snapshot:
            return
        self._clock += 1
        for key in keys:
            self._version[key] = self._clock
