"""Snapshots as on mongod: one per transaction, and snapshot reads outside transactions.

MongoDB manual, "Read Concern "snapshot"" (data "from a specific single point in time") and
transactions.md, "Behavior of the readConcern field" (the command that starts a transaction
establishes its read timestamp): a transaction's reads come from one snapshot taken at its first
operation; it sees its own writes and none of the writes committed by others after that.

Outside a transaction (MongoDB 5.0+), a session started with ``snapshot=True`` reads find,
aggregate and distinct at the cluster time of its first read (snapshot-sessions.md, "Server
Commands"); other commands fail with InvalidOptions (72). With MONGODB_URI set to a real replica
set these tests run unchanged, but for the one about what the simulator keeps.
"""

from __future__ import annotations

from typing import Any

import pytest
from bson.timestamp import Timestamp
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo.errors import OperationFailure
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from motor_otel.testing import SimulatedReplicaSet
from tests.conftest import CLIENT_OPTIONS, maybe_await
from tests.data import fresh_collection

SNAPSHOT: dict[str, Any] = {
    "read_concern": ReadConcern("snapshot"),
    "write_concern": WriteConcern("majority"),
}


def _db(client: Any) -> Any:
    return client.get_database("sim_snapshots", write_concern=WriteConcern("majority"))


async def test_collection_first_read_after_a_commit_is_seen_as_of_the_snapshot(
    motor_client: AsyncIOMotorClient,
) -> None:
    """A transaction that reads collection B only after another transaction committed to B (and
    a plain write landed there) sees B as it was when its own snapshot was taken."""
    a = await fresh_collection(_db(motor_client), "a", {"_id": 1, "v": 0})
    b = await fresh_collection(_db(motor_client), "b", {"_id": 1, "v": 0}, {"_id": 2, "v": 0})
    async with (
        await motor_client.start_session() as first,
        await motor_client.start_session() as other,
    ):
        first.start_transaction(**SNAPSHOT)
        await a.update_one({"_id": 1}, {"$set": {"v": 1}}, session=first)  # snapshot taken here
        other.start_transaction(**SNAPSHOT)
        await b.update_one({"_id": 1}, {"$set": {"v": 2}}, session=other)
        await b.delete_one({"_id": 2}, session=other)
        await b.insert_one({"_id": 3, "v": 2}, session=other)
        await other.commit_transaction()
        await b.insert_one({"_id": 4, "v": 3})  # outside any transaction, also after the snapshot

        seen = await b.find({}, session=first).sort("_id").to_list(None)
        assert seen == [{"_id": 1, "v": 0}, {"_id": 2, "v": 0}]
        assert await a.find_one({"_id": 1}, session=first) == {"_id": 1, "v": 1}  # its own write
        assert await b.count_documents({}, session=first) == 2
        joined = await a.aggregate(
            [{"$lookup": {"from": "b", "localField": "_id", "foreignField": "_id", "as": "b"}}],
            session=first,
        ).to_list(None)
        assert joined == [{"_id": 1, "v": 1, "b": [{"_id": 1, "v": 0}]}]
        await first.commit_transaction()

    latest = await b.find({}).sort("_id").to_list(None)
    assert latest == [{"_id": 1, "v": 2}, {"_id": 3, "v": 2}, {"_id": 4, "v": 3}]
    assert await a.find_one({"_id": 1}) == {"_id": 1, "v": 1}


async def test_writes_of_an_open_transaction_are_invisible_until_it_commits(
    motor_client: AsyncIOMotorClient,
) -> None:
    """Another transaction's uncommitted insert, update and delete are invisible outside it, and
    appear together when it commits."""
    coll = await fresh_collection(
        _db(motor_client), "pending", {"_id": 1, "v": 0}, {"_id": 2, "v": 0}
    )
    async with await motor_client.start_session() as session:
        session.start_transaction(**SNAPSHOT)
        await coll.update_one({"_id": 1}, {"$inc": {"v": 5}}, session=session)
        await coll.delete_one({"_id": 2}, session=session)
        await coll.insert_one({"_id": 3, "v": 7}, session=session)
        inside = await coll.find({}, session=session).sort("_id").to_list(None)
        outside = await coll.find({}).sort("_id").to_list(None)
        assert inside == [{"_id": 1, "v": 5}, {"_id": 3, "v": 7}]
        assert outside == [{"_id": 1, "v": 0}, {"_id": 2, "v": 0}]
        await session.commit_transaction()
    assert await coll.find({}).sort("_id").to_list(None) == [{"_id": 1, "v": 5}, {"_id": 3, "v": 7}]


async def test_a_snapshot_outlives_later_commits_to_the_same_document(
    motor_client: AsyncIOMotorClient,
) -> None:
    """A document committed twice after a transaction's snapshot still reads as of the snapshot,
    and a transaction started after those commits reads the latest."""
    coll = await fresh_collection(
        _db(motor_client), "versions", {"_id": 1, "v": 0}, {"_id": 2, "v": 0}
    )
    async with (
        await motor_client.start_session() as old,
        await motor_client.start_session() as new,
    ):
        old.start_transaction(**SNAPSHOT)
        assert await coll.find_one({"_id": 2}, session=old) == {"_id": 2, "v": 0}
        await coll.update_one({"_id": 1}, {"$set": {"v": 1}})
        await coll.update_one({"_id": 1}, {"$set": {"v": 2}})
        new.start_transaction(**SNAPSHOT)
        assert await coll.find_one({"_id": 1}, session=new) == {"_id": 1, "v": 2}
        assert await coll.find_one({"_id": 1}, session=old) == {"_id": 1, "v": 0}
        await old.abort_transaction()
        await new.commit_transaction()
    assert await coll.find_one({"_id": 1}) == {"_id": 1, "v": 2}


async def test_every_kind_of_write_outside_leaves_the_snapshot_as_it_was(
    motor_client: AsyncIOMotorClient,
) -> None:
    """Updates (one, many, replacement, findAndModify with array filters) and deletes committed
    outside a transaction after its snapshot leave what the transaction reads unchanged."""
    docs = [{"_id": i, "v": 0, "a": [1, 2]} for i in range(1, 6)]
    coll = await fresh_collection(_db(motor_client), "kinds", *docs)
    async with await motor_client.start_session() as session:
        session.start_transaction(**SNAPSHOT)
        assert await coll.find_one({"_id": 1}, session=session) == docs[0]
        await coll.update_one({"_id": 1}, {"$inc": {"v": 1}})
        await coll.update_many({"_id": {"$gte": 2}}, {"$push": {"a": 3}})
        await coll.replace_one({"_id": 3}, {"w": 1})
        await coll.find_one_and_update(
            {"_id": 4}, {"$set": {"a.$[x]": 9}}, array_filters=[{"x": 1}]
        )
        await coll.delete_many({"_id": 5})
        assert await coll.find({}, session=session).sort("_id").to_list(None) == docs
        await session.commit_transaction()
    assert await coll.find({}).sort("_id").to_list(None) == [
        {"_id": 1, "v": 1, "a": [1, 2]},
        {"_id": 2, "v": 0, "a": [1, 2, 3]},
        {"_id": 3, "w": 1},
        {"_id": 4, "v": 0, "a": [9, 2, 3]},
    ]


async def test_a_transaction_past_the_lifetime_limit_is_aborted_when_another_starts() -> None:
    """A transaction older than transactionLifetimeLimitSeconds is aborted by the server (mongod's
    periodic job; here when the next transaction starts), so an abandoned one keeps neither its
    documents nor its snapshot: its commit then fails with NoSuchTransaction (251)."""
    with SimulatedReplicaSet(transaction_lifetime_limit_seconds=0) as rs:
        client: AsyncIOMotorClient = AsyncIOMotorClient(rs.uri, **CLIENT_OPTIONS)
        try:
            coll = client.sim_snapshots.lifetime
            await coll.insert_many([{"_id": 1, "v": 0}, {"_id": 2, "v": 0}])
            async with (
                await client.start_session() as old,
                await client.start_session() as new,
            ):
                old.start_transaction()
                await coll.update_one({"_id": 1}, {"$set": {"v": 1}}, session=old)
                new.start_transaction()
                await coll.update_one({"_id": 2}, {"$set": {"v": 2}}, session=new)
                await new.commit_transaction()
                with pytest.raises(OperationFailure) as info:
                    await old.commit_transaction()
            assert info.value.code == 251
            assert await coll.find({}).sort("_id").to_list(None) == [
                {"_id": 1, "v": 0},
                {"_id": 2, "v": 2},
            ]
        finally:
            client.close()


# -- snapshot reads outside a transaction ------------------------------------------------------
async def _snapshot_read(coll: Any, kind: str, session: Any) -> Any:
    """One read of ``coll`` by ``kind`` in ``session``: what it returns, comparable across kinds."""
    if kind == "find":
        return await coll.find({}, session=session).sort("_id").to_list(None)
    if kind == "aggregate":
        cursor = await maybe_await(coll.aggregate([{"$sort": {"_id": 1}}], session=session))
        return await cursor.to_list(None)
    return sorted(await coll.distinct("v", session=session))


@pytest.mark.parametrize("first", ["find", "aggregate", "distinct"])
async def test_a_snapshot_session_reads_as_of_its_first_read(
    async_driver_client: Any, first: str
) -> None:
    """Each of find, aggregate and distinct, as a snapshot session's first read, fixes the time
    its later reads see: writes committed after it (update, insert, delete, a transaction) are
    invisible to every later find, aggregate and distinct of the session, and visible outside."""
    coll = await fresh_collection(
        _db(async_driver_client), "snapshot_reads", {"_id": 1, "v": 1}, {"_id": 2, "v": 2}
    )
    before = {
        "find": [{"_id": 1, "v": 1}, {"_id": 2, "v": 2}],
        "aggregate": [{"_id": 1, "v": 1}, {"_id": 2, "v": 2}],
        "distinct": [1, 2],
    }
    async with await maybe_await(async_driver_client.start_session(snapshot=True)) as session:
        assert await _snapshot_read(coll, first, session) == before[first]
        await coll.update_one({"_id": 1}, {"$set": {"v": 10}})
        await coll.insert_one({"_id": 3, "v": 3})
        await coll.delete_one({"_id": 2})
        async with await maybe_await(async_driver_client.start_session()) as writer:
            await maybe_await(writer.start_transaction())
            await coll.insert_one({"_id": 4, "v": 4}, session=writer)
            await writer.commit_transaction()
        for kind in ("find", "aggregate", "distinct"):
            assert await _snapshot_read(coll, kind, session) == before[kind], kind
    assert await _snapshot_read(coll, "find", None) == [
        {"_id": 1, "v": 10},
        {"_id": 3, "v": 3},
        {"_id": 4, "v": 4},
    ]


async def test_a_snapshot_session_keeps_its_time_for_other_collections(
    async_driver_client: Any,
) -> None:
    """The time a snapshot session's first read fixed applies to every collection it reads later,
    including one written to after that read."""
    db = _db(async_driver_client)
    a = await fresh_collection(db, "snapshot_a", {"_id": 1})
    b = await fresh_collection(db, "snapshot_b", {"_id": 1})
    async with await maybe_await(async_driver_client.start_session(snapshot=True)) as session:
        assert await a.find({}, session=session).to_list(None) == [{"_id": 1}]
        await b.insert_one({"_id": 2})
        assert await b.find({}, session=session).to_list(None) == [{"_id": 1}]
    assert await b.count_documents({}) == 2


async def test_a_snapshot_session_refuses_writes_and_other_commands(
    async_driver_client: Any,
) -> None:
    """Outside a transaction only find, aggregate and distinct take readConcern snapshot; a write
    or a listCollections in a snapshot session fails with InvalidOptions (72) and changes nothing (MongoDB
    manual, "Read Concern "snapshot""; snapshot-sessions.md, "Server Errors")."""
    coll = await fresh_collection(_db(async_driver_client), "snapshot_refusals", {"_id": 1})
    async with await maybe_await(async_driver_client.start_session(snapshot=True)) as session:
        with pytest.raises(OperationFailure) as write:
            await coll.insert_one({"_id": 2}, session=session)
        with pytest.raises(OperationFailure) as listing:
            await coll.database.list_collection_names(session=session)
    assert (write.value.code, listing.value.code) == (72, 72)
    assert await coll.find({}).to_list(None) == [{"_id": 1}]


async def test_a_snapshot_read_in_the_future_is_invalid(async_driver_client: Any) -> None:
    """A snapshot read at a cluster time no server has reached fails with InvalidOptions (72)."""
    coll = await fresh_collection(_db(async_driver_client), "snapshot_future", {"_id": 1})
    reply = await coll.database.command({"ping": 1})
    later = Timestamp(reply["operationTime"].time + 3600, 0)
    with pytest.raises(OperationFailure) as info:
        await coll.database.command(
            {"find": coll.name, "readConcern": {"level": "snapshot", "atClusterTime": later}}
        )
    assert info.value.code == 72


async def test_a_snapshot_read_at_a_time_no_longer_kept_is_snapshot_too_old(
    async_driver_client: Any, simulator: Any
) -> None:
    """The simulator keeps past versions only for times a snapshot read returned: a read at an
    earlier write's operationTime, after later commits, gets SnapshotTooOld (239), never data
    from another time; a read at the latest time is answered."""
    if simulator is None:
        pytest.skip("MONGODB_URI: mongod keeps minSnapshotHistoryWindowInSeconds of history")
    coll = await fresh_collection(_db(async_driver_client), "snapshot_too_old")
    first = await coll.database.command({"insert": coll.name, "documents": [{"_id": 1}]})
    latest = await coll.database.command({"insert": coll.name, "documents": [{"_id": 2}]})

    async def read_at(at: Timestamp) -> Any:
        concern = {"level": "snapshot", "atClusterTime": at}
        return await coll.database.command({"find": coll.name, "readConcern": concern})

    with pytest.raises(OperationFailure) as info:
        await read_at(first["operationTime"])
    assert info.value.code == 239
    reply = await read_at(latest["operationTime"])
    assert reply["cursor"]["firstBatch"] == [{"_id": 1}, {"_id": 2}]


@pytest.mark.parametrize(
    ("concern", "code"),
    [
        ({"level": "majority", "atClusterTime": "now"}, 72),
        ({"level": "snapshot", "atClusterTime": "now", "afterClusterTime": "now"}, 72),
        ({"level": "snapshot", "atClusterTime": Timestamp(0, 0)}, 72),
        ({"level": "snapshot", "atClusterTime": 5}, 14),
    ],
)
async def test_a_malformed_snapshot_read_concern_is_refused(
    async_driver_client: Any, concern: dict[str, Any], code: int
) -> None:
    """atClusterTime without level snapshot, with afterClusterTime, null (all InvalidOptions, 72)
    or not a timestamp (TypeMismatch, 14) fails the read, as mongod parses a read concern."""
    coll = await fresh_collection(_db(async_driver_client), "snapshot_malformed", {"_id": 1})
    now = (await coll.database.command({"ping": 1}))["operationTime"]
    concern = {k: now if v == "now" else v for k, v in concern.items()}
    with pytest.raises(OperationFailure) as info:
        await coll.database.command({"find": coll.name, "readConcern": concern})
    assert info.value.code == code
