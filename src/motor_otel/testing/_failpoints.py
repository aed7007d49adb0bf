"""``configureFailPoint: "failCommand"``, with mongod's modes and data fields."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from motor_otel.testing._errors import CommandError

# Commands a failCommand fail point never applies to, as in mongod.
_EXEMPT = frozenset({"configurefailpoint", "hello", "ismaster", "buildinfo", "getparameter"})


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


class FailPoints:
    """Thread-safe registry of the active failCommand fail point (mongod has one per name)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fail_command: _FailPoint | None = None

    def configure(self, command: dict[str, Any]) -> None:
        name = command.get("configureFailPoint")
        if name != "failCommand":
            raise CommandError(2, f"unknown or unsupported fail point: {name!r}")
        mode = command.get("mode")
        data = dict(command.get("data") or {})
        times: int | None
        skip = 0
        if mode == "off":
            with self._lock:
                self._fail_command = None
            return
        if mode == "alwaysOn":
            times = None
        elif isinstance(mode, dict) and "times" in mode:
            times = int(mode["times"])
        elif isinstance(mode, dict) and "skip" in mode:
            times, skip = None, int(mode["skip"])
        else:
            raise CommandError(2, f"unsupported fail point mode: {mode!r}")
        commands = data.get("failCommands")
        if not isinstance(commands, list) or not commands:
            raise CommandError(2, "failCommand requires a non-empty 'failCommands' array")
        fp = _FailPoint(
            commands=frozenset(str(c) for c in commands),
            data=data,
            times=times,
            skip=skip,
            app_name=data.get("appName"),
        )
        with self._lock:
            self._fail_command = None if times == 0 else fp

    def match(self, command_name: str, app_name: str | None) -> FailAction | None:
        """Consume one activation if the fail point applies to this command."""
        if command_name.lower() in _EXEMPT:
            return None
        with self._lock:
            fp = self._fail_command
            if fp is None or command_name not in fp.commands:
                return None
            if fp.app_name is not None and fp.app_name != app_name:
                return None
            if fp.skip > 0:
                fp.skip -= 1
                return None
            if fp.times is not None:
                fp.times -= 1
                if fp.times <= 0:
                    self._fail_command = None
            data = fp.data
        return FailAction(
            block_ms=int(data.get("blockTimeMS", 0)) if data.get("blockConnection") else 0,
            close_connection=bool(data.get("closeConnection", False)),
            error_code=data.get("errorCode"),
            error_labels=data.get("errorLabels"),
            write_concern_error=data.get("writeConcernError"),
        )
