"""A small Motor + PyMongo app with no tracing code at all, for ``opentelemetry-instrument``.

    MONGODB_URI='mongodb://localhost:27017/?replicaSet=rs0' \\
        opentelemetry-instrument --traces_exporter console --metrics_exporter console \\
        --logs_exporter none python examples/plain_app.py

(``--logs_exporter none`` unless an OTLP/gRPC exporter is installed: the distro defaults to it.)

With motor-otel installed, the auto-instrumentation loader finds its ``motor`` entry point and
this app's transaction shows up as ``withTransaction`` → two ``transaction`` attempts → operation
→ command spans. ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=motor`` turns that off; the app's own
output is the same either way.

It needs a replica set that accepts ``configureFailPoint`` (a mongod started with
``--setParameter enableTestCommands=1``, or ``motor-otel``'s simulator).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pymongo
from motor.motor_asyncio import AsyncIOMotorClient

DB = os.environ.get("PLAIN_APP_DB", "plain_app")

# Test set-up, not application logic: the first insert of the transaction fails the way a write
# conflict does, so with_transaction retries the whole callback once.
FAIL_INSERT_ONCE = {
    "configureFailPoint": "failCommand",
    "mode": {"times": 1},
    "data": {
        "failCommands": ["insert"],
        "errorCode": 112,
        "errorLabels": ["TransientTransactionError"],
    },
}


async def main() -> None:
    uri = os.environ["MONGODB_URI"]
    # The first thing the app does: make a client. Under opentelemetry-instrument the
    # instrumentation is already active by then, so this client is fully traced.
    client: AsyncIOMotorClient = AsyncIOMotorClient(uri, serverSelectionTimeoutMS=5000)
    db = client[DB]
    await db.drop_collection("orders")
    await db.stock.replace_one({"_id": "apple"}, {"_id": "apple", "qty": 10}, upsert=True)

    calls = 0

    async def buy(session: Any) -> None:
        nonlocal calls
        calls += 1
        await db.stock.update_one({"_id": "apple"}, {"$inc": {"qty": -1}}, session=session)
        await db.orders.insert_one({"item": "apple", "n": 1}, session=session)

    await client.admin.command(FAIL_INSERT_ONCE)
    async with await client.start_session() as session:
        await session.with_transaction(buy)

    orders = await db.orders.count_documents({})
    stock = await db.stock.find_one({"_id": "apple"})
    client.close()

    # PyMongo's own async client, as apps moving off Motor use it.
    native: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(
        uri, serverSelectionTimeoutMS=5000
    )
    found = await native[DB].orders.find_one({"item": "apple"}, {"_id": 0})
    await native.close()

    print(f"callback calls: {calls}")
    print(f"orders: {orders}")
    print(f"apples left: {stock['qty'] if stock else None}")
    print(f"found: {found}")


if __name__ == "__main__":
    asyncio.run(main())
