"""OpenTelemetry traces for MongoDB transactions in Motor.

Every transaction attempt becomes a ``transaction`` span, every ``with_transaction`` call a
``withTransaction`` span above its attempts, and every command the driver sends a span nested
under the operation and attempt that sent it, matched by ``lsid`` + ``txnNumber``::

    from motor_otel import MotorInstrumentor

    MotorInstrumentor().instrument(tracer_provider=provider)
    client = AsyncIOMotorClient(uri)          # created after instrument(): traced
    async with await client.start_session() as session:
        await session.with_transaction(callback)

For a client that already exists, ``instrument_client(client, tracer_provider=provider)``.
Under head sampling, ``TracerProvider(sampler=KeepTransactionsSampler(ParentBased(
TraceIdRatioBased(0.01))))`` keeps every retried or failed transaction as a trace of its own
(``keep=`` rules; ``motor_otel.sampling``).
See README.md for the span model, attributes and configuration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from motor_otel.config import Settings, WithTransactionMode
from motor_otel.instrumentor import MotorInstrumentor, instrument_client, uninstrument_client
from motor_otel.session import (
    InstrumentedAsyncClientSession,
    InstrumentedAsyncIOMotorClientSession,
    InstrumentedClientSession,
)
from motor_otel.types import FailedHook, RequestHook, ResponseHook, TransactionHook
from motor_otel.version import __version__

if TYPE_CHECKING:
    from motor_otel.sampling import KeepTransactionsSampler

__all__ = [
    "FailedHook",
    "InstrumentedAsyncClientSession",
    "InstrumentedAsyncIOMotorClientSession",
    "InstrumentedClientSession",
    "KeepTransactionsSampler",
    "MotorInstrumentor",
    "RequestHook",
    "ResponseHook",
    "Settings",
    "TransactionHook",
    "WithTransactionMode",
    "__version__",
    "instrument_client",
    "uninstrument_client",
]


def __getattr__(name: str) -> Any:
    """``KeepTransactionsSampler`` is imported on first use: it needs the OpenTelemetry SDK,
    which the rest of motor-otel does not."""
    if name == "KeepTransactionsSampler":
        try:
            from motor_otel.sampling import KeepTransactionsSampler
        except ImportError as exc:
            raise ImportError(
                f"motor_otel.KeepTransactionsSampler needs the OpenTelemetry SDK ({exc.name!r}): "
                "pip install opentelemetry-sdk"
            ) from exc
        return KeepTransactionsSampler
    raise AttributeError(f"module 'motor_otel' has no attribute {name!r}")
