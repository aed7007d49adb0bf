"""The simulator behaves like a one-node replica set, through Motor and PyMongo's async client."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import bson
import pymongo
import pytest
from motor.motor_asyncio import AsyncIOMotorClient
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
    """Two transactions changing one document: the second commit gets a transient WriteConflict."""
    coll = motor_client.sim_conflict.items
    await coll.drop()
    await coll.insert_one({"_id": 1, "v": 0})
    s1 = await motor_client.start_session()
    s2 = await motor_client.start_session()
    s1.start_transaction()
    s2.start_transaction()
    await coll.update_one({"_id": 1}, {"$set": {"v": 1}}, session=s1)
    await coll.update_one({"_id": 1}, {"$set": {"v": 2}}, session=s2)
    await s1.commit_transaction()
    with pytest.raises(OperationFailure) as info:
        await s2.commit_transaction()
    assert info.value.code == 112
    assert info.value.has_error_label("TransientTransactionError")
    assert (await coll.find_one({"_id": 1}))["v"] == 1
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


def _op_msg(request_id: int, body: bytes) -> bytes:
    return struct.pack("<iiii", 16 + len(body), request_id, 0, 2013) + body


def test_garbage_bytes_do_not_break_the_server() -> None:
    """Garbage and malformed messages get an error reply or a closed socket; others are served."""
    with SimulatedReplicaSet() as rs:
        # Not a MongoDB message at all: the server hangs up.
        with socket.create_connection(rs.address, timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n\r\n" * 4)
            try:
                received = sock.recv(1024)
            except ConnectionResetError:
                received = b""
            assert received == b""
        # A valid header with a malformed OP_MSG body: an error reply on the same connection.
        with socket.create_connection(rs.address, timeout=5) as sock:
            sock.sendall(_op_msg(7, b"\x00\x00\x00\x00\x00\xff\xff"))
            header = sock.recv(16)
            length, _, response_to, opcode = struct.unpack("<iiii", header)
            body = b""
            while len(body) < length - 16:
                body += sock.recv(length - 16 - len(body))
            reply = bson.decode(body[5:])
            assert (response_to, opcode, reply["ok"], reply["code"]) == (7, 2013, 0, 2)
        client: pymongo.MongoClient = pymongo.MongoClient(rs.uri, **CLIENT_OPTIONS)
        assert client.admin.command("ping")["ok"] == 1
        client.close()


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
