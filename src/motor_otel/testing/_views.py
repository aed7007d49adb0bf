"""Where a command reads and writes: the latest commit, or one transaction's snapshot.

mongomock supplies matching, updates and aggregation; it keeps documents in store objects
(``ServerStore`` / ``DatabaseStore`` / ``CollectionStore``). A view hands it stand-ins for those
that read :mod:`._storage`:

- :class:`View`: the latest committed version of each document; a write is committed at once.
- :class:`TransactionView`: the versions as of the transaction's snapshot, overlaid with the
  documents the transaction wrote (kept only here until it commits, then published under one
  version). It never copies a collection.
- :class:`SnapshotView`: the versions as of one earlier commit, for a snapshot read outside a
  transaction (:mod:`._history`); it writes nothing.

mongomock updates a matched document in place; :class:`_Collection` gives it a private copy of
each document it is about to update instead, so no committed version changes under a snapshot.
Every collection a view's mongomock client hands out (``client[db][name]``, ``$lookup``'s) is
that class.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, cast

import mongomock
from bson.objectid import ObjectId
from mongomock import filtering as _filtering
from mongomock import helpers as _helpers

from motor_otel.testing._storage import Doc, Name, Storage, at

# mongomock's stubs type its classes as PyMongo's; ours extend its private behaviour.
_MONGOMOCK_CLIENT: Any = mongomock.MongoClient
_MONGOMOCK_DATABASE: Any = mongomock.Database
_MONGOMOCK_COLLECTION: Any = mongomock.Collection


def row_key(_id: Any) -> Any:
    """How mongomock keys a document in its store: its ``_id`` (a hashdict if a document)."""
    return _helpers.hashdict(_id) if isinstance(_id, dict) else _id


class View:
    """The latest committed data; each write is committed when it is made."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.client: Any = _Client(self)
        self._stores: dict[Name, _CollectionStore] = {}
        self._collections: dict[Name, _Collection] = {}

    def collection(self, db: str, name: str) -> Any:
        """mongomock's collection ``db.name`` as this view sees it (built once per view)."""
        coll = self._collections.get((db, name))
        if coll is None:
            database = self.client[db]
            coll = _Collection(database, name, _db_store=database._store)
            self._collections[(db, name)] = coll
        return coll

    def collection_names(self, db: str) -> list[str]:
        return sorted(n for (d, n) in list(self.storage.tables) if d == db and self.exists((d, n)))

    def store(self, name: Name) -> _CollectionStore:
        found = self._stores.get(name)
        if found is None:
            found = self._stores[name] = _CollectionStore(self, name)
        return found

    # -- what the stores ask -------------------------------------------------------------------
    def documents(self, name: Name) -> Iterator[Doc]:
        table = self.storage.tables.get(name)
        if table is None:
            return
        for chain in list(table.rows.values()):
            doc = chain[-1][1]
            if doc is not None:
                yield doc

    def get(self, name: Name, key: Any) -> Doc | None:
        table = self.storage.tables.get(name)
        chain = table.rows.get(key) if table is not None else None
        return chain[-1][1] if chain is not None else None

    def put(self, name: Name, key: Any, doc: Doc | None) -> None:
        self.storage.publish([(self.storage.table(name), key, doc)])

    def own(self, name: Name, doc: Doc) -> Doc:
        """A document mongomock is about to change in place: with no snapshot open nobody can
        see the old version, so in place is fine; otherwise a copy, written as the new one."""
        if not self.storage.snapshots_open:
            return doc
        mine = copy.deepcopy(doc)
        self.put(name, row_key(mine["_id"]), mine)
        return mine

    def indexes(self, name: Name, *, writing: bool = False) -> dict[str, Doc]:
        table = self.storage.table(name) if writing else self.storage.tables.get(name)
        return table.indexes if table is not None else {}

    def create(self, name: Name) -> None:
        self.storage.table(name).created = True

    def drop(self, name: Name) -> None:
        self.storage.drop(name)

    def exists(self, name: Name) -> bool:
        table = self.storage.tables.get(name)
        if table is not None and (table.created or table.indexes):
            return True
        return next(self.documents(name), None) is not None


class TransactionView(View):
    """One transaction: its snapshot of every collection, overlaid with its own writes."""

    def __init__(self, storage: Storage, snapshot: int | None = None) -> None:
        super().__init__(storage)
        self.snapshot = storage.open(snapshot)  # None: what is committed now
        self._closed = False
        self._writes: dict[Name, dict[Any, Doc | None]] = {}  # None: deleted
        self._created: dict[Name, dict[str, Doc]] = {}  # collections it created: their indexes
        self._indexes: dict[Name, dict[str, Doc]] = {}  # index changes to existing collections

    def documents(self, name: Name) -> Iterator[Doc]:
        table = self.storage.tables.get(name)
        mine = self._writes.get(name, {})
        seen: set[Any] = set()
        snapshot = self.snapshot
        if table is not None:
            for key, chain in list(table.rows.items()):
                if mine and key in mine:
                    seen.add(key)
                    doc = mine[key]
                else:
                    version, doc = chain[-1]  # the newest, unless committed after the snapshot
                    if version > snapshot:
                        doc = at(chain, snapshot)
                if doc is not None:
                    yield doc
        for key, doc in list(mine.items()):
            if doc is not None and key not in seen:
                yield doc

    def get(self, name: Name, key: Any) -> Doc | None:
        mine = self._writes.get(name)
        if mine is not None and key in mine:
            return mine[key]
        table = self.storage.tables.get(name)
        chain = table.rows.get(key) if table is not None else None
        return at(chain, self.snapshot) if chain is not None else None

    def put(self, name: Name, key: Any, doc: Doc | None) -> None:
        self._writes.setdefault(name, {})[key] = doc

    def own(self, name: Name, doc: Doc) -> Doc:
        key = row_key(doc["_id"])
        if self._writes.get(name, {}).get(key) is doc:
            return doc  # already this transaction's copy
        mine = copy.deepcopy(doc)
        self.put(name, key, mine)
        return mine

    def indexes(self, name: Name, *, writing: bool = False) -> dict[str, Doc]:
        if writing and name not in self._created and not View.exists(self, name):
            self._created[name] = {}  # createIndexes creates the collection, as on mongod
        if name in self._created:
            return self._created[name]
        if name in self._indexes:
            return self._indexes[name]
        committed = super().indexes(name)
        if writing:
            committed = self._indexes[name] = dict(committed)
        return committed

    def create(self, name: Name) -> None:
        self._created.setdefault(name, {})

    def drop(self, name: Name) -> None:
        raise NotImplementedError("dropping a collection inside a transaction")

    def exists(self, name: Name) -> bool:
        return name in self._created or super().exists(name)

    def collection_names(self, db: str) -> list[str]:
        names = set(super().collection_names(db))
        names.update(n for (d, n) in self._created if d == db)
        names.update(n for (d, n) in self._writes if d == db and self.exists((d, n)))
        return sorted(names)

    def commit(self) -> None:
        """Publish what this transaction wrote, and the collections it created, as one version.

        Index changes to collections that existed before are not applied (mongod refuses them
        inside a transaction: MongoDB manual, "Create Collections and Indexes in a Transaction").
        """
        for name, indexes in self._created.items():
            table = self.storage.table(name)
            table.created = True
            for index_name, index in indexes.items():
                table.indexes.setdefault(index_name, index)
        self.storage.publish(
            (self.storage.table(name), key, doc)
            for name, docs in self._writes.items()
            for key, doc in docs.items()
        )
        self.close()

    def close(self) -> None:
        """The transaction ended: its snapshot is released (idempotent)."""
        if not self._closed:
            self._closed = True
            self._writes.clear()
            self.storage.close(self.snapshot)


class SnapshotView(TransactionView):
    """A snapshot read outside a transaction (``find``, ``aggregate``, ``distinct`` with
    ``readConcern: {level: "snapshot"}``): the versions as of one commit, read-only. A write
    (an ``$out`` or ``$merge`` stage) is refused rather than kept where nobody would see it."""

    def put(self, name: Name, key: Any, doc: Doc | None) -> None:
        raise NotImplementedError("writing under readConcern 'snapshot' outside a transaction")

    def indexes(self, name: Name, *, writing: bool = False) -> dict[str, Doc]:
        if writing:
            self.put(name, None, None)
        return super().indexes(name)

    def create(self, name: Name) -> None:
        self.put(name, None, None)


class _Client(_MONGOMOCK_CLIENT):  # type: ignore[misc]
    """mongomock's client over a view: its databases are :class:`_Database`."""

    def __init__(self, view: View) -> None:
        super().__init__(_store=_ServerStore(view))
        self._view = view

    def get_database(self, name: str, *args: Any, **kwargs: Any) -> Any:
        db = self._database_accesses.get(name)
        if db is None:
            db = self._database_accesses[name] = _Database(self._view, self, name)
        return db


class _Database(_MONGOMOCK_DATABASE):  # type: ignore[misc]
    """mongomock's database over a view: every collection it hands out (to the engine, to
    ``$lookup``) is the view's :class:`_Collection`, so every write copies before it changes."""

    def __init__(self, view: View, client: _Client, name: str) -> None:
        super().__init__(client, name, _store=client._store[name])
        self._view = view

    def get_collection(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._view.collection(self.name, name)


class _Collection(_MONGOMOCK_COLLECTION):  # type: ignore[misc]
    """mongomock's collection over a view: an update works on private copies of the documents
    it matches, and a filter on one int or ObjectId ``_id`` reads that document only (as
    mongod's ``_id`` index would) instead of matching every document."""

    _own_next = False

    def _update(self, *args: Any, **kwargs: Any) -> Any:
        self._own_next = True  # the update's first _iter_documents yields what it changes
        try:
            return super()._update(*args, **kwargs)
        finally:
            self._own_next = False

    def _iter_documents(self, filter: Any) -> Any:
        own, self._own_next = self._own_next, False
        store = cast(_CollectionStore, self._store)
        found = self._by_id(store, filter)
        docs = super()._iter_documents(filter) if found is None else iter(found)
        return (store.own(doc) for doc in docs) if own else docs

    @staticmethod
    def _by_id(store: _CollectionStore, filter: Any) -> list[Doc] | None:
        """What a filter naming one ``_id`` can match, or None to match every document. An
        int missing under its own key may still equal a Decimal128 ``_id``: then None too."""
        value = filter.get("_id") if isinstance(filter, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, ObjectId)):
            return None
        doc = store.get(value)
        if doc is None:
            if isinstance(value, int):
                return None
            _filtering.filter_applies(filter, {})  # an invalid filter fails as with a scan
            return []
        return [doc] if _filtering.filter_applies(filter, doc) else []


class _CollectionStore:
    """Stands in for mongomock's ``CollectionStore``, reading and writing through a view."""

    def __init__(self, view: View, name: Name) -> None:
        self._view = view
        self._name = name
        self.name = name[1]

    @property
    def documents(self) -> Iterator[Doc]:
        return self._view.documents(self._name)

    def get(self, key: Any) -> Doc | None:
        return self._view.get(self._name, key)

    def own(self, doc: Doc) -> Doc:
        return self._view.own(self._name, doc)

    def __contains__(self, key: Any) -> bool:
        return self.get(key) is not None

    def __getitem__(self, key: Any) -> Doc:
        doc = self.get(key)
        if doc is None:
            raise KeyError(key)
        return doc

    def __setitem__(self, key: Any, doc: Doc) -> None:
        self._view.put(self._name, key, doc)

    def __delitem__(self, key: Any) -> None:
        if self.get(key) is None:
            raise KeyError(key)
        self._view.put(self._name, key, None)

    def __len__(self) -> int:
        return sum(1 for _ in self.documents)

    @property
    def is_empty(self) -> bool:
        return next(self.documents, None) is None

    @property
    def is_created(self) -> bool:
        return self._view.exists(self._name)

    @property
    def indexes(self) -> dict[str, Doc]:
        return self._view.indexes(self._name)

    @indexes.setter
    def indexes(self, value: dict[str, Doc]) -> None:
        indexes = self._view.indexes(self._name, writing=True)
        indexes.clear()
        indexes.update(value)

    def create_index(self, index_name: str, index: Doc) -> None:
        self._view.indexes(self._name, writing=True)[index_name] = index

    def drop_index(self, index_name: str) -> None:
        del self._view.indexes(self._name, writing=True)[index_name]

    def create(self) -> None:
        self._view.create(self._name)

    def drop(self) -> None:
        self._view.drop(self._name)


class _DatabaseStore:
    """Stands in for mongomock's ``DatabaseStore``: one database's collections in a view."""

    def __init__(self, view: View, db: str) -> None:
        self._view = view
        self._db = db

    def __getitem__(self, name: str) -> _CollectionStore:
        return self._view.store((self._db, name))

    def __contains__(self, name: str) -> bool:
        return self._view.exists((self._db, name))

    @property
    def _collections(self) -> dict[str, _CollectionStore]:  # mongomock's filtered listing
        return {n: self[n] for n in self.list_created_collection_names()}

    def list_created_collection_names(self) -> list[str]:
        return self._view.collection_names(self._db)

    def create_collection(self, name: str) -> _CollectionStore:
        self._view.create((self._db, name))
        return self[name]

    @property
    def is_created(self) -> bool:
        return bool(self.list_created_collection_names())


class _ServerStore:
    """Stands in for mongomock's ``ServerStore``: every database in a view."""

    def __init__(self, view: View) -> None:
        self._view = view
        self._databases: dict[str, _DatabaseStore] = {}

    def __getitem__(self, db: str) -> _DatabaseStore:
        found = self._databases.get(db)
        if found is None:
            found = self._databases[db] = _DatabaseStore(self._view, db)
        return found

    def __contains__(self, db: str) -> bool:
        return self[db].is_created

    def list_created_database_names(self) -> list[str]:
        dbs = {d for (d, _) in list(self._view.storage.tables)}
        return [d for d in sorted(dbs) if self[d].is_created]
