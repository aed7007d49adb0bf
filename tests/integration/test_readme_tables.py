"""The README's attribute, metric and configuration tables say what is really emitted.

A workload that reaches every documented attribute (a retried transaction with options, a cursor,
failed operations, a failed ``with_transaction`` and a failed commit, query text and
``database/dup`` on) is exported, and the tables are compared with it both ways: every row is
emitted, and everything emitted has a row.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorClientSession
from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability
from opentelemetry.sdk.metrics.export import Metric, Sum
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from pymongo import ReadPreference
from pymongo.errors import DuplicateKeyError, OperationFailure
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from motor_otel import (
    KeepTransactionsSampler,
    MotorInstrumentor,
    instrument_client,
    uninstrument_client,
)
from motor_otel.config import ENV_PREFIX, Settings
from tests.conftest import CLIENT_OPTIONS
from tests.signals import Signals

README = Path(__file__).resolve().parents[2] / "README.md"
KINDS = ("withTransaction", "transaction", "operation", "command")
FAIL_POINT_OFF = {"configureFailPoint": "failCommand", "mode": "off"}


def _fail(command: str, code: int, times: int) -> dict[str, Any]:
    return {
        "configureFailPoint": "failCommand",
        "mode": {"times": times},
        "data": {"failCommands": [command], "errorCode": code},
    }


def _table(heading: str) -> list[list[str]]:
    """The rows (cells, stripped) of the first table after ``heading`` in the README."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(heading)
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows.append(cells)
    assert len(rows) > 2, f"no table under {heading!r}"
    return rows[2:]  # without the header and the --- line


def _names(cell: str) -> list[str]:
    """Backticked dotted names in a cell (``none`` and other values have no dot)."""
    return [n for n in re.findall(r"`([^`]+)`", cell) if "." in n]


def _span_kinds(cell: str) -> set[str]:
    """``failed `transaction`, `withTransaction``` -> {"transaction", "withTransaction"}."""
    text = re.sub(r"\([^)]*\)", "", cell).replace("`", "").replace("failed", "")
    kinds = {part.strip() for part in text.split(",") if part.strip()}
    if kinds == {"all"}:
        return set(KINDS)
    assert kinds <= set(KINDS), f"unknown span kind in {cell!r}"
    return kinds


def _kind_of(span: ReadableSpan) -> str:
    attrs = span.attributes or {}
    if span.name in ("withTransaction", "transaction"):
        return span.name
    if "db.command.name" in attrs:
        return "command"
    assert "db.operation.name" in attrs, span.name
    return "operation"


@pytest.fixture
def dup_names(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """OTEL_SEMCONV_STABILITY_OPT_IN=database/dup, with contrib's process-wide cache reset."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "database/dup")
    _OpenTelemetrySemanticConventionStability._initialized = False
    yield
    _OpenTelemetrySemanticConventionStability._initialized = False


@pytest.fixture
async def exported(
    dup_names: None, mongodb_uri: str, signals: Signals, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[Metric], AsyncIOMotorClient]:
    """Run the workload; the spans land in the ``exporter`` fixture; the metrics are collected
    while one transaction is still open (``oldest_age`` has a point only then)."""
    client: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    signals.instrument(
        client,
        with_transaction="spec",
        query_text_max_length=1000,
    )
    driver: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    signals.instrument(
        driver,
        with_transaction="driver",
        query_text_max_length=1000,
    )
    # Kept traces (a tiny buffer cap, so that something is dropped): their own provider, whose
    # KeepTransactionsSampler samples nothing but the kept roots, exporting to the same exporter.
    monkeypatch.setattr("motor_otel.kept.MAX_BUFFERED", 3)
    keeping = signals.tracer_provider_with(KeepTransactionsSampler(ParentBased(ALWAYS_OFF)))
    kept: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    instrument_client(kept, tracer_provider=keeping, meter_provider=signals.meter_provider)
    try:
        await _workload(client)
        await _unretried_commit(driver)
        await _kept(kept)
        async with await client.start_session() as session:
            session.start_transaction()
            await client.readme_tables.items.insert_one({"n": "open"}, session=session)
            collected = signals.metrics()
            await session.abort_transaction()
    finally:
        await client.admin.command(FAIL_POINT_OFF)
        uninstrument_client(client)
        uninstrument_client(driver)
        uninstrument_client(kept)
        client.close()
        driver.close()
        kept.close()
    return collected, client


async def _unretried_commit(client: AsyncIOMotorClient) -> None:
    """Motor's own loop lets a transient commit error escape: commit_not_retried."""
    commit_conflict = _fail("commitTransaction", 112, 1)
    commit_conflict["data"]["errorLabels"] = ["TransientTransactionError"]
    await client.admin.command(commit_conflict)
    async with await client.start_session() as session:
        with pytest.raises(OperationFailure):
            await session.with_transaction(
                lambda s: client.readme_tables.items.insert_one({"n": "driver"}, session=s)
            )


async def _kept(client: AsyncIOMotorClient) -> None:
    """A retried with_transaction and a failed lone transaction, both kept, both cut short."""
    coll = client.readme_tables.kept
    await coll.delete_many({})
    await coll.insert_one({"_id": 0})
    await client.admin.command(
        _fail("update", 112, 1)
        | {
            "data": {
                "failCommands": ["update"],
                "errorCode": 112,
                "errorLabels": ["TransientTransactionError"],
            }
        }
    )

    async def update(session: AsyncIOMotorClientSession) -> None:
        for _ in range(2):
            await coll.find_one({"_id": 0}, session=session)
        await coll.update_one({"_id": 0}, {"$inc": {"n": 1}}, session=session)

    async with await client.start_session() as session:
        await session.with_transaction(update)
        session.start_transaction()
        for _ in range(2):
            await coll.find_one({"_id": 0}, session=session)
        with pytest.raises(DuplicateKeyError):
            await coll.insert_one({"_id": 0}, session=session)
        await session.abort_transaction()


async def _workload(client: AsyncIOMotorClient) -> None:
    coll = client.readme_tables.items
    await coll.delete_many({})
    await coll.insert_many([{"_id": n} for n in range(3)])
    assert [doc["_id"] async for doc in coll.find({}, batch_size=1).sort("_id")] == [0, 1, 2]

    calls = 0

    async def retried(session: AsyncIOMotorClientSession) -> None:
        """Attempt 1: insert fails (112, transient); attempt 2: its commit is unknown twice."""
        nonlocal calls
        calls += 1
        if calls == 2:
            await client.admin.command(_fail("commitTransaction", 91, 2))
        await coll.insert_one({"n": calls}, session=session)

    await client.admin.command(_fail("insert", 112, 1))
    async with await client.start_session() as session:
        await session.with_transaction(
            retried,
            read_concern=ReadConcern("majority"),
            write_concern=WriteConcern(w="majority", wtimeout=5000),
            read_preference=ReadPreference.PRIMARY,
            max_commit_time_ms=5000,
        )

        async def duplicate(session: AsyncIOMotorClientSession) -> None:
            await coll.insert_one({"_id": 0}, session=session)

        with pytest.raises(DuplicateKeyError):  # a failed withTransaction
            await session.with_transaction(duplicate)

        session.start_transaction()  # a failed attempt: its commit fails for good
        await coll.insert_one({"n": "manual"}, session=session)
        await client.admin.command(_fail("commitTransaction", 251, 1))
        with pytest.raises(OperationFailure):
            await session.commit_transaction()


def _emitted(exporter: InMemorySpanExporter) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for span in exporter.get_finished_spans():
        found[_kind_of(span)].update(span.attributes or {})
    return found


def _documented_span_attributes() -> dict[str, set[str]]:
    documented: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for span_cell, attribute_cell, *_ in _table("### Span and attribute reference"):
        for kind in _span_kinds(span_cell):
            documented[kind].update(_names(attribute_cell))
    return documented


async def test_every_documented_span_attribute_is_emitted(
    exported: Any, exporter: InMemorySpanExporter
) -> None:
    """Each row of the span table is on some exported span of its kind."""
    emitted = _emitted(exporter)
    missing = {k: sorted(v - emitted[k]) for k, v in _documented_span_attributes().items()}
    assert {k: [] for k in KINDS} == missing


async def test_every_emitted_span_attribute_is_documented(
    exported: Any, exporter: InMemorySpanExporter
) -> None:
    """Every attribute on an exported span has a row for that kind of span."""
    documented = _documented_span_attributes()
    undocumented = {k: sorted(v - documented[k]) for k, v in _emitted(exporter).items()}
    assert {k: [] for k in KINDS} == undocumented


async def test_the_metric_table_is_what_is_recorded(
    exported: tuple[list[Metric], Any],
) -> None:
    """Metric names, kinds, units and attribute keys are the table's, both ways."""
    collected, _ = exported
    recorded: dict[str, tuple[str, str, set[str]]] = {}
    for metric in collected:
        keys: set[str] = set()
        for point in metric.data.data_points:
            keys.update(point.attributes or {})
        kind = type(metric.data).__name__.lower()
        if isinstance(metric.data, Sum):
            kind = "counter" if metric.data.is_monotonic else "updowncounter"
        recorded[metric.name] = (kind, metric.unit or "", keys)
    documented: dict[str, tuple[str, str, set[str]]] = {}
    for name_cell, kind_cell, attribute_cell, _ in _table("## Metrics"):
        (name,) = re.findall(r"`([^`]+)`", name_cell)
        kind = kind_cell.split(",")[0].strip()
        (unit,) = re.findall(r"`([^`]+)`", kind_cell)
        documented[name] = (kind, unit, set(_names(attribute_cell)))
    assert documented == recorded


def _shown(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_the_configuration_table_is_the_settings() -> None:
    """Every setting has a row with its variable and default; every row is a real setting."""
    rows = _table("## Configuration")
    keywords: set[str] = set()
    variables: dict[str, str] = {}
    for keyword_cell, variable_cell, default_cell in rows:
        names = [n.split("(")[0] for n in re.findall(r"`([^`]+)`", keyword_cell)]
        keywords.update(names)
        (variable,) = re.findall(r"`([^`]+)`", variable_cell) or [None]
        if variable is not None:
            variables[variable] = names[0] if names else ""
            if names:
                default = re.findall(r"`([^`]+)`", default_cell)[0]
                assert _shown(getattr(Settings(), names[0])) == default, names[0]
    settings = {f.name for f in fields(Settings)}
    accepted = set(inspect.signature(MotorInstrumentor.instrument).parameters) - {
        "self",
        "kwargs",
    }
    assert settings <= keywords
    assert keywords <= accepted
    assert keywords <= settings | set(inspect.signature(instrument_client).parameters)
    expected = {ENV_PREFIX + name.upper(): name for name in settings if not name.endswith("_hook")}
    expected["OTEL_SEMCONV_STABILITY_OPT_IN"] = ""
    assert expected == variables
