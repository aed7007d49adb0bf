"""Test data helpers shared by the integration tests."""

from __future__ import annotations

from typing import Any


async def fresh_collection(database: Any, name: str, *docs: dict[str, Any]) -> Any:
    """``database[name]`` emptied (dropped) and holding ``docs``: each test starts from data it
    states, whatever an earlier test or run left behind."""
    coll = database[name]
    await coll.drop()
    if docs:
        await coll.insert_many(list(docs))
    return coll
