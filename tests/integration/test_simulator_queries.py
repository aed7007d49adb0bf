"""Query and update features mongomock lacks, added by the simulator's adapter (issue 13, item 5).

Each answer is the one the MongoDB manual page named in the test gives; a feature the simulator
still lacks is an ``ok: 0`` error naming it.
"""

from __future__ import annotations

from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo.errors import OperationFailure

from tests.data import fresh_collection


async def _fresh(client: AsyncIOMotorClient, name: str, *docs: dict[str, Any]) -> Any:
    return await fresh_collection(client.sim_queries, name, *docs)


async def test_array_filters(motor_client: AsyncIOMotorClient) -> None:
    """$[<identifier>] updates the elements arrayFilters select; $[] updates all of them
    (MongoDB manual, "$[<identifier>]", "$[]")."""
    coll = await _fresh(
        motor_client, "array_filters", {"_id": 1, "a": [{"x": 1}, {"x": 2}, {"x": 1}], "b": [1, 5]}
    )
    result = await coll.update_one(
        {"_id": 1}, {"$set": {"a.$[e].x": 9}}, array_filters=[{"e.x": 1}]
    )
    assert (result.matched_count, result.modified_count) == (1, 1)
    await coll.update_one({"_id": 1}, {"$inc": {"b.$[n]": 10}}, array_filters=[{"n": {"$gt": 2}}])
    await coll.update_one({"_id": 1}, {"$inc": {"a.$[].x": 1}})
    assert await coll.find_one({"_id": 1}) == {
        "_id": 1,
        "a": [{"x": 10}, {"x": 3}, {"x": 10}],
        "b": [1, 15],
    }
    with pytest.raises(OperationFailure) as info:
        await coll.update_one({"_id": 1}, {"$set": {"a.0.x": 0}}, array_filters=[{"e.x": 1}])
    assert (info.value.code, "not used" in str(info.value)) == (9, True)
    nested = await _fresh(
        motor_client, "nested_filters", {"_id": 1, "g": [{"s": [1, 7]}, {"s": [9]}]}
    )
    await nested.update_one(
        {"_id": 1}, {"$set": {"g.$[].s.$[big]": 0}}, array_filters=[{"big": {"$gte": 7}}]
    )
    assert (await nested.find_one({"_id": 1}))["g"] == [{"s": [1, 0]}, {"s": [0]}]
    with pytest.raises(OperationFailure) as missing:  # "The path ... must exist"
        await nested.update_one({"_id": 1}, {"$set": {"nope.$[].x": 1}})
    assert (missing.value.code, "must exist" in str(missing.value)) == (2, True)


async def test_let_variables(motor_client: AsyncIOMotorClient) -> None:
    """``let`` makes $$name visible in $expr and pipelines (MongoDB manual, "find", "aggregate"
    and "update" commands, "let")."""
    coll = await _fresh(motor_client, "let", {"_id": 1, "v": 10}, {"_id": 2, "v": 20})
    found = [d async for d in coll.find({"$expr": {"$gt": ["$v", "$$low"]}}, let={"low": 15})]
    assert found == [{"_id": 2, "v": 20}]
    cursor = coll.aggregate(
        [{"$match": {"$expr": {"$eq": ["$_id", "$$one"]}}}, {"$project": {"w": "$$tag"}}],
        let={"one": 1, "tag": "x"},
    )
    assert [d async for d in cursor] == [{"_id": 1, "w": "x"}]
    await coll.update_many(
        {"$expr": {"$lt": ["$v", "$$cap"]}}, [{"$set": {"v": "$$cap"}}], let={"cap": 15}
    )
    assert [d["v"] async for d in coll.find({}).sort("_id", 1)] == [15, 20]
    found = await coll.find_one_and_update(
        {"$expr": {"$eq": ["$v", "$$top"]}}, {"$set": {"hit": True}}, let={"top": 20}
    )
    assert found == {"_id": 2, "v": 20}
    deleted = await coll.delete_many({"$expr": {"$eq": ["$_id", "$$gone"]}}, let={"gone": 1})
    assert deleted.deleted_count == 1
    assert [d async for d in coll.find({})] == [{"_id": 2, "v": 20, "hit": True}]


async def test_replace_with_and_set_field(motor_client: AsyncIOMotorClient) -> None:
    """$replaceWith is $replaceRoot's alias; $setField sets a field whose name has a dot or
    a dollar, $unsetField removes one (MongoDB manual pages of those names)."""
    coll = await _fresh(motor_client, "set_field", {"_id": 1, "v": 2})
    cursor = coll.aggregate([{"$replaceWith": {"doubled": {"$multiply": ["$v", 2]}}}])
    assert [d async for d in cursor] == [{"doubled": 4}]
    cursor = coll.aggregate(
        [
            {"$replaceWith": {"$setField": {"field": "a.b", "input": "$$ROOT", "value": "$v"}}},
            {"$replaceWith": {"$unsetField": {"field": "v", "input": "$$ROOT"}}},
        ]
    )
    assert [d async for d in cursor] == [{"_id": 1, "a.b": 2}]
    cursor = coll.aggregate([{"$project": {"got": {"$getField": "v"}}}])
    assert [d async for d in cursor] == [{"_id": 1, "got": 2}]


async def test_type_null_and_numeric_aliases(motor_client: AsyncIOMotorClient) -> None:
    """$type "null" (alias 10) matches a null value, never a missing field (MongoDB manual,
    "$type", "Available Types")."""
    coll = await _fresh(
        motor_client, "type_null", {"_id": 1, "v": None}, {"_id": 2}, {"_id": 3, "v": 1}
    )
    assert [d["_id"] async for d in coll.find({"v": {"$type": "null"}})] == [1]
    assert [d["_id"] async for d in coll.find({"v": {"$type": 10}})] == [1]
    assert [d["_id"] async for d in coll.find({"v": {"$type": 16}})] == [3]


async def test_merge_and_out(motor_client: AsyncIOMotorClient) -> None:
    """$merge folds results into a collection (default: merge matched, insert unmatched); $out
    replaces one; both answer an empty cursor (MongoDB manual, "$merge", "$out")."""
    source = await _fresh(motor_client, "merge_source", {"_id": 1, "v": 1}, {"_id": 2, "v": 2})
    target = await _fresh(motor_client, "merge_target", {"_id": 1, "keep": True, "v": 0})
    assert [d async for d in source.aggregate([{"$merge": {"into": target.name}}])] == []
    assert [d async for d in target.find({}).sort("_id", 1)] == [
        {"_id": 1, "keep": True, "v": 1},
        {"_id": 2, "v": 2},
    ]
    await source.aggregate(
        [{"$merge": {"into": target.name, "whenMatched": "keepExisting"}}]
    ).to_list(None)
    assert (await target.find_one({"_id": 1}))["v"] == 1
    out = motor_client.sim_queries.out_target
    await out.drop()
    await out.insert_one({"_id": 99})
    assert [d async for d in source.aggregate([{"$match": {"v": 2}}, {"$out": out.name}])] == []
    assert [d async for d in out.find({})] == [{"_id": 2, "v": 2}]
    with pytest.raises(OperationFailure) as info:
        await source.aggregate(
            [{"$merge": {"into": target.name, "whenMatched": [{"$set": {"x": 1}}]}}]
        ).to_list(None)
    assert (info.value.code, "whenMatched" in str(info.value)) == (2, True)


async def test_merge_is_refused_in_a_transaction(motor_client: AsyncIOMotorClient) -> None:
    """$merge and $out cannot run in a transaction (MongoDB manual, "Transactions and
    Operations"): OperationNotSupportedInTransaction (263)."""
    source = await _fresh(motor_client, "merge_txn", {"_id": 1})
    async with await motor_client.start_session() as session:
        session.start_transaction()
        with pytest.raises(OperationFailure) as info:
            await source.aggregate([{"$merge": {"into": "elsewhere"}}], session=session).to_list(
                None
            )
        assert info.value.code == 263
        await session.abort_transaction()


async def test_collation_simple(motor_client: AsyncIOMotorClient, simulator: Any) -> None:
    """The simple collation compares binary; a locale the simulator lacks is refused by name
    rather than ignored (en/en_US: test_simulator_crud.py)."""
    coll = await _fresh(motor_client, "collation", {"_id": 1, "s": "a"}, {"_id": 2, "s": "A"})
    simple = [d["_id"] async for d in coll.find({"s": "a"}, collation={"locale": "simple"})]
    assert simple == [1]
    if simulator is None:
        return  # mongod knows every ICU locale
    with pytest.raises(OperationFailure) as info:
        await coll.find_one({"s": "a"}, collation={"locale": "de", "strength": 2})
    assert (info.value.code, "collation" in str(info.value)) == (2, True)


async def test_unsupported_feature_is_an_error_naming_it(motor_client: AsyncIOMotorClient) -> None:
    """An expression mongomock lacks comes back as ok: 0, BadValue, naming it: never a wrong
    answer or a dropped connection."""
    coll = await _fresh(motor_client, "unsupported", {"_id": 1})
    with pytest.raises(OperationFailure) as info:
        await coll.aggregate(
            [{"$project": {"m": {"$mergeObjects": ["$$ROOT", {"a": 1}]}}}]
        ).to_list(None)
    assert (info.value.code, "$mergeObjects" in str(info.value)) == (2, True)
    assert info.value.details["ok"] == 0
    assert await coll.find_one({}) == {"_id": 1}  # the connection still serves
