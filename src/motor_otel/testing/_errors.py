"""Server errors as the simulator reports them: ``{ok: 0, code, codeName, errmsg, errorLabels}``."""

from __future__ import annotations

from typing import Any

# mongod's error codes and names (the server's error_codes.yml), for those the simulator or the
# drivers' spec suites use.
CODE_NAMES: dict[int, str] = {
    1: "InternalError",
    2: "BadValue",
    4: "NoSuchKey",
    6: "HostUnreachable",
    7: "HostNotFound",
    8: "UnknownError",
    9: "FailedToParse",
    11: "UserNotFound",
    13: "Unauthorized",
    14: "TypeMismatch",
    18: "AuthenticationFailed",
    20: "IllegalOperation",
    24: "LockTimeout",
    26: "NamespaceNotFound",
    27: "IndexNotFound",
    43: "CursorNotFound",
    48: "NamespaceExists",
    50: "MaxTimeMSExpired",
    52: "DollarPrefixedFieldName",
    59: "CommandNotFound",
    63: "StaleShardVersion",
    64: "WriteConcernFailed",
    66: "ImmutableField",
    72: "InvalidOptions",
    79: "UnknownReplWriteConcern",
    89: "NetworkTimeout",
    91: "ShutdownInProgress",
    96: "OperationFailed",
    100: "UnsatisfiableWriteConcern",
    112: "WriteConflict",
    115: "CommandNotSupported",
    134: "ReadConcernMajorityNotAvailableYet",
    150: "StaleEpoch",
    189: "PrimarySteppedDown",
    225: "TransactionTooOld",
    244: "TransactionAborted",
    246: "SnapshotUnavailable",
    251: "NoSuchTransaction",
    256: "TransactionCommitted",
    262: "ExceededTimeLimit",
    263: "OperationNotSupportedInTransaction",
    267: "PreparedTransactionInProgress",
    462: "IngressRequestRateLimitExceeded",
    8000: "AtlasError",
    9001: "SocketException",
    10107: "NotWritablePrimary",
    11000: "DuplicateKey",
    11600: "InterruptedAtShutdown",
    11601: "Interrupted",
    11602: "InterruptedDueToReplStateChange",
    13113: "MergeStageNoMatchingDocument",
    13435: "NotPrimaryNoSecondaryOk",
    13436: "NotPrimaryOrSecondary",
}

# Codes after which mongod labels a retryable write (or commit/abort) ``RetryableWriteError``
# (retryable-writes.md, "RetryableWriteError Labels" table, and "What do the additional error
# codes mean?" for 63, 150 and 134).
RETRYABLE_WRITE_CODES = frozenset(
    {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 63, 150, 134}
)
# Codes after which mongod labels an error inside a transaction ``TransientTransactionError``
# (transactions spec tests error-labels.json; convenient-API commit-transienttransactionerror*.json).
TRANSIENT_TRANSACTION_CODES = frozenset({24, 112, 244, 246, 251, 267})


class CommandError(Exception):
    """A command failed the way mongod would fail it."""

    def __init__(
        self, code: int, errmsg: str, labels: list[str] | None = None, **extra: Any
    ) -> None:
        super().__init__(errmsg)
        self.code = code
        self.errmsg = errmsg
        self.labels = list(labels or [])
        self.extra = extra  # fields mongod adds for this error (DuplicateKey: keyPattern...)

    def to_reply(self) -> dict[str, Any]:
        reply: dict[str, Any] = {
            "ok": 0,
            "errmsg": self.errmsg,
            "code": self.code,
            "codeName": CODE_NAMES.get(self.code, "UnknownError"),
            **self.extra,
        }
        if self.labels:
            reply["errorLabels"] = self.labels
        return reply


def write_error(index: int, error: CommandError, **extra: Any) -> dict[str, Any]:
    """One ``writeErrors`` entry, shaped as mongod sends it (MongoDB docs, "insert" command,
    "Output": ``index``, ``code``, ``codeName``, ``errmsg``; DuplicateKey adds ``keyPattern``
    and ``keyValue``)."""
    entry: dict[str, Any] = {
        "index": index,
        "code": error.code,
        "codeName": CODE_NAMES.get(error.code, "UnknownError"),
        "errmsg": error.errmsg,
    }
    entry.update(extra)
    return entry


def write_conflict() -> CommandError:
    """WriteConflict (112), which mongod labels ``TransientTransactionError`` inside a transaction
    (MongoDB docs, "In-progress Transactions and Write Conflicts"; transactions spec test
    ``errors.json``, "write conflict commit")."""
    return CommandError(
        112,
        "Caused by :: Write conflict during plan execution and yielding is disabled. :: Please "
        "retry your operation or multi-document transaction.",
        ["TransientTransactionError"],
    )


def no_such_transaction(txn_number: int) -> CommandError:
    return CommandError(
        251,
        f"Transaction with txnNumber {txn_number} has been aborted or does not exist",
        ["TransientTransactionError"],
    )
