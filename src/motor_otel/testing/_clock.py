"""The simulator's cluster time: strictly increasing BSON timestamps, as a primary's oplog gives.

Every reply carries the next one (``$clusterTime``, ``operationTime``), and so does every commit
to storage (:mod:`._history`), so a cluster time a client holds names what was committed before
it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from bson.timestamp import Timestamp


class ClusterClock:
    """Hands out strictly increasing timestamps: wall-clock seconds, then a counter within one."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall  # seconds since the epoch (tests pass their own)
        self._lock = threading.Lock()
        self._secs = 0
        self._inc = 0

    def tick(self) -> Timestamp:
        """The next cluster time."""
        with self._lock:
            now = int(self._wall())
            if now > self._secs:
                self._secs, self._inc = now, 1
            else:
                self._inc += 1
            return Timestamp(self._secs, self._inc)

    def now(self) -> Timestamp:
        """The latest cluster time handed out (no client holds a later one)."""
        with self._lock:
            return Timestamp(self._secs, self._inc)
