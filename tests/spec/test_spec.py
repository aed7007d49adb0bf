"""MongoDB's own JSON suites, run through each driver against the simulator (or MONGODB_URI)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymongo
import pytest

from motor_otel.testing import SimulatedReplicaSet
from tests.spec.matching import Unsupported
from tests.spec.mongos import SimulatedMongos
from tests.spec.unified import DRIVERS, Runner, load, needs_secondary

MOTOR_COMMIT_NOT_RETRIED = (
    "Motor 3.7's with_transaction commits in its start_transaction context manager's __aexit__, "
    "outside the retry loop, so a failed first commit is never retried"
)

# (suite directory, drivers) — see the README section "Specification tests".
PYMONGO_TRACED = ("AsyncMongoClient+otel", "MongoClient+otel")
FOUR = ("AsyncMongoClient", "AsyncMongoClient+otel", "Motor", "Motor+driver")
SUITES: dict[str, tuple[str, ...]] = {
    "transactions-convenient-api/tests/unified": (
        "AsyncMongoClient",
        "MongoClient",
        "Motor",
        "Motor+driver",
        "Motor+spec",
        *PYMONGO_TRACED,
    ),
    "open-telemetry/tests/transaction": ("Motor+driver", "Motor+spec", *PYMONGO_TRACED),
    "open-telemetry/tests/operation": ("Motor+driver", *PYMONGO_TRACED),
    "transactions/tests/unified": FOUR,
    "command-logging-and-monitoring/tests/monitoring": FOUR,
    "retryable-writes/tests/unified": FOUR,
}

# Tests that fail only because of Motor's commit loop (verified one by one: each passes with
# AsyncMongoClient and with Motor + our "spec" mode on the same server).
MOTOR_XFAIL: frozenset[tuple[str, str]] = frozenset(
    {
        (
            "commit-retry-errorLabels",
            "commit is retried after commitTransaction UnknownTransactionCommitResult (NotWritablePrimary)",
        ),
        ("commit-retry", "commitTransaction succeeds after multiple connection errors"),
        ("commit-retry", "commitTransaction retry only overwrites write concern w option"),
        (
            "commit-transienttransactionerror-4.2",
            "transaction is retried after commitTransaction TransientTransactionError (PreparedTransactionInProgress)",
        ),
        (
            "commit-transienttransactionerror",
            "transaction is retried after commitTransaction TransientTransactionError (LockTimeout)",
        ),
        (
            "commit-transienttransactionerror",
            "transaction is retried after commitTransaction TransientTransactionError (WriteConflict)",
        ),
        (
            "commit-transienttransactionerror",
            "transaction is retried after commitTransaction TransientTransactionError (SnapshotUnavailable)",
        ),
        (
            "commit-transienttransactionerror",
            "transaction is retried after commitTransaction TransientTransactionError (NoSuchTransaction)",
        ),
        (
            "commit-writeconcernerror",
            "commitTransaction is retried after WriteConcernTimeout timeout error",
        ),
        (
            "commit-writeconcernerror",
            "commitTransaction is retried after WriteConcernTimeout non-timeout error",
        ),
    }
)


def _short(suite: str) -> str:
    """``open-telemetry/tests/operation`` -> ``open-telemetry/operation``."""
    parts = suite.split("/")
    return parts[0] if parts[-1] == "unified" else f"{parts[0]}/{parts[-1]}"


def _params() -> list[Any]:
    params = []
    for suite, drivers in SUITES.items():
        for stem, spec, test in load(suite):
            for driver in drivers:
                marks = []
                key = (stem, test["description"])
                if driver in ("Motor", "Motor+driver") and key in MOTOR_XFAIL:
                    marks.append(pytest.mark.xfail(reason=MOTOR_COMMIT_NOT_RETRIED, strict=True))
                params.append(
                    pytest.param(
                        suite,
                        driver,
                        stem,
                        spec,
                        test,
                        id=f"{_short(suite)}[{driver}]::{stem}::{test['description']}",
                        marks=marks,
                    )
                )
    return params


@pytest.fixture(scope="session")
def sharded(simulator: Any) -> Iterator[SimulatedMongos | None]:
    """Two simulated mongos routers in front of the simulator (none with MONGODB_URI)."""
    if simulator is None:
        yield None
        return
    ((host, port),) = pymongo.uri_parser.parse_uri(simulator.uri)["nodelist"]
    routers = SimulatedMongos((host, port))
    yield routers
    routers.close()


@pytest.fixture(scope="session")
def with_secondary(simulator: Any) -> Iterator[str | None]:
    """A replica set with a secondary member, for tests that read from one (or MONGODB_URI's)."""
    if simulator is None:
        yield None
        return
    with SimulatedReplicaSet(secondaries=1) as rs:
        yield rs.uri


# A driver's socket (sync) or asyncio transport (async) to a router that hung up on it (the
# sharded files' closeConnection fail points) can be left to the garbage collector, which may run
# during a later test: the ResourceWarning is the driver's and belongs to no test here.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function _SelectorTransport.__del__"
    ":pytest.PytestUnraisableExceptionWarning"
)
@pytest.mark.parametrize(("suite", "driver", "stem", "spec", "test"), _params())
async def test_unified(
    suite: str,
    driver: str,
    stem: str,
    spec: dict[str, Any],
    test: dict[str, Any],
    mongodb_uri: str,
    sharded: SimulatedMongos | None,
    request: pytest.FixtureRequest,
) -> None:
    """The test passes as MongoDB's suite describes it, or is skipped naming what is missing."""
    uri = mongodb_uri
    if needs_secondary(spec.get("createEntities")) or needs_secondary(test):
        uri = request.getfixturevalue("with_secondary") or mongodb_uri
    runner = Runner(DRIVERS[driver], uri, spec, test, stem, sharded)
    try:
        await runner.run()
    except Unsupported as exc:
        text = str(exc)
        known = text.startswith(("runOnRequirements", "needs"))
        reason = text if known else f"runner lacks: {text}"
        pytest.skip(f"{stem}.json: {reason}")
