"""Fixtures for the proof suites: a fake clock for the drivers' 120 s limit, server commit counts."""

from __future__ import annotations

import contextlib
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import pymongo
import pytest
from pymongo.errors import PyMongoError

from motor_otel.testing import SimulatedReplicaSet
from tests.conftest import CLIENT_OPTIONS

# Every module whose with_transaction loop reads ``time.monotonic`` for the 120 s limit.
CLOCK_MODULES = (
    "pymongo.client_session_shared",  # _within_time_limit
    "pymongo.asynchronous.client_session",  # AsyncClientSession.with_transaction's start time
    "pymongo.synchronous.client_session",  # ClientSession.with_transaction's start time
    "motor.core",  # Motor's own copy of _within_time_limit and its start time
)


class FakeTime(types.ModuleType):
    """Stands in for the ``time`` module: ``monotonic()`` jumps ``step`` seconds on every read.

    Everything else is the real ``time``, so a driver's backoff ``sleep`` is unchanged.
    """

    def __init__(self, step: float) -> None:
        super().__init__("time")
        self.step = step
        self.reads = 0
        self._now = 1_000.0
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            self.reads += 1
            now = self._now
            self._now += self.step
            return now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def fake_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[float], contextlib.AbstractContextManager[FakeTime]]:
    """``with fake_clock(60): ...`` runs the drivers' transaction loops on a fresh fake clock."""

    @contextlib.contextmanager
    def install(step: float) -> Iterator[FakeTime]:
        fake = FakeTime(step)
        with monkeypatch.context() as patch:
            for module in CLOCK_MODULES:
                patch.setattr(f"{module}.time", fake)
            yield fake

    return install


@pytest.fixture(scope="session")
def server_commits(
    simulator: SimulatedReplicaSet | None, mongodb_uri: str
) -> Iterator[Callable[[], int | None]]:
    """Committed transactions so far, as the server counts them (None if it will not say)."""
    if simulator is not None:
        counters = simulator.transactions

        def from_simulator() -> int | None:
            with counters.lock:
                return counters.total_committed

        yield from_simulator
        return
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongodb_uri, **CLIENT_OPTIONS)

    def from_server_status() -> int | None:
        try:
            status = client.admin.command("serverStatus")
            return int(status["transactions"]["totalCommitted"])
        except (PyMongoError, KeyError):
            return None

    yield from_server_status
    client.close()
