"""Driver ranges this instrumentation supports, read by ``BaseInstrumentor``.

PyMongo is required; Motor (which runs on PyMongo) is instrumented too when it is installed.
"""

from __future__ import annotations

_instruments = ("pymongo >= 4.9, < 5",)
_supports = ("motor >= 3.6, < 4", "pymongo >= 4.9, < 5")
