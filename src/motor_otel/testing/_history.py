"""Snapshot reads outside a transaction: which committed version a cluster time names, and the
versions such reads may still ask for.

MongoDB 5.0+ runs ``find``, ``aggregate`` and ``distinct`` with ``readConcern: {level:
"snapshot"}`` outside a transaction (MongoDB manual, "Read Concern "snapshot""). Without
``atClusterTime`` the read happens at the current cluster time, which the reply returns as
``atClusterTime``; a snapshot session then sends that time with each later read and sees the data
as of it (snapshot-sessions.md, "Server Commands", "Server Command Responses"). mongod keeps that
history for ``minSnapshotHistoryWindowInSeconds`` (300 by default); a read older than what it
keeps fails with SnapshotTooOld (239), one after the current cluster time with InvalidOptions (72)
("readConcern atClusterTime value must not be greater than the current clusterTime", mongod's
read_concern_mongod.cpp).

Here each commit to :mod:`._storage` is stamped with a cluster time from the same clock as the
replies, so a cluster time names the version committed last before it. Storage keeps only the
versions an open snapshot reads, so a read at a time establishes a hold on its version, released
after the window. The simulator keeps less than mongod: only the versions a snapshot read without
``atClusterTime`` returned (or the latest commit). A read at any other past time, say a write's
``operationTime``, gets SnapshotTooOld, never data from another time.
"""

from __future__ import annotations

import bisect
from collections import deque

from bson.timestamp import Timestamp

from motor_otel.testing._clock import ClusterClock
from motor_otel.testing._errors import CommandError
from motor_otel.testing._storage import Storage


def snapshot_too_old(at: Timestamp) -> CommandError:
    """SnapshotTooOld (239): the version a read asks for is no longer kept."""
    return CommandError(239, f"Read timestamp {at} is older than the oldest available timestamp.")


class History:
    """Commit times of the versions in storage, and the versions held for snapshot reads.

    Callers hold the engine's lock (commits already do: :attr:`Storage.on_commit`).
    """

    def __init__(self, storage: Storage, clock: ClusterClock, window_seconds: float) -> None:
        self._storage = storage
        self._clock = clock
        self._window = window_seconds
        # Commit times of versions base + 1, base + 2, ... (from index _start on), oldest first.
        self._times: list[Timestamp] = []
        self._start = 0
        self._base = storage.version
        self._forgotten: Timestamp | None = None  # commit time of version base, once forgotten
        self._held: deque[tuple[Timestamp, int]] = deque()  # (read time, version), oldest first
        storage.on_commit = self._committed

    def begin(self) -> tuple[Timestamp, int]:
        """A snapshot read without ``atClusterTime``: the current cluster time and the latest
        version, held for the window so later reads at that time find it."""
        self._expire()
        at = self._clock.tick()  # after every commit so far, before any later one
        version = self._storage.open()
        if self._held and self._held[-1][1] == version:  # one hold per version: the newest
            self._storage.close(self._held.pop()[1])
        self._held.append((at, version))
        return at, version

    def version_at(self, at: Timestamp) -> int:
        """The version a read at cluster time ``at`` sees, if storage still keeps it."""
        self._expire()
        now = self._clock.now()
        if at > now:
            raise CommandError(
                72,
                "readConcern atClusterTime value must not be greater than the current "
                f"clusterTime. Requested clusterTime: {at}; current clusterTime: {now}",
            )
        if at.time < now.time - self._window or (
            self._forgotten is not None and at < self._forgotten
        ):
            raise snapshot_too_old(at)
        version = self._base + bisect.bisect_right(self._times, at, lo=self._start) - self._start
        if not self._storage.readable(version):
            raise snapshot_too_old(at)
        return version

    def _committed(self, version: int) -> None:
        self._times.append(self._clock.tick())
        self._expire()

    def _expire(self) -> None:
        """Forget commit times, and release held versions, older than the window."""
        horizon = self._clock.now().time - self._window
        while self._held and self._held[0][0].time < horizon:
            self._storage.close(self._held.popleft()[1])
        times = self._times
        while self._start < len(times) and times[self._start].time < horizon:
            self._forgotten = times[self._start]
            self._start += 1
            self._base += 1
        if self._start > 1024 and self._start * 2 > len(times):
            del times[: self._start]
            self._start = 0
