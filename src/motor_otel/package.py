"""Driver ranges this instrumentation supports, read by ``BaseInstrumentor``."""

from __future__ import annotations

_instruments = ("motor >= 3.6, < 4", "pymongo >= 4.9, < 5")
