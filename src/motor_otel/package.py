"""Driver ranges this instrumentation supports, read by ``BaseInstrumentor``.

``_instruments`` is the auto-instrumentation gate, and it names PyMongo alone on purpose: every
client we trace (Motor's ``AsyncIOMotorClient``, PyMongo's ``AsyncMongoClient`` and
``MongoClient``) runs on PyMongo, while Motor is a hard runtime dependency of ours, so gating on
Motor would check nothing the installer has not already, and an application that uses only
PyMongo must still be instrumented.
"""

from __future__ import annotations

_instruments = ("pymongo >= 4.9, < 5",)
