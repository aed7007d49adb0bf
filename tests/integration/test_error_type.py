"""One error.type per failure: the command span, the operation span, the transaction spans and
the db.client.operation.duration point agree, through Motor and PyMongo's AsyncMongoClient.

Write errors are scripted on the wire with a bare MockupDB, as mongod sends them (``ok: 1`` with
``writeErrors``/``writeConcernError``), so the test does not depend on the simulator's shape for
them; fail points and duplicate keys go through the simulator (or ``MONGODB_URI``).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pymongo
import pytest
from mockupdb import MockupDB
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from pymongo.errors import (
    AutoReconnect,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)

from motor_otel import uninstrument_client
from tests.conftest import CLIENT_OPTIONS
from tests.signals import Signals, metric_points
from tests.spans import named

HELLO = {
    "ismaster": True,
    "isWritablePrimary": True,
    "helloOk": True,
    "minWireVersion": 0,
    "maxWireVersion": 21,  # MongoDB 7.0
    "maxWriteBatchSize": 100_000,
    "ok": 1,
}
DUPLICATE = {
    "index": 0,
    "code": 11000,
    "codeName": "DuplicateKey",
    "errmsg": "E11000 duplicate key error collection: shop.orders index: _id_ dup key: { _id: 1 }",
}
WRITE_CONCERN = {
    "code": 64,
    "codeName": "WriteConcernFailed",
    "errmsg": "waiting for replication timed out",
    "errInfo": {"wtimeout": True},
}
FAIL_POINT_OFF = {"configureFailPoint": "failCommand", "mode": "off"}

Driver = Callable[[str], Any]
DRIVERS: dict[str, Driver] = {
    "motor": lambda uri: AsyncIOMotorClient(uri, **CLIENT_OPTIONS),
    "async_pymongo": lambda uri: pymongo.AsyncMongoClient(uri, **CLIENT_OPTIONS),
}


@pytest.fixture(params=sorted(DRIVERS))
def driver(request: pytest.FixtureRequest) -> Driver:
    return DRIVERS[request.param]


@pytest.fixture
def reader(signals: Signals) -> InMemoryMetricReader:
    """The ``signals`` fixture's metric reader."""
    return signals.reader


@pytest.fixture
async def traced(driver: Driver, signals: Signals) -> AsyncIterator[Callable[[str], Any]]:
    """``traced(uri)``: a client of the driver under test, instrumented with spans and metrics."""
    clients: list[Any] = []

    def make(uri: str) -> Any:
        client = signals.instrument(driver(uri))
        clients.append(client)
        return client

    yield make
    for client in clients:
        uninstrument_client(client)
        result = client.close()
        if result is not None:
            await result


@pytest.fixture(scope="module")
def wire() -> Iterator[tuple[MockupDB, dict[str, Any]]]:
    """A bare wire-protocol server answering every insert with ``replies["insert"]``."""
    replies: dict[str, Any] = {}
    server = MockupDB(auto_ismaster=HELLO)
    server.autoresponds("hello", HELLO)
    server.autoresponds(
        lambda request: request.command_name == "insert" and request.replies(replies["insert"])
    )
    server.run()
    yield server, replies
    server.stop()


@pytest.fixture
def scripted(
    wire: tuple[MockupDB, dict[str, Any]],
) -> Callable[[dict[str, Any]], MockupDB]:
    """``scripted(reply)``: the wire server, now answering every insert with ``reply``."""
    server, replies = wire

    def script(reply: dict[str, Any]) -> MockupDB:
        replies["insert"] = reply
        return server

    return script


def _operation_points(reader: InMemoryMetricReader) -> list[Any]:
    return metric_points(reader).get("db.client.operation.duration", [])


def _failure(span: ReadableSpan) -> tuple[Any, Any, StatusCode]:
    attrs = span.attributes or {}
    return attrs.get("error.type"), attrs.get("db.response.status_code"), span.status.status_code


def _assert_one_error_type(
    exporter: InMemorySpanExporter,
    reader: InMemoryMetricReader,
    operation: str,
    command: str,
    code: str,
    *,
    server_code: bool = True,
) -> None:
    """The command span(s), the operation span and the metric point carry ``code`` alike, as
    error.type and (when it is the server's) as db.response.status_code."""
    status_code = code if server_code else None
    spans = exporter.get_finished_spans()
    (op_span,) = named(spans, operation)
    commands = named(spans, command)
    assert commands
    expected = (code, status_code, StatusCode.ERROR)
    assert [expected] * len(commands) == [_failure(s) for s in commands]
    assert expected == _failure(op_span)
    for span in [op_span, *commands]:
        assert [e.name for e in span.events] == ["exception"]
    name = (op_span.attributes or {})["db.operation.name"]
    (point,) = [
        p
        for p in _operation_points(reader)
        if p.attributes["db.operation.name"] == name and "error.type" in p.attributes
    ]
    assert (code, status_code) == (
        point.attributes["error.type"],
        point.attributes.get("db.response.status_code"),
    )


# -- write errors in an ok:1 reply, scripted on the wire --------------------------------------


@pytest.mark.parametrize(
    ("reply", "raised", "code"),
    [
        ({"ok": 1, "n": 0, "writeErrors": [DUPLICATE]}, DuplicateKeyError, "11000"),
        ({"ok": 1, "n": 1, "writeConcernError": WRITE_CONCERN}, WriteConcernError, "64"),
        (  # both: mongod's first write error is what PyMongo raises, and what we report
            {"ok": 1, "n": 0, "writeErrors": [DUPLICATE], "writeConcernError": WRITE_CONCERN},
            DuplicateKeyError,
            "11000",
        ),
    ],
)
async def test_an_ok_1_reply_with_write_errors_fails_the_command_span(
    traced: Callable[[str], Any],
    scripted: Callable[[dict[str, Any]], MockupDB],
    exporter: InMemorySpanExporter,
    reader: InMemoryMetricReader,
    reply: dict[str, Any],
    raised: type[Exception],
    code: str,
) -> None:
    """mongod's ok:1 + writeErrors/writeConcernError: the command span is an error with the
    first write error's code, as the operation span and the metric point are."""
    server = scripted(reply)
    client = traced(server.uri + "/?directConnection=true")
    with pytest.raises(raised) as caught:
        await client.shop.orders.insert_one({"_id": 1})
    assert int(code) == caught.value.code
    _assert_one_error_type(exporter, reader, "insert shop.orders", "insert", code)
    (command,) = named(exporter.get_finished_spans(), "insert")
    attrs = command.attributes or {}
    expected_type = "DuplicateKey" if raised is DuplicateKeyError else "WriteConcernFailed"
    assert expected_type == attrs["exception.type"]
    assert "_id: 1" not in str(attrs["exception.message"])  # the key's value stays out
    (event,) = command.events
    assert expected_type == (event.attributes or {})["exception.type"]
    assert command.status.description == attrs["exception.message"]


async def test_an_ok_1_reply_without_write_errors_is_a_success(
    traced: Callable[[str], Any],
    scripted: Callable[[dict[str, Any]], MockupDB],
    exporter: InMemorySpanExporter,
    reader: InMemoryMetricReader,
) -> None:
    """A plain ok:1 keeps UNSET status and no error.type; the metric says which server served."""
    server = scripted({"ok": 1, "n": 1})
    client = traced(server.uri + "/?directConnection=true")
    await client.shop.orders.insert_one({"_id": 1})
    spans = exporter.get_finished_spans()
    for span in named(spans, "insert") + named(spans, "insert shop.orders"):
        assert _failure(span) == (None, None, StatusCode.UNSET)
    (point,) = _operation_points(reader)
    host, port = server.address
    assert {
        "db.system.name": "mongodb",
        "db.namespace": "shop",
        "db.collection.name": "orders",
        "db.operation.name": "insert",
        "server.address": host,
        "server.port": port,
    } == dict(point.attributes)


# -- through the simulator (or MONGODB_URI) ---------------------------------------------------


async def test_a_fail_point_failure_has_one_error_type(
    traced: Callable[[str], Any],
    mongodb_uri: str,
    exporter: InMemorySpanExporter,
    reader: InMemoryMetricReader,
) -> None:
    """failCommand errorCode 112: "112" on the command span, the operation span and the point."""
    client = traced(mongodb_uri)
    await client.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["insert"], "errorCode": 112},
        }
    )
    try:
        with pytest.raises(OperationFailure) as caught:
            await client.errors_e2e.items.insert_one({"n": 1})
    finally:
        await client.admin.command(FAIL_POINT_OFF)
    assert caught.value.code == 112
    _assert_one_error_type(exporter, reader, "insert errors_e2e.items", "insert", "112")
    (point,) = [
        p for p in _operation_points(reader) if p.attributes["db.operation.name"] == "insert"
    ]
    (command,) = named(exporter.get_finished_spans(), "insert")
    command_attrs = command.attributes or {}
    assert (command_attrs["server.address"], command_attrs["server.port"]) == (
        point.attributes["server.address"],
        point.attributes["server.port"],
    )


async def test_a_network_error_has_one_error_type_and_no_status_code(
    traced: Callable[[str], Any],
    mongodb_uri: str,
    exporter: InMemorySpanExporter,
    reader: InMemoryMetricReader,
) -> None:
    """The connection closes under the insert and its retry: no server code, so error.type is
    the class name, pymongo.errors.AutoReconnect, on both command spans, the operation and the
    point, and no db.response.status_code anywhere."""
    client = traced(mongodb_uri)
    await client.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 2},
            "data": {"failCommands": ["insert"], "closeConnection": True},
        }
    )
    try:
        with pytest.raises(AutoReconnect):
            await client.errors_e2e.items.insert_one({"n": 1})
    finally:
        await client.admin.command(FAIL_POINT_OFF)
    assert len(named(exporter.get_finished_spans(), "insert")) == 2  # the retryable write's retry
    _assert_one_error_type(
        exporter,
        reader,
        "insert errors_e2e.items",
        "insert",
        "pymongo.errors.AutoReconnect",
        server_code=False,
    )


async def test_a_duplicate_key_has_one_error_type_up_to_with_transaction(
    traced: Callable[[str], Any],
    mongodb_uri: str,
    exporter: InMemorySpanExporter,
    reader: InMemoryMetricReader,
) -> None:
    """A duplicate key in a with_transaction callback: "11000" on the command span (whether the
    server answers ok:0 or ok:1 + writeErrors), the operation span, its point and the failed
    withTransaction span."""
    client = traced(mongodb_uri)
    coll = client.errors_e2e.unique_items
    await coll.delete_many({})
    await coll.insert_one({"_id": "taken"})
    exporter.clear()

    async def callback(session: Any) -> None:
        await coll.insert_one({"_id": "taken"}, session=session)

    session = client.start_session()  # Motor's is a coroutine, PyMongo's is not
    if inspect.isawaitable(session):
        session = await session
    async with session:
        with pytest.raises(DuplicateKeyError):
            await session.with_transaction(callback)
    _assert_one_error_type(exporter, reader, "insert errors_e2e.unique_items", "insert", "11000")
    (wt,) = named(exporter.get_finished_spans(), "withTransaction")
    assert _failure(wt) == ("11000", "11000", StatusCode.ERROR)
    assert (wt.attributes or {})["db.mongodb.transaction.outcome"] == "failed"


async def test_an_unknown_commit_result_escaping_motor_fails_both_transaction_spans_alike(
    signals: Signals,
    exporter: InMemorySpanExporter,
    reader: InMemoryMetricReader,
    mongodb_uri: str,
) -> None:
    """Motor's loop gives up on commit error 91 (NotPrimaryError, its code only in details):
    the attempt, withTransaction, commit operation and commit command spans all say "91"."""
    client: AsyncIOMotorClient = signals.instrument(
        AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    )
    await client.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 2},
            "data": {"failCommands": ["commitTransaction"], "errorCode": 91},
        }
    )
    try:
        async with await client.start_session() as session:
            with pytest.raises(PyMongoError):
                await session.with_transaction(
                    lambda s: client.errors_e2e.items.insert_one({}, session=s)
                )
    finally:
        await client.admin.command(FAIL_POINT_OFF)
        uninstrument_client(client)
        client.close()
    spans = exporter.get_finished_spans()
    (wt,) = named(spans, "withTransaction")
    (attempt,) = named(spans, "transaction")
    expected = ("91", "91", StatusCode.ERROR)
    assert [expected, expected] == [_failure(wt), _failure(attempt)]
    _assert_one_error_type(exporter, reader, "commitTransaction admin", "commitTransaction", "91")
