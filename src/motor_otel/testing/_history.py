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

Here each commit to :mod:`._storage` takes a cluster time from the clock the replies carry, so a
cluster time names the version committed last before it. Storage keeps only the versions an open
snapshot reads, so a snapshot read without ``atClusterTime`` holds its version, with the times
that name it, and releases it after the window. The simulator keeps less than mongod: only those
versions and the latest commit, and only the times from a hold's read on. A read at any other
past time, say a write's ``operationTime`` after later commits, gets SnapshotTooOld, never data
from another time. Memory: one entry per held version, none per commit.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from bson.timestamp import Timestamp

from motor_otel.testing._clock import ClusterClock
from motor_otel.testing._errors import CommandError
from motor_otel.testing._storage import Storage


def snapshot_too_old(at: Timestamp) -> CommandError:
    """SnapshotTooOld (239): the version a read asks for is no longer kept."""
    return CommandError(239, f"Read timestamp {at} is older than the oldest available timestamp.")


@dataclass(slots=True)
class _Hold:
    """A version held for snapshot reads: the times from ``read`` up to ``until`` name it."""

    read: Timestamp  # the first atClusterTime a snapshot read returned for it
    version: int
    last_read: Timestamp  # the last one: the window runs from it
    until: Timestamp | None = None  # the next commit's time; None while it is the latest


class History:
    """The versions held for snapshot reads, and the time of the latest commit.

    Callers hold the engine's lock (commits already do: :attr:`Storage.on_commit`).
    """

    def __init__(self, storage: Storage, clock: ClusterClock, window_seconds: float) -> None:
        self._storage = storage
        self._clock = clock
        self._window = window_seconds
        self._latest = Timestamp(0, 0)  # when the latest version was committed
        self._held: list[_Hold] = []  # oldest first (from _start on), by read time and version
        self._start = 0
        storage.on_commit = self._committed

    def begin(self) -> tuple[Timestamp, int]:
        """A snapshot read without ``atClusterTime``: the current cluster time and the latest
        version, held for the window so later reads at that time find it."""
        self._expire()
        read = self._clock.tick()  # after every commit so far, before any later one
        version = self._storage.open()
        newest = self._held[-1] if len(self._held) > self._start else None
        if newest is not None and newest.version == version:
            self._storage.close(version)  # already held (still the newest): for longer
            newest.last_read = read
        else:
            self._held.append(_Hold(read, version, read))
        return read, version

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
        if at.time < now.time - self._window:
            raise snapshot_too_old(at)
        if at >= self._latest:
            return self._storage.version
        i = bisect.bisect_right(self._held, at, lo=self._start, key=lambda h: h.read) - 1
        if i >= self._start:
            hold = self._held[i]
            if hold.until is None or at < hold.until:
                return hold.version
        raise snapshot_too_old(at)

    def _committed(self, version: int) -> None:
        self._latest = self._clock.tick()
        if len(self._held) > self._start and self._held[-1].until is None:
            self._held[-1].until = self._latest  # it was the latest version until now
        self._expire()

    def _expire(self) -> None:
        """Release the versions held longer than the window."""
        horizon = self._clock.now().time - self._window
        held = self._held
        while self._start < len(held) and held[self._start].last_read.time < horizon:
            self._storage.close(held[self._start].version)
            self._start += 1
        if self._start > 64 and self._start * 2 > len(held):
            del held[: self._start]
            self._start = 0
