"""Metrics that say what the spans say, through the OpenTelemetry metrics API only.

A :class:`~motor_otel.events.TransactionObserver`: the tracing core hands it lifecycle facts and
it records them, whatever the trace sampler decided. Without an SDK every instrument is a no-op:
the API's no-op meter is noticed once (:attr:`MongoMetrics.noop`, and the instrumentor then
registers no observer at all), the API's proxy meter before a provider is set is checked with
one attribute read per fact. Attribute sets are built once per distinct value and reused.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.util.types import AttributeValue

from motor_otel import attributes as A
from motor_otel.events import (
    AttemptInfo,
    AttemptTimes,
    OperationSummary,
    RetryCause,
    TransactionSummary,
)
from motor_otel.timing import OpenTransactions
from motor_otel.version import __version__

OPERATION_DURATION = "db.client.operation.duration"
TRANSACTION_DURATION = "db.client.mongodb.transaction.duration"
TRANSACTION_ATTEMPTS = "db.client.mongodb.transaction.attempts"
TRANSACTIONS = "db.client.mongodb.transactions"
TRANSACTION_RETRIES = "db.client.mongodb.transaction.retries"
COMMIT_RETRIES = "db.client.mongodb.transaction.commit_retries"
WASTED_DURATION = "db.client.mongodb.transaction.wasted_duration"
COMMIT_NOT_RETRIED = "db.client.mongodb.transaction.commit_not_retried"
APP_DURATION = "db.client.mongodb.transaction.app_duration"
WRITE_WINDOW = "db.client.mongodb.transaction.write_window"
OPEN = "db.client.mongodb.transaction.open"
OLDEST_AGE = "db.client.mongodb.transaction.oldest_age"

ERROR_LABEL = "db.mongodb.error_label"
"""On retry counters: one data point per label of the error that caused the retry (``none``
when it carried none), so a retry with two labels counts under both."""
ERROR_LABELS = "db.mongodb.error_labels"
"""On the transactions counter: every label seen, sorted and comma-joined (``none``), so each
transaction counts once."""

# OTel database semantic conventions' advice for db.client.operation.duration.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
ATTEMPT_BUCKETS = (1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0)
_OPERATION_KEYS = (
    A.DB_SYSTEM_NAME,
    A.DB_NAMESPACE,
    A.DB_COLLECTION_NAME,
    A.DB_OPERATION_NAME,
    A.SERVER_ADDRESS,
    A.SERVER_PORT,
    A.ERROR_TYPE,
    A.DB_RESPONSE_STATUS_CODE,
)
_OPERATION_KEY_SET = frozenset(_OPERATION_KEYS)


def _labels(labels: Sequence[str]) -> Sequence[str]:
    return labels or ("none",)


_MAX_CACHED = 1024  # distinct attribute sets kept per cache; a cache that fills is cleared

_K = TypeVar("_K")
_V = TypeVar("_V")


def _remember(cache: dict[_K, _V], key: _K, value: _V) -> _V:
    """Store an attribute set in its bounded cache: a full cache is cleared, never grown."""
    if len(cache) >= _MAX_CACHED:
        cache.clear()
    cache[key] = value
    return value


_RETRY_ATTRS: dict[tuple[str, RetryCause | None], Mapping[str, AttributeValue]] = {}
_TRANSACTION_ATTRS: dict[
    tuple[str, str | None, tuple[str, ...]],
    tuple[Mapping[str, AttributeValue], Mapping[str, AttributeValue]],
] = {}
_WASTED_ATTRS: dict[tuple[str, RetryCause | None], Mapping[str, AttributeValue]] = {}
_NOT_RETRIED_ATTRS: dict[tuple[tuple[str, ...], str | None], Mapping[str, AttributeValue]] = {}
_OUTCOME_ATTRS: dict[str, Mapping[str, AttributeValue]] = {}
_WINDOW_ATTRS: dict[tuple[str, str | None], Mapping[str, AttributeValue]] = {}
_SYSTEM_ATTRS: Mapping[str, AttributeValue] = {A.DB_SYSTEM_NAME: A.MONGODB}


def _outcome_attributes(outcome: str) -> Mapping[str, AttributeValue]:
    attrs = _OUTCOME_ATTRS.get(outcome)
    if attrs is None:
        attrs = _remember(_OUTCOME_ATTRS, outcome, {**_SYSTEM_ATTRS, A.TXN_OUTCOME: outcome})
    return attrs


def _window_attributes(times: AttemptTimes) -> Mapping[str, AttributeValue]:
    """The outcome and the collection of the attempt's first write (the app's, bounded)."""
    key = (times.outcome, times.write_collection)
    attrs = _WINDOW_ATTRS.get(key)
    if attrs is None:
        found: dict[str, AttributeValue] = {**_SYSTEM_ATTRS, A.TXN_OUTCOME: times.outcome}
        if times.write_collection is not None:
            found[A.DB_COLLECTION_NAME] = times.write_collection
        attrs = _remember(_WINDOW_ATTRS, key, found)
    return attrs


# Open transactions are observed per meter: the SDK keeps the first callback registered under an
# instrument's name and drops later ones, so every scope (instrument(), each instrument_client)
# reporting to one meter adds its registry to that meter's set, and one callback reads them all.
_OPEN_SOURCES: weakref.WeakKeyDictionary[Any, weakref.WeakSet[OpenTransactions]] = (
    weakref.WeakKeyDictionary()
)


def _observe_open(meter: Meter, registry: OpenTransactions) -> None:
    """Register ``registry`` with the ``open`` and ``oldest_age`` instruments of ``meter``."""
    sources = _OPEN_SOURCES.get(meter)
    if sources is not None:
        sources.add(registry)
        return
    sources = _OPEN_SOURCES[meter] = weakref.WeakSet([registry])

    def count(options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(sum(len(r) for r in list(sources)), _SYSTEM_ATTRS)

    def oldest(options: CallbackOptions) -> Iterable[Observation]:
        ages = [age for r in list(sources) if (age := r.oldest_age()) is not None]
        if ages:  # nothing open: no point, so an alert on it sees the gap
            yield Observation(max(ages), _SYSTEM_ATTRS)

    meter.create_observable_up_down_counter(
        OPEN,
        callbacks=[count],
        unit="{transaction}",
        description="Transactions open now (started, not yet committed or aborted): mongod's "
        "serverStatus transactions.currentOpen, seen from this client.",
    )
    meter.create_observable_gauge(
        OLDEST_AGE,
        callbacks=[oldest],
        unit="s",
        description="Age of the oldest open transaction: a leaked or abandoned one holds its "
        "documents until mongod's transactionLifetimeLimitSeconds (60 s by default).",
    )


def _cause_attributes(cause: RetryCause | None, *, error_type: bool) -> dict[str, AttributeValue]:
    """A retry cause as metric attributes: the app's collections and the driver's operation
    names (bounded), and optionally its ``error.type``."""
    if cause is None:
        return {}
    attrs: dict[str, AttributeValue] = {A.DB_OPERATION_NAME: cause.operation}
    if cause.collection is not None:
        attrs[A.DB_COLLECTION_NAME] = cause.collection
    if error_type:
        attrs[A.ERROR_TYPE] = cause.error_type
    return attrs


def _retry_attributes(label: str, cause: RetryCause | None = None) -> Mapping[str, AttributeValue]:
    key = (label, cause)
    attrs = _RETRY_ATTRS.get(key)
    if attrs is None:
        attrs = _remember(
            _RETRY_ATTRS,
            key,
            {
                A.DB_SYSTEM_NAME: A.MONGODB,
                ERROR_LABEL: label,
                **_cause_attributes(cause, error_type=True),
            },
        )
    return attrs


def _wasted_attributes(summary: TransactionSummary) -> Mapping[str, AttributeValue]:
    """The outcome and, with one cause, its collection and operation (not its error.type)."""
    key = (summary.outcome, summary.retry_cause)
    attrs = _WASTED_ATTRS.get(key)
    if attrs is None:
        attrs = _remember(
            _WASTED_ATTRS,
            key,
            {
                A.DB_SYSTEM_NAME: A.MONGODB,
                A.TXN_OUTCOME: summary.outcome,
                **_cause_attributes(summary.retry_cause, error_type=False),
            },
        )
    return attrs


def _not_retried_attributes(info: AttemptInfo) -> Mapping[str, AttributeValue]:
    key = (tuple(info.error_labels), info.error_type)
    attrs = _NOT_RETRIED_ATTRS.get(key)
    if attrs is None:
        found: dict[str, AttributeValue] = {
            A.DB_SYSTEM_NAME: A.MONGODB,
            ERROR_LABELS: ",".join(sorted(info.error_labels)) or "none",
        }
        if info.error_type is not None:
            found[A.ERROR_TYPE] = info.error_type
        attrs = _remember(_NOT_RETRIED_ATTRS, key, found)
    return attrs


def _transaction_attributes(
    summary: TransactionSummary,
) -> tuple[Mapping[str, AttributeValue], Mapping[str, AttributeValue]]:
    """(duration/attempts attributes, transactions-counter attributes) for a summary."""
    key = (summary.outcome, summary.error_type, tuple(summary.error_labels))
    found = _TRANSACTION_ATTRS.get(key)
    if found is None:
        attrs: dict[str, AttributeValue] = {
            A.DB_SYSTEM_NAME: A.MONGODB,
            A.TXN_OUTCOME: summary.outcome,
        }
        if summary.error_type is not None:
            attrs[A.ERROR_TYPE] = summary.error_type
        labels = ",".join(sorted(summary.error_labels)) or "none"
        found = _remember(_TRANSACTION_ATTRS, key, (attrs, {**attrs, ERROR_LABELS: labels}))
    return found


class MongoMetrics:
    """Records operation and transaction metrics; see the README's metric table."""

    __slots__ = (
        "_app_duration",
        "_attempts",
        "_commit_not_retried",
        "_commit_retries",
        "_operation_duration",
        "_proxy",
        "_retries",
        "_transaction_duration",
        "_transactions",
        "_wasted_duration",
        "_write_window",
        "noop",
    )

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        open_transactions: OpenTransactions | None = None,
    ) -> None:
        meter = metrics.get_meter(
            "motor_otel", __version__, meter_provider, schema_url=A.SCHEMA_URL
        )
        self.noop = isinstance(meter, metrics.NoOpMeter)  # nothing recorded goes anywhere
        # The API's proxy meter (no provider set yet) becomes real when one is set.
        self._proxy = meter if hasattr(meter, "_real_meter") else None
        self._operation_duration = meter.create_histogram(
            OPERATION_DURATION,
            unit="s",
            description="Duration of database client operations.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._transaction_duration = meter.create_histogram(
            TRANSACTION_DURATION,
            unit="s",
            description="Duration of MongoDB transactions, all attempts and commits included.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._attempts = meter.create_histogram(
            TRANSACTION_ATTEMPTS,
            unit="{attempt}",
            description="Attempts per transaction (1 when it was not retried).",
            explicit_bucket_boundaries_advisory=ATTEMPT_BUCKETS,
        )
        self._transactions = meter.create_counter(
            TRANSACTIONS, unit="{transaction}", description="Finished transactions by outcome."
        )
        self._retries = meter.create_counter(
            TRANSACTION_RETRIES,
            unit="{retry}",
            description="Whole-transaction retries, by the error label that caused them.",
        )
        self._commit_retries = meter.create_counter(
            COMMIT_RETRIES,
            unit="{retry}",
            description="commitTransaction retries, by the error label that caused them.",
        )
        self._wasted_duration = meter.create_histogram(
            WASTED_DURATION,
            unit="s",
            description="Time lost to retries by one with_transaction call: its attempts that "
            "did not commit plus the backoff between them (calls that retried only).",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._commit_not_retried = meter.create_counter(
            COMMIT_NOT_RETRIED,
            unit="{commit}",
            description="Commit errors Motor's with_transaction let escape where the documented "
            "loop retries (driver mode).",
        )
        self._app_duration = meter.create_histogram(
            APP_DURATION,
            unit="s",
            description="Time a transaction attempt was open while none of its commands was in "
            "flight: the application's share (mongod's timeInactiveMicros, from the client).",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._write_window = meter.create_histogram(
            WRITE_WINDOW,
            unit="s",
            description="From a transaction attempt's first write command to the end of its "
            "commit or abort: while other writers of its documents conflict with it.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        if open_transactions is not None and not self.noop:
            _observe_open(meter, open_transactions)

    def transaction_started(self, info: AttemptInfo) -> None:
        pass

    @property
    def idle(self) -> bool:
        """The API's proxy meter with no provider behind it yet: nothing to record."""
        proxy = self._proxy
        return proxy is not None and getattr(proxy, "_real_meter", None) is None

    def transaction_retry(self, info: AttemptInfo) -> None:
        if self.idle:
            return
        for label in _labels(info.error_labels):
            self._retries.add(1, _retry_attributes(label, info.retry_cause))

    def commit_retry(self, info: AttemptInfo) -> None:
        if self.idle:
            return
        for label in _labels(info.error_labels):
            self._commit_retries.add(1, _retry_attributes(label))

    def commit_not_retried(self, info: AttemptInfo) -> None:
        if self.idle:
            return
        self._commit_not_retried.add(1, _not_retried_attributes(info))

    def attempt_ended(self, times: AttemptTimes) -> None:
        if self.idle:
            return
        self._app_duration.record(times.app_s, _outcome_attributes(times.outcome))
        if times.write_window_s is not None:
            self._write_window.record(times.write_window_s, _window_attributes(times))

    def transaction_ended(self, summary: TransactionSummary) -> None:
        if self.idle:
            return
        attrs, counted = _transaction_attributes(summary)
        self._transaction_duration.record(summary.duration_s, attrs)
        self._attempts.record(summary.attempts, attrs)
        self._transactions.add(1, counted)
        if summary.wasted_s > 0:
            self._wasted_duration.record(summary.wasted_s, _wasted_attributes(summary))

    def operation_ended(self, summary: OperationSummary) -> None:
        if self.idle:
            return
        attrs = summary.attributes
        if not _OPERATION_KEY_SET.issuperset(attrs):  # the core hands over exactly these
            attrs = {k: attrs[k] for k in _OPERATION_KEYS if k in attrs}
        self._operation_duration.record(summary.duration_s, attrs)
