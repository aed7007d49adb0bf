"""error.type and db.response.status_code from PyMongo's exceptions and from server replies."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    DuplicateKeyError,
    ExecutionTimeout,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteConcernError,
)

from motor_otel.errors import error_attributes, error_code, error_type, reply_error


def _raised(exc: BaseException, cause: BaseException | None = None) -> BaseException:
    """``exc`` as Python leaves it after ``raise exc from cause``."""
    try:
        raise exc from cause
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OperationFailure("Write conflict", 112, {"ok": 0, "code": 112}), "112"),
        (DuplicateKeyError("E11000", 11000, {"code": 11000, "index": 0}), "11000"),
        # NotPrimaryError keeps the code only in the reply it carries.
        (NotPrimaryError("not primary", {"ok": 0, "code": 10107, "errmsg": "x"}), "10107"),
        (NotPrimaryError("node is recovering", {"ok": 0, "code": 91}), "91"),
        # BulkWriteError says 65, a code PyMongo makes up; the server's is the write error's.
        (
            BulkWriteError({"writeErrors": [{"index": 0, "code": 11000}], "nInserted": 0}),
            "11000",
        ),
        (
            BulkWriteError({"writeErrors": [], "writeConcernErrors": [{"code": 64}]}),
            "64",
        ),
        (WriteConcernError("waiting for replication timed out", 64, {"code": 64}), "64"),
        (AutoReconnect("connection closed"), "pymongo.errors.AutoReconnect"),
        (ServerSelectionTimeoutError("no primary"), "pymongo.errors.ServerSelectionTimeoutError"),
        (ValueError("bad"), "ValueError"),
    ],
)
def test_error_type_is_the_code_else_the_qualified_class(exc: BaseException, expected: str) -> None:
    """The server code as a string where there is one, else the fully qualified class name."""
    assert expected == error_type(exc)
    code = error_code(exc)
    assert (str(code) if code is not None else None) == error_attributes(exc).get(
        "db.response.status_code"
    )
    assert expected == error_attributes(exc)["error.type"]


def test_a_wrapper_reports_the_original_error() -> None:
    """with_transaction's time limit wraps the last error (code 50): the original's code wins."""
    original = _raised(OperationFailure("Write conflict", 112, {"ok": 0, "code": 112}))
    wrapper = _raised(ExecutionTimeout("timed out", 50, {"ok": 0, "code": 50}), original)
    assert error_type(wrapper) == "112"
    assert error_code(wrapper) == 112
    network = _raised(AutoReconnect("connection closed"), ConnectionResetError(104, "reset"))
    assert error_type(network) == "pymongo.errors.AutoReconnect"  # an OSError is not a wrapper
    retried = _raised(AutoReconnect("connection closed"), None)
    retried.__context__ = OperationFailure("earlier attempt", 112)  # a retry's implicit context
    assert error_type(retried) == "pymongo.errors.AutoReconnect"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ({"ok": 1, "n": 1}, None),
        ({"ok": 1.0, "cursor": {"id": 0, "firstBatch": []}}, None),
        ({"ok": 0, "code": 112, "codeName": "WriteConflict", "errmsg": "x"}, ("112", 112)),
        (
            {
                "ok": 1,
                "n": 0,
                "writeErrors": [{"index": 0, "code": 11000, "errmsg": "E11000"}],
                "writeConcernError": {"code": 64},
            },
            ("11000", 11000),
        ),
        ({"ok": 1, "n": 1, "writeConcernError": {"code": 64, "errmsg": "x"}}, ("64", 64)),
        (
            {"errmsg": "connection closed", "errtype": "AutoReconnect"},
            ("pymongo.errors.AutoReconnect", None),
        ),
        ({"ok": 0, "errmsg": "no code"}, ("pymongo.errors.OperationFailure", None)),
    ],
)
def test_reply_error(reply: dict[str, Any], expected: tuple[str, int | None] | None) -> None:
    """ok:0 by its code; ok:1 by its first write error, else its writeConcernError."""
    assert expected == reply_error(reply)


def test_reply_and_exception_agree() -> None:
    """The command span (from the reply) and the operation (from PyMongo's exception) agree."""
    reply = {"ok": 1, "n": 0, "writeErrors": [{"index": 0, "code": 11000, "errmsg": "E11000"}]}
    exc = DuplicateKeyError("E11000", 11000, reply["writeErrors"][0])
    bulk = BulkWriteError({"writeErrors": reply["writeErrors"], "nInserted": 0})
    failure = reply_error(reply)
    assert failure is not None
    assert failure[0] == error_type(exc) == error_type(bulk)
    closed = {"errmsg": "connection closed", "errtype": "AutoReconnect"}
    assert (error_type(AutoReconnect("connection closed")), None) == reply_error(closed)
