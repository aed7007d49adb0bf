"""Test support: :class:`SimulatedReplicaSet`, a MongoDB replica set in your test process.

:func:`fail_command` builds ``configureFailPoint`` documents for it or for a real mongod.

Needs the ``testing`` extra (``pip install 'motor-otel[testing]'``): mockupdb speaks the wire
protocol, mongomock supplies query, update and aggregation semantics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from motor_otel.testing._failpoints import fail_command

if TYPE_CHECKING:
    from motor_otel.testing._server import SimulatedReplicaSet, TransactionCounters

__all__ = ["SimulatedReplicaSet", "TransactionCounters", "fail_command"]
_SERVER = frozenset({"SimulatedReplicaSet", "TransactionCounters"})


def __getattr__(name: str) -> Any:
    if name in _SERVER:
        try:
            from motor_otel.testing import _server
        except ImportError as exc:  # tests/unit/test_testing_extra.py
            raise ImportError(
                f"motor_otel.testing needs {exc.name!r}: pip install 'motor-otel[testing]'"
            ) from exc
        return getattr(_server, name)
    raise AttributeError(name)
