"""CurveZMQ on every link (`security: {mode: curve, keys: DIR}`).

A node's inbox is a CURVE server with the node's secret key; its context runs a ZAP handler
(`NodeAuthenticator`) that accepts only the public keys of the topology's nodes and gives
each accepted connection that node's name as ZMQ User-Id. Every outbox is a CURVE client
with its own node's key pair and the destination's public key. The inbox then checks that a
message's header `src` equals the User-Id of its frames (`CurveServer.check_sender`), so a
node cannot speak in another node's name. Connections refused (an unknown key, or a peer
without CURVE) are counted in `NodeAuthenticator.refused` and logged, at most once a second
per peer. Encryption and authentication are libzmq's; nothing here touches the crypto.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from mpsl.topology import Topology
from nodes.keys import load_pair, load_public

log = logging.getLogger(__name__)

ZAP_DOMAIN = "mpsl"
LOG_EVERY_S = 1.0  # per peer
# handshake failures seen by the inbox's monitor before any ZAP request: no or another mechanism
_NO_CURVE = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
_WATCH_POLL_MS = 200


class NodeAuthenticator(ThreadAuthenticator):
    """ZAP handler of one node's context: the allow-list of public keys, key -> node name."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], allowed: Mapping[bytes, str],
                 owner: str = "") -> None:
        super().__init__(ctx, log=log)
        self.names = {bytes(k): n for k, n in allowed.items()}  # z85 public key -> node name
        self.owner = owner
        self.refused = 0
        self._last_log: dict[str, float] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        super().start()
        self.configure_curve_callback(ZAP_DOMAIN, self)

    def callback(self, domain: str, key: bytes) -> bool:
        """The credentials provider: `key` (z85) is one of the topology's nodes."""
        return key in self.names

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self.names[z85.encode(client_public_key)]

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        await super().handle_zap_message(msg)
        if len(msg) >= 6 and msg[5] == b"CURVE" and not (
                len(msg) == 7 and len(msg[6]) == 32 and z85.encode(msg[6]) in self.names):
            self.refuse(msg[3].decode("utf-8", "replace"), "unknown CURVE key")

    def refuse(self, peer: str, why: str) -> None:
        """Count one refused connection attempt; log it unless `peer` was logged < 1 s ago."""
        now = time.monotonic()
        with self._lock:
            self.refused += 1
            refused = self.refused
            if now - self._last_log.get(peer, -LOG_EVERY_S) < LOG_EVERY_S:
                return
            self._last_log[peer] = now
        log.warning("%s: refused a connection from %s: %s (%d refused so far)",
                    self.owner or "inbox", peer, why, refused)


class CurveServer:
    """The CURVE server side of one inbox socket: keys, ZAP domain, and a watch (a monitor
    thread) that counts peers failing the handshake without reaching ZAP (no CURVE)."""

    def __init__(self, public: bytes, secret: bytes, auth: NodeAuthenticator) -> None:
        self.public, self.secret, self.auth = public, secret, auth
        self._monitor: zmq.Socket[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        """Make `sock` a CURVE server; call before bind."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.zap_domain = ZAP_DOMAIN.encode()
        sock.curve_server = True
        self._monitor = sock.get_monitor_socket(_NO_CURVE)
        self._thread = threading.Thread(target=self._watch, name="curve-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        mon = self._monitor
        assert mon is not None
        while not self._stop.is_set():
            try:
                if not mon.poll(_WATCH_POLL_MS):
                    continue
                event = recv_monitor_message(mon)
            except zmq.ZMQError:
                return
            where = event["endpoint"].decode("utf-8", "replace")
            self.auth.refuse(where, "a peer without CURVE failed the handshake")

    def check_sender(self, frame: object, src: str) -> str | None:
        """Why a message whose header says `src` is refused, or None: `frame` (a zmq.Frame)
        must carry the User-Id that ZAP gave its connection, and it must be `src`."""
        try:
            user = frame.get("User-Id")  # type: ignore[attr-defined]
        except (AttributeError, zmq.ZMQError):
            user = None
        if user != src:
            return f"header src {src!r} but the connection's key is {user!r}'s"
        return None

    def release(self, sock: zmq.Socket[bytes]) -> None:
        """Stop the watch; call before closing `sock`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2 * _WATCH_POLL_MS / 1000 + 1)
        if self._monitor is not None:
            if not sock.closed:
                sock.disable_monitor()
            self._monitor.close(linger=0)
        self._thread = self._monitor = None


class CurveClient:
    """The CURVE client side of one outbox socket: its node's key pair, the server's key."""

    def __init__(self, public: bytes, secret: bytes, server_public: bytes) -> None:
        self.public, self.secret, self.server_public = public, secret, server_public

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        """Make `sock` a CURVE client; call before connect."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.server_public


class NodeSecurity:
    """One node's security: in mode curve, its keys, its peers' public keys and its context's
    authenticator (started here, `stop` before the context terminates); in mode none,
    `server` and `client` give None (plain sockets)."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], topo: Topology, name: str) -> None:
        self.name = name
        self.auth: NodeAuthenticator | None = None
        self._running = False
        spec = topo.security
        if spec.mode != "curve" or spec.keys is None:
            return
        self.keys = spec.keys
        self.public, self.secret = load_pair(spec.keys, name)
        self.peers = {n: load_public(spec.keys, n) for n in topo.node_names()}
        self.auth = NodeAuthenticator(ctx, {k: n for n, k in self.peers.items()}, owner=name)
        self.auth.start()
        self._running = True

    @property
    def refused(self) -> int:
        """Connection attempts refused so far (0 without CURVE)."""
        return 0 if self.auth is None else self.auth.refused

    def server(self) -> CurveServer | None:
        """The CURVE server for this node's inbox (None: plain)."""
        return None if self.auth is None else CurveServer(self.public, self.secret, self.auth)

    def client(self, dst: str) -> CurveClient | None:
        """The CURVE client for this node's outbox to `dst` (None: plain)."""
        if self.auth is None:
            return None
        return CurveClient(self.public, self.secret, self.peers[dst])

    def stop(self) -> None:
        """Stop the authenticator (its sockets belong to the node's context)."""
        if self.auth is not None and self._running:
            self._running = False
            self.auth.stop()
