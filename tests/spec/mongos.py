"""Two simulated mongos routers in front of the simulated replica set, for the sharded-only files.

MongoDB's transaction suite has files that run only on a sharded cluster: they test what a driver
does with mongos (pinning a transaction's session to one mongos, unpinning it after a transient
error, sending the ``recoveryToken`` on commit). What the driver sees of mongos is small, and each
:class:`MongosProxy` gives it exactly that over the real wire protocol, forwarding everything else
to the one replica set behind both (so both routers see the same data and transactions):

- ``hello`` (and the legacy handshake over OP_QUERY) answered as mongos does: ``msg: "isdbgrid"``
  and no replica-set fields (the SDAM spec: a server whose hello has ``msg: "isdbgrid"`` is a
  Mongos; drivers then pin transactions, transactions.md "Mongos Pinning");
- every reply to a command in a transaction carries a ``recoveryToken`` (transactions.md
  "recoveryToken field": mongos returns one, and the driver sends the latest back with
  ``commitTransaction``/``abortTransaction``, so a commit retried on another mongos can finish);
- a ``commitTransaction`` reaching a router the transaction did not use is commit recovery: it
  can only report a decision already made (committed: success; none: NoSuchTransaction).

- a ``targetedFailPoint`` with ``closeConnection`` is held by the router the session is pinned
  to (mongos has fail points of its own; unified-test-format.md "targetedFailPoint"): that router
  hangs up on a matching command, the other serves it.

Not modelled: other per-router fail points (error replies come from the replica set's one fail
point, whose labels are mongod's) and shards themselves. A proxy forwards bytes in both directions on threads of its own, so it serves the sync
``MongoClient`` running on the event loop's thread as well as the async drivers.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any

import bson

_OP_REPLY, _OP_QUERY, _OP_MSG = 1, 2004, 2013
_MORE_TO_COME, _CHECKSUM = 1 << 1, 1 << 0
# hello fields that only a replica-set member reports.
_REPLICA_SET_FIELDS = frozenset(
    {
        "setName",
        "setVersion",
        "hosts",
        "passives",
        "arbiters",
        "primary",
        "me",
        "secondary",
        "arbiterOnly",
        "electionId",
        "lastWrite",
        "tags",
    }
)
_RECOVERY_TOKEN = {"recoveryShardId": "simulated-shard"}


def _hang_up(sock: socket.socket) -> None:
    """Close so that the peer sees it at once: shutdown first (close alone neither sends FIN
    nor wakes this process's other thread blocked reading the same socket)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _message(sock: socket.socket) -> tuple[int, int, int, bytes]:
    """(request id, response to, opcode, body) of the next message."""
    length, request_id, response_to, opcode = struct.unpack("<iiii", _read(sock, 16))
    return request_id, response_to, opcode, _read(sock, length - 16)


def _frame(request_id: int, response_to: int, opcode: int, body: bytes) -> bytes:
    return struct.pack("<iiii", 16 + len(body), request_id, response_to, opcode) + body


def _msg_command(body: bytes) -> tuple[int, dict[str, Any] | None]:
    """OP_MSG flags and its body document (section kind 0), if it has one first."""
    (flags,) = struct.unpack("<I", body[:4])
    if body[4] != 0:
        return flags, None
    (size,) = struct.unpack("<i", body[5:9])
    return flags, bson.decode(body[5 : 5 + size])


def _query_command(body: bytes) -> dict[str, Any] | None:
    """The command document of an OP_QUERY (the legacy handshake): flags, collection name
    (a C string), skip, return, then the document."""
    end = body.index(b"\x00", 4)
    start = end + 1 + 8
    (size,) = struct.unpack("<i", body[start : start + 4])
    return bson.decode(body[start : start + size])


def _as_mongos(reply: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in reply.items() if k not in _REPLICA_SET_FIELDS}
    out["msg"] = "isdbgrid"
    return out


def _is_hello_reply(doc: dict[str, Any]) -> bool:
    return "maxWireVersion" in doc and ("isWritablePrimary" in doc or "ismaster" in doc)


class _Cluster:
    """What the routers share: which transactions each has routed, which have committed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.routed: dict[tuple[bytes, int], set[int]] = {}  # transaction -> routers it used
        self.committed: set[tuple[bytes, int]] = set()


def _transaction(command: dict[str, Any]) -> tuple[bytes, int] | None:
    """(lsid, txnNumber) of a command sent in a transaction."""
    if command.get("autocommit") is not False or "lsid" not in command:
        return None
    return bson.encode(command["lsid"]), int(command.get("txnNumber", 0))


@dataclass
class _CloseConnection:
    """A ``failCommand`` fail point with ``closeConnection: true``, held by one router."""

    commands: frozenset[str]
    times: int | None  # None: alwaysOn
    app_name: str | None


class MongosProxy:
    """One mongos router: listens on its own port, forwards to ``upstream`` (host, port)."""

    def __init__(self, upstream: tuple[str, int], cluster: _Cluster, number: int) -> None:
        self.upstream = upstream
        self.cluster = cluster
        self.number = number
        self._fail_point: _CloseConnection | None = None
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = self._listener.getsockname()[:2]
        self._closed = False
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="mongos-accept", daemon=True).start()

    def configure_fail_point(self, command: dict[str, Any]) -> bool:
        """Hold a ``closeConnection`` failCommand fail point on this router only (what a
        ``targetedFailPoint`` sets on the mongos the session is pinned to). Other fail points
        are not ours: False, and the caller sends them to the replica set."""
        data, mode = command.get("data") or {}, command.get("mode")
        if mode == "off":
            with self._lock:
                self._fail_point = None
            return False
        keys = set(data) - {"failCommands", "closeConnection", "appName"}
        if (
            command.get("configureFailPoint") != "failCommand"
            or keys
            or not data.get("closeConnection")
        ):
            return False
        if mode == "alwaysOn":
            times = None
        elif isinstance(mode, dict) and set(mode) == {"times"}:
            times = int(mode["times"])
        else:
            return False
        with self._lock:
            self._fail_point = _CloseConnection(
                frozenset(data["failCommands"]), times, data.get("appName")
            )
        return True

    def _should_close(self, command_name: str, app_name: str | None) -> bool:
        """Whether this command, from a client named ``app_name``, meets the fail point."""
        with self._lock:
            fp = self._fail_point
            if fp is None or command_name not in fp.commands:
                return False
            if fp.app_name is not None and fp.app_name != app_name:
                return False
            if fp.times is not None:
                fp.times -= 1
                if fp.times <= 0:
                    self._fail_point = None
            return True

    def close(self) -> None:
        self._closed = True
        _hang_up(self._listener)
        with self._lock:
            for sock in self._sockets:
                _hang_up(sock)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                _hang_up(client)
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets.update((client, server))
            _Connection(self, client, server).start()


class _Connection:
    """One client connection through a router: a thread per direction."""

    def __init__(self, router: MongosProxy, client: socket.socket, server: socket.socket) -> None:
        self.router = router
        self.cluster = router.cluster
        self.client = client
        self.server = server
        self.send_to_client = threading.Lock()  # replies come from both threads
        self.pending: dict[int, tuple[str, tuple[bytes, int]]] = {}  # request id -> (name, txn)
        self.app_name: str | None = None  # from the handshake, as mongod takes it

    def start(self) -> None:
        for target in (self._requests, self._replies):
            threading.Thread(target=target, name="mongos-pump", daemon=True).start()

    def _pump(self, source: socket.socket, forward: Any) -> None:
        try:
            while True:
                forward(*_message(source))
        except (OSError, ConnectionError, struct.error):
            pass
        finally:
            for sock in (self.client, self.server):
                _hang_up(sock)
            with self.router._lock:
                self.router._sockets.difference_update((self.client, self.server))

    def _to_client(self, data: bytes) -> None:
        with self.send_to_client:
            self.client.sendall(data)

    def _requests(self) -> None:
        def forward(request_id: int, response_to: int, opcode: int, body: bytes) -> None:
            if opcode == _OP_MSG:
                command = _msg_command(body)[1]
            elif opcode == _OP_QUERY:
                command = _query_command(body)
            else:
                command = None
            if command:
                name = next(iter(command))
                if name.lower() in ("hello", "ismaster"):
                    app = (command.get("client") or {}).get("application") or {}
                    self.app_name = app.get("name", self.app_name)
                if self.router._should_close(name, self.app_name):
                    raise ConnectionError("closeConnection fail point")  # hangs up, no reply
            if opcode != _OP_MSG:
                command = None
            txn = _transaction(command) if command else None
            if command is not None and txn is not None:
                name = next(iter(command))
                if self._recover(request_id, name, txn):
                    return
                self.pending[request_id] = (name, txn)
            self.server.sendall(_frame(request_id, response_to, opcode, body))

        self._pump(self.client, forward)

    def _recover(self, request_id: int, name: str, txn: tuple[bytes, int]) -> bool:
        """A commit reaching a router the transaction never used is a recovery (transactions.md
        "recoveryToken field"): the router can only report a decision already made. No commit
        yet: NoSuchTransaction, labelled TransientTransactionError as mongos labels it. Returns
        whether the request was answered here."""
        with self.cluster.lock:
            routers = self.cluster.routed.setdefault(txn, set())
            new_here = self.router.number not in routers
            committed = txn in self.cluster.committed
            if not (new_here and name == "commitTransaction" and routers):
                routers.add(self.router.number)
                return False
        if committed:
            return False  # the decision is known: the replica set repeats it
        reply = {
            "ok": 0,
            "errmsg": "Transaction with the given recovery token was not committed",
            "code": 251,
            "codeName": "NoSuchTransaction",
            "errorLabels": ["TransientTransactionError"],
        }
        body = struct.pack("<I", 0) + b"\x00" + bson.encode(reply)
        self._to_client(_frame(0, request_id, _OP_MSG, body))
        return True

    def _replies(self) -> None:
        def forward(request_id: int, response_to: int, opcode: int, body: bytes) -> None:
            self._to_client(
                _frame(request_id, response_to, opcode, self._rewrite(response_to, opcode, body))
            )

        self._pump(self.server, forward)

    def _rewrite(self, response_to: int, opcode: int, body: bytes) -> bytes:
        if opcode == _OP_REPLY:  # the OP_QUERY handshake: flags, cursor, from, n, documents
            head, docs = body[:20], bson.decode_all(body[20:])
            if docs and _is_hello_reply(docs[0]):
                docs[0] = _as_mongos(docs[0])
            return head + b"".join(bson.encode(d) for d in docs)
        if opcode != _OP_MSG:
            return body
        flags, reply = _msg_command(body)
        pending = self.pending.pop(response_to, None)
        if reply is None or flags & _CHECKSUM:
            return body
        if _is_hello_reply(reply):
            reply = _as_mongos(reply)
        elif pending is not None:
            name, txn = pending
            if name == "commitTransaction" and reply.get("ok"):
                with self.cluster.lock:
                    self.cluster.committed.add(txn)
            reply["recoveryToken"] = _RECOVERY_TOKEN
        else:
            return body
        return struct.pack("<I", flags) + b"\x00" + bson.encode(reply)


class SimulatedMongos:
    """Two :class:`MongosProxy` routers in front of one replica set at ``upstream``."""

    def __init__(self, upstream: tuple[str, int], routers: int = 2) -> None:
        cluster = _Cluster()
        self.proxies = [MongosProxy(upstream, cluster, n) for n in range(routers)]

    @property
    def uri(self) -> str:
        """Every router, as a client with ``useMultipleMongoses: true`` connects."""
        hosts = ",".join(f"{host}:{port}" for host, port in (p.address for p in self.proxies))
        return f"mongodb://{hosts}/"

    @property
    def single_uri(self) -> str:
        """The first router only (``useMultipleMongoses: false``)."""
        host, port = self.proxies[0].address
        return f"mongodb://{host}:{port}/"

    def router(self, address: tuple[str, int]) -> MongosProxy:
        (found,) = [p for p in self.proxies if tuple(p.address) == tuple(address)]
        return found

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.close()
