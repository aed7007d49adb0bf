"""CRUD answers as mongod gives them (issue 19, item 3), through the driver.

Found by running MongoDB's CRUD suite through our runner. Each test names the MongoDB manual page
or specification that gives the answer; with ``MONGODB_URI`` set they run against a real server
unchanged.
"""

from __future__ import annotations

from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import InsertOne, UpdateOne
from pymongo.errors import (
    ClientBulkWriteException,
    DuplicateKeyError,
    OperationFailure,
    WriteError,
)

from tests.data import fresh_collection


async def _fresh(client: AsyncIOMotorClient, name: str, *docs: dict[str, Any]) -> Any:
    return await fresh_collection(client.sim_crud, name, *docs)


async def test_distinct_returns_values_in_bson_order(motor_client: AsyncIOMotorClient) -> None:
    """distinct returns its values sorted by BSON comparison, not in the order first seen
    (MongoDB manual, "Comparison/Sort Order"; CRUD spec test distinct.json: [11, 22, 33])."""
    coll = await _fresh(
        motor_client,
        "distinct",
        {"_id": 1, "x": 33},
        {"_id": 2, "x": 11},
        {"_id": 3, "x": "a"},
        {"_id": 4, "x": 22},
        {"_id": 5, "x": None},
        {"_id": 6, "x": 11},
    )
    assert await coll.distinct("x") == [None, 11, 22, 33, "a"]


async def test_rand_is_a_float_in_the_unit_interval(motor_client: AsyncIOMotorClient) -> None:
    """$rand returns a float in [0, 1) for each document (MongoDB manual, "$rand")."""
    coll = await _fresh(motor_client, "rand", *({"_id": i} for i in range(20)))
    docs = await coll.aggregate([{"$project": {"r": {"$rand": {}}}}]).to_list()
    values = [d["r"] for d in docs]
    assert all(isinstance(v, float) and 0 <= v < 1 for v in values)
    assert len(set(values)) > 1
    picked = await coll.count_documents({"$expr": {"$lt": [{"$rand": {}}, 2]}})
    assert picked == 20


async def test_database_aggregate_with_documents(motor_client: AsyncIOMotorClient) -> None:
    """aggregate: 1 starts from $documents, and its results can go to $out (MongoDB manual,
    "aggregate" command, "$documents")."""
    db = motor_client.sim_crud
    await db.drop_collection("from_documents")
    pipeline: list[dict[str, Any]] = [
        {"$documents": [{"x": 2}, {"x": 1}, {"x": 3}]},
        {"$match": {"x": {"$gte": 2}}},
        {"$sort": {"x": 1}},
    ]
    assert await db.aggregate(pipeline).to_list() == [{"x": 2}, {"x": 3}]
    await db.aggregate([*pipeline, {"$out": "from_documents"}]).to_list()
    stored = await db.from_documents.find({}, {"_id": 0}).sort("x", 1).to_list()
    assert stored == [{"x": 2}, {"x": 3}]


async def test_database_aggregate_lists_local_sessions(motor_client: AsyncIOMotorClient) -> None:
    """aggregate: 1 with $listLocalSessions lists the session the command itself uses
    (MongoDB manual, "$listLocalSessions"; CRUD spec test db-aggregate.json)."""
    async with await motor_client.start_session() as session:
        stages = [{"$listLocalSessions": {}}]
        docs = await motor_client.admin.aggregate(stages, session=session).to_list()
        ids = [d["_id"]["id"] for d in docs]
        assert session.session_id["id"] in ids


async def test_dollar_prefixed_top_level_fields(motor_client: AsyncIOMotorClient) -> None:
    """Top-level $-prefixed field names are stored (MongoDB 5.0+); inside _id they are a
    server error (MongoDB manual, "Field Names"; CRUD spec insertOne-dots_and_dollars.json)."""
    coll = await _fresh(motor_client, "dollars")
    await coll.insert_one({"_id": 1, "$a": 1, "b.c": 2})
    assert await coll.find_one({"_id": 1}) == {"_id": 1, "$a": 1, "b.c": 2}
    with pytest.raises(WriteError) as info:
        await coll.insert_one({"_id": {"$a": 1}})
    assert info.value.code == 52  # DollarPrefixedFieldName
    assert await coll.count_documents({}) == 1


async def test_upsert_takes_id_only_from_an_equality(motor_client: AsyncIOMotorClient) -> None:
    """An upsert builds its document from the filter's equality conditions only: {_id: {$gt: 1}}
    gives a new ObjectId, {_id: 7, x: {$gt: 1}} gives _id 7 and no x (MongoDB manual,
    "db.collection.updateOne()", "Upsert" behaviour)."""
    coll = await _fresh(motor_client, "upsert_ids")
    replaced = await coll.replace_one({"_id": {"$gt": 100}}, {"y": 1}, upsert=True)
    assert type(replaced.upserted_id).__name__ == "ObjectId"
    updated = await coll.update_one(
        {"_id": 7, "x": {"$gt": 1}, "k": "v"}, {"$set": {"y": 2}}, upsert=True
    )
    assert updated.upserted_id == 7
    assert await coll.find_one({"_id": 7}) == {"_id": 7, "k": "v", "y": 2}
    found = await coll.find_one_and_update(
        {"_id": {"$in": [8, 9]}}, {"$set": {"z": 1}}, upsert=True, return_document=True
    )
    assert set(found) == {"_id", "z"} and type(found["_id"]).__name__ == "ObjectId"


async def test_upsert_with_a_null_id(motor_client: AsyncIOMotorClient) -> None:
    """{_id: null} in an upsert's filter makes a document whose _id is null, which later
    updates and replacements find (CRUD spec create-null-ids.json; MongoDB manual, "Upsert")."""
    coll = await _fresh(motor_client, "null_ids")
    result = await coll.update_one({"_id": None}, {"$set": {"a": 1}}, upsert=True)
    assert (result.upserted_id, await coll.find_one({"_id": None})) == (None, {"_id": None, "a": 1})
    replaced = await coll.replace_one({"_id": None}, {"a": 2}, upsert=True)
    assert (replaced.matched_count, replaced.upserted_id) == (1, None)
    assert await coll.find({}).to_list() == [{"_id": None, "a": 2}]


async def test_pipeline_update_keeps_id(motor_client: AsyncIOMotorClient) -> None:
    """A pipeline-style update whose stages drop _id keeps the document's _id, and $unset is
    a stage (MongoDB manual, "Updates with Aggregation Pipeline", "$unset (aggregation)";
    CRUD spec updateWithPipelines.json)."""
    coll = await _fresh(
        motor_client, "pipeline", {"_id": 1, "x": 1, "t": {"u": {"v": 1}}}, {"_id": 2, "x": 2}
    )
    await coll.update_one(
        {"_id": 1}, [{"$replaceRoot": {"newRoot": "$t"}}, {"$addFields": {"foo": 1}}]
    )
    await coll.update_one({"_id": 2}, [{"$unset": ["x", "_id"]}, {"$set": {"y": 3}}])
    assert await coll.find({}).sort("_id", 1).to_list() == [
        {"_id": 1, "u": {"v": 1}, "foo": 1},
        {"_id": 2, "y": 3},
    ]


async def test_let_with_a_missing_field(motor_client: AsyncIOMotorClient) -> None:
    """$expr comparing a field some documents lack with a let variable is false for them, not
    an error, in find, update and delete (MongoDB manual, "let" option of "update"/"delete";
    CRUD spec updateMany-let.json, deleteMany-let.json)."""
    coll = await _fresh(
        motor_client, "let_missing", {"_id": 1}, {"_id": 2, "name": "n"}, {"_id": 3, "name": "n"}
    )
    same = {"$expr": {"$eq": ["$name", "$$name"]}}
    found = await coll.find(same, let={"name": "n"}).to_list()
    assert [d["_id"] for d in found] == [2, 3]
    updated = await coll.update_many(same, [{"$set": {"x": "$$x"}}], let={"name": "n", "x": "f"})
    assert updated.modified_count == 2
    deleted = await coll.delete_many(same, let={"name": "n"})
    assert deleted.deleted_count == 2
    assert await coll.find({}).to_list() == [{"_id": 1}]


async def test_undefined_variable_is_an_error(motor_client: AsyncIOMotorClient) -> None:
    """$$name with no such variable fails with 17276 (MongoDB manual, "Aggregation
    Variables"; CRUD spec client-bulkWrite-errors.json), in an aggregate and as one write error
    of a client bulkWrite, whose earlier writes stay done."""
    coll = await _fresh(motor_client, "undefined_variable", {"_id": 1}, {"_id": 2})
    with pytest.raises(OperationFailure) as info:
        await coll.aggregate([{"$match": {"$expr": {"$eq": ["$_id", "$$nope"]}}}]).to_list()
    assert info.value.code == 17276
    namespace = "sim_crud.undefined_variable"
    with pytest.raises(ClientBulkWriteException) as bulk:
        await motor_client.bulk_write(
            [
                InsertOne({"_id": 3}, namespace=namespace),
                UpdateOne(
                    {"$expr": {"$eq": ["$_id", "$$nope"]}}, {"$set": {"a": 1}}, namespace=namespace
                ),
                InsertOne({"_id": 4}, namespace=namespace),
            ],
            verbose_results=True,
        )
    assert [e["code"] for e in bulk.value.write_errors] == [17276]
    partial = bulk.value.partial_result
    assert partial is not None and partial.inserted_count == 1
    assert await coll.distinct("_id") == [1, 2, 3]


async def test_duplicate_key_errors_name_the_key(motor_client: AsyncIOMotorClient) -> None:
    """DuplicateKey from findAndModify and $merge carries keyPattern and keyValue, as from an
    insert (MongoDB manual, "Unique Indexes"; CRUD spec findOneAndUpdate-errorResponse.json,
    aggregate-merge-errorResponse.json)."""
    coll = await _fresh(motor_client, "dup_keys", {"_id": 1, "x": 1}, {"_id": 2, "x": 2})
    await coll.create_index("x", unique=True)
    with pytest.raises(DuplicateKeyError) as found:
        await coll.find_one_and_update({"_id": 2}, {"$set": {"x": 1}})
    assert (found.value.details or {})["keyPattern"] == {"x": 1}
    assert (found.value.details or {})["keyValue"] == {"x": 1}
    with pytest.raises(OperationFailure) as merged:
        merge = {"$merge": {"into": "dup_keys", "whenMatched": "fail"}}
        await coll.aggregate([{"$match": {"_id": 2}}, merge]).to_list()
    details = merged.value.details or {}
    assert (merged.value.code, details.get("keyValue")) == (11000, {"_id": 2})


async def test_collation_strengths_match(motor_client: AsyncIOMotorClient) -> None:
    """en/en_US strength 1 ignores case and accents, 2 ignores case only, 3 neither, in find,
    countDocuments and distinct (MongoDB manual, "Collation", "strength")."""
    coll = await _fresh(
        motor_client,
        "collation_match",
        {"_id": 1, "x": "cafe"},
        {"_id": 2, "x": "Café"},
        {"_id": 3, "x": "CAFE"},
    )

    async def ids(strength: int) -> list[int]:
        collation = {"locale": "en_US", "strength": strength}
        docs = await coll.find({"x": "cafe"}, collation=collation).sort("_id", 1).to_list()
        return [d["_id"] for d in docs]

    assert [await ids(1), await ids(2), await ids(3)] == [[1, 2, 3], [1, 3], [1]]
    assert await coll.count_documents({"x": "CAFÉ"}, collation={"locale": "en", "strength": 1}) == 3
    assert await coll.distinct("x", collation={"locale": "en", "strength": 2}) == ["cafe", "Café"]


async def test_collation_sorts_case_insensitively(motor_client: AsyncIOMotorClient) -> None:
    """Under en, strings sort by letter before case ("a" < "B" < "b" at strength 3), where
    simple sorts by code point ("B" < "a") (MongoDB manual, "Collation")."""
    coll = await _fresh(
        motor_client,
        "collation_sort",
        {"_id": 1, "x": "b"},
        {"_id": 2, "x": "B"},
        {"_id": 3, "x": "a"},
    )
    by_en = await coll.find({}, {"_id": 0}, collation={"locale": "en"}).sort("x", 1).to_list()
    simple = await coll.find({}, {"_id": 0}).sort("x", 1).to_list()
    assert [d["x"] for d in by_en] == ["a", "b", "B"]
    assert [d["x"] for d in simple] == ["B", "a", "b"]


async def test_collation_in_writes(motor_client: AsyncIOMotorClient) -> None:
    """update, delete and findAndModify select documents under their collation (CRUD spec
    updateOne-collation.json, deleteMany-collation.json, findOneAndUpdate-collation.json)."""
    coll = await _fresh(
        motor_client,
        "collation_writes",
        {"_id": 1, "x": "ping"},
        {"_id": 2, "x": "PING"},
        {"_id": 3, "x": "pong"},
    )
    ci = {"locale": "en_US", "strength": 2}
    updated = await coll.update_many({"x": "Ping"}, {"$set": {"seen": True}}, collation=ci)
    assert updated.modified_count == 2
    before = await coll.find_one_and_update(
        {"x": "PONG"}, {"$set": {"x": "pang"}}, sort=[("_id", 1)], collation=ci
    )
    assert before == {"_id": 3, "x": "pong"}
    deleted = await coll.delete_many({"x": "PiNg"}, collation=ci)
    assert deleted.deleted_count == 2
    assert await coll.find({}).to_list() == [{"_id": 3, "x": "pang"}]


async def test_unsupported_collation_is_refused(
    motor_client: AsyncIOMotorClient, simulator: Any
) -> None:
    """A locale or option the simulator cannot honour is an error naming it, never a binary
    comparison (simulator only; mongod knows every ICU locale)."""
    if simulator is None:
        pytest.skip("MONGODB_URI: mongod supports every locale")
    coll = await _fresh(motor_client, "collation_refused", {"_id": 1, "x": "a"})
    with pytest.raises(OperationFailure, match="collation"):
        await coll.find({"x": "A"}, collation={"locale": "fr", "strength": 1}).to_list()
    with pytest.raises(OperationFailure, match="collation"):
        await coll.find({}, collation={"locale": "en", "numericOrdering": True}).to_list()


async def test_update_one_with_sort(motor_client: AsyncIOMotorClient) -> None:
    """updateOne and replaceOne with sort change the first match in that order (MongoDB 8.0;
    MongoDB manual, "update" command, updates.sort; CRUD spec updateOne-sort.json)."""
    coll = await _fresh(
        motor_client, "update_sort", {"_id": 1, "x": 1}, {"_id": 2, "x": 1}, {"_id": 3, "x": 1}
    )
    await coll.update_one({"x": 1}, {"$set": {"last": True}}, sort={"_id": -1})
    await coll.replace_one({"x": 1}, {"x": 1, "second": True}, sort={"last": 1, "_id": -1})
    assert await coll.find({}).sort("_id", 1).to_list() == [
        {"_id": 1, "x": 1},
        {"_id": 2, "x": 1, "second": True},
        {"_id": 3, "x": 1, "last": True},
    ]
