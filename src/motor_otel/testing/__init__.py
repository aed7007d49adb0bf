"""Test support: :class:`SimulatedReplicaSet`, a MongoDB replica set in your test process.

Needs the ``testing`` extra (``pip install 'motor-otel[testing]'``): mockupdb speaks the wire
protocol, mongomock supplies query, update and aggregation semantics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from motor_otel.testing._server import SimulatedReplicaSet, TransactionCounters

__all__ = ["SimulatedReplicaSet", "TransactionCounters"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        try:
            from motor_otel.testing import _server
        except ImportError as exc:  # pragma: no cover - exercised by test_missing_extra
            raise ImportError(
                f"motor_otel.testing needs {exc.name!r}: pip install 'motor-otel[testing]'"
            ) from exc
        return getattr(_server, name)
    raise AttributeError(name)
