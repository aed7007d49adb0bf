"""The wire side of the simulator: mockupdb speaks the protocol, one handler answers everything.

mockupdb serialises request handling under one lock and lets a connection thread die on bad
input; we replace its per-connection loop so connections run concurrently (a blocked fail point
blocks only its own connection) and malformed messages get an error reply or a closed socket.
"""

from __future__ import annotations

import itertools
import socket
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from bson.binary import Binary
from bson.int64 import Int64
from bson.timestamp import Timestamp
from mockupdb import OPCODES, MockupDB, OpMsg, mock_server_receive

from motor_otel.testing._clock import ClusterClock
from motor_otel.testing._engine import Context, Doc, Engine, HangUp
from motor_otel.testing._errors import (
    RETRYABLE_WRITE_CODES,
    TRANSIENT_TRANSACTION_CODES,
    CommandError,
    no_such_transaction,
)
from motor_otel.testing._failpoints import FailPoints
from motor_otel.testing._features import unsupported
from motor_otel.testing._history import History
from motor_otel.testing._locks import DocumentLocks
from motor_otel.testing._views import SnapshotView, TransactionView

_MAX_MESSAGE = 48_000_000
_RETRYABLE_WRITES = frozenset({"insert", "update", "delete", "findAndModify", "bulkWrite"})
# What a multi-document transaction may run (MongoDB manual, "Transactions and Operations");
# anything else is OperationNotSupportedInTransaction (263), as the transactions spec test
# count.json expects.
_IN_TRANSACTION = frozenset(
    {
        "aggregate", "distinct", "find", "getMore", "killCursors", "insert", "update", "delete",
        "findAndModify", "bulkWrite", "create", "createIndexes",
    }
)  # fmt: skip
_TXN_ENDING = frozenset({"commitTransaction", "abortTransaction"})
_WRITE_COMMANDS = _RETRYABLE_WRITES | _TXN_ENDING | {
    "create", "drop", "dropDatabase", "createIndexes", "dropIndexes",
}  # fmt: skip
_HELLO = frozenset({"hello", "ismaster", "isMaster"})
# What takes readConcern "snapshot" outside a transaction (MongoDB manual, "Read Concern
# "snapshot"", "Operations"; snapshot-sessions.md: find/aggregate/distinct).
_SNAPSHOT_READS = frozenset({"find", "aggregate", "distinct"})


def _wire_version(server_version: str) -> int:
    """The maxWireVersion mongod of that version reports (7.0: 21, 8.0: 25)."""
    major, minor = (int(p) for p in server_version.split(".")[:2])
    return 25 if (major, minor) >= (8, 0) else 21 if (major, minor) >= (7, 0) else 17


@dataclass(slots=True, eq=False)
class _Txn:
    number: int
    state: str  # "in_progress" | "committed" | "aborted"
    view: TransactionView | None


@dataclass(slots=True)
class _Session:
    """What the server remembers of one logical session (keyed by lsid)."""

    number: int = -1  # the highest txnNumber seen
    txn: _Txn | None = None  # the transaction ``number`` started, if it was one
    # The retryable write ``number``: its applied statements' results, by statement index.
    statements: dict[int, Doc] = field(default_factory=dict)


@dataclass(slots=True)
class _Connection:
    id: int
    member: int = 0  # 0 is the primary, then the secondaries
    app_name: str | None = None


@dataclass(slots=True)
class TransactionCounters:
    """Server-side transaction counts, as mongod's ``serverStatus.transactions`` reports them."""

    total_started: int = 0
    total_committed: int = 0
    total_aborted: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class _Protocol(MockupDB):  # type: ignore[misc]
    """mockupdb with a concurrent, crash-proof per-connection loop."""

    def __init__(self, simulator: SimulatedReplicaSet, host: str, port: int, member: int) -> None:
        super().__init__(port=port or None, auto_ismaster=False)
        self._address = (host, port or None)
        self._simulator = simulator
        self._member = member

    def _server_loop(self, client: socket.socket, client_addr: Any) -> None:
        conn = self._simulator._new_connection(self._member)
        try:
            while not self._stopped:
                try:
                    header = mock_server_receive(client, 16)
                except OSError:
                    return
                length, request_id, _, opcode = struct.unpack("<iiii", header)
                if length < 16 or length > _MAX_MESSAGE:
                    return  # not a MongoDB message: hang up rather than wait for 2 GB
                try:
                    body = mock_server_receive(client, length - 16)
                except OSError:
                    return
                try:
                    if opcode not in OPCODES:
                        raise ValueError(f"unsupported opcode {opcode}")
                    request = OPCODES[opcode].unpack(body, client, self, request_id)
                except Exception as exc:  # malformed body: answer like mongod, keep serving
                    bad = OpMsg({}, flags=0, _client=client, request_id=request_id, _server=self)
                    try:
                        bad.reply(CommandError(2, f"invalid message: {exc}").to_reply())
                    except OSError:
                        return
                    continue
                try:
                    self._simulator._handle(request, conn)
                except Exception:  # never let a connection thread die noisily: hang up
                    return
        finally:
            client.close()


class SimulatedReplicaSet:
    """A single-node MongoDB replica set (``rs0``) in this process, over the real wire protocol.

    Motor, PyMongo's ``AsyncMongoClient`` and ``MongoClient`` connect to :attr:`uri` unchanged and
    run transactions against it. ``configureFailPoint: "failCommand"`` behaves as on mongod, so
    retry code tested here runs unchanged against a real replica set.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        set_name: str = "rs0",
        # 8.0, not 8.2: MongoDB's suites have 8.2-only tests (runOnRequirements minServerVersion
        # 8.2) only in the CRUD spec, all 25 `*-rawdata.json` files; they need `rawData` (reads
        # and writes of a time-series collection's raw buckets), which neither the simulator (no
        # time-series collections) nor PyMongo 4.20 (no rawData option) has. 8.0's update
        # `sort` is simulated. Reporting 8.2 would only turn those skips into failures.
        server_version: str = "8.0.0",
        users: Mapping[str, str] | None = None,
        transaction_lifetime_limit_seconds: float = 60.0,
        secondaries: int = 0,
        # How long a snapshot read's version stays readable at its atClusterTime: mongod's
        # minSnapshotHistoryWindowInSeconds default (the simulator keeps fewer versions: _history).
        snapshot_history_seconds: float = 300.0,
    ) -> None:
        self.set_name = set_name
        self.users = dict(users or {})  # SASL PLAIN (authSource=$external), for credential tests
        self.server_version = server_version
        self._host = host
        self._port = port
        self._clock = ClusterClock()
        self._failpoints = FailPoints()
        lock = threading.RLock()
        # mongod aborts a transaction older than transactionLifetimeLimitSeconds (default 60).
        locks = DocumentLocks(
            lock, lifetime_limit=transaction_lifetime_limit_seconds, expire=self._expire
        )
        self._engine = Engine(lock, locks, self._failpoints)
        self._history = History(self._engine.storage, self._clock, snapshot_history_seconds)
        self._sessions: dict[bytes, _Session] = {}
        self.secondaries = secondaries
        self._data_bearing = 1 + secondaries  # members that acknowledge writes
        self._connection_ids = itertools.count(1)
        self.transactions = TransactionCounters()
        self._server: _Protocol | None = None
        self._secondary_servers: list[_Protocol] = []

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> SimulatedReplicaSet:
        if self._server is None:
            self._server = _Protocol(self, self._host, self._port, 0)
            self._server.run()
            for member in range(1, 1 + self.secondaries):
                secondary = _Protocol(self, self._host, 0, member)
                secondary.run()
                self._secondary_servers.append(secondary)
        return self

    def stop(self) -> None:
        if self._server is not None:
            for secondary in self._secondary_servers:
                secondary.stop()
            self._secondary_servers = []
            self._server.stop()
            self._server = None

    def __enter__(self) -> SimulatedReplicaSet:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> SimulatedReplicaSet:
        return self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("SimulatedReplicaSet is not started; use 'with' or start()")
        return (self._host, int(self._server.port))

    @property
    def uri(self) -> str:
        host, port = self.address
        return f"mongodb://{host}:{port}/?replicaSet={self.set_name}"

    def wait_for_blocked_writes(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Block until ``count`` writes outside transactions are waiting for a transaction that
        holds their document (True), or until ``timeout`` seconds pass (False).

        Lets a test see the wait mongod imposes ("In-progress Transactions and Write Conflicts")
        without sleeping: call it from a thread (``asyncio.to_thread``) while the write is sent.
        """
        with self._engine.lock:
            return self._engine.locks.wait_for_waiting(count, timeout)

    # -- request handling ----------------------------------------------------------------------
    @property
    def secondary_addresses(self) -> list[tuple[str, int]]:
        """The secondaries' addresses (``secondaries=N``): they answer hello as secondaries and
        serve reads from the same data, so a read preference can select them."""
        return [(self._host, int(s.port)) for s in self._secondary_servers]

    def _new_connection(self, member: int = 0) -> _Connection:
        return _Connection(next(self._connection_ids), member)

    def _handle(self, request: Any, conn: _Connection) -> None:
        try:
            command = dict(request.doc)
        except Exception:
            command = {}
        if not command:
            request.reply(self._stamp(CommandError(2, "empty command").to_reply()))
            return
        name = next(iter(command))
        if name in _HELLO:  # its appName decides whether a fail point applies to it
            app = ((command.get("client") or {}).get("application") or {}).get("name")
            if app is not None:
                conn.app_name = app
        if conn.member and name != "configureFailPoint" and name not in _HELLO:
            refusal = self._secondary_refusal(name, command)
            if refusal is not None:
                request.reply(self._stamp(refusal.to_reply()))
                return
        target = command.get(name)
        namespace = f"{command.get('$db', 'admin')}.{target}" if isinstance(target, str) else None
        action = self._failpoints.match(name, conn.app_name, namespace)
        if action is not None:
            if action.block_ms:
                time.sleep(action.block_ms / 1000)
            if action.close_connection:
                request.hangup()
                return
            if action.error_code is not None:
                labels = action.error_labels
                if labels is None:
                    labels = self._labels_for(name, command, int(action.error_code))
                err = CommandError(
                    int(action.error_code), f"Failing command {name} via failCommand"
                )
                err.labels = list(labels)
                request.reply(self._stamp(err.to_reply()))
                return
        if name in _HELLO:
            request.reply(self._hello(command, conn))
            return
        try:
            reply = self._run(name, command)
        except HangUp:  # onPrimaryTransactionalWrite: the write happened, the reply is lost
            request.hangup()
            return
        unsatisfiable = self._unsatisfiable(command)
        if unsatisfiable is not None and reply.get("ok") == 1:
            reply["writeConcernError"] = unsatisfiable
        if action is not None and action.write_concern_error is not None:
            reply["writeConcernError"] = dict(action.write_concern_error)
            labels = action.error_labels
            if labels is None:
                labels = self._write_concern_labels(name, command, action.write_concern_error)
            if labels:
                reply["errorLabels"] = list(labels)
        request.reply(self._stamp(reply))

    def _secondary_refusal(self, name: str, command: Doc) -> CommandError | None:
        """A secondary refuses writes (NotWritablePrimary, 10107) and reads that did not ask for
        a secondary (NotPrimaryNoSecondaryOk, 13435), as mongod's secondaries do (server
        discovery and monitoring spec, "not writable primary" and "node is recovering" errors)."""
        if name in _WRITE_COMMANDS:
            return CommandError(10107, "not primary")
        mode = (command.get("$readPreference") or {}).get("mode", "primary")
        if mode == "primary" and name not in ("ping", "buildInfo", "buildinfo", "endSessions"):
            return CommandError(13435, "not primary and secondaryOk=false")
        return None

    def _unsatisfiable(self, command: Doc) -> Doc | None:
        """The writeConcernError mongod adds when a write concern names more members than the set
        has, or a mode it does not know; the write itself is applied (MongoDB manual, "Write
        Concern", "w Option"; transactions spec test commit.json, "write concern error on
        commit")."""
        concern = command.get("writeConcern")
        w = concern.get("w") if isinstance(concern, dict) else None
        if isinstance(w, int) and not isinstance(w, bool) and w > self._data_bearing:
            return {
                "code": 100,
                "codeName": "UnsatisfiableWriteConcern",
                "errmsg": "Not enough data-bearing nodes",
            }
        if isinstance(w, str) and w != "majority":
            return {
                "code": 79,
                "codeName": "UnknownReplWriteConcern",
                "errmsg": f"No write concern mode named '{w}' found in replica set configuration",
            }
        return None

    def _labels_for(self, name: str, command: Doc, code: int) -> list[str]:
        """The labels mongod itself attaches to a command error when a fail point gives none.

        ``TransientTransactionError`` inside a transaction (transactions.md, "Transient
        Transaction Error": "the server adds the label"; spec test error-labels.json,
        "NotWritablePrimary errors contain transient label"); ``RetryableWriteError`` on a
        retryable write or commit/abort (retryable-writes.md, "RetryableWriteError Labels": 4.4+
        servers add it, only when the command carries a txnNumber).
        """
        in_txn = command.get("autocommit") is False
        if name in _TXN_ENDING:
            if code in RETRYABLE_WRITE_CODES:
                return ["RetryableWriteError"]
            return ["TransientTransactionError"] if code in TRANSIENT_TRANSACTION_CODES else []
        if in_txn:
            transient = TRANSIENT_TRANSACTION_CODES | RETRYABLE_WRITE_CODES
            return ["TransientTransactionError"] if code in transient else []
        if name in _RETRYABLE_WRITES and "txnNumber" in command and code in RETRYABLE_WRITE_CODES:
            return ["RetryableWriteError"]
        return []

    def _write_concern_labels(self, name: str, command: Doc, error: Doc) -> list[str]:
        """Labels for an ``ok: 1`` reply with a writeConcernError: ``RetryableWriteError`` for a
        retryable write, commit or abort whose writeConcernError code is retryable
        (retryable-writes.md, "RetryableWriteError Labels"), and never
        ``TransientTransactionError``: a writeConcernError is not a command error
        (transactions.md, "Command Error"), and inside a transaction no label at all (spec test
        error-labels.json, "do not add RetryableWriteError label to writeConcernError
        ShutdownInProgress that occurs within transaction")."""
        code = int(error.get("code", 0))
        if code not in RETRYABLE_WRITE_CODES or "txnNumber" not in command:
            return []
        if name in _TXN_ENDING or (
            name in _RETRYABLE_WRITES and command.get("autocommit") is not False
        ):
            return ["RetryableWriteError"]
        return []

    def _stamp(self, reply: Doc) -> Doc:
        ts = self._clock.tick()
        reply["$clusterTime"] = {
            "clusterTime": ts,
            "signature": {"hash": Binary(b"\x00" * 20, 0), "keyId": Int64(0)},
        }
        reply["operationTime"] = ts
        return reply

    def _hello(self, command: Doc, conn: _Connection) -> Doc:
        primary = "{}:{}".format(*self.address)
        hosts = [primary] + ["{}:{}".format(*a) for a in self.secondary_addresses]
        is_primary = conn.member == 0
        reply: Doc = {
            "helloOk": True,
            "ismaster": is_primary,
            "isWritablePrimary": is_primary,
            "secondary": not is_primary,
            "setName": self.set_name,
            "setVersion": 1,
            "hosts": hosts,
            "primary": primary,
            "me": hosts[conn.member] if conn.member < len(hosts) else primary,
            "maxBsonObjectSize": 16 * 1024 * 1024,
            "maxMessageSizeBytes": _MAX_MESSAGE,
            "maxWriteBatchSize": 100_000,
            "localTime": time.time(),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": conn.id,
            "minWireVersion": 0,
            "maxWireVersion": _wire_version(self.server_version),
            "readOnly": False,
            "ok": 1,
        }
        return self._stamp(reply)

    def _run(self, name: str, command: Doc) -> Doc:
        try:
            return self._dispatch(name, command)
        except HangUp:
            raise
        except CommandError as err:
            return err.to_reply()
        except Exception as exc:  # an engine bug must not kill the connection
            return CommandError(1, f"simulator internal error in {name}: {exc!r}").to_reply()

    def _dispatch(self, name: str, command: Doc) -> Doc:
        db = str(command.get("$db", "admin"))
        if name == "configureFailPoint":
            self._failpoints.configure(command)
            return {"ok": 1}
        if name in ("ping", "getParameter", "setParameter", "getCmdLineOpts"):
            return {"ok": 1}
        if name == "buildInfo" or name == "buildinfo":
            parts = [int(p) for p in self.server_version.split(".")]
            return {"version": self.server_version, "versionArray": [*parts, 0], "ok": 1}
        if name == "serverStatus":
            c = self.transactions
            return {
                "host": "{}:{}".format(*self.address),
                "transactions": {
                    "totalStarted": Int64(c.total_started),
                    "totalCommitted": Int64(c.total_committed),
                    "totalAborted": Int64(c.total_aborted),
                },
                "ok": 1,
            }
        if name in ("endSessions", "killAllSessions", "killSessions"):
            self._end_sessions(name, command)
            return {"ok": 1}
        if name == "saslStart":
            return self._sasl_plain(command)
        if name in _TXN_ENDING:
            return self._end_transaction(name, command)
        if name not in self._engine.handlers:
            raise CommandError(59, f"no such command: '{name}'")
        with self._engine.lock:
            ctx = self._context_for(name, command)
            try:
                reply = self._engine.run(name, ctx, db, command)
            except CommandError:
                # A failed command inside a transaction aborts it on the server (transactions.md,
                # "Handling command errors"; spec test errors.json, "write conflict commit").
                if isinstance(ctx.txn, _Txn):
                    self._abort(ctx.txn)
                raise
            finally:
                if isinstance(ctx.view, SnapshotView):
                    ctx.view.close()
            if isinstance(ctx.txn, _Txn) and reply.get("writeErrors"):
                self._abort(ctx.txn)  # a failed write aborts it too (spec test abort.json)
            if ctx.read_at is not None:  # in the cursor, or at top level for distinct
                (reply.get("cursor") or reply)["atClusterTime"] = ctx.read_at
            return reply

    def _sasl_plain(self, command: Doc) -> Doc:
        """SASL PLAIN, one round trip: enough for drivers to send real credentials."""
        if command.get("mechanism") != "PLAIN":
            raise CommandError(2, "the simulator supports authMechanism=PLAIN only")
        parts = bytes(command.get("payload", b"")).split(b"\0", 2)
        if len(parts) != 3:
            raise CommandError(18, "Authentication failed.")
        _authzid, user, password = parts
        if self.users.get(user.decode(errors="replace")) != password.decode(errors="replace"):
            raise CommandError(18, "Authentication failed.")
        return {"conversationId": 1, "done": True, "payload": b"", "ok": 1}

    # -- transactions and retryable writes ----------------------------------------------------
    def _context_for(self, name: str, command: Doc) -> Context:
        """Where the command runs, from its lsid, txnNumber and autocommit fields."""
        max_time = command.get("maxTimeMS")
        deadline = time.monotonic() + int(max_time) / 1000 if max_time else None
        lsid = command.get("lsid")
        if lsid is not None:
            self._engine.session_used(lsid)
        snapshot_read = self._snapshot_read(name, command, deadline)
        if snapshot_read is not None:
            return snapshot_read
        txn_number = command.get("txnNumber")
        if lsid is None or txn_number is None:
            return Context(self._engine.view, deadline=deadline)
        number = int(txn_number)
        session = self._sessions.setdefault(bytes(lsid["id"]), _Session())
        if command.get("autocommit") is not False:  # a retryable write (retryable-writes.md)
            if number < session.number:
                raise CommandError(
                    225,
                    f"Retryable write with txnNumber {number} is prohibited on session "
                    f"because a newer retryable write with txnNumber {session.number} has "
                    "already started on this session.",
                )
            if number > session.number:
                if session.txn is not None and session.txn.state == "in_progress":
                    self._abort(session.txn)
                session.number, session.txn, session.statements = number, None, {}
            statements = session.statements if name in _RETRYABLE_WRITES else None
            return Context(
                self._engine.view,
                statements=statements,
                transactional=True,
                deadline=deadline,
            )
        if name not in _IN_TRANSACTION:
            raise CommandError(263, f"Cannot run '{name}' in a multi-document transaction.")
        if command.get("startTransaction"):
            if number < session.number:
                raise CommandError(225, f"txnNumber {number} is less than last {session.number}")
            if number == session.number:
                raise CommandError(225, f"transaction {number} has already been started")
            if session.txn is not None and session.txn.state == "in_progress":
                self._abort(session.txn)
            txn = _Txn(number, "in_progress", TransactionView(self._engine.storage))
            session.number, session.txn, session.statements = number, txn, {}
            self._engine.locks.begin(txn)
            with self.transactions.lock:
                self.transactions.total_started += 1
            return Context(txn.view, txn=txn, transactional=True, deadline=deadline)  # type: ignore[arg-type]
        txn = session.txn  # type: ignore[assignment]
        if txn is None or txn.number != number or txn.state != "in_progress" or txn.view is None:
            raise no_such_transaction(number)
        return Context(txn.view, txn=txn, transactional=True, deadline=deadline)

    def _snapshot_read(self, name: str, command: Doc, deadline: float | None) -> Context | None:
        """A read with ``readConcern: {level: "snapshot"}`` outside a transaction: at its
        ``atClusterTime``, or at the current cluster time (returned as ``atClusterTime``).

        MongoDB manual, "Read Concern "snapshot"": outside a transaction only find, aggregate and
        distinct take it; any other command fails with InvalidOptions (72), as does
        ``atClusterTime`` with ``afterClusterTime`` (snapshot-sessions.md, "Server Errors").
        Which versions a time can still read: :mod:`._history`.
        """
        concern = command.get("readConcern")
        if not isinstance(concern, dict):
            return None
        # How mongod parses the read concern (its read_concern_args.cpp): InvalidOptions (72) for
        # both times, a null one or one without level snapshot, TypeMismatch (14) for a value
        # that is no timestamp.
        at = concern.get("atClusterTime")
        if at is not None and concern.get("level") != "snapshot":
            raise CommandError(
                72, "atClusterTime field can be set only if level is equal to snapshot"
            )
        if concern.get("level") != "snapshot":
            return None
        if command.get("autocommit") is False:
            if at is not None:  # a transaction's snapshot is always its start's
                raise unsupported("readConcern atClusterTime on a transaction")
            return None
        if name not in _SNAPSHOT_READS:
            raise CommandError(
                72, f'Command {name} does not support {{ readConcern: {{ level: "snapshot" }} }}'
            )
        if at is not None and "afterClusterTime" in concern:
            raise CommandError(72, "Can not specify both afterClusterTime and atClusterTime")
        if at is None:
            at, version = self._history.begin()
        elif not isinstance(at, Timestamp):
            raise CommandError(14, "readConcern.atClusterTime must be a timestamp")
        elif at == Timestamp(0, 0):
            raise CommandError(72, "atClusterTime cannot be a null timestamp")
        else:
            version = self._history.version_at(at)
        view = SnapshotView(self._engine.storage, version)
        return Context(view, deadline=deadline, read_at=at)

    def _end_sessions(self, name: str, command: Doc) -> None:
        """Ending or killing a session aborts its open transaction, releasing what it holds
        (MongoDB manual, "endSessions", "killSessions", "killAllSessions")."""
        if name == "killAllSessions":
            ids = list(self._sessions | self._engine.local_sessions)
        else:
            listed = command.get(name) or []
            ids = [bytes(s["id"]) for s in listed if isinstance(s, dict) and "id" in s]
        with self._engine.lock:
            for key in ids:
                session = self._sessions.get(key)
                txn = session.txn if session is not None else None
                if txn is not None and txn.state == "in_progress":
                    self._abort(txn)
                if name != "killAllSessions":
                    self._sessions.pop(key, None)
                self._engine.local_sessions.pop(key, None)

    def _abort(self, txn: _Txn) -> None:
        if txn.view is not None:
            txn.view.close()
        txn.state, txn.view = "aborted", None
        self._engine.locks.end(txn, committed=False)
        with self.transactions.lock:
            self.transactions.total_aborted += 1

    def _expire(self, txn: object) -> None:
        """mongod's transactionLifetimeLimitSeconds: an open transaction that old is aborted."""
        if isinstance(txn, _Txn) and txn.state == "in_progress":
            self._abort(txn)

    def _end_transaction(self, name: str, command: Doc) -> Doc:
        lsid, txn_number = command.get("lsid"), command.get("txnNumber")
        if lsid is None or txn_number is None:
            raise CommandError(2, f"{name} requires lsid and txnNumber")
        number = int(txn_number)
        with self._engine.lock:
            session = self._sessions.get(bytes(lsid["id"]))
            txn = session.txn if session is not None else None
            if txn is None or txn.number != number:
                raise no_such_transaction(number)
            if name == "abortTransaction":
                if txn.state == "committed":
                    raise CommandError(256, "Transaction has been committed")
                if txn.state == "aborted":
                    raise no_such_transaction(number)
                self._abort(txn)
                return {"ok": 1}
            if txn.state == "committed":
                return {"ok": 1}  # a retried commit of a committed transaction succeeds
            if txn.state == "aborted" or txn.view is None:
                raise no_such_transaction(number)
            txn.view.commit()
            txn.state, txn.view = "committed", None
            self._engine.locks.end(txn, committed=True)
            with self.transactions.lock:
                self.transactions.total_committed += 1
            return {"ok": 1}
