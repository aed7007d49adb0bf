"""A unified-test-format runner for the subset MongoDB's transaction, command-monitoring and
tracing suites use.

One runner, several drivers: Motor, PyMongo's ``AsyncMongoClient`` and PyMongo's sync
``MongoClient``, plain or with our instrumentation (Motor in ``"driver"`` or ``"spec"`` mode). Sync
calls run on the event loop's thread (the simulator serves from its own threads); a sync
``with_transaction`` runs in a worker thread whose callback hands each operation back to the loop.

Strict by construction: before anything runs, :func:`check_supported` walks the file and the test
against whitelists of what this runner implements (file, test, entity, operation, argument, event
and expectation keys, ``$$`` operators, the schema's major version). Anything else raises
:class:`Unsupported`, which the test turns into a skip naming it: never a silent pass, never a
failure that is really the runner's gap.

Topologies: the server at the URI (a replica set, or a mongos), plus optionally two simulated
mongos routers in front of the same data (tests/spec/mongos.py); each test runs on the first one
that meets its ``runOnRequirements``.

Tracing: our instrumentation adds a ``withTransaction`` span above the spec's ``transaction``
spans. Before matching ``expectTracingMessages`` the runner replaces every ``withTransaction``
span by its children, so what is compared is exactly the subtree the spec describes. Span
``attributes`` are matched as a root document (extra attributes allowed): we add our own
(``db.mongodb.transaction.*``) on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymongo
from bson import json_util
from bson.objectid import ObjectId
from motor.motor_asyncio import AsyncIOMotorClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pymongo import (
    DeleteMany,
    DeleteOne,
    InsertOne,
    ReplaceOne,
    ReturnDocument,
    UpdateMany,
    UpdateOne,
    monitoring,
)
from pymongo.client_session_shared import _TxnState
from pymongo.errors import (
    BulkWriteError,
    ClientBulkWriteException,
    ConfigurationError,
    ConnectionFailure,
    NotPrimaryError,
    OperationFailure,
    PyMongoError,
)
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import _MONGOS_MODES, make_read_preference
from pymongo.write_concern import WriteConcern

from tests.signals import make_signals
from tests.spec.matching import OPERATORS, UNSET, Matcher, Unsupported

# The spec's mode names are camelCase ("primaryPreferred"), PyMongo's are mongos's.
_READ_MODES = {name.lower(): i for i, name in enumerate(_MONGOS_MODES)}
SPECS = Path(__file__).resolve().parents[3] / "shared" / "mongodb-specs"
# Files that need a server we cannot be: skipped with the reason, whatever buildInfo says.
NEEDS = {
    "atlas_search": (
        "needs Atlas Search (mongot), which neither the simulator nor a plain replica set has"
    ),
    "map_reduce": (
        "needs a driver mapReduce operation: PyMongo 4 removed Collection.map_reduce (the "
        "server deprecated mapReduce in 5.0), so neither PyMongo nor Motor has one to trace"
    ),
}
# Operations neither PyMongo nor Motor has: the test cannot be run through them.
_DRIVERS_LACK = {
    "listIndexNames": (
        "needs a driver listIndexNames operation: PyMongo and Motor have index_information() "
        "and list_indexes(), no names-only helper (PyMongo's own runner skips it too)"
    ),
    "modifyCollection": (
        "needs a driver modifyCollection operation: PyMongo and Motor send collMod only "
        "through Database.command (PyMongo's own runner skips it too)"
    ),
    "createChangeStream": (
        "needs change streams, which the simulator does not have (no oplog to watch)"
    ),
    "mapReduce": NEEDS["map_reduce"],
    "download": "needs GridFS, which this runner does not drive",
    "downloadByName": "needs GridFS, which this runner does not drive",
    "count": (
        "needs a driver count operation: PyMongo 4 removed Collection.count (the CRUD spec "
        "deprecated it for countDocuments), so neither PyMongo nor Motor has one"
    ),
}
_versions: dict[str, tuple[int, ...]] = {}
_MIN_HEARTBEAT = pymongo.common.MIN_HEARTBEAT_INTERVAL  # PyMongo's own (0.5 s)
_mongos: dict[str, bool] = {}  # whether the server at a URI is a mongos
CLIENT_OPTIONS: dict[str, Any] = {"serverSelectionTimeoutMS": 5000, "socketTimeoutMS": 20000}


def load(relative: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(file stem, file, test) for every test of every JSON file under ``relative``."""
    out = []
    for path in sorted((SPECS / relative).glob("*.json")):
        spec = json_util.loads(path.read_text())
        for test in spec["tests"]:
            out.append((path.stem, spec, test))
    return out


@dataclass
class Driver:
    name: str
    client: type[Any]
    with_transaction: str | None  # None: not instrumented

    @property
    def traced(self) -> bool:
        return self.with_transaction is not None

    @property
    def sync(self) -> bool:
        return self.client is pymongo.MongoClient


DRIVERS = {
    "AsyncMongoClient": Driver("AsyncMongoClient", pymongo.AsyncMongoClient, None),
    "AsyncMongoClient+otel": Driver("AsyncMongoClient+otel", pymongo.AsyncMongoClient, "driver"),
    "MongoClient": Driver("MongoClient", pymongo.MongoClient, None),
    "MongoClient+otel": Driver("MongoClient+otel", pymongo.MongoClient, "driver"),
    "Motor": Driver("Motor", AsyncIOMotorClient, None),
    "Motor+driver": Driver("Motor+driver", AsyncIOMotorClient, "driver"),
    "Motor+spec": Driver("Motor+spec", AsyncIOMotorClient, "spec"),
}


# command-logging-and-monitoring.md "Security": commands whose events drivers redact.
_SENSITIVE = frozenset(
    {
        "authenticate",
        "saslstart",
        "saslcontinue",
        "getnonce",
        "createuser",
        "updateuser",
        "copydbgetnonce",
        "copydbsaslstart",
        "copydb",
    }
)


class _Events(monitoring.CommandListener):
    def __init__(self, observe: list[str], ignore: list[str], sensitive: bool = False) -> None:
        self.observe = set(observe)
        self.ignore = set(ignore) | {"configureFailPoint"}
        self.sensitive = sensitive  # observeSensitiveCommands
        self.redacted: set[int] = set()  # request ids of redacted hellos
        self.events: list[tuple[str, Any]] = []

    def _add(self, kind: str, event: Any) -> None:
        if kind not in self.observe or event.command_name in self.ignore:
            return
        if not self.sensitive and self._is_sensitive(kind, event):
            return
        self.events.append((kind, event))

    def _is_sensitive(self, kind: str, event: Any) -> bool:
        """The format: sensitive commands' events are ignored unless observeSensitiveCommands.

        hello is sensitive only with speculativeAuthenticate; the driver then redacts it, so
        (as the format suggests) a hello whose started command is empty is one.
        """
        name = event.command_name.lower()
        if name in _SENSITIVE:
            return True
        if name not in ("hello", "ismaster"):
            return False
        if kind == "commandStartedEvent" and not event.command:
            self.redacted.add(event.request_id)
        return event.request_id in self.redacted

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self._add("commandStartedEvent", event)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._add("commandSucceededEvent", event)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._add("commandFailedEvent", event)


@dataclass
class _Client:
    client: Any
    events: _Events
    exporter: InMemorySpanExporter | None


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _result_doc(result: Any) -> Any:
    """A driver's result object as the unified format's result document (CRUD spec names).

    Map keys (``insertedIds``, ``upsertedIds``, ``insertResults``...) are strings, as JSON has
    them. An unacknowledged result (``w: 0``) knows only what the driver generated itself: its
    counts are not read (PyMongo raises on them), it says ``acknowledged: false`` instead.
    """
    results = pymongo.results
    if isinstance(result, results.InsertOneResult):
        return {"insertedId": result.inserted_id, **_unacknowledged(result)}
    if isinstance(result, results.InsertManyResult):
        ids = {str(i): _id for i, _id in enumerate(result.inserted_ids)}
        return {"insertedIds": ids, **_unacknowledged(result)}
    if not getattr(result, "acknowledged", True):
        return {"acknowledged": False}
    if isinstance(result, results.UpdateResult):
        return {
            "matchedCount": result.matched_count,
            "modifiedCount": result.modified_count,
            "upsertedCount": 1 if result.upserted_id is not None else 0,
            **({"upsertedId": result.upserted_id} if result.upserted_id is not None else {}),
        }
    if isinstance(result, results.DeleteResult):
        return {"deletedCount": result.deleted_count}
    if isinstance(result, results.BulkWriteResult):
        return _bulk_counts(result) | {
            "upsertedIds": {str(i): _id for i, _id in (result.upserted_ids or {}).items()},
        }
    if isinstance(result, results.ClientBulkWriteResult):
        return _client_bulk_doc(result)
    return result


def _client_update(result: Any) -> dict[str, Any]:
    doc = {"matchedCount": result.matched_count, "modifiedCount": result.modified_count}
    if result.upserted_id is not None:
        doc["upsertedId"] = result.upserted_id
    return doc


def _unacknowledged(result: Any) -> dict[str, Any]:
    return {} if result.acknowledged else {"acknowledged": False}


def _bulk_counts(result: Any) -> dict[str, Any]:
    return {
        "insertedCount": result.inserted_count,
        "matchedCount": result.matched_count,
        "modifiedCount": result.modified_count,
        "deletedCount": result.deleted_count,
        "upsertedCount": result.upserted_count,
    }


def _client_bulk_doc(result: Any) -> dict[str, Any]:
    """A ClientBulkWriteResult (CRUD spec "BulkWriteResult"), per-model results by string index."""
    doc = _bulk_counts(result)
    verbose = result.has_verbose_results
    doc["insertResults"] = (
        {str(i): {"insertedId": r.inserted_id} for i, r in result.insert_results.items()}
        if verbose
        else {}
    )
    doc["updateResults"] = (
        {str(i): _client_update(r) for i, r in result.update_results.items()} if verbose else {}
    )
    doc["deleteResults"] = (
        {str(i): {"deletedCount": r.deleted_count} for i, r in result.delete_results.items()}
        if verbose
        else {}
    )
    return doc


# -- what the runner implements ----------------------------------------------------------------
# The unified format's major version this runner implements (its keys up to schema 1.27). A newer
# minor version only adds keys, and the whitelists below skip any key we do not know.
SCHEMA_MAJOR = 1

_FILE_KEYS = frozenset(
    {
        "description",
        "schemaVersion",
        "runOnRequirements",
        "createEntities",
        "initialData",
        "tests",
        "_yamlAnchors",  # YAML anchors only: the format says runners must not use it
    }
)
_TEST_KEYS = frozenset(
    {
        "description",
        "runOnRequirements",
        "skipReason",
        "operations",
        "expectEvents",
        "expectTracingMessages",
        "outcome",
    }
)
_ENTITY_KEYS: dict[str, frozenset[str]] = {
    # useMultipleMongoses: on a sharded topology, every router in the URI or only the first; on a
    # replica set it has no effect.
    "client": frozenset(
        {
            "id",
            "useMultipleMongoses",
            "observeEvents",
            "ignoreCommandMonitoringEvents",
            "uriOptions",
            "observeTracingMessages",
            "observeSensitiveCommands",
        }
    ),
    "database": frozenset({"id", "client", "databaseName", "databaseOptions"}),
    "collection": frozenset({"id", "database", "collectionName", "collectionOptions"}),
    "session": frozenset({"id", "client", "sessionOptions"}),
}
_OBSERVE_TRACING_KEYS = frozenset({"enableCommandPayload"})
_COLLECTION_DATA_KEYS = frozenset({"databaseName", "collectionName", "documents"})
_OPERATION_KEYS = frozenset(
    {
        "name",
        "object",
        "arguments",
        "expectError",
        "expectResult",
        "ignoreResultAndError",
        "saveResultAsEntity",
    }
)
_EXPECT_ERROR_KEYS = frozenset(
    {
        "writeErrors",
        "writeConcernErrors",
        "isError",
        "isClientError",
        "errorContains",
        "errorCode",
        "errorCodeName",
        "errorLabelsContain",
        "errorLabelsOmit",
        "expectResult",
        "errorResponse",
    }
)
_EXPECT_EVENTS_KEYS = frozenset({"client", "eventType", "events", "ignoreExtraEvents"})
_EVENT_KEYS: dict[str, frozenset[str]] = {
    "commandStartedEvent": frozenset(
        {"command", "commandName", "databaseName", "hasServiceId", "hasServerConnectionId"}
    ),
    "commandSucceededEvent": frozenset(
        {"reply", "commandName", "databaseName", "hasServiceId", "hasServerConnectionId"}
    ),
    "commandFailedEvent": frozenset(
        {"commandName", "databaseName", "hasServiceId", "hasServerConnectionId"}
    ),
}
_EXPECT_TRACING_KEYS = frozenset({"client", "ignoreExtraSpans", "spans"})
_SPAN_KEYS = frozenset({"name", "attributes", "nested"})
_SESSION_OPTION_KEYS = frozenset({"causalConsistency", "defaultTransactionOptions", "snapshot"})
# testRunner operations and their arguments (failPoint's `client`: one node, any client reaches it).
_RUNNER_ARGUMENTS: dict[str, frozenset[str]] = {
    "failPoint": frozenset({"client", "failPoint"}),
    "targetedFailPoint": frozenset({"session", "failPoint"}),
    "createEntities": frozenset({"entities"}),
    "assertSessionPinned": frozenset({"session"}),
    "assertSessionUnpinned": frozenset({"session"}),
    "assertSessionTransactionState": frozenset({"session", "state"}),
    "assertCollectionExists": frozenset({"databaseName", "collectionName"}),
    "assertCollectionNotExists": frozenset({"databaseName", "collectionName"}),
    "assertIndexExists": frozenset({"databaseName", "collectionName", "indexName"}),
    "assertIndexNotExists": frozenset({"databaseName", "collectionName", "indexName"}),
    "assertSessionDirty": frozenset({"session"}),
    "assertSessionNotDirty": frozenset({"session"}),
    "assertSameLsidOnLastTwoCommands": frozenset({"client"}),
    "assertDifferentLsidOnLastTwoCommands": frozenset({"client"}),
}


def _only(document: Any, allowed: frozenset[str], where: str) -> None:
    """Raise Unsupported naming every key of ``document`` outside ``allowed``."""
    unknown = sorted(set(document) - allowed)
    if unknown:
        raise Unsupported(", ".join(f"{where}.{key}" for key in unknown))


def needs_secondary(value: Any) -> bool:
    """Whether a file or test reads with a non-primary read preference anywhere.

    PyMongo refuses such a read inside a transaction only after it has selected a server
    (client_session_shared.py ``_apply_to``), so on a set with no secondary the selection times
    out first: these tests need a secondary member to mean anything.
    """
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "readPreference":
                mode = item.get("mode") if isinstance(item, dict) else item
                if isinstance(mode, str) and mode.lower() != "primary":
                    return True
            if needs_secondary(item):
                return True
    elif isinstance(value, list):
        return any(needs_secondary(item) for item in value)
    return False


def check_schema_version(spec: dict[str, Any]) -> None:
    """A file of another major version of the format is not ours to interpret."""
    version = str(spec.get("schemaVersion", ""))
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise Unsupported(f"schemaVersion {version!r}") from None
    if major != SCHEMA_MAJOR:
        raise Unsupported(f"schemaVersion {version} (the runner implements {SCHEMA_MAJOR}.x)")


def check_supported(spec: dict[str, Any], test: dict[str, Any]) -> None:
    """Raise Unsupported if the file or the test uses anything the runner does not implement.

    Runs before any I/O, so a test is skipped before it can half-run.
    """
    check_schema_version(spec)
    _only(spec, _FILE_KEYS, "file")
    _only(test, _TEST_KEYS, "test")
    for entity in spec.get("createEntities", []):
        _check_entity(entity)
    for item in spec.get("initialData", []):
        _only(item, _COLLECTION_DATA_KEYS, "initialData")
    for op in test["operations"]:
        _check_operation(op)
    for expected in test.get("expectEvents", []):
        _only(expected, _EXPECT_EVENTS_KEYS, "expectEvents")
        if expected.get("eventType", "command") != "command":
            raise Unsupported(f"expectEvents.eventType {expected['eventType']}")
        for event in expected["events"]:
            ((kind, fields),) = event.items()
            if kind not in _EVENT_KEYS:
                raise Unsupported(f"event {kind}")
            _only(fields, _EVENT_KEYS[kind], kind)
    tracing = test.get("expectTracingMessages") or []
    for item in tracing if isinstance(tracing, list) else [tracing]:
        _only(item, _EXPECT_TRACING_KEYS, "expectTracingMessages")
        _check_spans(item["spans"])
    for item in test.get("outcome", []):
        _only(item, _COLLECTION_DATA_KEYS, "outcome")
    _check_operators(spec.get("createEntities", []))
    _check_operators(test)


def _check_entity(entity: dict[str, Any]) -> None:
    if len(entity) != 1:
        raise Unsupported(f"entity with keys {sorted(entity)}")
    ((kind, fields),) = entity.items()
    if kind == "bucket":
        raise Unsupported(_DRIVERS_LACK["download"])
    if kind not in _ENTITY_KEYS:
        raise Unsupported(f"entity {kind}")
    _only(fields, _ENTITY_KEYS[kind], kind)
    if kind == "client":
        for name in fields.get("observeEvents", []):
            if name not in _EVENT_KEYS:
                raise Unsupported(f"client.observeEvents {name}")
        _only(fields.get("observeTracingMessages", {}), _OBSERVE_TRACING_KEYS, "observeTracing")
    elif kind in ("database", "collection"):
        rw_options(fields.get(f"{kind}Options", {}), f"{kind}Options")
    elif kind == "session":
        options = fields.get("sessionOptions", {})
        _only(options, _SESSION_OPTION_KEYS, "sessionOptions")
        txn_options(options.get("defaultTransactionOptions", {}))


def _check_operation(op: dict[str, Any]) -> None:
    _only(op, _OPERATION_KEYS, "operation")
    name, args = op["name"], op.get("arguments", {})
    if op["object"] == "testRunner":
        if name not in _RUNNER_ARGUMENTS:
            raise Unsupported(f"testRunner operation {name}")
        _only(args, _RUNNER_ARGUMENTS[name], name)
        for entity in args.get("entities", []):
            _check_entity(entity)
    else:
        if name in _DRIVERS_LACK:
            raise Unsupported(_DRIVERS_LACK[name])
        if name not in _ARGUMENTS:
            raise Unsupported(f"operation {name}")
        _only(args, _ARGUMENTS[name], name)
        if name in ("bulkWrite", "clientBulkWrite"):
            _check_models(name, args["requests" if name == "bulkWrite" else "models"])
        if name in ("withTransaction", "startTransaction"):
            txn_options({k: v for k, v in args.items() if k != "callback"})
        for nested in args.get("callback", []) if name == "withTransaction" else []:
            _check_operation(nested)
    _only(op.get("expectError", {}), _EXPECT_ERROR_KEYS, "expectError")


def _check_spans(spans: list[dict[str, Any]]) -> None:
    for span in spans:
        _only(span, _SPAN_KEYS, "span")
        _check_spans(span.get("nested", []))


def _check_operators(value: Any) -> None:
    """Every ``$$`` operator anywhere in ``value`` must be one the matcher implements."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and key.startswith("$$") and key not in OPERATORS:
                raise Unsupported(f"operator {key}")
            _check_operators(item)
    elif isinstance(value, list):
        for item in value:
            _check_operators(item)


def _read_concern(value: dict[str, Any], where: str) -> ReadConcern:
    _only(value, frozenset({"level"}), f"{where}.readConcern")
    return ReadConcern(**value)


def _write_concern(value: dict[str, Any], where: str) -> WriteConcern:
    _only(value, frozenset({"w", "wtimeoutMS", "journal"}), f"{where}.writeConcern")
    return WriteConcern(w=value.get("w"), wtimeout=value.get("wtimeoutMS"), j=value.get("journal"))


def _read_preference(value: dict[str, Any], where: str) -> Any:
    """``{mode, tagSets, maxStalenessSeconds}`` as PyMongo's read preference object."""
    _only(value, frozenset({"mode", "tagSets", "maxStalenessSeconds"}), f"{where}.readPreference")
    mode = _READ_MODES.get(value["mode"].lower())
    if mode is None:
        raise Unsupported(f"{where}.readPreference mode {value['mode']}")
    return make_read_preference(mode, value.get("tagSets"), value.get("maxStalenessSeconds", -1))


def rw_options(options: dict[str, Any], where: str) -> dict[str, Any]:
    """collectionOrDatabaseOptions as ``get_database``/``get_collection`` keywords."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key == "readConcern":
            out["read_concern"] = _read_concern(value, where)
        elif key == "writeConcern":
            out["write_concern"] = _write_concern(value, where)
        elif key == "readPreference":
            out["read_preference"] = _read_preference(value, where)
        else:
            raise Unsupported(f"{where}.{key}")
    return out


def txn_options(args: dict[str, Any]) -> dict[str, Any]:
    """Transaction options as ``start_transaction``/``with_transaction`` keywords."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        if key == "maxCommitTimeMS":
            out["max_commit_time_ms"] = value
        elif key in ("readConcern", "writeConcern", "readPreference"):
            out.update(rw_options({key: value}, "transaction option"))
        else:
            raise Unsupported(f"transaction option {key}")
    return out


class Runner:
    """Runs one test of one file with one driver against ``uri``.

    ``sharded`` (an object with ``uri`` and ``single_uri``: tests/spec/mongos.py) offers a sharded
    topology in front of the same data as well: a test whose requirements the server at ``uri``
    does not meet runs there when they allow a sharded cluster.
    """

    def __init__(
        self,
        driver: Driver,
        uri: str,
        spec: dict[str, Any],
        test: dict[str, Any],
        stem: str = "",
        sharded: Any = None,
    ):
        self.driver = driver
        self.stem = stem
        self.uri = uri
        self.sharded = sharded
        # topology -> (URI with every router, URI with one), filled in once the server is known
        self.topologies: dict[str, tuple[str, str]] = {}
        self.topology = "replicaset"
        self.spec = spec
        self.test = test
        self.entities: dict[str, Any] = {}
        self.clients: dict[str, _Client] = {}
        self.lsids: dict[str, Any] = {}
        self.server_version: tuple[int, ...] = ()
        # unified-test-format.md "Disabling fail points": every fail point this test configured,
        # by name, with the router that holds it (None: the server at the URI).
        self.fail_points: dict[tuple[str, Any], None] = {}
        # Expectations the driver cannot meet, found while running: the test runs to the end
        # (events, outcome) and is then skipped naming them.
        self.driver_gaps: list[str] = []
        self.matcher = Matcher(lambda name: self.lsids[name])
        self.internal: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(
            uri, **CLIENT_OPTIONS
        )

    # -- lifecycle -------------------------------------------------------------------------
    async def run(self) -> None:
        # unified-test-format.md ("Executing a Test"): a runner MAY lower heartbeatFrequencyMS
        # "and minHeartbeatFrequencyMS if possible" to speed up SDAM recovery after a fail point.
        # PyMongo's minimum (0.5 s) is a module constant, read when a client's monitors start and
        # while server selection waits: each retry after a NotWritablePrimary or a closed
        # connection would otherwise wait 0.5 s for the next check.
        saved, pymongo.common.MIN_HEARTBEAT_INTERVAL = pymongo.common.MIN_HEARTBEAT_INTERVAL, 0.01
        try:
            await self._run()
        finally:
            pymongo.common.MIN_HEARTBEAT_INTERVAL = saved

    async def _run(self) -> None:
        try:
            check_schema_version(self.spec)
            need = NEEDS.get(self.stem)
            if need:
                raise Unsupported(need)
            if self.uri not in _versions:
                info = await self.internal.admin.command("buildInfo")
                hello = await self.internal.admin.command("hello")
                _versions[self.uri] = tuple(int(p) for p in info["versionArray"][:3])
                _mongos[self.uri] = hello.get("msg") == "isdbgrid"
            self.server_version = _versions[self.uri]
            if _mongos[self.uri]:
                first = pymongo.uri_parser.parse_uri(self.uri)["nodelist"][0]
                self.topologies["sharded"] = (self.uri, f"mongodb://{first[0]}:{first[1]}/")
            else:
                self.topologies["replicaset"] = (self.uri, self.uri)
                if self.sharded is not None:
                    self.topologies["sharded"] = (self.sharded.uri, self.sharded.single_uri)
            # What the test needs of the server comes first: a test this server cannot run is
            # skipped for that reason, whatever else it uses.
            self.topology = self._choose_topology()
            check_supported(self.spec, self.test)
            if self.test.get("skipReason"):
                raise Unsupported(f"skipReason: {self.test['skipReason']}")
            await self._kill_all_sessions()
            await self._initial_data(self.spec.get("initialData", []))
            await self._create_entities(self.spec.get("createEntities", []))
            for op in self.test["operations"]:
                await self._operation(op)
            await self._check_events()
            self._check_tracing()
            await self._check_outcome()
            if self.driver_gaps:
                raise Unsupported("; ".join(dict.fromkeys(self.driver_gaps)))
        finally:
            await self._close()

    @property
    def _auth(self) -> bool:
        """Whether the server authenticates us: the simulator never; a URI with credentials."""
        return bool(pymongo.uri_parser.parse_uri(self.uri).get("username"))

    def _choose_topology(self) -> str:
        """The first topology here that meets the file's and the test's runOnRequirements."""
        reasons: list[str] = []
        for topology in self.topologies:
            missing = [
                reason
                for reqs in (self.spec.get("runOnRequirements"), self.test.get("runOnRequirements"))
                if (reason := self._unmet(reqs, topology))
            ]
            if not missing:
                return topology
            reasons.extend(r for r in missing if r not in reasons)
        raise Unsupported(f"runOnRequirements not met: {'; '.join(reasons)}")

    def _unmet(self, reqs: list[dict[str, Any]] | None, topology: str) -> str | None:
        """Why no requirement of ``reqs`` is met on ``topology`` (None: one is)."""
        if not reqs:
            return None
        reasons = []
        for req in reqs:
            unknown = set(req) - {
                "minServerVersion",
                "maxServerVersion",
                "topologies",
                "serverless",
                "auth",
            }
            version = self.server_version
            low = tuple(int(p) for p in req.get("minServerVersion", "0").split("."))
            high = tuple(int(p) for p in req.get("maxServerVersion", "99").split("."))
            if unknown:
                reasons.append(f"runner lacks requirement {sorted(unknown)}")
            elif topology not in req.get("topologies", [topology]):
                needs = " or ".join(req["topologies"])
                reasons.append(f"topology {needs} (here: {', '.join(self.topologies)})")
            elif req.get("serverless", "allow") not in ("allow", "forbid"):
                reasons.append("serverless")  # never Atlas Serverless: "require" is not met
            elif "auth" in req and req["auth"] != self._auth:
                reasons.append(f"auth {str(req['auth']).lower()}")
            elif not (low <= version[: len(low)] and version[: len(high)] <= high):
                wanted = f"{req.get('minServerVersion', '*')} to {req.get('maxServerVersion', '*')}"
                here = ".".join(map(str, version))
                reasons.append(f"server version {wanted} (this server: {here})")
            else:
                return None
        return ", ".join(reasons)

    async def _close(self) -> None:
        for name, entity in list(self.entities.items()):
            if name in self.lsids and hasattr(entity, "end_session"):
                with contextlib.suppress(PyMongoError):
                    await _maybe(entity.end_session())
        for c in self.clients.values():
            await _maybe(c.client.close())
        await self._fail_points_off()
        await self.internal.close()

    async def _fail_points_off(self) -> None:
        """unified-test-format.md "Disabling fail points": after each test the runner disables
        every fail point the test enabled, where it enabled it, whatever its name and mode (a
        ``{skip: n}`` fail point is never spent by itself)."""
        for name, router in self.fail_points:
            off = {"configureFailPoint": name, "mode": "off"}
            if router is None:
                await self.internal.admin.command(off)
            else:
                router.configure_fail_point(off)
        self.fail_points.clear()

    async def _kill_all_sessions(self) -> None:
        """unified-test-format.md "Terminating Open Transactions": a transaction left open by an
        earlier test (a commit that never reached the server, a failed test) would hold its
        documents and block this test's set-up. Interrupted (11601) and Unauthorized (13) may be
        ignored, the format says."""
        try:
            await self.internal.admin.command({"killAllSessions": []})
        except OperationFailure as exc:
            if exc.code not in (11601, 13):
                raise

    async def _initial_data(self, data: list[dict[str, Any]]) -> None:
        for item in data:
            db = self.internal[item["databaseName"]]
            await db.drop_collection(item["collectionName"])
            coll = db.get_collection(
                item["collectionName"], write_concern=WriteConcern(w="majority")
            )
            if item["documents"]:
                await coll.insert_many(item["documents"])
            else:
                await db.create_collection(item["collectionName"])

    # -- entities --------------------------------------------------------------------------
    async def _create_entities(self, entities: list[dict[str, Any]]) -> None:
        for entity in entities:
            ((kind, spec),) = entity.items()
            if kind == "client":
                self._client(spec)
            elif kind == "database":
                client = self.entities[spec["client"]]
                options = rw_options(spec.get("databaseOptions", {}), "databaseOptions")
                self.entities[spec["id"]] = client.get_database(spec["databaseName"], **options)
            elif kind == "collection":
                db = self.entities[spec["database"]]
                options = rw_options(spec.get("collectionOptions", {}), "collectionOptions")
                self.entities[spec["id"]] = db.get_collection(spec["collectionName"], **options)
            elif kind == "session":
                await self._session(spec)
            else:
                raise Unsupported(f"entity {kind}")

    def _client(self, spec: dict[str, Any]) -> None:
        _only(spec, _ENTITY_KEYS["client"], "client")
        events = _Events(
            spec.get("observeEvents", []),
            spec.get("ignoreCommandMonitoringEvents", []),
            spec.get("observeSensitiveCommands", False),
        )
        options = {**CLIENT_OPTIONS, **spec.get("uriOptions", {}), "event_listeners": [events]}
        if "readConcernLevel" in options:
            options["readConcernLevel"] = options.pop("readConcernLevel")
        every, one = self.topologies[self.topology]
        uri = every if spec.get("useMultipleMongoses") else one
        # The format: no lowered minHeartbeatFrequency for a client that sets heartbeatFrequencyMS
        # (see run()); its monitors take PyMongo's own minimum when they are created.
        lowered = pymongo.common.MIN_HEARTBEAT_INTERVAL
        if "heartbeatFrequencyMS" in spec.get("uriOptions", {}):
            pymongo.common.MIN_HEARTBEAT_INTERVAL = _MIN_HEARTBEAT
        try:
            client = self.driver.client(uri, **options)
        except ConfigurationError as exc:  # a uriOptions key or value this driver does not take
            raise Unsupported(f"client uriOptions: {exc}") from exc
        finally:
            pymongo.common.MIN_HEARTBEAT_INTERVAL = lowered
        exporter = None
        tracing = spec.get("observeTracingMessages")
        if self.driver.traced:
            signals = make_signals()
            exporter = signals.exporter
            payload = bool(tracing and tracing.get("enableCommandPayload"))
            signals.instrument(
                client,
                query_text_max_length=100_000 if payload else 0,
                query_text_raw_values=True,
                with_transaction=self.driver.with_transaction,
            )
        self.entities[spec["id"]] = client
        self.clients[spec["id"]] = _Client(client, events, exporter)

    async def _session(self, spec: dict[str, Any]) -> None:
        client = self.entities[spec["client"]]
        options = dict(spec.get("sessionOptions", {}))
        kwargs: dict[str, Any] = {}
        if "defaultTransactionOptions" in options:
            from pymongo.client_session_shared import TransactionOptions

            kwargs["default_transaction_options"] = TransactionOptions(
                **txn_options(options.pop("defaultTransactionOptions"))
            )
        if "causalConsistency" in options:
            kwargs["causal_consistency"] = options.pop("causalConsistency")
        if "snapshot" in options:
            kwargs["snapshot"] = options.pop("snapshot")
        if options:
            raise Unsupported(f"session options {sorted(options)}")
        session = await _maybe(client.start_session(**kwargs))
        self.entities[spec["id"]] = session
        self.lsids[spec["id"]] = session.session_id

    # -- operations ------------------------------------------------------------------------
    async def _operation(self, op: dict[str, Any], in_callback: bool = False) -> None:
        try:
            result = await self._execute(op)
        except Unsupported:
            raise
        except Exception as exc:
            if isinstance(exc, AssertionError):
                raise
            if "expectError" in op:
                self._check_error(op["expectError"], exc, op["name"])
            elif not op.get("ignoreResultAndError"):
                raise
            # The format: errors in a withTransaction callback always propagate to it.
            if in_callback:
                raise
            return
        if "expectError" in op:
            raise AssertionError(f"{op['name']} succeeded but expected {op['expectError']}")
        if "expectResult" in op:
            expected = op["expectResult"]
            if isinstance(result, Documents) and isinstance(expected, list):
                assert len(result) == len(expected), f"expected {expected}, got {result}"
                for i, (want, doc) in enumerate(zip(expected, result, strict=True)):
                    self.matcher.match(want, doc, path=f"[{i}]")
            else:
                self.matcher.match(expected, _result_doc(result))
        if "saveResultAsEntity" in op:
            self.entities[op["saveResultAsEntity"]] = result

    def _check_error(self, expected: dict[str, Any], exc: BaseException, name: str = "") -> None:
        if isinstance(exc, AssertionError):
            raise exc
        # A client bulk write wraps the error that stopped it (None when only writes failed).
        top = exc.error if isinstance(exc, ClientBulkWriteException) else exc
        error = top if isinstance(top, BaseException) else exc
        for key, value in expected.items():
            if key == "isError":
                continue
            if key == "isClientError":
                assert _is_client_error(exc) == value, f"isClientError {value}: {exc!r}"
            elif key == "errorContains":
                assert value.lower() in str(error).lower(), f"{value!r} not in {error}"
            elif key == "errorCode":
                assert _error_code(error) == value, f"code {value}: {error!r}"
            elif key == "errorCodeName":
                name = (getattr(error, "details", None) or {}).get("codeName")
                assert name == value, f"codeName {value}: {error!r}"
            elif key == "errorLabelsContain":
                for label in value:
                    assert isinstance(error, PyMongoError) and error.has_error_label(label), (
                        f"label {label} missing on {error!r}"
                    )
            elif key == "errorLabelsOmit":
                for label in value:
                    assert not (isinstance(error, PyMongoError) and error.has_error_label(label)), (
                        f"label {label} present on {error!r}"
                    )
            elif key == "expectResult":
                if name == "bulkWrite" and isinstance(exc, ConnectionFailure):
                    self.driver_gaps.append(_NO_PARTIAL_RESULT)
                    continue
                self.matcher.match(value, _error_result(exc))
            elif key == "errorResponse":
                # The server's reply, as the error carries it (a client bulk write's top error).
                details = getattr(error, "details", None)
                assert isinstance(details, Mapping), f"errorResponse {value}: {error!r}"
                self.matcher.match(value, details, path="errorResponse")
            elif key == "writeErrors":  # client bulk write: {index: WriteError}
                assert isinstance(exc, ClientBulkWriteException), f"writeErrors {value}: {exc!r}"
                errors: list[Any] = list(exc.write_errors or [])
                by_index = {error["idx"]: error for error in errors}
                assert len(by_index) == len(value), f"writeErrors {value}: {by_index}"
                for index, want in value.items():
                    actual = _spec_error(by_index.get(int(index), {}))
                    self.matcher.match(want, actual, path=f"writeErrors.{index}")
            elif key == "writeConcernErrors":  # client bulk write: a list of WriteConcernError
                assert isinstance(exc, ClientBulkWriteException), f"{key} {value}: {exc!r}"
                concern = [_spec_error(raw) for raw in exc.write_concern_errors or []]
                assert len(concern) == len(value), f"{key} {value}: {concern}"
                for i, (want, actual) in enumerate(zip(value, concern, strict=True)):
                    self.matcher.match(want, actual, path=f"writeConcernErrors[{i}]")
            else:
                raise Unsupported(f"expectError.{key}")

    async def _execute(self, op: dict[str, Any]) -> Any:
        name, target = op["name"], op["object"]
        args = dict(op.get("arguments", {}))
        if target == "testRunner":
            return await self._test_runner(name, args)
        obj = self.entities[target]
        if "session" in args:
            args["session"] = self.entities[args["session"]]
        if name == "withTransaction":
            return await self._with_transaction(obj, args)
        handler = _OPERATIONS.get(name)
        if handler is None:
            raise Unsupported(f"operation {name}")
        return await handler(self, obj, args)

    async def _with_transaction(self, session: Any, args: dict[str, Any]) -> Any:
        ops = args.pop("callback")
        options = txn_options(args)

        async def callback(_session: Any) -> None:
            for nested in ops:
                await self._operation(nested, in_callback=True)

        if not self.driver.sync:
            return await session.with_transaction(callback, **options)
        loop = asyncio.get_running_loop()

        def sync_callback(_session: Any) -> None:
            asyncio.run_coroutine_threadsafe(callback(_session), loop).result()

        return await asyncio.to_thread(session.with_transaction, sync_callback, **options)

    async def _test_runner(self, name: str, args: dict[str, Any]) -> Any:
        if name == "targetedFailPoint" and self.topology == "sharded" and self.sharded:
            pinned = _pymongo_session(self.entities[args["session"]])._transaction.pinned_address
            assert pinned is not None, "targetedFailPoint: the session is not pinned"
            router = self.sharded.router(pinned)
            if router.configure_fail_point(args["failPoint"]):
                self.fail_points[(args["failPoint"]["configureFailPoint"], router)] = None
                return None
        if name in ("failPoint", "targetedFailPoint"):
            # Recorded before it is sent: a fail point the server took is off at the end even if
            # the reply never arrives.
            self.fail_points[(args["failPoint"]["configureFailPoint"], None)] = None
            await self.internal.admin.command(args["failPoint"])
            return None
        if name == "createEntities":
            await self._create_entities(args["entities"])
            return None
        if name in ("assertSessionPinned", "assertSessionUnpinned"):
            # The transaction keeps its mongos after commit (a commit may be retried there);
            # the session's own view forgets it once the transaction is not active.
            session = _pymongo_session(self.entities[args["session"]])
            pinned = session._transaction.pinned_address
            if name == "assertSessionPinned":
                assert pinned is not None, "assertSessionPinned: not pinned"
            else:
                assert pinned is None and session._pinned_address is None, f"pinned to {pinned}"
            return None
        if name in ("assertSessionDirty", "assertSessionNotDirty"):
            # The server session PyMongo marks dirty after a network error (sessions spec,
            # "Server Session Pool": a dirty session is discarded, not returned to the pool).
            server_session = _pymongo_session(self.entities[args["session"]])._server_session
            dirty = bool(server_session is not None and server_session.dirty)
            assert dirty == (name == "assertSessionDirty"), f"{name}: dirty is {dirty}"
            return None
        if name in ("assertSameLsidOnLastTwoCommands", "assertDifferentLsidOnLastTwoCommands"):
            started = [
                event.command
                for kind, event in self.clients[args["client"]].events.events
                if kind == "commandStartedEvent"
            ]
            assert len(started) >= 2, f"{name}: {len(started)} commands observed"
            last, before = started[-1].get("lsid"), started[-2].get("lsid")
            assert last is not None and before is not None, f"{name}: a command has no lsid"
            same = name == "assertSameLsidOnLastTwoCommands"
            assert (last == before) == same, f"{name}: {before} then {last}"
            return None
        if name == "assertSessionTransactionState":
            state = _pymongo_session(self.entities[args["session"]])._transaction.state
            actual = _TXN_STATES[state]
            assert actual == args["state"], f"transaction state {actual}, expected {args['state']}"
            return None
        db = self.internal[args["databaseName"]]
        if name in ("assertCollectionExists", "assertCollectionNotExists"):
            names = await db.list_collection_names()
            exists = args["collectionName"] in names
            assert exists == (name == "assertCollectionExists"), f"{name}: collections {names}"
            return None
        if name in ("assertIndexExists", "assertIndexNotExists"):
            indexes = await db[args["collectionName"]].index_information()
            exists = args["indexName"] in indexes
            assert exists == (name == "assertIndexExists"), f"{name}: indexes {sorted(indexes)}"
            return None
        raise Unsupported(f"testRunner operation {name}")

    # -- expectations ----------------------------------------------------------------------
    async def _check_events(self) -> None:
        for expected in self.test.get("expectEvents", []):
            if expected.get("eventType", "command") != "command":
                raise Unsupported(f"eventType {expected['eventType']}")
            actual = self.clients[expected["client"]].events.events
            wanted = expected["events"]
            if not expected.get("ignoreExtraEvents"):
                names = [(k, e.command_name) for k, e in actual]
                assert len(actual) == len(wanted), f"expected {len(wanted)} events, got {names}"
            assert len(actual) >= len(wanted), f"too few events: {len(actual)} < {len(wanted)}"
            for i, (want, (kind, event)) in enumerate(zip(wanted, actual, strict=False)):
                ((want_kind, fields),) = want.items()
                assert want_kind == kind, f"event {i}: {want_kind} != {kind} ({event.command_name})"
                context = [(k, e.command_name) for k, e in actual]
                for key, value in fields.items():
                    if key == "command":
                        self.matcher.match(value, event.command, path=f"event{i}.command {context}")
                    elif key == "reply":
                        self.matcher.match(value, event.reply, path=f"event{i}.reply")
                    elif key == "commandName":
                        assert event.command_name == value, f"event {i}: {event.command_name}"
                    elif key == "databaseName":
                        assert event.database_name == value
                    elif key == "hasServiceId":  # set and not all zero bytes (load balancers only)
                        service_id = getattr(event, "service_id", None)
                        has = service_id is not None and service_id != ObjectId(bytes(12))
                        assert has == value, f"event {i}: serviceId {service_id!r}"
                    elif key == "hasServerConnectionId":  # a positive int32 from the handshake
                        server_id = event.server_connection_id
                        has = isinstance(server_id, int) and server_id > 0
                        assert has == value, f"event {i}: serverConnectionId {server_id!r}"
                    else:
                        raise Unsupported(f"event field {key}")

    def _check_tracing(self) -> None:
        expected = self.test.get("expectTracingMessages")
        if not expected:
            return
        for item in expected if isinstance(expected, list) else [expected]:
            exporter = self.clients[item["client"]].exporter
            if exporter is None:
                raise Unsupported("tracing needs an instrumented driver")
            spans = list(exporter.get_finished_spans())
            roots = _flatten_with_transaction(spans, [s for s in spans if s.parent is None])
            self._match_spans(item["spans"], roots, spans, item.get("ignoreExtraSpans", False), "")

    def _match_spans(
        self,
        expected: list[dict[str, Any]],
        actual: list[ReadableSpan],
        everything: list[ReadableSpan],
        ignore_extra: bool,
        path: str,
    ) -> None:
        names = [s.name for s in actual]
        if not ignore_extra:
            assert len(actual) == len(expected), (
                f"{path}: expected spans {[e['name'] for e in expected]}, got {names}"
            )
        position = 0
        for want in expected:
            while position < len(actual) and actual[position].name != want["name"] and ignore_extra:
                position += 1
            assert position < len(actual), f"{path}: span {want['name']} not found in {names}"
            span = actual[position]
            position += 1
            here = f"{path}/{span.name}"
            assert span.name == want["name"], f"{here}: expected {want['name']}"
            self.matcher.match(want.get("attributes", {}), dict(span.attributes or {}), path=here)
            if "nested" in want:
                kids = _flatten_with_transaction(everything, _children(everything, span))
                self._match_spans(want["nested"], kids, everything, ignore_extra, here)

    async def _check_outcome(self) -> None:
        for item in self.test.get("outcome", []):
            coll = self.internal[item["databaseName"]][item["collectionName"]]
            docs = await coll.find({}).sort("_id", 1).to_list()
            self.matcher.match(item["documents"], docs, root=False, path="outcome")


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    pid = parent.context.span_id
    return sorted(
        (s for s in spans if s.parent is not None and s.parent.span_id == pid),
        key=lambda s: s.start_time or 0,
    )


def _flatten_with_transaction(
    spans: list[ReadableSpan], level: list[ReadableSpan]
) -> list[ReadableSpan]:
    """Replace our ``withTransaction`` spans by their children (see the module docstring)."""
    out: list[ReadableSpan] = []
    for span in sorted(level, key=lambda s: s.start_time or 0):
        if span.name == "withTransaction":
            out.extend(_flatten_with_transaction(spans, _children(spans, span)))
        else:
            out.append(span)
    return out


def _is_client_error(exc: BaseException) -> bool:
    """Raised by the driver itself, not by a server reply (the format's ``isClientError``).

    A client bulk write's exception is the server's unless its top-level error is the client's.
    """
    if isinstance(exc, ClientBulkWriteException):
        return isinstance(exc.error, BaseException) and _is_client_error(exc.error)
    return not isinstance(exc, (OperationFailure, BulkWriteError, NotPrimaryError))


def _error_code(error: BaseException) -> Any:
    """The server's error code: an exception's own, or its reply's (NotPrimaryError has none)."""
    code = getattr(error, "code", None)
    if code is None:
        code = (getattr(error, "details", None) or {}).get("code")
    return code


def _spec_error(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A server's write or write concern error as the CRUD spec's ``WriteError`` /
    ``WriteConcernError``: ``code``, ``message`` (the server's ``errmsg``), ``details``
    (its ``errInfo``)."""
    out = {"code": raw.get("code"), "message": raw.get("errmsg")}
    if "errInfo" in raw:
        out["details"] = raw["errInfo"]
    return out


# PyMongo raises a network error that ends a bulk write part-way without the partial result
# (PYTHON-4597; PyMongo's own unified runner skips these tests for it).
_NO_PARTIAL_RESULT = (
    "needs a driver that reports a bulk write's partial result with the network error that "
    "stopped it: PyMongo raises AutoReconnect without one (PYTHON-4597; PyMongo's runner skips "
    "these tests); the outcome and events were checked"
)


def _error_result(exc: BaseException) -> Any:
    """``expectError.expectResult``: the partial result the error carries."""
    if isinstance(exc, ClientBulkWriteException):
        partial = exc.partial_result  # None when no write succeeded: unset, not null
        return _client_bulk_doc(partial) if partial is not None else UNSET
    if isinstance(exc, BulkWriteError):
        return _result_doc(pymongo.results.BulkWriteResult(dict(exc.details), acknowledged=True))
    return getattr(exc, "details", None)


# PyMongo's _TxnState names as the format's assertSessionTransactionState names them.
_TXN_STATES = {
    _TxnState.NONE: "none",
    _TxnState.STARTING: "starting",
    _TxnState.IN_PROGRESS: "in_progress",
    _TxnState.COMMITTED: "committed",
    _TxnState.COMMITTED_EMPTY: "committed",
    _TxnState.ABORTED: "aborted",
}


def _pymongo_session(session: Any) -> Any:
    """PyMongo's session behind a Motor session (its delegate), or the session itself."""
    return getattr(session, "delegate", session)


# -- operation table -------------------------------------------------------------------------
Handler = Callable[[Runner, Any, dict[str, Any]], Awaitable[Any]]


class Documents(list[Any]):
    """An iterated cursor's documents: each one an expectResult matches as a root-level
    document (unified-test-format.md "aggregate", "find": extra fields allowed)."""


async def _to_list(cursor: Any) -> Documents:
    if hasattr(cursor, "__aiter__"):
        return Documents([doc async for doc in cursor])
    return Documents(cursor)


# Argument names whose snake_case PyMongo spells differently.
_KEYWORDS = {"maxTimeMS": "max_time_ms"}


def _kwargs(args: dict[str, Any], sort_list: bool = True, **renames: str) -> dict[str, Any]:
    """Unified-format arguments as PyMongo keywords. ``sort_list``: a ``sort`` document as
    (key, direction) pairs, as find-style methods take it; update methods take the document."""
    out = {}
    for key, value in args.items():
        if key == "sort" and isinstance(value, dict) and sort_list:
            value = list(value.items())
        if key == "returnDocument":
            value = ReturnDocument.AFTER if value == "After" else ReturnDocument.BEFORE
        out[renames.get(key) or _KEYWORDS.get(key) or _snake(key)] = value
    return out


async def _maybe(value: Any) -> Any:
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        return await value
    return value


def _collection_op(method: str, *positional: str) -> Handler:
    sort_list = method not in ("update_one", "replace_one")

    async def run(runner: Runner, obj: Any, args: dict[str, Any]) -> Any:
        pos = [args.pop(p) for p in positional if p in args]
        return await _maybe(getattr(obj, method)(*pos, **_kwargs(args, sort_list)))

    return run


async def _estimated_document_count(runner: Runner, obj: Any, args: dict[str, Any]) -> Any:
    # It takes the count command's own options as keywords (maxTimeMS), like aggregate.
    return await _maybe(obj.estimated_document_count(**args))


async def _find(runner: Runner, obj: Any, args: dict[str, Any]) -> Any:
    flt = args.pop("filter", {})
    return await _to_list(obj.find(flt, **_kwargs(args)))


async def _aggregate(runner: Runner, obj: Any, args: dict[str, Any]) -> Any:
    # aggregate takes the command's own options as camelCase keywords (batchSize, maxTimeMS,
    # allowDiskUse); only session, let and comment are Python keywords.
    pipeline = args.pop("pipeline")
    python = {k: args.pop(k) for k in ("session", "let", "comment") if k in args}
    return await _to_list(await _maybe(obj.aggregate(pipeline, **python, **args)))


async def _create_index(runner: Runner, obj: Any, args: dict[str, Any]) -> Any:
    keys = list(args.pop("keys").items())
    return await _maybe(obj.create_index(keys, **_kwargs(args)))


async def _list(method: str, runner: Runner, obj: Any, args: dict[str, Any]) -> Any:
    return await _to_list(await _maybe(getattr(obj, method)(**_kwargs(args))))


async def _names(method: str, runner: Runner, obj: Any, args: dict[str, Any]) -> Any:
    """``listCollectionNames`` / ``listDatabaseNames``: a list of names, not documents."""
    return await _maybe(getattr(obj, method)(**_kwargs(args)))


async def _drop_database(runner: Runner, obj: Any, args: dict[str, Any]) -> Any:
    return await _maybe(obj.drop_database(args.pop("database"), **_kwargs(args)))


async def _get_snapshot_time(runner: Runner, obj: Any, args: dict[str, Any]) -> Any:
    """The session's snapshot time (sessions/snapshot-sessions.md "getSnapshotTime")."""
    return _pymongo_session(obj)._snapshot_time


async def _create_collection(runner: Runner, obj: Any, args: dict[str, Any]) -> Any:
    # The unified operation is the `create` command alone; PyMongo's existence check is not part
    # of it (it would add a listCollections span the spec does not expect).
    name = args.pop("collection")
    return await _maybe(obj.create_collection(name, check_exists=False, **_kwargs(args)))


async def _distinct(runner: Runner, obj: Any, args: dict[str, Any]) -> Any:
    field, flt = args.pop("fieldName"), args.pop("filter", {})
    return await _maybe(obj.distinct(field, flt, **_kwargs(args)))


_MODELS: dict[str, tuple[type[Any], tuple[str, ...]]] = {
    "insertOne": (InsertOne, ("document",)),
    "updateOne": (UpdateOne, ("filter", "update")),
    "updateMany": (UpdateMany, ("filter", "update")),
    "replaceOne": (ReplaceOne, ("filter", "replacement")),
    "deleteOne": (DeleteOne, ("filter",)),
    "deleteMany": (DeleteMany, ("filter",)),
}


_MODEL_ARGUMENTS: dict[str, frozenset[str]] = {
    "insertOne": frozenset({"document"}),
    "updateOne": frozenset(
        {"filter", "update", "upsert", "arrayFilters", "collation", "hint", "sort"}
    ),
    "updateMany": frozenset({"filter", "update", "upsert", "arrayFilters", "collation", "hint"}),
    "replaceOne": frozenset({"filter", "replacement", "upsert", "collation", "hint", "sort"}),
    "deleteOne": frozenset({"filter", "collation", "hint"}),
    "deleteMany": frozenset({"filter", "collation", "hint"}),
}


def _check_models(name: str, models: list[dict[str, Any]]) -> None:
    """Every write model of a ``bulkWrite``/``clientBulkWrite`` is one the runner builds."""
    for model in models:
        ((kind, fields),) = model.items()
        if kind not in _MODEL_ARGUMENTS:
            raise Unsupported(f"{name} model {kind}")
        namespace = {"namespace"} if name == "clientBulkWrite" else set()
        _only(fields, _MODEL_ARGUMENTS[kind] | namespace, f"{name}.{kind}")


def _models(models: list[dict[str, Any]]) -> list[Any]:
    """Write models as PyMongo's request classes (``namespace`` too, for client bulk writes)."""
    out = []
    for model in models:
        ((kind, fields),) = model.items()
        cls, positional = _MODELS[kind]
        fields = dict(fields)
        pos = [fields.pop(p) for p in positional]
        out.append(cls(*pos, **_kwargs(fields, sort_list=False)))
    return out


async def _bulk_write(runner: Runner, obj: Any, args: dict[str, Any]) -> Any:
    models = _models(args.pop("requests"))
    return await _maybe(obj.bulk_write(models, **_kwargs(args)))


async def _client_bulk_write(runner: Runner, obj: Any, args: dict[str, Any]) -> Any:
    models = _models(args.pop("models"))
    if "writeConcern" in args:
        args["writeConcern"] = _write_concern(args["writeConcern"], "clientBulkWrite")
    return await _maybe(obj.bulk_write(models, **_kwargs(args)))


async def _run_command(runner: Runner, obj: Any, args: dict[str, Any]) -> Any:
    # `commandName` only says which key of `command` is the command (the first, in JSON order).
    args.pop("commandName")
    command = args.pop("command")
    if "readPreference" in args:
        args["readPreference"] = _read_preference(args["readPreference"], "runCommand")
    return await _maybe(obj.command(command, **_kwargs(args)))


async def _session_op(method: str, runner: Runner, obj: Any, args: dict[str, Any]) -> Any:
    if method == "start_transaction":
        result = obj.start_transaction(**txn_options(args))
        return await _maybe(result) and None
    return await _maybe(getattr(obj, method)())


def _bind(fn: Callable[..., Awaitable[Any]], *first: Any) -> Handler:
    async def run(runner: Runner, obj: Any, args: dict[str, Any]) -> Any:
        return await fn(*first, runner, obj, args)

    return run


_OPERATIONS: dict[str, Handler] = {
    "insertOne": _collection_op("insert_one", "document"),
    "insertMany": _collection_op("insert_many", "documents"),
    "find": _find,
    "findOne": _collection_op("find_one", "filter"),
    "findOneAndUpdate": _collection_op("find_one_and_update", "filter", "update"),
    "findOneAndReplace": _collection_op("find_one_and_replace", "filter", "replacement"),
    "findOneAndDelete": _collection_op("find_one_and_delete", "filter"),
    "updateOne": _collection_op("update_one", "filter", "update"),
    "updateMany": _collection_op("update_many", "filter", "update"),
    "replaceOne": _collection_op("replace_one", "filter", "replacement"),
    "deleteOne": _collection_op("delete_one", "filter"),
    "deleteMany": _collection_op("delete_many", "filter"),
    "aggregate": _aggregate,
    "countDocuments": _collection_op("count_documents", "filter"),
    "estimatedDocumentCount": _estimated_document_count,
    "distinct": _distinct,
    "createIndex": _create_index,
    "dropIndexes": _collection_op("drop_indexes"),
    "listIndexes": _bind(_list, "list_indexes"),
    "listCollections": _bind(_list, "list_collections"),
    "listDatabases": _bind(_list, "list_databases"),
    "listCollectionObjects": _bind(_list, "list_collections"),
    "listDatabaseObjects": _bind(_list, "list_databases"),
    "listCollectionNames": _bind(_names, "list_collection_names"),
    "listDatabaseNames": _bind(_names, "list_database_names"),
    "dropDatabase": _drop_database,
    "dropIndex": _collection_op("drop_index", "name"),
    "getSnapshotTime": _get_snapshot_time,
    "createCollection": _bind(_create_collection),
    "dropCollection": _collection_op("drop_collection", "collection"),
    "bulkWrite": _bulk_write,
    "clientBulkWrite": _client_bulk_write,
    "runCommand": _run_command,
    "startTransaction": _bind(_session_op, "start_transaction"),
    "commitTransaction": _bind(_session_op, "commit_transaction"),
    "abortTransaction": _bind(_session_op, "abort_transaction"),
    "endSession": _bind(_session_op, "end_session"),
}


_READ = frozenset({"session", "comment", "hint", "collation"})
_WRITE = frozenset({"session", "comment", "hint", "collation", "let"})
_FIND = _READ | {
    "filter",
    "sort",
    "projection",
    "limit",
    "skip",
    "batchSize",
    "allowDiskUse",
    "let",
    "maxTimeMS",
    "max",
    "min",
    "returnKey",
    "showRecordId",
}
_FIND_AND = _WRITE | {
    "filter",
    "sort",
    "projection",
    "returnDocument",
    "bypassDocumentValidation",
}
_UPDATE = _WRITE | {"filter", "upsert", "bypassDocumentValidation"}
_TXN = frozenset({"readConcern", "writeConcern", "readPreference", "maxCommitTimeMS"})
# Every operation's arguments the handlers pass on correctly (camelCase -> snake_case keyword
# PyMongo and Motor take); anything else is Unsupported rather than sent somewhere by guesswork.
_ARGUMENTS: dict[str, frozenset[str]] = {
    "insertOne": frozenset({"session", "comment", "document", "bypassDocumentValidation"}),
    "insertMany": frozenset(
        {"session", "comment", "documents", "ordered", "bypassDocumentValidation"}
    ),
    "find": _FIND,
    "findOne": _FIND,
    "findOneAndUpdate": _FIND_AND | {"update", "upsert", "arrayFilters"},
    "findOneAndReplace": _FIND_AND | {"replacement", "upsert"},
    "findOneAndDelete": _FIND_AND - {"returnDocument"},
    "updateOne": _UPDATE | {"update", "arrayFilters", "sort"},
    "updateMany": _UPDATE | {"update", "arrayFilters"},
    "replaceOne": _UPDATE | {"replacement", "sort"},
    "deleteOne": _WRITE | {"filter"},
    "deleteMany": _WRITE | {"filter"},
    "aggregate": frozenset(
        {
            "session",
            "comment",
            "pipeline",
            "let",
            "batchSize",
            "allowDiskUse",
            "maxTimeMS",
            "collation",
            "bypassDocumentValidation",
        }
    ),
    "countDocuments": _READ | {"filter", "limit", "skip"},
    "estimatedDocumentCount": frozenset({"comment", "maxTimeMS"}),
    "distinct": frozenset({"session", "comment", "fieldName", "filter", "hint", "collation"}),
    "createIndex": frozenset({"session", "comment", "keys", "name", "unique"}),
    "dropIndexes": frozenset({"session", "comment"}),
    "listIndexes": frozenset({"session", "comment"}),
    "listCollections": frozenset({"session", "comment", "filter"}),
    "listDatabases": frozenset({"session", "comment"}),
    "listCollectionObjects": frozenset({"session", "comment", "filter"}),
    "listDatabaseObjects": frozenset({"session", "comment"}),
    "listCollectionNames": frozenset({"session", "comment", "filter"}),
    "listDatabaseNames": frozenset({"session", "comment"}),
    "dropDatabase": frozenset({"session", "comment", "database"}),
    "dropIndex": frozenset({"session", "comment", "name"}),
    "getSnapshotTime": frozenset(),
    "createCollection": frozenset({"session", "collection"}),
    "dropCollection": frozenset({"session", "comment", "collection"}),
    "bulkWrite": frozenset(
        {"session", "comment", "requests", "ordered", "bypassDocumentValidation", "let"}
    ),
    "clientBulkWrite": frozenset(
        {
            "session",
            "comment",
            "models",
            "ordered",
            "verboseResults",
            "bypassDocumentValidation",
            "let",
            "writeConcern",
        }
    ),
    "runCommand": frozenset({"session", "command", "commandName", "readPreference"}),
    "withTransaction": _TXN | {"callback"},
    "startTransaction": _TXN,
    "commitTransaction": frozenset(),
    "abortTransaction": frozenset(),
    "endSession": frozenset(),
}


def describe(stem: str, test: dict[str, Any]) -> str:
    return f"{stem}: {test['description']}"


def dumps(value: Any) -> str:
    return json.dumps(value, default=str)
