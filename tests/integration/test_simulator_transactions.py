"""Where transactions live, the simulator answers as mongod does (issue 13, items 1-4).

Each test names the mongod behaviour it shows and where that behaviour is documented. With
MONGODB_URI set to a real replica set they run unchanged (the simulator-only hook is skipped).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bson.int64 import Int64
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorClientSession
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from pymongo import monitoring
from pymongo.errors import BulkWriteError, ExecutionTimeout, OperationFailure

from motor_otel import instrument_client
from motor_otel.testing import SimulatedReplicaSet
from tests.conftest import CLIENT_OPTIONS
from tests.data import fresh_collection
from tests.spans import children, named


class _Commands(monitoring.CommandListener):
    """The commands a client sent, as (name, command) pairs."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
async def watched(mongodb_uri: str) -> AsyncIterator[tuple[AsyncIOMotorClient, _Commands]]:
    commands = _Commands()
    client: AsyncIOMotorClient = AsyncIOMotorClient(
        mongodb_uri, event_listeners=[commands], **CLIENT_OPTIONS
    )
    try:
        yield client, commands
    finally:
        for name in ("failCommand", "onPrimaryTransactionalWrite"):
            await client.admin.command({"configureFailPoint": name, "mode": "off"})
        client.close()


# -- 1. conflicts at the write ---------------------------------------------------------------
async def test_committed_write_after_the_snapshot_conflicts(
    motor_client: AsyncIOMotorClient,
) -> None:
    """A transaction writing a document that a committed write changed after its snapshot gets
    WriteConflict at that write ("In-progress Transactions and Write Conflicts")."""
    coll = await fresh_collection(
        motor_client.sim_txn, "after_snapshot", {"_id": 1, "v": 0}, {"_id": 2, "v": 0}
    )
    async with await motor_client.start_session() as session:
        session.start_transaction()
        assert (await coll.find_one({"_id": 2}, session=session))["v"] == 0  # snapshot taken
        await coll.update_one({"_id": 1}, {"$set": {"v": 5}})  # committed, outside
        with pytest.raises(OperationFailure) as info:
            await coll.update_one({"_id": 1}, {"$set": {"v": 6}}, session=session)
        assert (info.value.code, info.value.has_error_label("TransientTransactionError")) == (
            112,
            True,
        )
        await session.abort_transaction()
    assert (await coll.find_one({"_id": 1}))["v"] == 5


async def test_non_transactional_write_waits_for_the_transaction(
    motor_client: AsyncIOMotorClient, simulator: SimulatedReplicaSet | None
) -> None:
    """A write outside any transaction to a document an open transaction wrote waits until that
    transaction ends, then applies on top of it ("In-progress Transactions and Write Conflicts")."""
    if simulator is None:
        pytest.skip("observing the wait needs the simulator's blocked-write count")
    coll = await fresh_collection(motor_client.sim_txn, "waiting", {"_id": 1, "v": 0})
    async with await motor_client.start_session() as session:
        session.start_transaction()
        await coll.update_one({"_id": 1}, {"$inc": {"v": 1}}, session=session)
        outside = asyncio.ensure_future(coll.update_one({"_id": 1}, {"$inc": {"v": 10}}))
        assert await asyncio.to_thread(simulator.wait_for_blocked_writes, 1, 10.0)
        assert not outside.done()
        await session.commit_transaction()
        result = await outside
    assert (result.matched_count, result.modified_count) == (1, 1)
    assert (await coll.find_one({"_id": 1}))["v"] == 11  # both writes, in order, none lost


async def test_waiting_write_is_bounded_by_max_time_ms(motor_client: AsyncIOMotorClient) -> None:
    """The waiting write gives up with MaxTimeMSExpired (50) when its maxTimeMS passes."""
    coll = await fresh_collection(motor_client.sim_txn, "max_time", {"_id": 1, "v": 0})
    async with await motor_client.start_session() as session:
        session.start_transaction()
        await coll.update_one({"_id": 1}, {"$set": {"v": 1}}, session=session)
        with pytest.raises(ExecutionTimeout) as info:
            await coll.database.command(
                {"update": coll.name, "updates": [{"q": {"_id": 1}, "u": {"$set": {"v": 2}}}]},
                maxTimeMS=150,
            )
        assert (info.value.code, info.value.details["codeName"]) == (50, "MaxTimeMSExpired")
        await session.commit_transaction()
    assert (await coll.find_one({"_id": 1}))["v"] == 1


async def test_concurrent_motor_with_transactions_both_commit(
    mongodb_uri: str, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Two Motor with_transaction calls increment one document at once: the loser's write gets
    a transient WriteConflict, Motor retries its callback, both commit, nothing is lost."""
    client: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    instrument_client(client, tracer_provider=tracer_provider)
    coll = await fresh_collection(client.sim_txn, "two_writers", {"_id": 1, "v": 0})
    exporter.clear()
    both_inside = asyncio.Barrier(2)
    calls = {"a": 0, "b": 0}

    async def run(name: str) -> None:
        async def callback(session: AsyncIOMotorClientSession) -> None:
            calls[name] += 1
            await coll.find_one({"_id": 1}, session=session)  # the transaction is open
            if calls[name] == 1:
                await both_inside.wait()  # both write while the other's transaction is open
            await coll.update_one({"_id": 1}, {"$inc": {"v": 1}}, session=session)

        async with await client.start_session() as session:
            await session.with_transaction(callback)

    try:
        await asyncio.gather(run("a"), run("b"))
        assert (await coll.find_one({"_id": 1}))["v"] == 2
    finally:
        client.close()
    assert sorted(calls.values())[0] == 1 and sorted(calls.values())[1] >= 2
    spans = exporter.get_finished_spans()
    outcomes = sorted(
        (
            s.attributes["db.mongodb.transaction.outcome"],
            s.attributes["db.mongodb.transaction.attempts"],
        )
        for s in named(spans, "withTransaction")
    )
    assert [o for o, _ in outcomes] == ["committed", "committed"]
    assert outcomes[0][1] == 1 and outcomes[1][1] >= 2  # the loser's callback ran again


# -- 2. retryable writes -------------------------------------------------------------------------
async def test_retried_insert_after_lost_reply_is_applied_once(
    watched: tuple[AsyncIOMotorClient, _Commands],
) -> None:
    """onPrimaryTransactionalWrite closes the connection after the insert is applied; the driver
    retries with the same txnNumber and the server answers from its record instead of inserting
    again (retryable-writes.md, "Executing Retryable Write Commands")."""
    client, commands = watched
    coll = await fresh_collection(client.sim_txn, "lost_reply")
    await client.admin.command(
        {"configureFailPoint": "onPrimaryTransactionalWrite", "mode": {"times": 1}}
    )
    commands.sent.clear()
    result = await coll.insert_one({"_id": 1, "x": 1})
    assert result.inserted_id == 1
    inserts = [c for name, c in commands.sent if name == "insert"]
    assert len(inserts) == 2  # the first attempt lost its reply; the retry succeeded
    assert inserts[0]["txnNumber"] == inserts[1]["txnNumber"]
    assert inserts[0]["lsid"] == inserts[1]["lsid"]
    assert await coll.count_documents({}) == 1


async def test_retried_insert_many_applies_each_statement_once(
    watched: tuple[AsyncIOMotorClient, _Commands],
) -> None:
    """The record is per statement: the connection is lost after the first of three inserts;
    the retry replays the first and applies the other two, so each document exists once."""
    client, _ = watched
    coll = await fresh_collection(client.sim_txn, "per_statement")
    await client.admin.command(
        {"configureFailPoint": "onPrimaryTransactionalWrite", "mode": {"times": 1}}
    )
    result = await coll.insert_many([{"_id": i} for i in range(3)])
    await client.admin.command({"configureFailPoint": "onPrimaryTransactionalWrite", "mode": "off"})
    assert result.inserted_ids == [0, 1, 2]
    assert [d["_id"] async for d in coll.find({}).sort("_id", 1)] == [0, 1, 2]


async def test_retried_find_one_and_update_is_applied_once(
    watched: tuple[AsyncIOMotorClient, _Commands],
) -> None:
    """findAndModify is a retryable write too: after a lost reply the retry returns the first
    result (the document before the first $inc) and the counter moves once."""
    client, commands = watched
    coll = await fresh_collection(client.sim_txn, "lost_fam", {"_id": 1, "n": 0})
    await client.admin.command(
        {"configureFailPoint": "onPrimaryTransactionalWrite", "mode": {"times": 1}}
    )
    commands.sent.clear()
    before = await coll.find_one_and_update({"_id": 1}, {"$inc": {"n": 1}})
    assert before == {"_id": 1, "n": 0}
    assert len([n for n, _ in commands.sent if n == "findAndModify"]) == 2
    assert (await coll.find_one({"_id": 1}))["n"] == 1


async def test_retryable_write_record_and_transaction_too_old(
    motor_client: AsyncIOMotorClient,
) -> None:
    """Resending a txnNumber returns the first reply; an older one is TransactionTooOld (225)."""
    coll = await fresh_collection(motor_client.sim_txn, "too_old")

    def insert(number: int, doc_id: int) -> dict[str, Any]:
        return {"insert": coll.name, "documents": [{"_id": doc_id}], "txnNumber": Int64(number)}

    async with await motor_client.start_session() as session:
        first = await coll.database.command(insert(7, 1), session=session)
        again = await coll.database.command(insert(7, 1), session=session)
        assert (first["n"], again["n"], "writeErrors" in again) == (1, 1, False)
        with pytest.raises(OperationFailure) as info:
            await coll.database.command(insert(6, 2), session=session)
        assert (info.value.code, info.value.details["codeName"]) == (225, "TransactionTooOld")
    assert [d["_id"] async for d in coll.find({})] == [1]


# -- 3. reply shapes -----------------------------------------------------------------------------
async def test_write_errors_are_ok_1_with_write_errors(
    mongodb_uri: str, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A duplicate key is ok: 1 with writeErrors [{index, code, codeName, errmsg, keyPattern,
    keyValue}] and the count of the rest (MongoDB manual, "insert" command, "Output"), so the
    command span looks as it does against mongod: an error whose error.type is the code."""
    client: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    instrument_client(client, tracer_provider=tracer_provider)
    try:
        coll = await fresh_collection(client.sim_txn, "write_errors", {"_id": 1})
        reply = await coll.database.command(
            {
                "insert": coll.name,
                "documents": [{"_id": 2}, {"_id": 1}, {"_id": 3}],
                "ordered": False,
            }
        )
        assert (reply["ok"], reply["n"]) == (1.0, 2)
        (error,) = reply["writeErrors"]
        assert {k: error[k] for k in ("index", "code", "codeName", "keyPattern", "keyValue")} == {
            "index": 1,
            "code": 11000,
            "codeName": "DuplicateKey",
            "keyPattern": {"_id": 1},
            "keyValue": {"_id": 1},
        }
        assert error["errmsg"].startswith(
            "E11000 duplicate key error collection: sim_txn.write_errors"
        )
        exporter.clear()
        with pytest.raises(BulkWriteError) as info:  # what a driver makes of it
            await coll.insert_many([{"_id": 4}, {"_id": 4}])
    finally:
        client.close()
    details = info.value.details
    assert (details["nInserted"], details["writeErrors"][0]["index"]) == (1, 1)
    (command,) = named(exporter.get_finished_spans(), "insert")
    attributes = command.attributes or {}
    assert (command.status.status_code, attributes["error.type"]) == (StatusCode.ERROR, "11000")
    assert attributes["db.response.status_code"] == "11000"


async def test_update_counts_and_upserted_as_mongod(motor_client: AsyncIOMotorClient) -> None:
    """update answers n (matched + upserted), nModified (changed only) and upserted [{index,
    _id}]; an unknown modifier is a FailedToParse (9) write error, an unknown query operator a
    BadValue (2) one (command-monitoring tests "A successful update*/delete* with write errors")."""
    coll = await fresh_collection(
        motor_client.sim_txn, "counts", {"_id": 1, "v": 1}, {"_id": 2, "v": 2}
    )
    reply = await coll.database.command(
        {
            "update": coll.name,
            "updates": [
                {"q": {}, "u": {"$set": {"v": 2}}, "multi": True},  # one already 2
                {"q": {"_id": 9}, "u": {"$set": {"v": 9}}, "upsert": True},
                {"q": {"_id": 1}, "u": {"$nope": {"v": 1}}},
            ],
        }
    )
    assert (reply["n"], reply["nModified"], reply["upserted"]) == (3, 1, [{"index": 1, "_id": 9}])
    (error,) = reply["writeErrors"]
    assert (error["index"], error["code"], error["codeName"]) == (2, 9, "FailedToParse")
    deleted = await coll.database.command(
        {"delete": coll.name, "deletes": [{"q": {"_id": {"$unsupported": 1}}, "limit": 1}]}
    )
    assert (deleted["ok"], deleted["n"]) == (1.0, 0)
    (error,) = deleted["writeErrors"]
    assert (error["index"], error["code"], error["codeName"]) == (0, 2, "BadValue")
    assert error["errmsg"] == "unknown operator: $unsupported"


async def test_duplicate_key_in_a_transaction_aborts_it(motor_client: AsyncIOMotorClient) -> None:
    """A write error inside a transaction aborts it on the server: the next command gets
    NoSuchTransaction (transactions.md, "Handling command errors"; spec test abort.json)."""
    coll = await fresh_collection(motor_client.sim_txn, "txn_dup", {"_id": 1})
    async with await motor_client.start_session() as session:
        session.start_transaction()
        with pytest.raises(OperationFailure) as dup:
            await coll.insert_one({"_id": 1}, session=session)
        assert (dup.value.code, dup.value.has_error_label("TransientTransactionError")) == (
            11000,
            False,
        )
        with pytest.raises(OperationFailure) as gone:
            await coll.insert_one({"_id": 2}, session=session)
        assert (gone.value.code, gone.value.has_error_label("TransientTransactionError")) == (
            251,
            True,
        )
        await session.abort_transaction()


async def test_write_concern_error_in_a_transaction_has_no_labels(
    motor_client: AsyncIOMotorClient,
) -> None:
    """A writeConcernError is not a command error: no TransientTransactionError on it (spec test
    error-labels.json, "do not add RetryableWriteError label to writeConcernError
    ShutdownInProgress that occurs within transaction")."""
    coll = await fresh_collection(motor_client.sim_txn, "wce")
    await motor_client.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["insert"], "writeConcernError": {"code": 91, "errmsg": "x"}},
        }
    )
    async with await motor_client.start_session() as session:
        session.start_transaction()
        reply = await coll.database.command(
            {"insert": coll.name, "documents": [{"_id": 1}]}, session=session
        )
        await session.abort_transaction()
    assert reply["writeConcernError"]["code"] == 91
    assert "errorLabels" not in reply


# -- 4. fail points and cursors ----------------------------------------------------------------
async def test_on_primary_transactional_write_fails_before_commit(
    motor_client: AsyncIOMotorClient,
) -> None:
    """failBeforeCommitExceptionCode fails one statement without applying it; with {skip: 1}
    the first statement applies (mongod's jstest for onPrimaryTransactionalWrite: "One update
    must succeed and the other must fail")."""
    coll = await fresh_collection(
        motor_client.sim_txn, "fail_before_commit", {"_id": 0, "y": 0}, {"_id": 1, "y": 0}
    )
    await motor_client.admin.command(
        {
            "configureFailPoint": "onPrimaryTransactionalWrite",
            "mode": {"skip": 1},
            "data": {"closeConnection": False, "failBeforeCommitExceptionCode": 1},
        }
    )
    try:
        async with await motor_client.start_session() as session:
            reply = await coll.database.command(
                {
                    "update": coll.name,
                    "updates": [
                        {"q": {"_id": 0}, "u": {"$inc": {"y": 1}}},
                        {"q": {"_id": 1}, "u": {"$inc": {"y": 1}}},
                    ],
                    "ordered": True,
                    "txnNumber": Int64(2),
                },
                session=session,
            )
    finally:
        await motor_client.admin.command(
            {"configureFailPoint": "onPrimaryTransactionalWrite", "mode": "off"}
        )
    assert reply["nModified"] == 1
    (error,) = reply["writeErrors"]
    assert (error["index"], error["code"], error["codeName"]) == (1, 1, "InternalError")
    assert [d["y"] async for d in coll.find({}).sort("_id", 1)] == [1, 0]


async def test_on_primary_transactional_write_ignores_plain_writes(
    motor_client: AsyncIOMotorClient,
) -> None:
    """The fail point only fires for writes carrying lsid and txnNumber (unified test format,
    "onPrimaryTransactionalWrite"): a write without them goes through untouched."""
    coll = await fresh_collection(motor_client.sim_txn, "plain_write")
    await motor_client.admin.command(
        {"configureFailPoint": "onPrimaryTransactionalWrite", "mode": {"times": 1}}
    )
    try:
        reply = await coll.database.command({"insert": coll.name, "documents": [{"_id": 1}]})
        assert reply["n"] == 1
    finally:
        await motor_client.admin.command(
            {"configureFailPoint": "onPrimaryTransactionalWrite", "mode": "off"}
        )


@pytest.mark.parametrize("kind", ["find", "aggregate"])
async def test_batch_size_makes_get_more_spans(
    mongodb_uri: str,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    kind: str,
) -> None:
    """batchSize 2 over 5 documents: the first batch holds 2, then getMore 2 and 1; each getMore
    is a command span under the operation that opened the cursor."""
    client: AsyncIOMotorClient = AsyncIOMotorClient(mongodb_uri, **CLIENT_OPTIONS)
    instrument_client(client, tracer_provider=tracer_provider)
    try:
        coll = await fresh_collection(
            client.sim_txn, f"batches_{kind}", *({"_id": i} for i in range(5))
        )
        exporter.clear()
        if kind == "find":
            cursor = coll.find({}, batch_size=2).sort("_id", 1)
        else:
            cursor = coll.aggregate([{"$sort": {"_id": 1}}], batchSize=2)
        assert [d["_id"] async for d in cursor] == [0, 1, 2, 3, 4]
    finally:
        client.close()
    spans = exporter.get_finished_spans()
    (operation,) = named(spans, f"{kind} sim_txn.batches_{kind}")
    assert [c.name for c in children(spans, operation)] == [kind, "getMore", "getMore"]
