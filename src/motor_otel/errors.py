"""One ``error.type`` per failure, the same on every signal that reports it.

OpenTelemetry's MongoDB conventions (semantic-conventions ``docs/db/mongodb.md``, notes on
``db.response.status_code`` and ``error.type``): "All MongoDB error codes SHOULD be considered
errors", ``error.type`` SHOULD match ``db.response.status_code``, else be the canonical exception
name, the original preferred over a wrapper. So: the code as a string; without a code, the
exception's fully qualified class name. The command span (from the reply or failure
document), the operation span, the ``transaction``/``withTransaction`` span, the
``db.client.operation.duration`` point, the transaction summary and the log line all take it
from here, so a dashboard's "failed operations by error type" joins to the traces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pymongo.errors
from pymongo.errors import OperationFailure, PyMongoError, WriteConcernError, WriteError

from motor_otel.attributes import DB_RESPONSE_STATUS_CODE, ERROR_TYPE

_MAX_CHAIN = 8  # a cause chain longer than this is not PyMongo's wrapping


def _code(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _first_code(items: Any) -> int | None:
    if isinstance(items, list) and items and isinstance(items[0], Mapping):
        return _code(items[0].get("code"))
    return None


def _original(exc: BaseException) -> BaseException:
    """The PyMongo error a PyMongo error wraps (``raise ... from``), innermost first.

    Only ``__cause__`` is followed: PyMongo wraps explicitly (``_make_timeout_error(e) from e``),
    while an implicit ``__context__`` is often an earlier attempt's error that a retry replaced,
    which is not what this exception (or its command span) reports. The chain stops at a
    non-PyMongo error: ``AutoReconnect`` raised from an ``OSError`` stays ``AutoReconnect``.
    """
    current = exc
    for _ in range(_MAX_CHAIN):
        cause = current.__cause__
        if not isinstance(cause, PyMongoError):
            break
        current = cause
    return current


def _own_code(exc: BaseException) -> int | None:
    details = getattr(exc, "details", None)
    if isinstance(details, Mapping):
        # BulkWriteError and ClientBulkWriteException say 65 ("batch op errors occurred"), a
        # code PyMongo makes up: the server's is the first write (concern) error's.
        code = _first_code(details.get("writeErrors"))
        if code is None:
            code = _first_code(details.get("writeConcernErrors"))
        if code is not None:
            return code
        error = details.get("error")  # ClientBulkWriteException's top-level error
        if isinstance(error, BaseException) and error is not exc:
            code = _own_code(error)
            if code is not None:
                return code
    code = _code(getattr(exc, "code", None))
    if code is not None:
        return code
    if isinstance(details, Mapping):  # NotPrimaryError keeps the reply, code included, here
        return _code(details.get("code"))
    return None


def error_code(exc: BaseException) -> int | None:
    """The server's error code for a failure, if it has one.

    From ``exc.code`` or ``exc.details["code"]`` (``NotPrimaryError`` carries it there only),
    the original error's before a wrapper's.
    """
    original = _original(exc)
    code = _own_code(original)
    if code is None and original is not exc:
        code = _own_code(exc)
    return code


def class_name(cls: type) -> str:
    """``pymongo.errors.AutoReconnect``; builtins keep their bare name (``ValueError``)."""
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def error_type(exc: BaseException) -> str:
    """``error.type`` of an exception: its server code as a string, else its class name."""
    code = error_code(exc)
    if code is not None:
        return str(code)
    return class_name(type(_original(exc)))


def error_attributes(exc: BaseException) -> dict[str, str]:
    """``error.type``, and ``db.response.status_code`` beside it when the failure has a code."""
    code = error_code(exc)
    if code is not None:
        return {ERROR_TYPE: str(code), DB_RESPONSE_STATUS_CODE: str(code)}
    return {ERROR_TYPE: class_name(type(_original(exc)))}


def reply_error(reply: Mapping[str, Any]) -> tuple[str, int | None] | None:
    """``(error.type, code)`` of a command reply or failure document; ``None`` when it succeeded.

    ``ok: 0`` is a failure by its ``code``. ``ok: 1`` is one too when it carries write errors,
    as mongod reports them (first ``writeErrors[0].code``, else ``writeConcernError.code``).
    A failure document PyMongo made from a client-side exception (``errtype``, no code) gets that
    class's name, qualified as :func:`error_type` qualifies it.
    """
    ok = reply.get("ok")
    if ok == 1 or (ok is None and "errmsg" not in reply and "errtype" not in reply):
        code = _first_code(reply.get("writeErrors"))
        if code is None:
            wce = reply.get("writeConcernError")
            if isinstance(wce, Mapping):
                code = _code(wce.get("code"))
                if code is None:
                    return class_name(WriteConcernError), None
            elif reply.get("writeErrors"):
                return class_name(WriteError), None
            else:
                return None
        return str(code), code
    code = _code(reply.get("code"))
    if code is not None:
        return str(code), code
    errtype = reply.get("errtype")
    if isinstance(errtype, str) and errtype:
        return _qualify(errtype), None
    return class_name(OperationFailure), None  # what PyMongo raises for it


def _qualify(name: str) -> str:
    """A class name from a failure document's ``errtype``, qualified like :func:`class_name`."""
    cls = getattr(pymongo.errors, name, None)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        return class_name(cls)
    return name  # a builtin (``ConnectionResetError``) or a class we cannot place
