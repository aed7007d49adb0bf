"""No document value in anything we export, with default settings (the whole output is scanned)."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo.errors import PyMongoError

from motor_otel.testing import fail_command
from tests.conftest import CLIENT_OPTIONS
from tests.signals import make_signals

# Values no attribute, event, status, name or metric may carry by default.
SECRETS = (
    "ssn-078-05-1120",
    "alice@example.invalid",
    "4111-1111-1111-1111",
    "hunter2-password",
    "783142",  # a number: must not leak as a number either
)
EMAIL, CARD, PASSWORD = SECRETS[1], SECRETS[2], SECRETS[3]
AMOUNT = int(SECRETS[4])

FAIL_INSERT_ONCE = fail_command(
    "insert", error_code=112, error_labels=["TransientTransactionError"]
)


async def _call(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _workload(client: Any) -> None:
    """Writes, reads, updates, aggregation, a retried transaction and failing commands."""
    coll = client.exported.people
    await _call(coll.drop())
    await _call(coll.insert_one({"_id": SECRETS[0], "email": EMAIL, "card": CARD}))
    await _call(coll.insert_many([{"email": f"{i}-{EMAIL}", "amount": AMOUNT} for i in range(3)]))
    await _call(coll.find_one({"email": EMAIL, "card": CARD}))
    await _call(coll.update_one({"email": EMAIL}, {"$set": {"password": PASSWORD}}))
    await _call(coll.find_one_and_update({"card": CARD}, {"$inc": {"amount": AMOUNT}}))
    cursor = await _call(coll.aggregate([{"$match": {"amount": {"$gte": AMOUNT}}}]))
    await _call(cursor.to_list(None))
    await _call(coll.count_documents({"email": EMAIL}))
    for duplicate in (  # the server quotes the key; PyMongo's str() adds the whole reply
        lambda: coll.insert_one({"_id": SECRETS[0], "card": CARD}),
        lambda: coll.insert_many([{"_id": SECRETS[0], "password": PASSWORD}]),
    ):
        with pytest.raises(PyMongoError):
            await _call(duplicate())

    async def callback(session: Any) -> None:
        await _call(coll.insert_one({"email": EMAIL, "password": PASSWORD}, session=session))

    async def failing_callback(session: Any) -> None:  # raises through our spans to the app
        await _call(coll.insert_one({"_id": SECRETS[0], "card": CARD}, session=session))

    await _call(client.admin.command(FAIL_INSERT_ONCE))
    session = await _call(client.start_session())
    try:
        if isinstance(client, pymongo.MongoClient):
            await asyncio.to_thread(
                session.with_transaction,
                lambda s: coll.insert_one({"email": EMAIL, "password": PASSWORD}, session=s),
            )
            with pytest.raises(PyMongoError):
                await asyncio.to_thread(
                    session.with_transaction,
                    lambda s: coll.insert_one({"_id": SECRETS[0], "card": CARD}, session=s),
                )
        else:
            await session.with_transaction(callback)
            with pytest.raises(PyMongoError):
                await session.with_transaction(failing_callback)
    finally:
        await _call(session.end_session())


CLIENTS = {
    "Motor": AsyncIOMotorClient,
    "AsyncMongoClient": pymongo.AsyncMongoClient,
    "MongoClient": pymongo.MongoClient,
}


@pytest.fixture(params=list(CLIENTS))
def client_class(request: pytest.FixtureRequest) -> Iterator[Any]:
    yield CLIENTS[request.param]


async def _run(client_class: Any, uri: str, **settings: Any) -> str:
    signals = make_signals()
    client = signals.instrument(client_class(uri, **CLIENT_OPTIONS), **settings)
    try:
        await _workload(client)
    finally:
        await _call(client.admin.command({"configureFailPoint": "failCommand", "mode": "off"}))
        await _call(client.close())
    return signals.text()


async def test_default_settings_export_no_document_value(
    client_class: Any, mongodb_uri: str
) -> None:
    """Spans (names, attributes, events, status, links) and metrics hold none of the values."""
    text = await _run(client_class, mongodb_uri)
    assert '"transaction"' in text and "insert exported.people" in text  # the scan saw the tree
    assert "E11000" in text  # and the failures, whose messages quote keys
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked into the exported telemetry"


async def test_query_text_is_redacted_unless_raw_values_are_asked_for(
    mongodb_uri: str,
) -> None:
    """Query text on: shapes only; raw values on as well: the values, cut to the limit."""
    redacted = await _run(AsyncIOMotorClient, mongodb_uri, query_text_max_length=300)
    assert '\\"email\\": \\"?\\"' in redacted
    for secret in SECRETS:
        assert secret not in redacted

    raw = await _run(
        AsyncIOMotorClient, mongodb_uri, query_text_max_length=300, query_text_raw_values=True
    )
    assert EMAIL in raw and CARD in raw
    texts = [
        span["attributes"]["db.query.text"]
        for span in json.loads(raw)["spans"]
        if "db.query.text" in (span.get("attributes") or {})
    ]
    assert texts and all(len(text) <= 300 or len(text) == 303 for text in texts)
    assert any(len(text) == 303 and text.endswith("...") for text in texts)  # cut and marked
