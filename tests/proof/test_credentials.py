"""Credentials from the URI and auth payloads never reach telemetry, even with raw query text on.

The simulator accepts SASL PLAIN, so the drivers really send the password (in ``saslStart``'s
payload, the worst case for a leak) and then run the usual workload.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo.errors import OperationFailure

from motor_otel import instrument_client
from motor_otel.testing import SimulatedReplicaSet
from tests.conftest import CLIENT_OPTIONS
from tests.integration.test_exported_output import SECRETS, _call, _workload
from tests.signals import make_signals

USER, PASSWORD = "svc-ledger", "pw-Zq7!-do-not-log"

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("MONGODB_URI")), reason="needs the simulator's SASL PLAIN users"
)


@pytest.fixture(scope="module")
def secured() -> Iterator[SimulatedReplicaSet]:
    with SimulatedReplicaSet(users={USER: PASSWORD}) as rs:
        yield rs


def _uri(rs: SimulatedReplicaSet, password: str) -> str:
    host, port = rs.address
    return (
        f"mongodb://{USER}:{password}@{host}:{port}/"
        "?replicaSet=rs0&authMechanism=PLAIN&authSource=$external"
    )


@pytest.mark.parametrize(
    "client_class", [AsyncIOMotorClient, pymongo.AsyncMongoClient, pymongo.MongoClient]
)
@pytest.mark.parametrize(
    "settings",
    [{}, {"query_text_max_length": 10_000, "query_text_raw_values": True}],
    ids=["default", "raw-query-text"],
)
async def test_no_credential_or_auth_payload_is_exported(
    secured: SimulatedReplicaSet, client_class: Any, settings: dict[str, Any]
) -> None:
    """An authenticated client's whole output has no password, no user:password, no saslStart."""
    exported = make_signals()
    client = exported.instrument(
        client_class(_uri(secured, PASSWORD), **CLIENT_OPTIONS), **settings
    )
    try:
        await _workload(client)
    finally:
        await _call(client.admin.command({"configureFailPoint": "failCommand", "mode": "off"}))
        await _call(client.close())
    text = exported.text()
    assert "insert exported.people" in text  # authenticated, and traced
    assert PASSWORD not in text and f"{USER}:" not in text
    assert "saslStart" not in text and "PLAIN" not in text
    if not settings:
        for secret in SECRETS:
            assert secret not in text


async def test_a_failed_login_is_reported_without_the_password(
    secured: SimulatedReplicaSet,
) -> None:
    """Wrong password: the application sees the driver's error; telemetry never the password."""
    exported = make_signals()
    wrong = "pw-wrong-Zq7!-also-secret"
    client: AsyncIOMotorClient = AsyncIOMotorClient(_uri(secured, wrong), **CLIENT_OPTIONS)
    instrument_client(client, tracer_provider=exported.tracer_provider)
    with pytest.raises(OperationFailure, match="Authentication failed"):
        await client.shop.items.insert_one({"x": 1})
    client.close()
    text = exported.text()
    assert "Authentication failed" in text  # the failure is visible
    assert wrong not in text and PASSWORD not in text
