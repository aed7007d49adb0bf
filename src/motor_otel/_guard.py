"""The one guard for our own failures: the application's code still runs, with less telemetry.

Under pytest we re-raise instead, so our bugs are not hidden in our own tests.
"""

from __future__ import annotations

import logging
import os
from types import TracebackType

_logger = logging.getLogger("motor_otel")
_reported: set[str] = set()


def _under_pytest() -> bool:
    return "PYTEST_CURRENT_TEST" in os.environ and not os.environ.get("MOTOR_OTEL_SWALLOW_ERRORS")


def report(where: str, exc: BaseException) -> None:
    """Log an internal failure once per site; re-raise under pytest."""
    if _under_pytest():
        raise exc
    if where not in _reported:
        _reported.add(where)
        _logger.warning(
            "motor-otel failed in %s; your code still runs, with less telemetry",
            where,
            exc_info=exc,
        )


class guard:
    """``with guard("where"):`` runs a block of ours; an ``Exception`` from it is reported.

    A class rather than ``@contextmanager``: no generator per use, and it runs on every
    transaction.
    """

    __slots__ = ("where",)

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        report(self.where, exc)
        return True


def call_hook(where: str, hook: object, *args: object) -> None:
    """Run a user hook; one that raises is logged (every time, it is the user's code) and ignored."""
    if hook is None:
        return
    try:
        hook(*args)  # type: ignore[operator]
    except Exception:
        _logger.exception("motor-otel %s raised; ignored", where)
