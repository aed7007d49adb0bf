"""Query, update and aggregate semantics on mongomock, plus snapshot transactions.

mongomock supplies the hard part (matching, update operators, aggregation stages); this module
turns wire commands into its calls and replies shaped like mongod's. A transaction works on a
private copy of each collection it touches and is merged back on commit, so its writes stay
invisible to everyone else until then.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
from collections.abc import Callable
from typing import Any

import bson
import mongomock
from bson.int64 import Int64
from pymongo import ReturnDocument

from motor_otel.testing._errors import CommandError

Doc = dict[str, Any]


def _id_key(doc: Doc) -> bytes:
    return bson.encode({"_id": doc["_id"]})


class View:
    """Where a command reads and writes: the committed data or one transaction's snapshot."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def collection(self, db: str, name: str) -> Any:
        return self.client[db][name]

    def collection_names(self, db: str) -> list[str]:
        return list(self.client[db].list_collection_names())


class TransactionView(View):
    """Copy-on-first-touch snapshot of the collections one transaction uses."""

    def __init__(self, main: Any) -> None:
        super().__init__(mongomock.MongoClient())
        self._main = main
        # (db, coll) -> {id key: document as it was when copied}
        self.snapshots: dict[tuple[str, str], dict[bytes, Doc]] = {}
        self.created: set[tuple[str, str]] = set()

    def collection(self, db: str, name: str) -> Any:
        key = (db, name)
        coll = self.client[db][name]
        if key not in self.snapshots:
            source = self._main[db][name]
            docs = list(source.find({}))
            self.snapshots[key] = {_id_key(d): d for d in docs}
            for index in source.list_indexes():
                if index.get("unique") and index["name"] != "_id_":
                    coll.create_index(list(index["key"].items()), unique=True)
            if docs:
                coll.insert_many(copy.deepcopy(docs))
            if name not in self._main[db].list_collection_names():
                self.created.add(key)
        return coll

    def collection_names(self, db: str) -> list[str]:
        names = set(self._main[db].list_collection_names())
        names.update(n for (d, n) in self.snapshots if d == db)
        return sorted(names)

    def commit_into(self, main: Any) -> None:
        """Merge into the committed data; a document changed by someone else since our copy
        is a write conflict, as in mongod."""
        changes: list[tuple[Any, dict[bytes, Doc | None]]] = []
        for (db, name), before in self.snapshots.items():
            after = {_id_key(d): d for d in self.client[db][name].find({})}
            diff: dict[bytes, Doc | None] = {}
            for key in before.keys() | after.keys():
                old, new = before.get(key), after.get(key)
                if old != new:
                    diff[key] = new
            target = main[db][name]
            for key in diff:
                old = before.get(key)
                current = target.find_one({"_id": bson.decode(key)["_id"]})
                if current != old:
                    raise CommandError(
                        112,
                        "WriteConflict error: this operation conflicted with another operation.",
                        ["TransientTransactionError"],
                    )
            changes.append((target, diff))
        for db, name in self.created:
            if name not in main[db].list_collection_names():
                main[db].create_collection(name)
        for target, diff in changes:
            for key, new in diff.items():
                _id = bson.decode(key)["_id"]
                if new is None:
                    target.delete_one({"_id": _id})
                else:
                    target.replace_one({"_id": _id}, new, upsert=True)


def _duplicate(ns: str, coll: Any, doc: Doc, index: int) -> Doc:
    """mongod's E11000 write error: it quotes the duplicated key and returns it as keyValue."""
    key: Doc = {}
    if "_id" in doc and coll.find_one({"_id": doc["_id"]}, {"_id": 1}) is not None:
        key = {"_id": doc["_id"]}
    name = "_id_" if key else "unique index"
    quoted = ", ".join(f"{k}: {json.dumps(v, default=str)}" for k, v in key.items())
    return {
        "index": index,
        "code": 11000,
        "errmsg": f"E11000 duplicate key error collection: {ns} index: {name} dup key: {{ {quoted} }}",
        "keyPattern": {k: 1 for k in key},
        "keyValue": key,
    }


def _sort_spec(sort: Any) -> list[tuple[str, int]] | None:
    if not sort:
        return None
    return [(k, int(v)) for k, v in dict(sort).items()]


def _is_replacement(update: Any) -> bool:
    return isinstance(update, dict) and not any(str(k).startswith("$") for k in update)


class Engine:
    """Runs CRUD and catalogue commands against a :class:`View`. Callers hold :attr:`lock`."""

    def __init__(self) -> None:
        self.main: Any = mongomock.MongoClient()
        self.lock = threading.RLock()
        self._cursor_ids = itertools.count(1000)
        self._cursors: dict[int, tuple[str, list[Doc]]] = {}
        self.handlers: dict[str, Callable[[View, str, Doc], Doc]] = {
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

    # -- cursors -------------------------------------------------------------------------
    def _cursor_reply(self, ns: str, docs: list[Doc], batch_size: int | None, single: bool) -> Doc:
        size = len(docs) if batch_size in (None, 0) else int(batch_size)
        first, rest = docs[:size], docs[size:]
        cursor_id = 0
        if rest and not single:
            cursor_id = next(self._cursor_ids)
            self._cursors[cursor_id] = (ns, rest)
        return {"cursor": {"id": Int64(cursor_id), "ns": ns, "firstBatch": first}, "ok": 1}

    def get_more(self, view: View, db: str, cmd: Doc) -> Doc:
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

    def kill_cursors(self, view: View, db: str, cmd: Doc) -> Doc:
        killed = []
        for cursor_id in cmd.get("cursors", []):
            if self._cursors.pop(int(cursor_id), None) is not None:
                killed.append(cursor_id)
        return {"cursorsKilled": killed, "cursorsNotFound": [], "cursorsAlive": [], "ok": 1}

    # -- CRUD ------------------------------------------------------------------------------
    def insert(self, view: View, db: str, cmd: Doc) -> Doc:
        coll = view.collection(db, cmd["insert"])
        n, errors = 0, []
        for i, doc in enumerate(cmd.get("documents", [])):
            try:
                coll.insert_one(copy.deepcopy(doc))
                n += 1
            except mongomock.DuplicateKeyError:
                errors.append(_duplicate(f"{db}.{cmd['insert']}", coll, doc, i))
                if cmd.get("ordered", True):
                    break
        reply: Doc = {"n": n, "ok": 1}
        if errors:
            reply["writeErrors"] = errors
        return reply

    def find(self, view: View, db: str, cmd: Doc) -> Doc:
        coll = view.collection(db, cmd["find"])
        cursor = coll.find(cmd.get("filter") or {}, cmd.get("projection"))
        sort = _sort_spec(cmd.get("sort"))
        if sort:
            cursor = cursor.sort(sort)
        if cmd.get("skip"):
            cursor = cursor.skip(int(cmd["skip"]))
        limit = int(cmd.get("limit") or 0)
        if limit:
            cursor = cursor.limit(abs(limit))
        docs = list(cursor)
        single = bool(cmd.get("singleBatch")) or limit < 0
        return self._cursor_reply(f"{db}.{cmd['find']}", docs, cmd.get("batchSize"), single)

    def update(self, view: View, db: str, cmd: Doc) -> Doc:
        coll = view.collection(db, cmd["update"])
        n = modified = 0
        upserted: list[Doc] = []
        errors: list[Doc] = []
        for i, spec in enumerate(cmd.get("updates", [])):
            q, u = spec.get("q") or {}, spec.get("u")
            kwargs: Doc = {"upsert": bool(spec.get("upsert", False))}
            if spec.get("arrayFilters"):
                kwargs["array_filters"] = spec["arrayFilters"]
            try:
                if _is_replacement(u):
                    kwargs.pop("array_filters", None)
                    result = coll.replace_one(q, u, **kwargs)
                elif spec.get("multi"):
                    result = coll.update_many(q, u, **kwargs)
                else:
                    result = coll.update_one(q, u, **kwargs)
            except mongomock.DuplicateKeyError as exc:
                errors.append({"index": i, "code": 11000, "errmsg": f"E11000 {exc}"})
                break
            except mongomock.OperationFailure as exc:
                errors.append({"index": i, "code": exc.code or 2, "errmsg": str(exc)})
                break
            if result.upserted_id is not None:
                n += 1
                upserted.append({"index": i, "_id": result.upserted_id})
            else:
                n += result.matched_count
                modified += result.modified_count
        reply: Doc = {"n": n, "nModified": modified, "ok": 1}
        if upserted:
            reply["upserted"] = upserted
        if errors:
            reply["writeErrors"] = errors
        return reply

    def bulk_write(self, view: View, db: str, cmd: Doc) -> Doc:
        """MongoDB 8.0's client-level ``bulkWrite``, as one-op insert/update/delete commands."""
        namespaces = [str(info["ns"]).split(".", 1) for info in cmd.get("nsInfo", [])]
        counts = dict.fromkeys(("nInserted", "nMatched", "nModified", "nUpserted", "nDeleted"), 0)
        results: list[Doc] = []
        errors_only = bool(cmd.get("errorsOnly", False))
        for idx, op in enumerate(cmd.get("ops", [])):
            kind = next(k for k in ("insert", "update", "delete") if k in op)
            op_db, coll = namespaces[int(op[kind])]
            if kind == "insert":
                reply = self.insert(view, op_db, {"insert": coll, "documents": [op["document"]]})
                counts["nInserted"] += reply["n"]
            elif kind == "update":
                spec = {"q": op.get("filter") or {}, "u": op.get("updateMods")}
                spec |= {k: op[k] for k in ("multi", "upsert", "arrayFilters") if k in op}
                reply = self.update(view, op_db, {"update": coll, "updates": [spec]})
                upserted = reply.get("upserted")
                counts["nUpserted"] += len(upserted or [])
                counts["nMatched"] += 0 if upserted else reply["n"]
                counts["nModified"] += reply["nModified"]
            else:
                limit = 0 if op.get("multi") else 1
                reply = self.delete(
                    view,
                    op_db,
                    {"delete": coll, "deletes": [{"q": op.get("filter"), "limit": limit}]},
                )
                counts["nDeleted"] += reply["n"]
            error = (reply.get("writeErrors") or [None])[0]
            if error is not None:
                results.append(
                    {"ok": 0, "idx": idx, "code": error["code"], "errmsg": error["errmsg"]}
                )
                if cmd.get("ordered", True):
                    break
            elif not errors_only:
                result: Doc = {"ok": 1, "idx": idx, "n": reply["n"]}
                if kind == "update":
                    result["nModified"] = reply["nModified"]
                    if reply.get("upserted"):
                        result["upserted"] = {"_id": reply["upserted"][0]["_id"]}
                results.append(result)
        errors = sum(1 for r in results if r["ok"] == 0)
        cursor = {"id": Int64(0), "ns": "admin.$cmd.bulkWrite", "firstBatch": results}
        return {"cursor": cursor, "nErrors": errors, **counts, "ok": 1}

    def delete(self, view: View, db: str, cmd: Doc) -> Doc:
        coll = view.collection(db, cmd["delete"])
        n = 0
        for spec in cmd.get("deletes", []):
            q = spec.get("q") or {}
            if int(spec.get("limit", 0)) == 1:
                n += coll.delete_one(q).deleted_count
            else:
                n += coll.delete_many(q).deleted_count
        return {"n": n, "ok": 1}

    def find_and_modify(self, view: View, db: str, cmd: Doc) -> Doc:
        coll = view.collection(db, cmd["findAndModify"])
        query = cmd.get("query") or {}
        sort = _sort_spec(cmd.get("sort"))
        fields = cmd.get("fields")
        existing = coll.find_one(query, sort=sort)
        if cmd.get("remove"):
            if existing is not None:
                coll.delete_one({"_id": existing["_id"]})
            value = (
                existing if fields is None or existing is None else _project(coll, existing, fields)
            )
            return {"lastErrorObject": {"n": int(existing is not None)}, "value": value, "ok": 1}
        update = cmd.get("update")
        upsert = bool(cmd.get("upsert", False))
        return_new = bool(cmd.get("new", False))
        kwargs: Doc = {"projection": fields, "sort": sort, "upsert": upsert}
        kwargs["return_document"] = ReturnDocument.AFTER if return_new else ReturnDocument.BEFORE
        try:
            if _is_replacement(update):
                value = coll.find_one_and_replace(query, update, **kwargs)
            else:
                value = coll.find_one_and_update(query, update, **kwargs)
        except mongomock.DuplicateKeyError as exc:
            raise CommandError(11000, f"E11000 {exc}") from None
        last: Doc = {"n": 1 if existing is not None or upsert else 0}
        if existing is not None:
            last["updatedExisting"] = True
        elif upsert:
            last["updatedExisting"] = False
            inserted = coll.find_one(query, sort=sort) if value is None else value
            if inserted is not None and "_id" in inserted:
                last["upserted"] = inserted["_id"]
        return {"lastErrorObject": last, "value": value, "ok": 1}

    def aggregate(self, view: View, db: str, cmd: Doc) -> Doc:
        target = cmd["aggregate"]
        if not isinstance(target, str):
            raise CommandError(2, "database-level aggregate is not supported by the simulator")
        coll = view.collection(db, target)
        pipeline = list(cmd.get("pipeline") or [])
        try:
            docs = list(coll.aggregate(pipeline))
        except mongomock.OperationFailure as exc:
            raise CommandError(exc.code or 2, str(exc)) from None
        except NotImplementedError as exc:
            raise CommandError(2, f"simulator does not support this pipeline: {exc}") from None
        batch = (cmd.get("cursor") or {}).get("batchSize")
        return self._cursor_reply(f"{db}.{target}", docs, batch, False)

    def count(self, view: View, db: str, cmd: Doc) -> Doc:
        coll = view.collection(db, cmd["count"])
        query = cmd.get("query") or {}
        n = coll.count_documents(query) if query else coll.estimated_document_count()
        return {"n": n, "ok": 1}

    def distinct(self, view: View, db: str, cmd: Doc) -> Doc:
        coll = view.collection(db, cmd["distinct"])
        return {"values": coll.distinct(cmd["key"], cmd.get("query") or {}), "ok": 1}

    # -- catalogue -------------------------------------------------------------------------
    def create(self, view: View, db: str, cmd: Doc) -> Doc:
        name = cmd["create"]
        if name in view.collection_names(db):
            raise CommandError(48, f"Collection {db}.{name} already exists.")
        view.client[db].create_collection(name)
        return {"ok": 1}

    def drop(self, view: View, db: str, cmd: Doc) -> Doc:
        name = cmd["drop"]
        if name not in view.collection_names(db):
            raise CommandError(26, "ns not found")
        view.client[db].drop_collection(name)
        return {"ns": f"{db}.{name}", "nIndexesWas": 1, "ok": 1}

    def drop_database(self, view: View, db: str, cmd: Doc) -> Doc:
        view.client.drop_database(db)
        return {"dropped": db, "ok": 1}

    def list_collections(self, view: View, db: str, cmd: Doc) -> Doc:
        names = view.collection_names(db)
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

    def list_databases(self, view: View, db: str, cmd: Doc) -> Doc:
        names = list(self.main.list_database_names())
        dbs = [{"name": n, "sizeOnDisk": 8192, "empty": False} for n in names]
        if cmd.get("nameOnly"):
            dbs = [{"name": n} for n in names]
        return {"databases": dbs, "totalSize": 8192 * len(names), "ok": 1}

    def list_indexes(self, view: View, db: str, cmd: Doc) -> Doc:
        name = cmd["listIndexes"]
        if name not in view.collection_names(db):
            raise CommandError(26, f"ns does not exist: {db}.{name}")
        docs = [dict(ix) for ix in view.collection(db, name).list_indexes()]
        batch = (cmd.get("cursor") or {}).get("batchSize")
        return self._cursor_reply(f"{db}.{name}", docs, batch, False)

    def create_indexes(self, view: View, db: str, cmd: Doc) -> Doc:
        coll = view.collection(db, cmd["createIndexes"])
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

    def drop_indexes(self, view: View, db: str, cmd: Doc) -> Doc:
        name = cmd["dropIndexes"]
        if name not in view.collection_names(db):
            raise CommandError(26, "ns not found")
        coll = view.collection(db, name)
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


def _project(coll: Any, doc: Doc, fields: Doc) -> Doc | None:
    found: Doc | None = coll.find_one({"_id": doc["_id"]}, fields)
    return found
