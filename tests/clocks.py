"""Controllable clocks for the timing tests: set as the instrumentation scope's ``clock``.

``telemetry_of(client).clock = clock`` replaces the one clock every duration of that scope is read
on (``time.perf_counter`` by default); nothing of a driver is replaced. ``OffsetClock`` runs in
real time and lets a test add known "application work" without sleeping; ``FrozenClock`` moves
only when told, so every measured duration is exactly the work the test added.
"""

from __future__ import annotations

import time
from typing import Any

from motor_otel.instrumentor import telemetry_of


class OffsetClock:
    """``time.perf_counter()`` plus the work :meth:`advance` added."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.perf_counter() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class FrozenClock:
    """A clock that stands still until :meth:`advance` moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def use_clock(client: Any, clock: Any) -> None:
    """Read every duration of ``client``'s instrumentation scope on ``clock``."""
    telemetry = telemetry_of(client)
    assert telemetry is not None, "instrument the client first"
    telemetry.clock = clock
