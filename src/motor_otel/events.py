"""Transaction lifecycle facts, handed from the tracing core to metrics and logs.

The session and listener modules decide *what happened*; observers (``metrics.py``,
``logs.py``) decide how to say it. Keeping this contract in one place lets each signal
say the same thing as the spans without reaching into span objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from opentelemetry.util.types import AttributeValue

Outcome = Literal["committed", "aborted", "failed"]
"""How a transaction ended, as ``db.mongodb.transaction.outcome`` says it."""


@dataclass(frozen=True, slots=True)
class RetryCause:
    """The operation whose ``TransientTransactionError`` ended an attempt.

    Bounded by construction: the application's own collections and the driver's operation
    names, plus ``error.type``; never a document value.
    """

    summary: str
    """The failing operation's ``db.operation.summary``: ``update shop.stock``,
    ``commitTransaction admin``."""
    operation: str
    """Its ``db.operation.name``."""
    collection: str | None
    """Its ``db.collection.name`` (``None`` for ``commitTransaction``)."""
    error_type: str
    """Its ``error.type``."""


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    """One attempt of a transaction: started, retried, or ended."""

    attempt: int
    """1-based attempt number within its transaction (or ``withTransaction`` call)."""
    lsid: str | None
    """The session id's UUID as a string."""
    txn_number: int | None
    error_labels: Sequence[str] = ()
    """Labels of the error that caused a retry, if any."""
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    """The same attributes as the span this attempt produced."""
    retry_cause: RetryCause | None = None
    """On ``transaction_retry``: what ended the previous attempt, when an operation's
    ``TransientTransactionError`` did."""
    error_type: str | None = None
    """On ``commit_not_retried``: the ``error.type`` of the commit error that escaped."""


@dataclass(frozen=True, slots=True)
class TransactionSummary:
    """A finished transaction: one ``withTransaction`` call, or one
    ``start_transaction`` → ``commit_transaction``/``abort_transaction``."""

    outcome: Outcome
    duration_s: float
    attempts: int
    commit_attempts: int
    lsid: str | None
    txn_number: int | None
    error_labels: Sequence[str] = ()
    """Every distinct error label seen during the transaction, in order of appearance."""
    error_type: str | None = None
    """``error.type`` of the failure when ``outcome == "failed"``: the server's error code as a
    string, else the exception's fully qualified class name (see :mod:`motor_otel.errors`)."""
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    wasted_s: float = 0.0
    """Time lost to retries: the attempts that did not commit plus the backoff between them;
    0 unless a ``with_transaction`` call retried."""
    retry_cause: RetryCause | None = None
    """The one cause of every retry, when they all had the same one (by collection and
    operation); ``None`` when there were several, or none known."""


@dataclass(frozen=True, slots=True)
class AttemptTimes:
    """Where one attempt's time went, measured from the client (see :mod:`motor_otel.timing`).

    Plain facts, no span: a transaction's spans can be built from them after the fact too.
    """

    outcome: Outcome
    duration_s: float
    """From ``start_transaction`` to the end of the commit or abort that settled the attempt."""
    server_s: float
    """Time during which at least one of its commands was in flight (overlaps count once)."""
    write_window_s: float | None
    """From the start of its first write command to its end; ``None`` when it wrote nothing."""
    write_collection: str | None = None
    """The collection of its first write (``None`` when unknown or nothing was written)."""
    long: bool = False
    """Its write window passed ``long_transaction_ms``."""
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    """The attempt span's attributes, when an observer reads them (the lifecycle logger)."""

    @property
    def app_s(self) -> float:
        """The application's share: the attempt open while none of its commands was in flight."""
        return max(self.duration_s - self.server_s, 0.0)


@dataclass(frozen=True, slots=True)
class OperationSummary:
    """A finished driver operation (``insert db.coll``, ``commitTransaction admin``...)."""

    duration_s: float
    attributes: Mapping[str, AttributeValue]
    """Semantic-convention attributes: ``db.system.name``, ``db.namespace``,
    ``db.collection.name``, ``db.operation.name``, ``server.address``, ``server.port``,
    ``error.type`` and ``db.response.status_code`` on failure."""


class TransactionObserver(Protocol):
    """Receives lifecycle facts. Called synchronously: keep it cheap, never raise."""

    def transaction_started(self, info: AttemptInfo) -> None: ...

    def transaction_retry(self, info: AttemptInfo) -> None:
        """The callback (or the whole attempt) is about to run again."""

    def commit_retry(self, info: AttemptInfo) -> None:
        """``commitTransaction`` is about to be sent again for the same attempt."""

    def commit_not_retried(self, info: AttemptInfo) -> None:
        """Motor's loop let a commit error escape that the documented loop would retry."""

    def attempt_ended(self, times: AttemptTimes) -> None:
        """An attempt ended (committed, aborted or failed): where its time went."""

    def transaction_ended(self, summary: TransactionSummary) -> None: ...

    def operation_ended(self, summary: OperationSummary) -> None: ...
