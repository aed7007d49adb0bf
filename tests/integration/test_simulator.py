"""The simulator behaves like a one-node replica set, through Motor and PyMongo's async client."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

import bson
import pymongo
import pytest
from bson.int64 import Int64
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import monitoring
from pymongo.errors import AutoReconnect, OperationFailure

from motor_otel.testing import SimulatedReplicaSet, fail_command
from tests.conftest import CLIENT_OPTIONS


async def test_motor_transaction_is_isolated_until_commit(motor_client: AsyncIOMotorClient) -> None:
    """Writes in a transaction are invisible to others until commit, then visible."""
    coll = motor_client.sim_isolation.items
    await coll.drop()
    async with await motor_client.start_session() as session:
        async with session.start_transaction():
            await coll.insert_one({"_id": 1}, session=session)
            assert await coll.count_documents({}, session=session) == 1
            assert await coll.count_documents({}) == 0
        assert await coll.count_documents({}) == 1


async def test_async_mongo_client_abort_discards(mongodb_uri: str) -> None:
    """abortTransaction discards the transaction's writes (PyMongo's AsyncMongoClient)."""
    client: pymongo.AsyncMongoClient = pymongo.AsyncMongoClient(mongodb_uri, **CLIENT_OPTIONS)
    coll = client.sim_abort.items
    await coll.drop()
    async with client.start_session() as session:
        await session.start_transaction()
        await coll.insert_one({"_id": 1}, session=session)
        await session.abort_transaction()
    assert await coll.count_documents({}) == 0
    await client.close()


async def test_with_transaction_retries_transient_commit_error(mongodb_uri: str) -> None:
    """A commit failing with a transient code makes PyMongo retry the whole transaction once."""
    client: pymongo.AsyncMongoClient = pymongo.AsyncMongoClient(mongodb_uri, **CLIENT_OPTIONS)
    coll = client.sim_retry.items
    await coll.drop()
    before = (await client.admin.command("serverStatus"))["transactions"]["totalCommitted"]
    await client.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["commitTransaction"], "errorCode": 112},
        }
    )
    calls = 0

    async def callback(session: pymongo.asynchronous.client_session.AsyncClientSession) -> str:
        nonlocal calls
        calls += 1
        await coll.insert_one({"n": calls}, session=session)
        return "done"

    async with client.start_session() as session:
        assert await session.with_transaction(callback) == "done"
    after = (await client.admin.command("serverStatus"))["transactions"]["totalCommitted"]
    assert calls == 2
    assert after - before == 1
    assert [d["n"] for d in await coll.find({}).to_list()] == [2]
    await client.close()


async def test_write_conflict_between_transactions(motor_client: AsyncIOMotorClient) -> None:
    """The second transaction writing a document fails at once (112, transient) and is aborted
    on the server; the first still commits (mongod: "In-progress Transactions and Write
    Conflicts")."""
    coll = motor_client.sim_conflict.items
    await coll.drop()
    await coll.insert_one({"_id": 1, "v": 0})
    s1 = await motor_client.start_session()
    s2 = await motor_client.start_session()
    s1.start_transaction()
    s2.start_transaction()
    await coll.update_one({"_id": 1}, {"$set": {"v": 1}}, session=s1)
    with pytest.raises(OperationFailure) as info:
        await coll.update_one({"_id": 1}, {"$set": {"v": 2}}, session=s2)
    assert (info.value.code, info.value.details["codeName"]) == (112, "WriteConflict")
    assert info.value.has_error_label("TransientTransactionError")
    with pytest.raises(OperationFailure) as aborted:  # B's next command: it is gone
        await coll.find_one({"_id": 1}, session=s2)
    assert (aborted.value.code, aborted.value.details["codeName"]) == (251, "NoSuchTransaction")
    assert aborted.value.has_error_label("TransientTransactionError")
    await s1.commit_transaction()
    assert (await coll.find_one({"_id": 1}))["v"] == 1
    await s2.abort_transaction()
    await s1.end_session()
    await s2.end_session()


async def test_fail_point_error_labels_and_times(motor_client: AsyncIOMotorClient) -> None:
    """failCommand with times:1 fails exactly one matching command with the given labels."""
    await motor_client.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["find"], "errorCode": 2, "errorLabels": ["CustomLabel"]},
        }
    )
    with pytest.raises(OperationFailure) as info:
        await motor_client.sim_fp.items.find_one({})
    assert info.value.code == 2
    assert info.value.has_error_label("CustomLabel")
    assert await motor_client.sim_fp.items.find_one({}) is None


async def test_fail_command_builder_skip_and_off(motor_client: AsyncIOMotorClient) -> None:
    """fail_command's documents work as written: skip the first match, fail the next, then off."""
    coll = motor_client.sim_fp_builder.items
    await motor_client.admin.command(
        fail_command("find", mode={"skip": 1}, error_code=2, error_labels=["Mine"])
    )
    assert await coll.find_one({}) is None  # skipped
    with pytest.raises(OperationFailure) as info:
        await coll.find_one({})
    assert (info.value.code, info.value.has_error_label("Mine")) == (2, True)
    await motor_client.admin.command(fail_command(mode="off"))
    assert await coll.find_one({}) is None


def test_fail_command_rejects_what_mongod_would_not_take() -> None:
    """A typo'd mode or a fail point that names no command fails at once, not on the server."""
    with pytest.raises(TypeError, match="mode"):
        fail_command("find", mode=True)
    with pytest.raises(ValueError, match="at least one command"):
        fail_command(error_code=2)
    assert fail_command("insert", closeConnection=True)["data"] == {
        "failCommands": ["insert"],
        "closeConnection": True,
    }


async def test_close_connection_fail_point_is_retried(motor_client: AsyncIOMotorClient) -> None:
    """closeConnection drops the socket; the driver's retryable write succeeds on retry."""
    await motor_client.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["insert"], "closeConnection": True},
        }
    )
    await motor_client.sim_close.items.insert_one({"x": 1})
    assert await motor_client.sim_close.items.count_documents({"x": 1}) >= 1


async def test_block_connection_blocks_only_its_connection(mongodb_uri: str) -> None:
    """blockConnection delays the blocked command while other connections are served."""
    client: pymongo.AsyncMongoClient = pymongo.AsyncMongoClient(mongodb_uri, **CLIENT_OPTIONS)
    await client.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["find"], "blockConnection": True, "blockTimeMS": 400},
        }
    )
    started = time.monotonic()
    blocked = asyncio.create_task(client.sim_block.items.find_one({}))
    await asyncio.sleep(0)  # let the blocked find be sent first
    await client.admin.command("ping")
    ping_done = time.monotonic() - started
    await blocked
    blocked_done = time.monotonic() - started
    assert blocked_done >= 0.4
    assert ping_done < blocked_done
    await client.close()


async def test_cluster_time_strictly_increases(motor_client: AsyncIOMotorClient) -> None:
    """Every reply carries $clusterTime and operationTime, strictly increasing."""
    times = []
    for _ in range(5):
        reply = await motor_client.admin.command("ping")
        assert reply["operationTime"] == reply["$clusterTime"]["clusterTime"]
        times.append(reply["operationTime"])
    assert times == sorted(times)
    assert len(set(times)) == 5


async def test_unknown_command_is_an_error_reply(motor_client: AsyncIOMotorClient) -> None:
    """An unknown command gets CommandNotFound (59), not a hang."""
    with pytest.raises(OperationFailure) as info:
        await motor_client.admin.command("noSuchCommand")
    assert info.value.code == 59


async def test_txn_number_must_grow_per_session(mongodb_uri: str) -> None:
    """A session's txnNumber only grows: a lower one is TransactionTooOld (225), as on mongod."""
    client: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(mongodb_uri, **CLIENT_OPTIONS)
    db = client.sim_txn_number
    await db.items.drop()
    await db.create_collection("items")

    def insert(txn_number: int) -> dict[str, Any]:
        return {
            "insert": "items",
            "documents": [{"txn": txn_number}],
            "txnNumber": Int64(txn_number),
            "startTransaction": True,
            "autocommit": False,
        }

    commit = {"commitTransaction": 1, "txnNumber": Int64(5), "autocommit": False}
    try:
        async with client.start_session() as session:  # its lsid goes on every command
            await db.command(insert(5), session=session)
            with pytest.raises(OperationFailure) as info:
                await db.command(insert(3), session=session)
            assert (info.value.code, info.value.details["codeName"]) == (225, "TransactionTooOld")
            await client.admin.command(commit, session=session)  # 5 is still the live one
            with pytest.raises(OperationFailure) as info:
                await db.command(insert(4), session=session)
            assert info.value.code == 225
        assert [d["txn"] async for d in db.items.find({})] == [5]
    finally:
        await client.close()


async def test_no_such_transaction_is_transient(mongodb_uri: str) -> None:
    """Committing a transaction that never started is NoSuchTransaction, TransientTransactionError."""
    client: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(mongodb_uri, **CLIENT_OPTIONS)
    try:
        async with client.start_session() as session:
            with pytest.raises(OperationFailure) as info:
                await client.admin.command(
                    {"commitTransaction": 1, "txnNumber": Int64(9), "autocommit": False},
                    session=session,
                )
        assert (info.value.code, info.value.details["codeName"]) == (251, "NoSuchTransaction")
        assert info.value.has_error_label("TransientTransactionError")
    finally:
        await client.close()


async def test_fail_point_app_name_fails_only_that_application(mongodb_uri: str) -> None:
    """failCommand with appName fails only clients with that appName, and is not used up by others."""
    target: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(
        mongodb_uri, appname="sim-app-target", **CLIENT_OPTIONS
    )
    other: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(
        mongodb_uri, appname="sim-app-other", **CLIENT_OPTIONS
    )
    try:
        await other.admin.command(fail_command("find", error_code=2, appName="sim-app-target"))
        assert await other.sim_app.items.find_one({}) is None  # not failed, not consumed
        with pytest.raises(OperationFailure) as info:
            await target.sim_app.items.find_one({})
        assert info.value.code == 2
        assert await target.sim_app.items.find_one({}) is None  # times: 1 is spent
    finally:
        await other.admin.command(fail_command(mode="off"))
        await target.close()
        await other.close()


async def test_legacy_is_master(mongodb_uri: str) -> None:
    """The legacy isMaster command answers as a replica-set primary, over OP_MSG and OP_QUERY."""
    client: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(mongodb_uri, **CLIENT_OPTIONS)
    try:
        reply = await client.admin.command("isMaster")
        hello = await client.admin.command("hello")
    finally:
        await client.close()
    assert (True, hello["setName"]) == (reply["ismaster"], reply["setName"])
    assert reply["maxWireVersion"] >= 17

    # What drivers without OP_MSG send first: OP_QUERY on admin.$cmd, answered with OP_REPLY.
    address = pymongo.uri_parser.parse_uri(mongodb_uri)["nodelist"][0]
    flags, collection, skip, limit = struct.pack("<i", 0), b"admin.$cmd\x00", 0, -1
    query = flags + collection + struct.pack("<ii", skip, limit) + bson.encode({"isMaster": 1})
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(struct.pack("<iiii", 16 + len(query), 11, 0, 2004) + query)
        response_to, opcode, body = _read_reply(sock)
    _flags, _cursor, _start, returned = struct.unpack("<iqii", body[:20])
    legacy = bson.decode(body[20:])
    assert (response_to, opcode, returned) == (11, 1, 1)
    assert (1, True, hello["setName"]) == (legacy["ok"], legacy["ismaster"], legacy["setName"])


def _op_msg(request_id: int, body: bytes) -> bytes:
    return struct.pack("<iiii", 16 + len(body), request_id, 0, 2013) + body


def _command_msg(request_id: int, command: dict[str, Any]) -> bytes:
    """A well-formed OP_MSG: flag bits 0, one kind-0 section holding the command."""
    return _op_msg(request_id, struct.pack("<I", 0) + b"\x00" + bson.encode(command))


def _read_reply(sock: socket.socket) -> tuple[int, int, bytes]:
    """(responseTo, opCode, body after the header) of the next message on ``sock``."""
    header = b""
    while len(header) < 16:
        chunk = sock.recv(16 - len(header))
        assert chunk, "the server closed the connection instead of replying"
        header += chunk
    length, _, response_to, opcode = struct.unpack("<iiii", header)
    body = b""
    while len(body) < length - 16:
        chunk = sock.recv(length - 16 - len(body))
        assert chunk, "the server closed the connection mid-reply"
        body += chunk
    return response_to, opcode, body


def _hung_up(sock: socket.socket) -> bool:
    """Read until the server closes the socket (mongod may say something first)."""
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return True


async def test_bad_input_leaves_a_connected_client_working(
    mongodb_uri: str, simulator: SimulatedReplicaSet | None
) -> None:
    """Garbage bytes and an unknown command on raw sockets; a connected client keeps its socket."""
    address = pymongo.uri_parser.parse_uri(mongodb_uri)["nodelist"][0]
    server_ids: list[int | None] = []

    class ServerIds(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            server_ids.append(event.server_connection_id)

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    client: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(
        mongodb_uri, maxPoolSize=1, event_listeners=[ServerIds()], **CLIENT_OPTIONS
    )
    coll = client.sim_bad_input.items
    try:
        await coll.drop()
        await coll.insert_one({"_id": 1})

        # Not a MongoDB message at all: the server hangs up on that socket only.
        with socket.create_connection(address, timeout=5) as garbage:
            garbage.sendall(b"GET / HTTP/1.1\r\n\r\n" * 4)
            assert _hung_up(garbage)
        # A well-formed OP_MSG with a command nobody knows: CommandNotFound, as mongod answers.
        with socket.create_connection(address, timeout=5) as unknown:
            unknown.sendall(_command_msg(7, {"noSuchCommand": 1, "$db": "admin"}))
            response_to, opcode, body = _read_reply(unknown)
            reply = bson.decode(body[5:])
            assert (response_to, opcode, reply["ok"], reply["code"]) == (7, 2013, 0, 59)
            assert reply["codeName"] == "CommandNotFound"
        # A valid header with a malformed OP_MSG body: an error reply or a closed socket.
        with socket.create_connection(address, timeout=5) as malformed:
            malformed.sendall(_op_msg(8, b"\x00\x00\x00\x00\x00\xff\xff"))
            if simulator is not None:  # ours answers BadValue on the same connection
                response_to, opcode, body = _read_reply(malformed)
                reply = bson.decode(body[5:])
                assert (response_to, opcode, reply["ok"], reply["code"]) == (8, 2013, 0, 2)

        await coll.insert_one({"_id": 2})
        assert [d["_id"] async for d in coll.find({}).sort("_id", 1)] == [1, 2]
    finally:
        await client.close()
    assert len(server_ids) >= 4 and None not in server_ids  # drop, insert, insert, find, ...
    assert len(set(server_ids)) == 1  # one server connection, never dropped


def test_sync_client_and_context_managers() -> None:
    """`with` starts and stops the server; a sync MongoClient runs a transaction on it."""
    with SimulatedReplicaSet(set_name="rs0") as rs:
        assert rs.uri.endswith("/?replicaSet=rs0")
        client: pymongo.MongoClient = pymongo.MongoClient(rs.uri, **CLIENT_OPTIONS)
        with client.start_session() as session:
            session.with_transaction(lambda s: client.db.items.insert_one({"a": 1}, session=s))
        assert client.db.items.count_documents({}) == 1
        assert rs.transactions.total_committed == 1
        client.close()
    with pytest.raises(RuntimeError):
        _ = rs.uri


async def test_async_context_manager() -> None:
    """`async with` works too, and the server stops serving afterwards."""
    async with SimulatedReplicaSet() as rs:
        address = rs.address
        client: pymongo.AsyncMongoClient = pymongo.AsyncMongoClient(rs.uri, **CLIENT_OPTIONS)
        assert (await client.admin.command("ping"))["ok"] == 1
        await client.close()
    with pytest.raises(OSError):
        socket.create_connection(address, timeout=1).close()


async def test_network_error_in_commit_surfaces_unknown_commit(mongodb_uri: str) -> None:
    """A connection closed on every commit ends in UnknownTransactionCommitResult after retries."""
    client: pymongo.AsyncMongoClient = pymongo.AsyncMongoClient(mongodb_uri, **CLIENT_OPTIONS)
    await client.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 2},
            "data": {"failCommands": ["commitTransaction"], "closeConnection": True},
        }
    )
    async with client.start_session() as session:
        await session.start_transaction()
        await client.sim_net.items.insert_one({"a": 1}, session=session)
        with pytest.raises(AutoReconnect) as info:
            await session.commit_transaction()
        assert info.value.has_error_label("UnknownTransactionCommitResult")
        await session.commit_transaction()  # the retried commit succeeds
    assert await client.sim_net.items.count_documents({}) == 1
    await client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    await client.close()


async def test_secondary_member_serves_secondary_reads() -> None:
    """secondaries=1: the set has a secondary the driver discovers; reads with a secondary read
    preference go there, writes go to the primary, w: 2 is satisfiable and w: 3 is not."""
    async with SimulatedReplicaSet(secondaries=1) as rs:
        client: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(rs.uri, **CLIENT_OPTIONS)
        direct: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(
            "mongodb://{}:{}/?directConnection=true".format(*rs.secondary_addresses[0]),
            **CLIENT_OPTIONS,
        )
        try:
            await client.db.items.insert_one({"_id": 1})
            hello = await client.admin.command("hello")
            assert len(hello["hosts"]) == 2
            secondary = client.db.get_collection(
                "items", read_preference=pymongo.ReadPreference.SECONDARY
            )
            assert await secondary.find_one({}) == {"_id": 1}
            two = await client.db.command(
                {"insert": "items", "documents": [{"_id": 2}], "writeConcern": {"w": 2}}
            )
            three = await client.db.command(
                {"insert": "items", "documents": [{"_id": 3}], "writeConcern": {"w": 3}}
            )
            assert "writeConcernError" not in two
            assert (three["n"], three["writeConcernError"]["code"]) == (1, 100)
            assert (await direct.admin.command("hello"))["secondary"] is True
            with pytest.raises(pymongo.errors.NotPrimaryError) as refused:
                await direct.db.command({"insert": "items", "documents": [{"_id": 4}]})
            assert refused.value.details["code"] == 10107
        finally:
            await client.close()
            await direct.close()


async def test_fail_command_applies_to_hello_when_named(mongodb_uri: str) -> None:
    """failCommand fails hello when failCommands names it (mongod 4.4+), only for its appName."""
    # Handshakes send the legacy isMaster and heartbeats come every minute here: only the
    # explicit hello below can meet the fail point.
    target: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(
        mongodb_uri, appname="sim-hello-target", heartbeatFrequencyMS=60000, **CLIENT_OPTIONS
    )
    other: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(mongodb_uri, **CLIENT_OPTIONS)
    try:
        await other.admin.command(fail_command("hello", error_code=2, appName="sim-hello-target"))
        assert (await other.admin.command("hello"))["ok"] == 1  # not its appName
        with pytest.raises(OperationFailure) as info:
            await target.admin.command("hello")
        assert info.value.code == 2
        assert (await target.admin.command("hello"))["ok"] == 1  # times: 1 is spent
    finally:
        await other.admin.command(fail_command(mode="off"))
        await target.close()
        await other.close()
