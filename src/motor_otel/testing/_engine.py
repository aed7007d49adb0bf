"""Query, update and aggregate semantics on mongomock, plus snapshot transactions.

mongomock supplies the hard part (matching, update operators, aggregation stages); this module
turns wire commands into its calls and replies shaped like mongod's. Documents live in
:mod:`._storage` as versions; a command reads and writes through a view (:mod:`._views`): the
latest commit, or a transaction's snapshot overlaid with its own writes, which stay invisible to
everyone else until it commits.

Every write goes statement by statement through :meth:`Engine._statement`, the one place where
document locks are taken (:mod:`._locks`), retryable-write results are remembered and replayed
(retryable-writes.md, "Executing Retryable Write Commands": the server returns the first result
of a statement it already applied) and the ``onPrimaryTransactionalWrite`` fail point fires.
"""

from __future__ import annotations

import copy
import datetime
import functools
import hashlib
import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import bson
import mongomock
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.timestamp import Timestamp
from mongomock import aggregate as _aggregate

from motor_otel.testing import _features
from motor_otel.testing._errors import CommandError, write_error
from motor_otel.testing._failpoints import FailPoints
from motor_otel.testing._locks import DocumentLocks, Key
from motor_otel.testing._storage import Storage
from motor_otel.testing._views import View

Doc = dict[str, Any]

_features.install()

# Update operators mongod knows (MongoDB manual, "Update Operators"); anything else is
# FailedToParse (9), as the command-monitoring test "A successful updateOne with write errors"
# expects from the server.
_UPDATE_OPERATORS = frozenset(
    {
        "$currentDate", "$inc", "$min", "$max", "$mul", "$rename", "$set", "$setOnInsert",
        "$unset", "$addToSet", "$pop", "$pull", "$push", "$pullAll", "$bit",
    }
)  # fmt: skip


# $listLocalSessions' uid: the SHA-256 of the user name, empty without authentication.
_NO_USER = hashlib.sha256(b"").digest()


class HangUp(Exception):
    """Close the client's connection without a reply (a fail point asked for it)."""


class WriteError(CommandError):
    """One statement of a write command failed: a ``writeErrors`` entry, not a failed command."""

    def __init__(self, code: int, errmsg: str, **extra: Any) -> None:
        super().__init__(code, errmsg, **extra)


def _key(db: str, name: str, _id: Any) -> Key:
    return (db, name, bson.encode({"_id": _id}))


@dataclass(slots=True)
class Context:
    """One command's circumstances: where it runs, and what the server knows of its session."""

    view: View
    txn: object | None = None  # the open transaction the command runs in
    statements: dict[int, Doc] | None = None  # a retryable write's already-applied statements
    transactional: bool = False  # carries lsid + txnNumber: onPrimaryTransactionalWrite applies
    deadline: float | None = None  # from maxTimeMS
    read_at: Timestamp | None = None  # a snapshot read's cluster time (its reply's atClusterTime)


def _duplicate(ns: str, coll: Any, doc: Doc, *, stored: bool = False) -> WriteError:
    """mongod's E11000 error for ``doc``: it names the unique index, quotes the duplicated key
    and returns it as ``keyPattern`` / ``keyValue`` (MongoDB manual, "Unique Indexes"; the
    fields PyMongo's DuplicateKeyError.details carries, and the CRUD spec's
    ``*-errorResponse`` tests read). ``stored``: ``doc`` is the new version of a stored
    document (an update), so its own ``_id`` is no conflict."""
    key: Doc = {}
    name = "unique index"
    if not stored and coll.find_one({"_id": doc.get("_id")}, {"_id": 1}) is not None:
        key, name = {"_id": doc.get("_id")}, "_id_"
    else:
        for index in coll.list_indexes():
            fields = list(index["key"])
            if not index.get("unique") or fields == ["_id"]:
                continue
            value = {f: doc.get(f) for f in fields}
            if coll.find_one({**value, "_id": {"$ne": doc.get("_id")}}, {"_id": 1}) is not None:
                key, name = value, index["name"]
                break
    quoted = ", ".join(f"{k}: {json.dumps(v, default=str)}" for k, v in key.items())
    return WriteError(
        11000,
        f"E11000 duplicate key error collection: {ns} index: {name} dup key: {{ {quoted} }}",
        keyPattern={k: 1 for k in key},
        keyValue=key,
    )


def _collated(coll: Any, query: Doc, collation: Any) -> Doc:
    """The filter to give mongomock: ``query`` itself, or, under a collation (see
    ``_features.Collation``), the ``_id``s of the documents it matches there."""
    if collation is None:
        return query
    ids = [doc["_id"] for doc in coll.find() if collation.matches(query, doc)]
    return {"_id": {"$in": ids}}


# Stages that compare no strings: they run as they are after a collated leading $match.
_COLLATION_FREE_STAGES = frozenset(
    {"$skip", "$limit", "$project", "$addFields", "$set", "$unset", "$count", "$out"}
)


def _collated_pipeline(
    source: list[Doc], pipeline: list[Any], collation: Any
) -> tuple[list[Doc], list[Any]]:
    """An aggregate under a collation: its leading ``$match`` stages filter ``source`` here;
    the rest must compare no strings (``$group`` by a constant, as ``countDocuments`` sends),
    anything else is refused naming it rather than compared binary."""
    while pipeline and isinstance(pipeline[0], dict) and list(pipeline[0]) == ["$match"]:
        source = [doc for doc in source if collation.matches(pipeline[0]["$match"], doc)]
        pipeline = pipeline[1:]
    for stage in pipeline:
        name = next(iter(stage), "") if isinstance(stage, dict) else ""
        group_id = stage.get("$group", {}).get("_id") if name == "$group" else None
        constant = name == "$group" and not isinstance(group_id, (str, dict, list))
        if name not in _COLLATION_FREE_STAGES and not constant:
            raise _features.unsupported(f"a collation with the aggregation stage {name}")
    return source, pipeline


def _first(coll: Any, query: Doc, sort: list[tuple[str, int]] | None, collation: Any) -> Any:
    """The document ``findAndModify`` acts on: the first match in ``sort`` order."""
    if collation is None:
        return coll.find_one(query, sort=sort)
    docs = list(coll.find(_collated(coll, query, collation)))
    docs = collation.sort(docs, sort) if sort else docs
    return docs[0] if docs else None


def _post_image(doc: Doc, update: Any) -> Doc:
    """What ``update`` (operators, pipeline or replacement) makes of ``doc``, computed apart:
    an update that failed on a unique index was rolled back, and its error names the key."""
    scratch: Any = mongomock.MongoClient()["scratch"]["post_image"]
    scratch.insert_one(copy.deepcopy(doc))
    if _is_replacement(update):
        rest = {k: v for k, v in update.items() if k != "_id"}
        scratch.replace_one({"_id": doc["_id"]}, {"_id": doc["_id"], **rest})
    else:
        scratch.update_one({"_id": doc["_id"]}, update)
    found: Doc = scratch.find_one({}) or doc
    return found


def _sort_spec(sort: Any) -> list[tuple[str, int]] | None:
    if not sort:
        return None
    return [(k, int(v)) for k, v in dict(sort).items()]


def _is_replacement(update: Any) -> bool:
    return isinstance(update, dict) and not any(str(k).startswith("$") for k in update)


def _check_update(update: Any, multi: bool, array_filters: Any) -> None:
    """Reject what mongod rejects before touching a document, as write errors (MongoDB manual,
    "update" command, "Update Statements": replacement documents cannot be multi; "Update
    Operators"; "$[<identifier>]": arrayFilters only with update operators)."""
    if isinstance(update, list):
        if array_filters:
            raise WriteError(72, "arrayFilters may not be specified for pipeline-style updates")
        return
    if not isinstance(update, dict):
        raise WriteError(9, "Update argument must be either an object or an array")
    if _is_replacement(update):
        if multi:
            raise WriteError(9, "multi update is not supported for replacement-style update")
        return
    for operator in update:
        if operator not in _UPDATE_OPERATORS:
            raise WriteError(
                9,
                f"Unknown modifier: {operator}. Expected a valid update modifier or "
                "pipeline-style update specified as an array",
            )


def _write_reply(results: list[tuple[int, Doc]], errors: list[Doc], **counts: int) -> Doc:
    """A write command's reply as mongod sends it: ``ok: 1`` with ``n`` (and the command's other
    counts), and the failed statements as ``writeErrors`` (command-logging-and-monitoring's
    monitoring tests; MongoDB's manual, "insert"/"update"/"delete" command output)."""
    reply: Doc = {"n": sum(r["n"] for _, r in results), **counts, "ok": 1}
    if errors:
        reply["writeErrors"] = errors
    return reply


def _equalities(query: Any) -> Doc:
    """The query's equality conditions, from which an upsert builds its new document (MongoDB
    manual, "db.collection.updateOne()", "Insert a Document if No Match Exists (Upsert)": "the
    update creates a base document from the equality clauses in the <filter> parameter"):
    ``{f: v}`` and ``{f: {$eq: v}}``, also inside ``$and``; ``{_id: {$gt: 1}}`` fixes nothing."""
    out: Doc = {}
    if not isinstance(query, dict):
        return out
    for key, value in query.items():
        if key == "$and" and isinstance(value, list):
            for clause in value:
                out.update(_equalities(clause))
        elif str(key).startswith("$"):
            continue
        elif isinstance(value, dict) and any(str(k).startswith("$") for k in value):
            if set(value) == {"$eq"}:
                out[key] = value["$eq"]
        else:
            out[key] = value
    return out


def _upsert_id(query: Doc) -> list[Any]:
    """The _id an upsert would insert, when the query fixes it (``null`` included)."""
    fixed = _equalities(query)
    return [fixed["_id"]] if "_id" in fixed else []


def _namespace(db: str, target: Any) -> tuple[str, str]:
    if isinstance(target, str):
        return db, target
    if isinstance(target, dict) and isinstance(target.get("coll"), str):
        return str(target.get("db", db)), target["coll"]
    raise CommandError(2, f"invalid output namespace: {target!r}")


class Engine:
    """Runs CRUD and catalogue commands in a :class:`Context`. Callers hold :attr:`lock`."""

    def __init__(
        self, lock: threading.RLock, locks: DocumentLocks, fail_points: FailPoints
    ) -> None:
        self.storage = Storage()
        self.view = View(self.storage)  # the latest commit, shared by every command outside
        self._scratch: Any = mongomock.MongoClient()["scratch"]["upsert"]  # see _upsert
        self.local_sessions: dict[bytes, Doc] = {}  # see session_used
        self.lock = lock
        self.locks = locks
        self._fail_points = fail_points
        self._cursor_ids = itertools.count(1000)
        self._cursors: dict[int, tuple[str, list[Doc]]] = {}
        self.handlers: dict[str, Callable[[Context, str, Doc], Doc]] = {
            "insert": self.insert,
            "find": self.find,
            "getMore": self.get_more,
            "killCursors": self.kill_cursors,
            "update": self.update,
            "delete": self.delete,
            "findAndModify": self.find_and_modify,
            "aggregate": self.aggregate,
            "count": self.count,
            "distinct": self.distinct,
            "create": self.create,
            "drop": self.drop,
            "dropDatabase": self.drop_database,
            "listCollections": self.list_collections,
            "listDatabases": self.list_databases,
            "listIndexes": self.list_indexes,
            "createIndexes": self.create_indexes,
            "dropIndexes": self.drop_indexes,
            "bulkWrite": self.bulk_write,
        }

    @property
    def main(self) -> Any:
        """The latest commit as a mongomock client (for commands that run outside any view)."""
        return self.view.client

    def run(self, name: str, ctx: Context, db: str, cmd: Doc) -> Doc:
        """Run one command; mongomock's gaps become error replies naming the feature."""
        handler = self.handlers.get(name)
        if handler is None:
            raise CommandError(59, f"no such command: '{name}'")
        _features.check_collation(cmd)
        try:
            with _features.let_variables(cmd.get("let")):
                return handler(ctx, db, cmd)
        except NotImplementedError as exc:
            raise _features.unsupported(str(exc) or name) from None
        except mongomock.OperationFailure as exc:
            raise CommandError(exc.code or 2, str(exc)) from None

    # -- one write statement -----------------------------------------------------------------
    def _claim(self, ctx: Context, keys_of: Callable[[], list[Key]]) -> list[Key]:
        """The documents a statement will write, locked for it (waiting outside a transaction)."""
        while True:
            keys = keys_of()
            if ctx.txn is not None:
                self.locks.claim(ctx.txn, keys)
                return keys
            if self.locks.free(keys, ctx.deadline):
                return keys

    def _statement(
        self,
        ctx: Context,
        index: int,
        keys_of: Callable[[], list[Key]],
        apply: Callable[[], tuple[Doc, list[Key]]],
    ) -> Doc:
        """Apply one write statement once; ``apply`` returns its result and any keys it created."""
        if ctx.statements is not None and index in ctx.statements:
            return ctx.statements[index]  # a retry: the first result, not a second write
        try:
            keys = self._claim(ctx, keys_of)
        except mongomock.OperationFailure as exc:  # e.g. an unknown query operator
            raise WriteError(exc.code or 2, str(exc)) from None
        failure = self._fail_points.transactional_write() if ctx.transactional else None
        if failure is not None and failure.error_code is not None:
            if failure.close_connection:
                raise HangUp
            raise WriteError(
                failure.error_code, "Failing write for test (onPrimaryTransactionalWrite)"
            )
        result, created = apply()
        if ctx.txn is not None:
            self.locks.claim(ctx.txn, created)
        else:
            self.locks.wrote(keys + created)
        if ctx.statements is not None:
            ctx.statements[index] = result
        if failure is not None and failure.close_connection:
            raise HangUp
        return result

    def _batch(
        self, ctx: Context, cmd: Doc, specs: list[Any], one: Callable[[int, Any], Doc]
    ) -> tuple[list[tuple[int, Doc]], list[Doc]]:
        """Run statements in order; a failed one is a write error (ordered, or in a transaction,
        stops the batch: mongod fails a transaction's whole batch and aborts it, transactions.md
        "Handling command errors", spec test abort.json "abort ignores TransactionAborted")."""
        results: list[tuple[int, Doc]] = []
        errors: list[Doc] = []
        ordered = bool(cmd.get("ordered", True)) or ctx.txn is not None
        for i, spec in enumerate(specs):
            try:
                results.append((i, one(i, spec)))
            except WriteError as err:
                errors.append(write_error(i, err, **err.extra))
                if ordered:
                    break
        return results, errors

    # -- cursors -------------------------------------------------------------------------------
    def _cursor_reply(self, ns: str, docs: list[Doc], batch_size: int | None, single: bool) -> Doc:
        size = len(docs) if batch_size in (None, 0) else int(batch_size)
        first, rest = docs[:size], docs[size:]
        cursor_id = 0
        if rest and not single:
            cursor_id = next(self._cursor_ids)
            self._cursors[cursor_id] = (ns, rest)
        return {"cursor": {"id": Int64(cursor_id), "ns": ns, "firstBatch": first}, "ok": 1}

    def get_more(self, ctx: Context, db: str, cmd: Doc) -> Doc:
        cursor_id = int(cmd["getMore"])
        entry = self._cursors.pop(cursor_id, None)
        if entry is None:
            raise CommandError(43, f"cursor id {cursor_id} not found")
        ns, docs = entry
        size = int(cmd.get("batchSize") or len(docs))
        batch, rest = docs[:size], docs[size:]
        if rest:
            self._cursors[cursor_id] = (ns, rest)
        next_id = cursor_id if rest else 0
        return {"cursor": {"id": Int64(next_id), "ns": ns, "nextBatch": batch}, "ok": 1}

    def kill_cursors(self, ctx: Context, db: str, cmd: Doc) -> Doc:
        killed = []
        for cursor_id in cmd.get("cursors", []):
            if self._cursors.pop(int(cursor_id), None) is not None:
                killed.append(cursor_id)
        return {"cursorsKilled": killed, "cursorsNotFound": [], "cursorsAlive": [], "ok": 1}

    # -- CRUD ----------------------------------------------------------------------------------
    def _insert_one(self, ctx: Context, db: str, name: str, index: int, doc: Doc) -> Doc:
        coll = ctx.view.collection(db, name)
        if "_id" not in doc:
            doc = {"_id": ObjectId(), **doc}
        try:
            _features.check_id(doc)
        except CommandError as err:
            raise WriteError(err.code, err.errmsg) from None

        def apply() -> tuple[Doc, list[Key]]:
            try:
                coll.insert_one(copy.deepcopy(doc))
            except mongomock.DuplicateKeyError:
                raise _duplicate(f"{db}.{name}", coll, doc) from None
            return {"n": 1}, []

        return self._statement(ctx, index, lambda: [_key(db, name, doc["_id"])], apply)

    def insert(self, ctx: Context, db: str, cmd: Doc) -> Doc:
        name = cmd["insert"]
        docs = list(cmd.get("documents", []))
        results, errors = self._batch(
            ctx, cmd, docs, lambda i, doc: self._insert_one(ctx, db, name, i, doc)
        )
        return _write_reply(results, errors)

    def _update_one(self, ctx: Context, db: str, name: str, index: int, spec: Doc) -> Doc:
        coll = ctx.view.collection(db, name)
        q, u = spec.get("q") or {}, spec.get("u")
        multi, upsert = bool(spec.get("multi", False)), bool(spec.get("upsert", False))
        array_filters = spec.get("arrayFilters")
        _check_update(u, multi, array_filters)
        limit = 0 if multi else 1
        collation = _features.collation(spec.get("collation"))
        sort = _sort_spec(spec.get("sort"))  # updateOne/replaceOne's sort (MongoDB 8.0)

        def target() -> Doc:
            """The filter that selects what this statement updates: ``q`` itself without a
            collation or sort; under ``sort`` only the first match in that order (MongoDB
            manual, "update" command, ``updates.sort``: it "orders the documents before the
            update" when ``multi`` is false)."""
            if sort and not multi:
                first = _first(coll, q, sort, collation)
                return {"_id": first["_id"]} if first is not None else {"_id": {"$in": []}}
            return _collated(coll, q, collation)

        def keys_of() -> list[Key]:
            ids = [d["_id"] for d in coll.find(target(), {"_id": 1}).limit(limit)]
            return [_key(db, name, i) for i in ids or (_upsert_id(q) if upsert else [])]

        def apply() -> tuple[Doc, list[Key]]:
            match = target()
            try:
                if array_filters or _features.has_positional(u):
                    return self._update_positional(
                        coll, db, name, match, u, array_filters, limit, upsert
                    )
                if upsert and coll.find_one(match, {"_id": 1}) is None:
                    upserted = self._upsert(coll, f"{db}.{name}", q, u)
                    return {"n": 1, "nModified": 0, "upserted": upserted}, [
                        _key(db, name, upserted)
                    ]
                if _is_replacement(u):
                    return self._replace(coll, match, u), []
                result = coll.update_many(match, u) if multi else coll.update_one(match, u)
            except mongomock.DuplicateKeyError:
                raise self._update_duplicate(coll, f"{db}.{name}", match, u) from None
            except mongomock.OperationFailure as exc:
                raise WriteError(exc.code or 2, str(exc)) from None
            except CommandError as err:
                raise WriteError(err.code, err.errmsg) from None
            except (ValueError, TypeError, KeyError) as exc:
                raise WriteError(2, f"invalid update: {exc}") from None
            return {"n": result.matched_count, "nModified": result.modified_count}, []

        return self._statement(ctx, index, keys_of, apply)

    def _update_duplicate(self, coll: Any, ns: str, query: Doc, update: Any) -> WriteError:
        """The DuplicateKey error of an update mongomock refused (and rolled back)."""
        for doc in coll.find(query):
            error = _duplicate(ns, coll, _post_image(doc, update), stored=True)
            if error.extra["keyValue"]:
                return error
        return _duplicate(ns, coll, {}, stored=True)

    def _replace(self, coll: Any, query: Doc, replacement: Any) -> Doc:
        """Replace the first match, keeping its ``_id`` (MongoDB manual,
        "db.collection.replaceOne()": the replacement "cannot ... change the _id"; an ``_id``
        that differs is ImmutableField, 66). mongomock would take the ``_id`` from the query
        (``{_id: {$gt: 1}}``) and loses a ``null`` one, so the ``_id`` is spelled out here."""
        existing = coll.find_one(query, {"_id": 1})
        if existing is None:
            return {"n": 0, "nModified": 0}
        _id = existing["_id"]
        if "_id" in replacement and replacement["_id"] != _id:
            raise WriteError(
                66,
                "After applying the update, the (immutable) field '_id' was found to have been "
                f"altered to _id: {replacement['_id']!r}",
            )
        rest = {k: v for k, v in replacement.items() if k != "_id"}
        result = coll.replace_one({"_id": _id}, {"_id": _id, **rest})
        return {"n": result.matched_count, "nModified": result.modified_count}

    def _upsert(self, coll: Any, ns: str, query: Doc, update: Any) -> Any:
        """Insert what an upsert that matched nothing inserts; return its ``_id``.

        A replacement document is inserted as it is; an update-operator or pipeline update is
        applied to a base document made of the query's equality conditions (MongoDB manual,
        "Upsert with Replacement Document" / "Upsert with Operator Expressions" /
        "Upsert with Aggregation Pipeline" under "db.collection.updateOne()"). The ``_id`` comes
        from an equality on ``_id`` in the query, ``null`` included; else from the document;
        else it is a new ObjectId. mongomock would take ``_id`` from any query condition
        (``{_id: {$gt: 1}}``) and drop a ``null`` one, so the base document is built here and
        updated in a scratch collection, never matching a stored document.
        """
        fixed = _equalities(query)
        if _is_replacement(update):
            doc = dict(update)
        else:
            scratch = self._scratch
            scratch.delete_many({})
            placeholder = ObjectId()
            scratch.update_one({**fixed, "_id": placeholder}, update, upsert=True)
            doc = scratch.find_one({}) or {}
            if doc.get("_id") == placeholder:
                del doc["_id"]
        if "_id" in fixed:
            doc["_id"] = fixed["_id"]
        doc = {"_id": doc.pop("_id") if "_id" in doc else ObjectId(), **doc}
        _features.check_id(doc)
        try:
            coll.insert_one(copy.deepcopy(doc))
        except mongomock.DuplicateKeyError:
            raise _duplicate(ns, coll, doc) from None
        return doc["_id"]

    def _update_positional(
        self, coll: Any, db: str, name: str, q: Doc, u: Any, filters: Any, limit: int, upsert: bool
    ) -> tuple[Doc, list[Key]]:
        """An update using ``$[]`` / ``$[<identifier>]``: mongomock has no arrayFilters, so each
        matched document gets the update with those paths made concrete (see _features)."""
        matched = list(coll.find(q).limit(limit))
        if not matched and upsert:
            # The path must exist to apply array updates (MongoDB manual, "$[<identifier>]").
            _features.expand_array_filters({}, u, list(filters or []))
        modified = 0
        for doc in matched:
            concrete = _features.expand_array_filters(doc, u, list(filters or []))
            if concrete:
                modified += coll.update_one({"_id": doc["_id"]}, concrete).modified_count
        return {"n": len(matched), "nModified": modified}, []

    def update(self, ctx: Context, db: str, cmd: Doc) -> Doc:
        name = cmd["update"]
        specs = list(cmd.get("updates", []))
        results, errors = self._batch(
            ctx, cmd, specs, lambda i, spec: self._update_one(ctx, db, name, i, spec)
        )
        reply = _write_reply(results, errors, nModified=sum(r["nModified"] for _, r in results))
        upserted = [{"index": i, "_id": r["upserted"]} for i, r in results if "upserted" in r]
        if upserted:
            reply["upserted"] = upserted
        return reply

    def _delete_one(self, ctx: Context, db: str, name: str, index: int, spec: Doc) -> Doc:
        coll = ctx.view.collection(db, name)
        q = spec.get("q") or {}
        limit = 1 if int(spec.get("limit", 0)) == 1 else 0
        collation = _features.collation(spec.get("collation"))

        def keys_of() -> list[Key]:
            match = _collated(coll, q, collation)
            return [_key(db, name, d["_id"]) for d in coll.find(match, {"_id": 1}).limit(limit)]

        def apply() -> tuple[Doc, list[Key]]:
            match = _collated(coll, q, collation)
            if limit:
                return {"n": coll.delete_one(match).deleted_count}, []
            return {"n": coll.delete_many(match).deleted_count}, []

        return self._statement(ctx, index, keys_of, apply)

    def delete(self, ctx: Context, db: str, cmd: Doc) -> Doc:
        name = cmd["delete"]
        specs = list(cmd.get("deletes", []))
        results, errors = self._batch(
            ctx, cmd, specs, lambda i, spec: self._delete_one(ctx, db, name, i, spec)
        )
        return _write_reply(results, errors)

    def bulk_write(self, ctx: Context, db: str, cmd: Doc) -> Doc:
        """MongoDB 8.0's client-level ``bulkWrite``: each op is one statement of its namespace."""
        namespaces = [str(info["ns"]).split(".", 1) for info in cmd.get("nsInfo", [])]
        counts = dict.fromkeys(("nInserted", "nMatched", "nModified", "nUpserted", "nDeleted"), 0)
        results: list[Doc] = []
        errors_only = bool(cmd.get("errorsOnly", False))
        ordered = bool(cmd.get("ordered", True)) or ctx.txn is not None
        for idx, op in enumerate(cmd.get("ops", [])):
            kind = next(k for k in ("insert", "update", "delete") if k in op)
            op_db, coll = namespaces[int(op[kind])]
            try:
                if kind == "insert":
                    reply = self._insert_one(ctx, op_db, coll, idx, op["document"])
                    counts["nInserted"] += reply["n"]
                elif kind == "update":
                    spec = {"q": op.get("filter") or {}, "u": op.get("updateMods")}
                    options = ("multi", "upsert", "arrayFilters", "collation", "sort")
                    spec |= {k: op[k] for k in options if k in op}
                    reply = self._update_one(ctx, op_db, coll, idx, spec)
                    counts["nUpserted"] += int("upserted" in reply)
                    counts["nMatched"] += 0 if "upserted" in reply else reply["n"]
                    counts["nModified"] += reply["nModified"]
                else:
                    spec = {"q": op.get("filter") or {}, "limit": 0 if op.get("multi") else 1}
                    spec |= {"collation": op["collation"]} if "collation" in op else {}
                    reply = self._delete_one(ctx, op_db, coll, idx, spec)
                    counts["nDeleted"] += reply["n"]
            except WriteError as err:
                entry = write_error(idx, err, **err.extra)
                results.append(
                    {"ok": 0, "idx": idx, **{k: v for k, v in entry.items() if k != "index"}}
                )
                if ordered:
                    break
                continue
            if not errors_only:
                result: Doc = {"ok": 1, "idx": idx, "n": reply["n"]}
                if kind == "update":
                    result["nModified"] = reply["nModified"]
                    if "upserted" in reply:
                        result["upserted"] = {"_id": reply["upserted"]}
                results.append(result)
        errors = sum(1 for r in results if r["ok"] == 0)
        cursor = {"id": Int64(0), "ns": "admin.$cmd.bulkWrite", "firstBatch": results}
        return {"cursor": cursor, "nErrors": errors, **counts, "ok": 1}

    def find(self, ctx: Context, db: str, cmd: Doc) -> Doc:
        coll = ctx.view.collection(db, cmd["find"])
        collation = _features.collation(cmd.get("collation"))
        sort = _sort_spec(cmd.get("sort"))
        if collation is not None and sort:
            return self._collated_find(coll, f"{db}.{cmd['find']}", cmd, collation, sort)
        cursor = coll.find(
            _collated(coll, cmd.get("filter") or {}, collation), cmd.get("projection")
        )
        if sort:
            cursor = cursor.sort(sort)
        if cmd.get("skip"):
            cursor = cursor.skip(int(cmd["skip"]))
        limit = int(cmd.get("limit") or 0)
        if limit:
            cursor = cursor.limit(abs(limit))
        docs = list(cursor)
        if cmd.get("returnKey"):
            docs = _index_keys(coll, cmd.get("filter") or {}, cmd.get("sort") or {}, docs)
        single = bool(cmd.get("singleBatch")) or limit < 0
        return self._cursor_reply(f"{db}.{cmd['find']}", docs, cmd.get("batchSize"), single)

    def _collated_find(
        self, coll: Any, ns: str, cmd: Doc, collation: Any, sort: list[tuple[str, int]]
    ) -> Doc:
        """``find`` sorted under a collation: mongomock sorts strings binary, so the matches are
        sorted here, then skipped, limited and projected as :meth:`find` would."""
        docs = collation.sort(
            list(coll.find(_collated(coll, cmd.get("filter") or {}, collation))), sort
        )
        limit = int(cmd.get("limit") or 0)
        docs = docs[int(cmd.get("skip") or 0) :]
        docs = docs[: abs(limit)] if limit else docs
        docs = [_project_document(d, cmd.get("projection")) for d in docs]
        single = bool(cmd.get("singleBatch")) or limit < 0
        return self._cursor_reply(ns, docs, cmd.get("batchSize"), single)

    def find_and_modify(self, ctx: Context, db: str, cmd: Doc) -> Doc:
        name = cmd["findAndModify"]
        coll = ctx.view.collection(db, name)
        query = cmd.get("query") or {}
        sort = _sort_spec(cmd.get("sort"))
        collation = _features.collation(cmd.get("collation"))
        fields = cmd.get("fields")
        update = cmd.get("update")
        upsert = bool(cmd.get("upsert", False))
        array_filters = cmd.get("arrayFilters")
        if not cmd.get("remove"):
            try:
                _check_update(update, False, array_filters)
            except WriteError as err:
                raise CommandError(err.code, err.errmsg) from None

        def keys_of() -> list[Key]:
            existing = _first(coll, query, sort, collation)
            ids = (
                [existing["_id"]] if existing is not None else (_upsert_id(query) if upsert else [])
            )
            return [_key(db, name, i) for i in ids]

        def apply() -> tuple[Doc, list[Key]]:
            existing = _first(coll, query, sort, collation)
            if cmd.get("remove"):
                if existing is not None:
                    coll.delete_one({"_id": existing["_id"]})
                value = None if existing is None else _project_document(existing, fields)
                return {"lastErrorObject": {"n": int(existing is not None)}, "value": value}, []
            return_new = bool(cmd.get("new", False))
            last: Doc = {"n": 1 if existing is not None or upsert else 0}
            created: list[Key] = []
            try:
                if existing is None:
                    value = None
                    if upsert:
                        upserted = self._upsert(coll, f"{db}.{name}", query, update)
                        created.append(_key(db, name, upserted))
                        last |= {"updatedExisting": False, "upserted": upserted}
                        if return_new:
                            value = _project(coll, {"_id": upserted}, fields)
                    return {"lastErrorObject": last, "value": value}, created
                last["updatedExisting"] = True
                selector = {"_id": existing["_id"]}
                if _is_replacement(update):
                    self._replace(coll, selector, update)
                else:
                    concrete = update
                    if array_filters or _features.has_positional(update):
                        filters = list(array_filters or [])
                        concrete = _features.expand_array_filters(existing, update, filters)
                    coll.update_one(selector, concrete or {"$set": {}})
            except mongomock.DuplicateKeyError:
                error = self._update_duplicate(coll, f"{db}.{name}", selector, update)
                raise CommandError(error.code, error.errmsg, **error.extra) from None
            except WriteError as err:  # findAndModify fails as a command, not a write error
                raise CommandError(err.code, err.errmsg, **err.extra) from None
            value = (
                _project(coll, existing, fields)
                if return_new
                else _project_document(existing, fields)
            )
            return {"lastErrorObject": last, "value": value}, created

        result = self._statement(ctx, 0, keys_of, apply)
        return {**result, "ok": 1}

    def aggregate(self, ctx: Context, db: str, cmd: Doc) -> Doc:
        target = cmd["aggregate"]
        pipeline = list(cmd.get("pipeline") or [])
        if isinstance(target, str):  # mongomock's Collection.aggregate, from the same documents
            coll = ctx.view.collection(db, target)
            source, database, ns = list(coll.find()), ctx.view.client[db], f"{db}.{target}"
        else:
            source = self._collectionless_source(db, target, pipeline)
            pipeline = pipeline[1:]
            database, ns = ctx.view.client[db], f"{db}.$cmd.aggregate"

        collation = _features.collation(cmd.get("collation"))
        if collation is not None:
            source, pipeline = _collated_pipeline(source, pipeline, collation)

        def run(stages: list[Any]) -> list[Doc]:
            return list(_aggregate.process_pipeline(source, database, stages, None))

        last = (
            next(iter(pipeline[-1]), None) if pipeline and isinstance(pipeline[-1], dict) else None
        )
        if last in ("$out", "$merge"):
            if ctx.txn is not None:
                raise CommandError(263, f"{last} cannot be used in a transaction")
            if (cmd.get("readConcern") or {}).get("level") == "linearizable":
                # MongoDB manual, "$out" / "$merge" restrictions: not with "linearizable".
                raise CommandError(
                    72, f"{last} cannot be used with a 'linearizable' read concern level"
                )
            docs = run(pipeline[:-1])
            self._write_stage(ctx, db, str(last), pipeline[-1][last], docs)
            return self._cursor_reply(ns, [], None, True)
        batch = (cmd.get("cursor") or {}).get("batchSize")
        return self._cursor_reply(ns, run(pipeline), batch, False)

    def _collectionless_source(self, db: str, target: Any, pipeline: list[Any]) -> list[Doc]:
        """The documents a database-level aggregate (``aggregate: 1``) starts from: its first
        stage must be one that needs no collection (MongoDB manual, "aggregate" command,
        "aggregate: 1"): ``$documents`` (its array of documents, "$documents (aggregation)") or
        ``$listLocalSessions`` (the sessions this server has seen, "$listLocalSessions").
        ``$currentOp`` and the other collectionless stages are not simulated."""
        if target != 1:
            raise CommandError(
                73, f"Invalid namespace specified '{db}.{target}'"
            )  # InvalidNamespace
        first = pipeline[0] if pipeline and isinstance(pipeline[0], dict) else {}
        stage = next(iter(first), None)
        if stage == "$documents":
            docs = _aggregate._parse_expression(first[stage], {})
            if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
                raise CommandError(5858203, "an array is expected")
            return docs
        if stage == "$listLocalSessions":
            return [dict(session) for session in self.local_sessions.values()]
        if stage in ("$currentOp", "$changeStream", "$listCatalog", "$querySettings"):
            raise _features.unsupported(f"database-level aggregate stage {stage}")
        raise CommandError(
            73,
            f"{{aggregate: 1}} is not valid for '{stage}'; a collection is required.",
        )

    def session_used(self, lsid: Doc) -> None:
        """Remember a logical session a command named (``$listLocalSessions`` lists them until
        the session is ended or killed)."""
        key = bytes(lsid.get("id") or b"")
        if key not in self.local_sessions:
            self.local_sessions.setdefault(
                key,
                {
                    "_id": {"id": lsid.get("id"), "uid": bson.Binary(_NO_USER)},
                    "lastUse": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0),
                },
            )

    def _write_stage(self, ctx: Context, db: str, stage: str, spec: Any, docs: list[Doc]) -> None:
        """``$out`` replaces the target collection; ``$merge`` folds documents into it (MongoDB
        manual, "$out (aggregation)", "$merge (aggregation)")."""
        docs = [d if "_id" in d else {"_id": ObjectId(), **d} for d in docs]
        if stage == "$out":
            out_db, out_name = _namespace(db, spec)
            out = ctx.view.collection(out_db, out_name)
            self._claim(
                ctx, lambda: [_key(out_db, out_name, d["_id"]) for d in out.find({}, {"_id": 1})]
            )
            out.delete_many({})
            if docs:
                out.insert_many(docs)
            self.locks.wrote([_key(out_db, out_name, d["_id"]) for d in docs])
            return
        if not isinstance(spec, dict):
            spec = {"into": spec}
        unknown = set(spec) - {"into", "on", "whenMatched", "whenNotMatched"}
        if unknown:
            raise _features.unsupported(f"$merge option {sorted(unknown)[0]!r}")
        out_db, out_name = _namespace(db, spec.get("into"))
        on = spec.get("on", "_id")
        on_fields = [on] if isinstance(on, str) else list(on)
        matched_mode, unmatched_mode = (
            spec.get("whenMatched", "merge"),
            spec.get("whenNotMatched", "insert"),
        )
        if matched_mode not in ("replace", "keepExisting", "merge", "fail"):
            raise _features.unsupported(f"$merge whenMatched {matched_mode!r}")
        if unmatched_mode not in ("insert", "discard", "fail"):
            raise CommandError(2, f"invalid $merge whenNotMatched: {unmatched_mode!r}")
        out = ctx.view.collection(out_db, out_name)
        for doc in docs:
            selector = {f: doc.get(f) for f in on_fields}
            existing = out.find_one(selector)
            keys = [_key(out_db, out_name, existing["_id"] if existing else doc["_id"])]
            self._claim(ctx, functools.partial(list, keys))
            if existing is not None:
                if matched_mode == "fail":  # as an insert of doc would fail
                    error = _duplicate(f"{out_db}.{out_name}", out, doc)
                    raise CommandError(error.code, error.errmsg, **error.extra)
                if matched_mode == "replace":
                    out.replace_one({"_id": existing["_id"]}, {**doc, "_id": existing["_id"]})
                elif matched_mode == "merge":
                    fields = {k: v for k, v in doc.items() if k != "_id"}
                    if fields:
                        out.update_one({"_id": existing["_id"]}, {"$set": fields})
            elif unmatched_mode == "insert":
                out.insert_one(doc)
            elif unmatched_mode == "fail":
                raise CommandError(
                    13113, "$merge could not find a matching document in the target collection"
                )
            self.locks.wrote(keys)

    def count(self, ctx: Context, db: str, cmd: Doc) -> Doc:
        coll = ctx.view.collection(db, cmd["count"])
        query = _collated(coll, cmd.get("query") or {}, _features.collation(cmd.get("collation")))
        n = coll.count_documents(query) if query else coll.estimated_document_count()
        return {"n": n, "ok": 1}

    def distinct(self, ctx: Context, db: str, cmd: Doc) -> Doc:
        coll = ctx.view.collection(db, cmd["distinct"])
        # mongod collects distinct values in a set ordered by BSON comparison, so they come back
        # in that order (MongoDB manual, "Comparison/Sort Order"; the CRUD spec's distinct tests
        # expect [11, 22, 33] from documents holding 11, 22, 33 in another order).
        collation = _features.collation(cmd.get("collation"))
        query = _collated(coll, cmd.get("query") or {}, collation)
        if collation is not None:  # the first of equal values in natural order, as mongod
            values = [
                value for doc in coll.find(query) for value in _features.values_at(doc, cmd["key"])
            ]
            return {"values": collation.distinct(values), "ok": 1}
        values = coll.distinct(cmd["key"], query)
        return {"values": _features.bson_sorted(values), "ok": 1}

    # -- catalogue -----------------------------------------------------------------------------
    def create(self, ctx: Context, db: str, cmd: Doc) -> Doc:
        name = cmd["create"]
        if name in ctx.view.collection_names(db):
            raise CommandError(48, f"Collection {db}.{name} already exists.")
        ctx.view.client[db].create_collection(name)
        return {"ok": 1}

    def drop(self, ctx: Context, db: str, cmd: Doc) -> Doc:
        name = cmd["drop"]
        if name not in ctx.view.collection_names(db):
            raise CommandError(26, "ns not found")
        ctx.view.client[db].drop_collection(name)
        return {"ns": f"{db}.{name}", "nIndexesWas": 1, "ok": 1}

    def drop_database(self, ctx: Context, db: str, cmd: Doc) -> Doc:
        ctx.view.client.drop_database(db)
        return {"dropped": db, "ok": 1}

    def list_collections(self, ctx: Context, db: str, cmd: Doc) -> Doc:
        names = ctx.view.collection_names(db)
        flt = cmd.get("filter") or {}
        docs = [
            {"name": n, "type": "collection", "options": {}, "info": {"readOnly": False}}
            for n in names
            if flt.get("name") in (None, n)
        ]
        if cmd.get("nameOnly"):
            docs = [{"name": d["name"], "type": "collection"} for d in docs]
        batch = (cmd.get("cursor") or {}).get("batchSize")
        return self._cursor_reply(f"{db}.$cmd.listCollections", docs, batch, False)

    def list_databases(self, ctx: Context, db: str, cmd: Doc) -> Doc:
        names = list(self.main.list_database_names())
        dbs = [{"name": n, "sizeOnDisk": 8192, "empty": False} for n in names]
        if cmd.get("nameOnly"):
            dbs = [{"name": n} for n in names]
        return {"databases": dbs, "totalSize": 8192 * len(names), "ok": 1}

    def list_indexes(self, ctx: Context, db: str, cmd: Doc) -> Doc:
        name = cmd["listIndexes"]
        if name not in ctx.view.collection_names(db):
            raise CommandError(26, f"ns does not exist: {db}.{name}")
        docs = [dict(ix) for ix in ctx.view.collection(db, name).list_indexes()]
        batch = (cmd.get("cursor") or {}).get("batchSize")
        return self._cursor_reply(f"{db}.{name}", docs, batch, False)

    def create_indexes(self, ctx: Context, db: str, cmd: Doc) -> Doc:
        coll = ctx.view.collection(db, cmd["createIndexes"])
        before = len(list(coll.list_indexes()))
        for spec in cmd.get("indexes", []):
            options = {k: v for k, v in spec.items() if k in ("name", "unique", "sparse")}
            coll.create_index(list(spec["key"].items()), **options)
        after = len(list(coll.list_indexes()))
        return {
            "numIndexesBefore": before,
            "numIndexesAfter": after,
            "createdCollectionAutomatically": before == 0,
            "ok": 1,
        }

    def drop_indexes(self, ctx: Context, db: str, cmd: Doc) -> Doc:
        name = cmd["dropIndexes"]
        if name not in ctx.view.collection_names(db):
            raise CommandError(26, "ns not found")
        coll = ctx.view.collection(db, name)
        index: Any = cmd.get("index")
        before = len(list(coll.list_indexes()))
        try:
            if index == "*":
                coll.drop_indexes()
            else:
                coll.drop_index(index if isinstance(index, str) else list(index.items()))
        except mongomock.OperationFailure as exc:
            raise CommandError(27, str(exc)) from None
        return {"nIndexesWas": before, "ok": 1}


def _index_keys(coll: Any, flt: Doc, sort: Doc, docs: list[Doc]) -> list[Doc]:
    """``returnKey``: each document reduced to the keys of the index the query used, or ``{}``
    when it used none (MongoDB manual, "cursor.returnKey()"). The index is the first whose
    leading field the filter or the sort names, as a planner with one candidate would pick."""
    wanted = [k for k in list(flt) + list(sort) if not str(k).startswith("$")]
    fields: list[str] = []
    for index in coll.list_indexes():
        keys = list(index["key"])
        if keys and keys[0] in wanted:
            fields = keys
            break
    return [{f: doc[f] for f in fields if f in doc} for doc in docs]


def _project(coll: Any, doc: Doc, fields: Doc | None) -> Doc | None:
    """The stored document with ``doc``'s ``_id``, through the projection ``fields``."""
    found: Doc | None = coll.find_one({"_id": doc["_id"]}, fields)
    return found


def _project_document(doc: Doc, fields: Doc | None) -> Doc | None:
    """``doc`` (no longer stored as it was) through the projection ``fields``."""
    if fields is None:
        return doc
    scratch: Any = mongomock.MongoClient()["scratch"]["projection"]
    scratch.insert_one(copy.deepcopy(doc))
    return _project(scratch, doc, fields)
