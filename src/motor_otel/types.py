"""Hook signatures, as ``Protocol``s so editors show the parameter names.

Every hook runs inside our guard: one that raises is logged and ignored.
"""

from __future__ import annotations

from typing import Any, Protocol

from opentelemetry.trace import Span
from pymongo.monitoring import CommandFailedEvent, CommandStartedEvent, CommandSucceededEvent


class RequestHook(Protocol):
    """Called when a command span starts, before the command is sent."""

    def __call__(self, span: Span, event: CommandStartedEvent) -> None: ...


class ResponseHook(Protocol):
    """Called when a command succeeded, before its span ends."""

    def __call__(self, span: Span, event: CommandSucceededEvent) -> None: ...


class FailedHook(Protocol):
    """Called when a command failed, before its span ends."""

    def __call__(self, span: Span, event: CommandFailedEvent) -> None: ...


class TransactionHook(Protocol):
    """Called when a ``transaction`` (attempt) span starts; ``session`` is the driver session."""

    def __call__(self, span: Span, session: Any) -> None: ...
