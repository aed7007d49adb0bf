"""Attribute names (MongoDB's tracing spec, OTel semconv, and ours) and how to build them.

Builders read driver documents and never mutate them: PyMongo hands listeners the very
documents it sends.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from types import FrameType
from typing import Any

from bson import json_util
from bson.binary import Binary
from bson.json_util import RELAXED_JSON_OPTIONS
from bson.timestamp import Timestamp
from opentelemetry.util.types import AttributeValue

# MongoDB drivers' OpenTelemetry spec / OTel database semantic conventions.
DB_SYSTEM_NAME = "db.system.name"
DB_NAMESPACE = "db.namespace"
DB_COLLECTION_NAME = "db.collection.name"
DB_OPERATION_NAME = "db.operation.name"
DB_OPERATION_SUMMARY = "db.operation.summary"
DB_COMMAND_NAME = "db.command.name"
DB_QUERY_SUMMARY = "db.query.summary"
DB_QUERY_TEXT = "db.query.text"
DB_RESPONSE_STATUS_CODE = "db.response.status_code"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
NETWORK_TRANSPORT = "network.transport"
ERROR_TYPE = "error.type"
EXCEPTION_MESSAGE = "exception.message"
EXCEPTION_TYPE = "exception.type"
EXCEPTION_STACKTRACE = "exception.stacktrace"
MONGODB_LSID = "db.mongodb.lsid"
MONGODB_TXN_NUMBER = "db.mongodb.txn_number"
MONGODB_CURSOR_ID = "db.mongodb.cursor_id"
MONGODB_SERVER_CONNECTION_ID = "db.mongodb.server_connection_id"
MONGODB_DRIVER_CONNECTION_ID = "db.mongodb.driver_connection_id"

# Ours (documented in the README).
ERROR_LABELS = "db.mongodb.error_labels"
CLUSTER_TIME = "db.mongodb.cluster_time"
OPERATION_TIME = "db.mongodb.operation_time"
TXN_ATTEMPT = "db.mongodb.transaction.attempt"
TXN_ATTEMPTS = "db.mongodb.transaction.attempts"
TXN_COMMIT_ATTEMPTS = "db.mongodb.transaction.commit_attempts"
TXN_OUTCOME = "db.mongodb.transaction.outcome"
TXN_MODE = "db.mongodb.transaction.mode"
TXN_READ_CONCERN = "db.mongodb.transaction.read_concern"
TXN_WRITE_CONCERN = "db.mongodb.transaction.write_concern"
TXN_READ_PREFERENCE = "db.mongodb.transaction.read_preference"
TXN_MAX_COMMIT_TIME_MS = "db.mongodb.transaction.max_commit_time_ms"
TXN_BACKOFF_MS = "db.mongodb.transaction.backoff_ms"
TXN_RETRY_CAUSE = "db.mongodb.transaction.retry_cause"
TXN_WASTED_MS = "db.mongodb.transaction.wasted_ms"
TXN_KEPT = "db.mongodb.transaction.kept"  # the keep rule that matched: the keep mark
TXN_KEPT_DROPPED = "db.mongodb.transaction.kept_dropped"  # what the buffer cap dropped
TXN_SERVER_MS = "db.mongodb.transaction.server_ms"
TXN_APP_MS = "db.mongodb.transaction.app_ms"
TXN_WRITE_WINDOW_MS = "db.mongodb.transaction.write_window_ms"
MONGODB_COMMAND_DURATION_MS = "db.mongodb.command.duration_ms"  # command events (events mode)

MONGODB = "mongodb"

# The semconv release whose names these are. 1.30.0 is the first with all of them: it renamed
# db.system to db.system.name and introduced db.query.summary, and no later release renamed
# anything we emit. A backend's schema transformation keys on this URL, so it must not claim an
# older release (1.26.0 still had db.system) whose names we do not send.
SCHEMA_URL = "https://opentelemetry.io/schemas/1.30.0"

# The names before the stable database conventions, emitted beside the stable ones only under
# OTEL_SEMCONV_STABILITY_OPT_IN=database/dup (as contrib instrumentations do): stable -> old.
OLD_NAMES = (
    (DB_SYSTEM_NAME, "db.system"),
    (DB_NAMESPACE, "db.name"),
    (DB_QUERY_TEXT, "db.statement"),
    (SERVER_ADDRESS, "net.peer.name"),
    (SERVER_PORT, "net.peer.port"),
    (DB_COLLECTION_NAME, "db.mongodb.collection"),
)
TRUNCATION_MARKER = "..."

# Command-logging-and-monitoring spec: these never carry text, and get no span at all.
SENSITIVE_COMMANDS = frozenset(
    {
        "authenticate",
        "saslstart",
        "saslcontinue",
        "getnonce",
        "createuser",
        "updateuser",
        "copydbgetnonce",
        "copydbsaslstart",
        "copydb",
    }
)
_HELLO = frozenset({"hello", "ismaster"})
# Commands whose first value is a string that is not a collection.
_NOT_COLLECTION = frozenset({"configureFailPoint", "explain", "mapreduce"})
_STRIPPED = frozenset({"lsid", "$db", "$clusterTime", "signature"})
_REDACTED = "?"


def is_sensitive(command_name: str, command: Mapping[str, Any]) -> bool:
    lowered = command_name.lower()
    if lowered in SENSITIVE_COMMANDS:
        return True
    return lowered in _HELLO and "speculativeAuthenticate" in command


_LSID_CACHE: dict[bytes, str] = {}
_LSID_CACHE_MAX = 4096  # server sessions are pooled: a process sees few distinct lsids


def lsid_to_str(lsid: Any) -> str | None:
    """The session id's UUID as a string, as PyMongo's own tracing formats it."""
    if not isinstance(lsid, (dict, Mapping)):  # dict first: no ABC check per command
        return None
    raw = lsid.get("id")
    if isinstance(raw, (Binary, bytes)) and len(raw) == 16:
        key = bytes(raw)
        text = _LSID_CACHE.get(key)
        if text is None:
            if len(_LSID_CACHE) >= _LSID_CACHE_MAX:
                _LSID_CACHE.clear()
            text = _LSID_CACHE[key] = str(uuid.UUID(bytes=key))
        return text
    if isinstance(raw, uuid.UUID):
        return str(raw)
    return None


def txn_number_of(command: Mapping[str, Any]) -> int | None:
    """The command's txnNumber, if it is one (an integer, not a bool)."""
    txn = command.get("txnNumber")
    return int(txn) if isinstance(txn, int) and not isinstance(txn, bool) else None


def timestamp_to_int(ts: Any) -> int | None:
    """A BSON timestamp as one int64: ``seconds << 32 | increment`` (sorts like the original)."""
    if isinstance(ts, Timestamp):
        return (ts.time << 32) | ts.inc
    return None


def cluster_time_of(reply: Mapping[str, Any]) -> int | None:
    ct = reply.get("$clusterTime")
    if isinstance(ct, (dict, Mapping)):  # dict first: no ABC check per reply
        return timestamp_to_int(ct.get("clusterTime"))
    return None


def collection_of(command_name: str, command: Mapping[str, Any], database: str) -> str | None:
    """The collection a command targets, omitted on ``admin`` as the spec says."""
    if database == "admin" or command_name in _NOT_COLLECTION:
        return None
    if command_name == "getMore":
        coll = command.get("collection")
        return coll if isinstance(coll, str) else None
    value = command.get(command_name)
    return value if isinstance(value, str) and value else None


def summary(name: str, database: str, collection: str | None) -> str:
    return f"{name} {database}.{collection}" if collection else f"{name} {database}"


_MAX_CACHED = 1024
_OPERATION_CACHE: dict[
    tuple[str, str, str | None], tuple[Mapping[str, AttributeValue], Mapping[str, AttributeValue]]
] = {}


def operation_attributes(
    operation: str, database: str, collection: str | None
) -> tuple[Mapping[str, AttributeValue], Mapping[str, AttributeValue]]:
    """(span attributes, metric attributes) of an operation: built once per namespace.

    Shared between calls: callers copy them rather than change them.
    """
    key = (operation, database, collection)
    found = _OPERATION_CACHE.get(key)
    if found is None:
        metric: dict[str, AttributeValue] = {
            DB_SYSTEM_NAME: MONGODB,
            DB_NAMESPACE: database,
            DB_OPERATION_NAME: operation,
        }
        if collection:
            metric[DB_COLLECTION_NAME] = collection
        span = {**metric, DB_OPERATION_SUMMARY: summary(operation, database, collection)}
        if len(_OPERATION_CACHE) >= _MAX_CACHED:
            _OPERATION_CACHE.clear()
        found = _OPERATION_CACHE[key] = (span, metric)
    return found


_COMMAND_CACHE: dict[tuple[str, str, str | None, Any], Mapping[str, AttributeValue]] = {}


def command_attributes(
    name: str, database: str, collection: str | None, address: Any
) -> Mapping[str, AttributeValue]:
    """A command span's constant attributes (per command name, namespace and server).

    Shared between calls: callers copy them rather than change them.
    """
    key = (name, database, collection, address)
    cacheable = True
    try:
        found = _COMMAND_CACHE.get(key)
    except TypeError:  # an unhashable address: build it every time
        found, cacheable = None, False
    if found is None:
        attrs: dict[str, AttributeValue] = {
            DB_SYSTEM_NAME: MONGODB,
            DB_NAMESPACE: database,
            DB_COMMAND_NAME: name,
            DB_QUERY_SUMMARY: summary(name, database, collection),
            **server_attributes(address),
        }
        if collection:
            attrs[DB_COLLECTION_NAME] = collection
        found = attrs
        if cacheable:
            if len(_COMMAND_CACHE) >= _MAX_CACHED:
                _COMMAND_CACHE.clear()
            _COMMAND_CACHE[key] = attrs
    return found


_SERVER_CACHE: dict[Any, Mapping[str, AttributeValue]] = {}


def server_attributes(address: Any) -> Mapping[str, AttributeValue]:
    """``server.address``/``server.port``/``network.transport`` from a (host, port) address.

    Cached per address (a client talks to a handful of servers); the result is shared, so
    callers copy it rather than change it.
    """
    try:
        return _SERVER_CACHE[address]
    except (KeyError, TypeError):
        pass
    attrs: dict[str, AttributeValue] = {}
    if isinstance(address, tuple) and len(address) == 2:
        host, port = address
        if isinstance(port, int) and port:
            attrs = {SERVER_ADDRESS: str(host), SERVER_PORT: port, NETWORK_TRANSPORT: "tcp"}
        else:
            attrs = {SERVER_ADDRESS: str(host), NETWORK_TRANSPORT: "unix"}
        if len(_SERVER_CACHE) < 1024:
            _SERVER_CACHE[address] = attrs
    return attrs


def error_labels_of(failure: Mapping[str, Any]) -> list[str]:
    labels = failure.get("errorLabels")
    return [str(label) for label in labels] if isinstance(labels, list) else []


def add_labels(target: list[str], labels: Iterable[str]) -> None:
    """Append the labels ``target`` lacks, keeping the order they were first seen in."""
    for label in labels:
        if label not in target:
            target.append(label)


def with_old_names(attrs: dict[str, Any]) -> dict[str, Any]:
    """Add the pre-stable names (``OLD_NAMES``) beside the stable ones present; returns ``attrs``."""
    for stable, old in OLD_NAMES:
        if stable in attrs:
            attrs[old] = attrs[stable]
    return attrs


def query_text(command: Mapping[str, Any], max_length: int, raw_values: bool) -> str | None:
    """Relaxed Extended JSON of the command, values redacted unless opted in, truncated.

    Truncated as the command logging spec truncates documents (its "configurable max document
    length"): cut to ``max_length``, then ``...`` appended, so a reader knows text is missing.
    The unit is the code point: characters are written as themselves (not ``\\u`` escapes),
    so a cut never splits one.
    """
    if max_length <= 0:
        return None
    body = {k: v for k, v in command.items() if k not in _STRIPPED}
    if not raw_values:
        body = {k: (v if k == next(iter(command)) else _redact(v)) for k, v in body.items()}
    text = json_util.dumps(body, json_options=RELAXED_JSON_OPTIONS, ensure_ascii=False)
    if len(text) > max_length:
        return text[:max_length] + TRUNCATION_MARKER
    return text


def _redact(value: Any) -> Any:
    """Keep keys, operators and shape; replace every scalar value."""
    if isinstance(value, Mapping):
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(v) for v in value]
    return _REDACTED


# Server messages quote the offending key ("dup key: { email: \"a@b.c\" }"): values, so redacted.
_KEY_VALUES = re.compile(r"(dup key: ).*", re.DOTALL)  # mongod puts the key last


def error_message(message: str) -> str:
    """A server error message without the document values it may quote."""
    return _KEY_VALUES.sub(r"\1{ ? }", message)


def exception_message(exc: BaseException) -> str:
    """What an exception says, minus document values.

    PyMongo's ``str()`` of a server error appends the whole reply (``full error: {...}``), which
    for a write error holds ``keyValue`` and, for a bulk write, the documents themselves.
    """
    details = getattr(exc, "details", None)
    if isinstance(details, Mapping):
        errors = details.get("writeErrors")
        if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
            first = errors[0]
            return (
                f"{len(errors)} write error(s); first: code {first.get('code')}, "
                f"{error_message(str(first.get('errmsg', '')))}"
            )
        if "errmsg" in details:
            return error_message(str(details["errmsg"]))
    return error_message(str(exc))


def stack_text(frames: Iterable[tuple[FrameType, int]]) -> str:
    """File, line and function per frame, without source lines.

    ``traceback.format_*`` reads and (on 3.11+) compiles each source line for its carets: the
    most expensive part of a failed command's span by far, and nothing a trace viewer needs.
    """
    return "".join(
        f'  File "{frame.f_code.co_filename}", line {line}, in {frame.f_code.co_name}\n'
        for frame, line in frames
    )
