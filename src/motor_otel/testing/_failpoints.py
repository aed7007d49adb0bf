"""``configureFailPoint: "failCommand"``, with mongod's modes and data fields."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from motor_otel.testing._errors import CommandError

# Commands a failCommand fail point never applies to, as in mongod (server wiki "The failCommand
# Fail Point", linked from unified-test-format.md "failCommand").
# hello / isMaster are not exempt: mongod 4.4+ fails them when named (the transactions suite's
# pin-mongos.json "unpin after transient error within a transaction and commit" relies on it).
_EXEMPT = frozenset({"configurefailpoint", "buildinfo", "getparameter"})


def fail_command(
    *commands: str,
    mode: int | str | Mapping[str, int] = 1,
    error_code: int | None = None,
    error_labels: Sequence[str] | None = None,
    **data: Any,
) -> dict[str, Any]:
    """The ``configureFailPoint`` document for ``failCommand``, as mongod and the simulator take it.

    A builder so that tests say their intent in one line and still send the plain document a real
    server accepts. ``mode`` is a count (``{times: n}``), ``"alwaysOn"``, ``"off"`` or mongod's own
    mapping (``{"skip": n}``); other keywords go into ``data`` unchanged (``closeConnection=True``,
    ``blockConnection=True, blockTimeMS=50``, ``writeConcernError={...}``, ``appName="x"``).
    """
    if isinstance(mode, bool) or not isinstance(mode, (int, str, Mapping)):
        raise TypeError(f"mode must be a count, 'alwaysOn', 'off' or a mapping, not {mode!r}")
    document: dict[str, Any] = {
        "configureFailPoint": "failCommand",
        "mode": {"times": mode} if isinstance(mode, int) else mode,
    }
    if mode == "off":
        return document
    if not commands:
        raise ValueError("fail_command needs at least one command name")
    fields: dict[str, Any] = {"failCommands": list(commands)}
    if error_code is not None:
        fields["errorCode"] = error_code
    if error_labels is not None:
        fields["errorLabels"] = list(error_labels)
    document["data"] = {**fields, **data}
    return document


@dataclass(slots=True)
class FailAction:
    """What to do to one matching command."""

    block_ms: int = 0
    close_connection: bool = False
    error_code: int | None = None
    error_labels: list[str] | None = None
    write_concern_error: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _FailPoint:
    commands: frozenset[str]
    data: dict[str, Any]
    times: int | None  # None = alwaysOn
    skip: int
    app_name: str | None
    namespace: str | None = None

    def fire(self) -> bool:
        """Consume one activation: False while skipping, True otherwise."""
        if self.skip > 0:
            self.skip -= 1
            return False
        if self.times is not None:
            self.times -= 1
        return True

    @property
    def spent(self) -> bool:
        return self.times is not None and self.times <= 0


@dataclass(slots=True)
class TransactionalWriteFailure:
    """What ``onPrimaryTransactionalWrite`` does to one write statement."""

    close_connection: bool
    error_code: int | None


def _mode(mode: Any) -> tuple[int | None, int]:
    """(times, skip) from a fail point's ``mode``; times None means alwaysOn."""
    if mode == "alwaysOn":
        return None, 0
    if isinstance(mode, dict) and "times" in mode:
        return int(mode["times"]), 0
    if isinstance(mode, dict) and "skip" in mode:
        return None, int(mode["skip"])
    raise CommandError(2, f"unsupported fail point mode: {mode!r}")


class FailPoints:
    """Thread-safe registry of the active fail points (mongod has one per name).

    ``failCommand`` and ``onPrimaryTransactionalWrite`` as the unified test format describes them
    ("Fail Points Commonly Used in Tests").
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fail_command: _FailPoint | None = None
        self._transactional_write: _FailPoint | None = None

    def configure(self, command: dict[str, Any]) -> None:
        name = command.get("configureFailPoint")
        if name not in ("failCommand", "onPrimaryTransactionalWrite"):
            raise CommandError(2, f"unknown or unsupported fail point: {name!r}")
        mode = command.get("mode")
        data = dict(command.get("data") or {})
        if mode == "off":
            with self._lock:
                if name == "failCommand":
                    self._fail_command = None
                else:
                    self._transactional_write = None
            return
        times, skip = _mode(mode)
        if name == "onPrimaryTransactionalWrite":
            fp = _FailPoint(frozenset(), data, times, skip, None)
            with self._lock:
                self._transactional_write = None if times == 0 else fp
            return
        commands = data.get("failCommands")
        if not isinstance(commands, list) or not commands:
            raise CommandError(2, "failCommand requires a non-empty 'failCommands' array")
        fp = _FailPoint(
            commands=frozenset(str(c) for c in commands),
            data=data,
            times=times,
            skip=skip,
            app_name=data.get("appName"),
            namespace=data.get("namespace"),
        )
        with self._lock:
            self._fail_command = None if times == 0 else fp

    def match(
        self, command_name: str, app_name: str | None, namespace: str | None = None
    ) -> FailAction | None:
        """Consume one activation if the fail point applies to this command."""
        if command_name.lower() in _EXEMPT:
            return None
        with self._lock:
            fp = self._fail_command
            if fp is None or command_name not in fp.commands:
                return None
            if fp.app_name is not None and fp.app_name != app_name:
                return None
            if fp.namespace is not None and fp.namespace != namespace:
                return None
            if not fp.fire():
                return None
            if fp.spent:
                self._fail_command = None
            data = fp.data
        return FailAction(
            block_ms=int(data.get("blockTimeMS", 0)) if data.get("blockConnection") else 0,
            close_connection=bool(data.get("closeConnection", False)),
            error_code=data.get("errorCode"),
            error_labels=data.get("errorLabels"),
            write_concern_error=data.get("writeConcernError"),
        )

    def transactional_write(self) -> TransactionalWriteFailure | None:
        """Consume one ``onPrimaryTransactionalWrite`` activation for one write statement.

        mongod checks it after each write of a command carrying lsid and txnNumber:
        ``closeConnection`` (default true) closes the connection before the reply,
        ``failBeforeCommitExceptionCode`` fails the statement without committing it.
        """
        with self._lock:
            fp = self._transactional_write
            if fp is None or not fp.fire():
                return None
            if fp.spent:
                self._transactional_write = None
            data = fp.data
        code = data.get("failBeforeCommitExceptionCode")
        return TransactionalWriteFailure(
            close_connection=bool(data.get("closeConnection", True)),
            error_code=None if code is None else int(code),
        )
