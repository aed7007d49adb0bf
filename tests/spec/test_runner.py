"""The unified-format runner itself: what it does not implement is a named skip, never ignored."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pymongo
import pytest

from tests.spec.matching import Matcher, Unsupported
from tests.spec.unified import (
    _ARGUMENTS,
    _OPERATIONS,
    DRIVERS,
    Runner,
    check_supported,
)

Mutation = Callable[[dict[str, Any], dict[str, Any]], None]


def _file() -> dict[str, Any]:
    return {
        "description": "synthetic",
        "schemaVersion": "1.27",
        "createEntities": [
            {"client": {"id": "client0", "observeEvents": ["commandStartedEvent"]}},
            {"database": {"id": "database0", "client": "client0", "databaseName": "spec_runner"}},
            {
                "collection": {
                    "id": "collection0",
                    "database": "database0",
                    "collectionName": "items",
                }
            },
            {"session": {"id": "session0", "client": "client0"}},
        ],
        "initialData": [
            {"databaseName": "spec_runner", "collectionName": "items", "documents": []}
        ],
        "tests": [],
    }


def _test() -> dict[str, Any]:
    return {
        "description": "synthetic test",
        "operations": [
            {"name": "insertOne", "object": "collection0", "arguments": {"document": {"_id": 1}}}
        ],
    }


def _entity(spec: dict[str, Any], kind: str) -> dict[str, Any]:
    (found,) = [e[kind] for e in spec["createEntities"] if kind in e]
    return found  # type: ignore[no-any-return]


def _op(test: dict[str, Any]) -> dict[str, Any]:
    return test["operations"][0]  # type: ignore[no-any-return]


def _with_transaction(test: dict[str, Any], nested: dict[str, Any], **options: Any) -> None:
    test["operations"] = [
        {
            "name": "withTransaction",
            "object": "session0",
            "arguments": {"callback": [nested], **options},
        }
    ]


# (what is unsupported, how to put it in an otherwise valid file/test, text the skip must name)
CASES: list[tuple[str, Mutation, str]] = [
    ("schema major", lambda s, t: s.update(schemaVersion="2.0"), "schemaVersion 2.0"),
    ("file key", lambda s, t: s.update(newTopLevel=1), "file.newTopLevel"),
    ("test key", lambda s, t: t.update(expectLogMessages=[]), "test.expectLogMessages"),
    ("operation key", lambda s, t: _op(t).update(expectNothing=1), "operation.expectNothing"),
    (
        "operation",
        lambda s, t: _op(t).update(name="watchEverything"),
        "operation watchEverything",
    ),
    (
        "operation no driver has",
        lambda s, t: _op(t).update(name="listIndexNames"),
        "needs a driver listIndexNames operation",
    ),
    (
        "argument",
        lambda s, t: _op(t)["arguments"].update(maxTimeMS=5),
        "insertOne.maxTimeMS",
    ),
    (
        "argument in a callback",
        lambda s, t: _with_transaction(
            t, {"name": "insertOne", "object": "collection0", "arguments": {"timeoutMS": 1}}
        ),
        "insertOne.timeoutMS",
    ),
    (
        "testRunner operation",
        lambda s, t: t["operations"].append(
            {"name": "assertEventCount", "object": "testRunner", "arguments": {}}
        ),
        "testRunner operation assertEventCount",
    ),
    (
        "expectError key",
        lambda s, t: _op(t).update(expectError={"isTimeoutError": True}),
        "expectError.isTimeoutError",
    ),
    (
        "entity",
        lambda s, t: s["createEntities"].append({"clientEncryption": {"id": "e"}}),
        "entity clientEncryption",
    ),
    (
        "GridFS entity",
        lambda s, t: s["createEntities"].append({"bucket": {"id": "b"}}),
        "needs GridFS",
    ),
    (
        "client key",
        lambda s, t: _entity(s, "client").update(storeEventsAsEntities=[]),
        "client.storeEventsAsEntities",
    ),
    (
        "observed event",
        lambda s, t: _entity(s, "client")["observeEvents"].append("poolClearedEvent"),
        "client.observeEvents poolClearedEvent",
    ),
    (
        "tracing option",
        lambda s, t: _entity(s, "client").update(observeTracingMessages={"sample": 1}),
        "observeTracing.sample",
    ),
    (
        "collectionOptions key",
        lambda s, t: _entity(s, "collection").update(collectionOptions={"timeoutMS": 10}),
        "collectionOptions.timeoutMS",
    ),
    (
        "databaseOptions read preference field",
        lambda s, t: _entity(s, "database").update(
            databaseOptions={"readPreference": {"mode": "primary", "hedge": {"enabled": True}}}
        ),
        "databaseOptions.readPreference.hedge",
    ),
    (
        "session option",
        lambda s, t: _entity(s, "session").update(sessionOptions={"snapshotTime": "t0"}),
        "sessionOptions.snapshotTime",
    ),
    (
        "transaction option",
        lambda s, t: _with_transaction(
            t, _op(t), readConcern={"level": "majority", "afterClusterTime": 1}
        ),
        "transaction option.readConcern.afterClusterTime",
    ),
    (
        "initialData key",
        lambda s, t: s["initialData"][0].update(createOptions={"capped": True}),
        "initialData.createOptions",
    ),
    (
        "outcome key",
        lambda s, t: t.update(
            outcome=[{"databaseName": "d", "collectionName": "c", "documents": [], "sorted": 1}]
        ),
        "outcome.sorted",
    ),
    (
        "eventType",
        lambda s, t: t.update(expectEvents=[{"client": "client0", "eventType": "cmap"}]),
        "expectEvents.eventType cmap",
    ),
    (
        "expected event",
        lambda s, t: t.update(
            expectEvents=[{"client": "client0", "events": [{"poolReadyEvent": {}}]}]
        ),
        "event poolReadyEvent",
    ),
    (
        "event field",
        lambda s, t: t.update(
            expectEvents=[
                {"client": "client0", "events": [{"commandStartedEvent": {"requestId": 1}}]}
            ]
        ),
        "commandStartedEvent.requestId",
    ),
    (
        "tracing expectation key",
        lambda s, t: t.update(
            expectTracingMessages={"client": "client0", "spans": [], "ignoreOrder": True}
        ),
        "expectTracingMessages.ignoreOrder",
    ),
    (
        "span key",
        lambda s, t: t.update(
            expectTracingMessages={
                "client": "client0",
                "spans": [{"name": "x", "attributes": {}, "nested": [{"name": "y", "kind": 1}]}],
            }
        ),
        "span.kind",
    ),
    (
        "$$ operator in a result",
        lambda s, t: _op(t).update(expectResult={"insertedId": {"$$matchesEntity": "x"}}),
        "operator $$matchesEntity",
    ),
    (
        "$$ operator in an entity",
        lambda s, t: _entity(s, "client").update(uriOptions={"appname": {"$$placeholder": 1}}),
        "operator $$placeholder",
    ),
]


def test_the_synthetic_file_is_supported() -> None:
    """The base file and test the cases below change are themselves fully supported."""
    check_supported(_file(), _test())


@pytest.mark.parametrize(("mutate", "named"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_anything_unimplemented_is_a_named_skip(mutate: Mutation, named: str) -> None:
    """A key, operation, argument, event field or operator the runner lacks is Unsupported, named."""
    spec, test = _file(), _test()
    mutate(spec, test)
    with pytest.raises(Unsupported) as info:
        check_supported(spec, test)
    assert named in str(info.value)


def test_every_operation_has_an_argument_whitelist() -> None:
    """The argument whitelist covers exactly the operations the runner implements."""
    assert set(_OPERATIONS) | {"withTransaction"} == set(_ARGUMENTS)


def test_unknown_operator_while_matching_is_unsupported() -> None:
    """A $$ operator reaching the matcher unchecked is Unsupported, not a failure."""
    with pytest.raises(Unsupported, match=r"operator \$\$matchesHexBytes"):
        Matcher(lambda name: None).match({"$$matchesHexBytes": "00"}, b"\x00")


def _runner(uri: str, spec: dict[str, Any], test: dict[str, Any]) -> Runner:
    return Runner(DRIVERS["AsyncMongoClient"], uri, spec, test, "synthetic")


async def test_run_checks_before_running_anything(mongodb_uri: str) -> None:
    """An unknown test key skips the test before set-up or any operation reaches the server."""
    spec, test = _file(), _test()
    spec["initialData"][0]["collectionName"] = "untouched"  # set-up would empty it
    _entity(spec, "collection")["collectionName"] = "untouched"  # insertOne would add _id 1
    test["expectLogMessages"] = []
    client: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(mongodb_uri)
    coll = client.spec_runner.untouched
    try:
        await coll.drop()
        await coll.insert_one({"_id": "before"})
        with pytest.raises(Unsupported, match=r"test\.expectLogMessages"):
            await _runner(mongodb_uri, spec, test).run()
        assert await coll.find({}).to_list() == [{"_id": "before"}]
    finally:
        await coll.drop()
        await client.close()


async def test_serverless_require_is_not_met(mongodb_uri: str) -> None:
    """runOnRequirements serverless: "require" is a skip (this is never Atlas Serverless)."""
    spec = _file()
    spec["runOnRequirements"] = [{"serverless": "require"}]
    with pytest.raises(Unsupported, match="runOnRequirements not met: serverless"):
        await _runner(mongodb_uri, spec, _test()).run()
    spec["runOnRequirements"] = [{"serverless": "forbid"}]
    await _runner(mongodb_uri, spec, _test()).run()


async def test_a_fail_point_left_on_does_not_reach_the_next_test(mongodb_uri: str) -> None:
    """A test ending with a fail point still on (mode skip) leaves the next test unaffected."""
    spec = _file()
    leaves_it_on = {
        "description": "sets onPrimaryTransactionalWrite and never turns it off",
        "operations": [
            {
                "name": "failPoint",
                "object": "testRunner",
                "arguments": {
                    "client": "client0",
                    "failPoint": {
                        "configureFailPoint": "onPrimaryTransactionalWrite",
                        "mode": {"skip": 1},
                        "data": {"closeConnection": False, "failBeforeCommitExceptionCode": 1},
                    },
                },
            },
            {"name": "insertOne", "object": "collection0", "arguments": {"document": {"_id": 1}}},
            # The fail point is really on: every later retryable write statement fails.
            {
                "name": "insertOne",
                "object": "collection0",
                "arguments": {"document": {"_id": 2}},
                "expectError": {"errorCode": 1},
            },
        ],
    }
    next_test = _test()
    next_test["outcome"] = [
        {"databaseName": "spec_runner", "collectionName": "items", "documents": [{"_id": 1}]}
    ]
    client: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(mongodb_uri)
    try:
        await _runner(mongodb_uri, spec, leaves_it_on).run()
        await _runner(mongodb_uri, _file(), next_test).run()
    finally:
        off = {"configureFailPoint": "onPrimaryTransactionalWrite", "mode": "off"}
        await client.admin.command(off)
        await client.close()


def _with_events(fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    test = _test()
    test["expectEvents"] = [
        {
            "client": "client0",
            "events": [{"commandStartedEvent": {"commandName": "insert", **fields}}],
        }
    ]
    return _file(), test


async def test_has_service_id_and_server_connection_id_are_checked(mongodb_uri: str) -> None:
    """hasServerConnectionId and hasServiceId are asserted, not skipped: a wrong one fails."""
    await _runner(
        mongodb_uri, *_with_events({"hasServerConnectionId": True, "hasServiceId": False})
    ).run()
    with pytest.raises(AssertionError, match="serviceId"):
        await _runner(mongodb_uri, *_with_events({"hasServiceId": True})).run()
    with pytest.raises(AssertionError, match="serverConnectionId"):
        await _runner(mongodb_uri, *_with_events({"hasServerConnectionId": False})).run()


async def test_collection_and_database_options_reach_the_commands(mongodb_uri: str) -> None:
    """databaseOptions and collectionOptions set the read and write concern the commands carry."""
    spec, test = _file(), _test()
    _entity(spec, "database")["databaseOptions"] = {"readConcern": {"level": "local"}}
    _entity(spec, "collection")["collectionOptions"] = {"writeConcern": {"w": 1}}
    test["operations"].append(
        {"name": "find", "object": "collection0", "arguments": {"filter": {}}}
    )
    test["expectEvents"] = [
        {
            "client": "client0",
            "events": [
                {"commandStartedEvent": {"command": {"insert": "items", "writeConcern": {"w": 1}}}},
                {
                    "commandStartedEvent": {
                        "command": {"find": "items", "readConcern": {"level": "local"}}
                    }
                },
            ],
        }
    ]
    await _runner(mongodb_uri, spec, test).run()
    # The same expectations without the options: the runner really applied them.
    for entity in spec["createEntities"]:
        for fields in entity.values():
            fields.pop("databaseOptions", None)
            fields.pop("collectionOptions", None)
    with pytest.raises(AssertionError):
        await _runner(mongodb_uri, spec, test).run()


def test_results_are_documents_with_string_keys() -> None:
    """insertedIds/upsertedIds are keyed "0", "1"... as the JSON expectations are."""
    from pymongo.results import BulkWriteResult, InsertManyResult

    from tests.spec.unified import _result_doc

    assert _result_doc(InsertManyResult([7, 8], acknowledged=True)) == {
        "insertedIds": {"0": 7, "1": 8}
    }
    bulk = BulkWriteResult(
        {
            "nInserted": 1,
            "nUpserted": 1,
            "nMatched": 0,
            "nModified": 0,
            "nRemoved": 0,
            "upserted": [{"index": 2, "_id": "u"}],
        },
        acknowledged=True,
    )
    assert _result_doc(bulk) == {
        "insertedCount": 1,
        "matchedCount": 0,
        "modifiedCount": 0,
        "deletedCount": 0,
        "upsertedCount": 1,
        "upsertedIds": {"2": "u"},
    }


def test_unacknowledged_results_are_not_read_as_acknowledged() -> None:
    """w: 0 results say acknowledged: false instead of raising on their counts."""
    from pymongo.results import InsertOneResult, UpdateResult

    from tests.spec.unified import _result_doc

    assert _result_doc(UpdateResult(None, acknowledged=False)) == {"acknowledged": False}
    assert _result_doc(InsertOneResult(5, acknowledged=False)) == {
        "insertedId": 5,
        "acknowledged": False,
    }
    Matcher(lambda name: None).match(
        {"$$unsetOrMatches": {"insertedId": {"$$unsetOrMatches": 5}}},
        _result_doc(InsertOneResult(5, acknowledged=False)),
    )


def test_read_preference_is_built_from_mode_and_tags() -> None:
    """The spec's camelCase mode and tagSets become PyMongo's read preference object."""
    from pymongo.read_preferences import SecondaryPreferred

    from tests.spec.unified import rw_options

    options = rw_options(
        {"readPreference": {"mode": "secondaryPreferred", "tagSets": [{"dc": "ny"}]}}, "x"
    )
    assert options["read_preference"] == SecondaryPreferred(tag_sets=[{"dc": "ny"}])


async def test_simulated_mongos_routers(simulator: Any) -> None:
    """The routers answer hello as mongos, pin transactions, return recoveryTokens, and a commit
    on a router the transaction did not use can only recover a decision (NoSuchTransaction)."""
    if simulator is None:
        pytest.skip("the routers front the simulator; MONGODB_URI is set")
    from pymongo.errors import OperationFailure

    from tests.spec.mongos import SimulatedMongos

    ((host, port),) = pymongo.uri_parser.parse_uri(simulator.uri)["nodelist"]
    routers = SimulatedMongos((host, port))
    both: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(routers.uri)
    first: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(routers.single_uri)
    try:
        hello = await both.admin.command("hello")
        assert hello["msg"] == "isdbgrid" and "setName" not in hello
        coll = both.spec_runner.routed
        await coll.drop()
        async with both.start_session() as session:
            await session.start_transaction()
            reply = await both.spec_runner.command(
                {"insert": "routed", "documents": [{"_id": 1}]}, session=session
            )
            assert "recoveryToken" in reply
            pinned = session._transaction.pinned_address
            assert pinned in [p.address for p in routers.proxies]
            other = next(p.address for p in routers.proxies if p.address != pinned)
            # The same transaction's commit sent through the router it never used:
            lone: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(
                f"mongodb://{other[0]}:{other[1]}/"
            )
            try:
                with pytest.raises(OperationFailure) as raised:
                    await lone.admin.command(
                        {
                            "commitTransaction": 1,
                            "lsid": session.session_id,
                            "txnNumber": session._server_session.transaction_id,
                            "autocommit": False,
                        }
                    )
                assert raised.value.code == 251
                assert raised.value.has_error_label("TransientTransactionError")
            finally:
                await lone.close()
            await session.commit_transaction()
        assert await first.spec_runner.routed.find().to_list() == [{"_id": 1}]
    finally:
        await both.close()
        await first.close()
        routers.close()


def _runner_op(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "object": "testRunner", "arguments": arguments}


async def test_lsid_and_dirty_session_assertions(mongodb_uri: str) -> None:
    """assertSame/DifferentLsidOnLastTwoCommands compare the last two commands' lsids and
    assertSessionNotDirty reads the session; each fails when it does not hold."""
    spec, test = _file(), _test()
    explicit = {"document": {"_id": 2}, "session": "session0"}
    test["operations"] += [
        {"name": "insertOne", "object": "collection0", "arguments": explicit},
        _runner_op("assertDifferentLsidOnLastTwoCommands", client="client0"),
        {"name": "insertOne", "object": "collection0", "arguments": {**explicit, "document": {}}},
        _runner_op("assertSameLsidOnLastTwoCommands", client="client0"),
        _runner_op("assertSessionNotDirty", session="session0"),
    ]
    await _runner(mongodb_uri, spec, test).run()
    for wrong in ("assertDifferentLsidOnLastTwoCommands", "assertSessionDirty"):
        spec, failing = _file(), _test()
        failing["operations"] += [
            {"name": "insertOne", "object": "collection0", "arguments": explicit},
            {
                "name": "insertOne",
                "object": "collection0",
                "arguments": {**explicit, "document": {}},
            },
            _runner_op(wrong, client="client0")
            if "Lsid" in wrong
            else _runner_op(wrong, session="session0"),
        ]
        with pytest.raises(AssertionError, match=wrong):
            await _runner(mongodb_uri, spec, failing).run()


async def test_find_results_are_root_documents(mongodb_uri: str) -> None:
    """A find result's documents may hold fields the expectation does not list; a nested
    document may not, and a missing field still fails (unified-test-format.md "find")."""
    spec, test = _file(), _test()
    test["operations"][0]["arguments"]["document"] = {"_id": 1, "x": 1, "n": {"a": 1, "b": 2}}
    find = {"name": "find", "object": "collection0", "arguments": {"filter": {}}}
    test["operations"].append({**find, "expectResult": [{"_id": 1}]})
    await _runner(mongodb_uri, spec, test).run()
    for expected in ([{"_id": 1, "n": {"a": 1}}], [{"_id": 1, "y": 1}]):
        spec, test = _file(), _test()
        test["operations"][0]["arguments"]["document"] = {"_id": 1, "x": 1, "n": {"a": 1, "b": 2}}
        test["operations"].append({**find, "expectResult": expected})
        with pytest.raises(AssertionError):
            await _runner(mongodb_uri, spec, test).run()


async def test_catalogue_operations_and_error_response(mongodb_uri: str) -> None:
    """listCollectionNames, dropIndex, dropDatabase run through the driver, and
    expectError.errorResponse matches the server's reply."""
    spec, test = _file(), _test()
    test["operations"] += [
        {
            "name": "insertOne",
            "object": "collection0",
            "arguments": {"document": {"_id": 1}},
            "expectError": {"errorResponse": {"code": 11000, "keyValue": {"_id": 1}}},
        },
        {
            "name": "createIndex",
            "object": "collection0",
            "arguments": {"keys": {"x": 1}, "name": "x_1"},
        },
        {"name": "dropIndex", "object": "collection0", "arguments": {"name": "x_1"}},
        _runner_op(
            "assertIndexNotExists",
            databaseName="spec_runner",
            collectionName="items",
            indexName="x_1",
        ),
        {
            "name": "listCollectionNames",
            "object": "database0",
            "arguments": {"filter": {"name": "items"}},
            "expectResult": ["items"],
        },
        {"name": "dropDatabase", "object": "client0", "arguments": {"database": "spec_runner"}},
        _runner_op("assertCollectionNotExists", databaseName="spec_runner", collectionName="items"),
    ]
    await _runner(mongodb_uri, spec, test).run()
    test["operations"][1]["expectError"] = {"errorResponse": {"code": 11001}}
    with pytest.raises(AssertionError, match="errorResponse"):
        await _runner(mongodb_uri, _file(), test).run()


async def test_a_bulk_write_partial_result_pymongo_lacks_is_a_skip_after_checks(
    mongodb_uri: str,
) -> None:
    """A bulkWrite stopped by a network error cannot show its partial result through PyMongo:
    the test still runs to its outcome check (a wrong outcome fails), then is skipped naming
    that."""
    fail = _runner_op(
        "failPoint",
        client="client0",
        failPoint={
            "configureFailPoint": "onPrimaryTransactionalWrite",
            "mode": {"times": 2},
            "data": {"failBeforeCommitExceptionCode": 1},
        },
    )
    bulk = {
        "name": "bulkWrite",
        "object": "collection0",
        "arguments": {"requests": [{"insertOne": {"document": {"_id": 1}}}]},
        "expectError": {"isError": True, "expectResult": {"insertedCount": 0}},
    }
    test = {"description": "never committed", "operations": [fail, bulk]}
    outcome = {"databaseName": "spec_runner", "collectionName": "items", "documents": []}
    with pytest.raises(Unsupported, match="PYTHON-4597"):
        await _runner(mongodb_uri, _file(), {**test, "outcome": [outcome]}).run()
    wrong = {**outcome, "documents": [{"_id": 1}]}
    with pytest.raises(AssertionError, match="outcome"):
        await _runner(mongodb_uri, _file(), {**test, "outcome": [wrong]}).run()
