"""The one guard for our own failures: the application's code still runs, with less telemetry.

Under pytest we re-raise instead, so our bugs are not hidden in our own tests.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def guard(where: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        report(where, exc)


def call_hook(where: str, hook: object, *args: object) -> None:
    """Run a user hook; one that raises is logged (every time, it is the user's code) and ignored."""
    if hook is None:
        return
    try:
        hook(*args)  # type: ignore[operator]
    except Exception:
        _logger.exception("motor-otel %s raised; ignored", where)
