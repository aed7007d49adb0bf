"""One frozen settings object, resolved from ``instrument()`` keywords over ``OTEL_*`` variables."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from motor_otel.types import FailedHook, RequestHook, ResponseHook, TransactionHook

WithTransactionMode = Literal["driver", "spec"]
CommandDetail = Literal["spans", "events"]

ENV_PREFIX = "OTEL_PYTHON_INSTRUMENTATION_MONGODB_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_HOOKS = ("request_hook", "response_hook", "failed_hook", "transaction_hook")
_COMMAND_DETAIL = ("spans", "events")
_logger = logging.getLogger("motor_otel")
_warned: set[tuple[str, str]] = set()  # (variable, value) already warned about in this process
_warned_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class KeepRules:
    """Which transactions a ``KeepTransactionsSampler`` keeps when the caller's trace is not
    sampled: the ``keep=`` setting, a comma list of ``retried``, ``failed``,
    ``commit_not_retried``, ``slow:<ms>`` or ``none``."""

    retried: bool = True
    """A second attempt, or a retried commit."""
    failed: bool = True
    """``with_transaction``, commit or abort raised, or the transaction ended aborted by an error."""
    commit_not_retried: bool = True
    """A commit error Motor's loop let escape (``driver`` mode)."""
    slow_ms: float | None = None
    """The call took longer than this many milliseconds."""

    @property
    def any(self) -> bool:
        return self.retried or self.failed or self.commit_not_retried or self.slow_ms is not None

    def __str__(self) -> str:
        rules = [n for n in ("retried", "failed", "commit_not_retried") if getattr(self, n)]
        if self.slow_ms is not None:
            rules.append(f"slow:{self.slow_ms:g}")
        return ",".join(rules) or "none"

    @classmethod
    def parse(cls, value: str | Iterable[str]) -> KeepRules:
        """``"retried,slow:250"`` (or a list of those words); ``ValueError`` names a bad one."""
        words = value.split(",") if isinstance(value, str) else list(value)
        found: dict[str, Any] = dict.fromkeys(("retried", "failed", "commit_not_retried"), False)
        slow: float | None = None
        for raw in words:
            word = str(raw).strip().lower()
            if word in found:
                found[word] = True
            elif word.startswith("slow:"):
                try:
                    slow = float(word[5:])
                except ValueError:
                    slow = -1.0
                if not slow >= 0:  # also NaN
                    raise ValueError(f"keep rule {raw!r}: slow:<ms> needs a number of ms >= 0")
            elif word != "none" and word:
                raise ValueError(
                    f"keep rule {raw!r} is not one of retried, failed, commit_not_retried, "
                    "slow:<ms>, none"
                )
        return cls(**found, slow_ms=slow)


@dataclass(frozen=True, slots=True)
class Settings:
    """What the instrumentation does; see the configuration table in the README."""

    enabled: bool = True
    query_text_max_length: int = 0
    query_text_raw_values: bool = False
    with_transaction: WithTransactionMode = "driver"
    log_lifecycle: bool = False
    request_hook: RequestHook | None = None
    response_hook: ResponseHook | None = None
    failed_hook: FailedHook | None = None
    transaction_hook: TransactionHook | None = None
    command_detail: CommandDetail = "spans"
    keep: KeepRules = KeepRules()
    long_transaction_ms: float = 100
    """An attempt whose write window passes this is long (``transaction.long``); 0: never.
    mongod's default slow-operation threshold (``slowms``): where the server starts calling an
    operation slow, and long enough for ordinary traffic on the same documents to run into."""

    @classmethod
    def resolve(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> Settings:
        """Keywords win over the environment.

        A bad keyword is the programmer's error and raises (``TypeError``/``ValueError``). A bad
        variable is the deployment's: it is treated as unset, with one warning naming the
        variable and its value, because under ``opentelemetry-instrument`` an exception here
        would leave the whole application untraced. That holds for every field, present and
        future: each one's variable is read and coerced by this one loop.
        """
        env = os.environ if environ is None else environ
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            raise TypeError(f"unknown motor_otel setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name in known:
            if name in _HOOKS:
                hook = kwargs.get(name)
                if hook is not None and not callable(hook):
                    raise TypeError(f"{name} must be callable, got {type(hook).__name__}")
                values[name] = hook
            elif kwargs.get(name) is not None:
                values[name] = _coerce(name, kwargs[name])
            elif (raw := env.get(variable := ENV_PREFIX + name.upper())) is not None:
                try:
                    values[name] = _coerce(name, raw)
                except (TypeError, ValueError) as exc:
                    _warn_once(variable, raw, exc)
        return cls(**values)


def _warn_once(variable: str, raw: str, exc: Exception) -> None:
    """One warning per process for each bad (variable, value): the environment does not change
    between ``instrument()`` calls, so saying it again on each one is noise."""
    with _warned_lock:
        if (variable, raw) in _warned:
            return
        _warned.add((variable, raw))
    _logger.warning("motor-otel: ignoring %s=%r (%s); using the default", variable, raw, exc)


def forget_warnings() -> None:
    """Warn again about bad variables already reported (for tests)."""
    with _warned_lock:
        _warned.clear()


def _non_negative(name: str, value: Any, kind: type[int] | type[float], noun: str) -> Any:
    """``value`` as a finite ``kind`` >= 0 (never a bool), or ``ValueError`` naming ``name``."""
    error = ValueError(f"{name} must be a non-negative {noun}, got {value!r}")
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):  # int(float("inf")) overflows
        raise error from None
    if isinstance(value, bool) or not 0 <= number < float("inf"):  # NaN fails too
        raise error
    return number


def _coerce(name: str, value: Any) -> Any:
    if name in _HOOKS:
        return value
    if name == "query_text_max_length":
        return _non_negative(name, value, int, "integer")
    if name == "long_transaction_ms":
        return _non_negative(name, value, float, "number")
    if name == "with_transaction":
        if value not in ("driver", "spec"):
            raise ValueError(f"with_transaction must be 'driver' or 'spec', got {value!r}")
        return value
    if name == "keep":
        if isinstance(value, KeepRules):
            return value
        if not isinstance(value, (str, list, tuple, set, frozenset)):
            raise ValueError(f"keep must be a comma list of keep rules, got {value!r}")
        return KeepRules.parse(value)
    if name == "command_detail":
        text = value.strip().lower() if isinstance(value, str) else value
        if text not in _COMMAND_DETAIL:
            raise ValueError(f"command_detail must be 'spans' or 'events', got {value!r}")
        return text
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{name} must be a boolean (true/false/1/0/yes/no), got {value!r}")
