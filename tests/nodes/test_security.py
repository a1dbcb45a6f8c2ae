"""Tests for nodes.security: CURVE inboxes accept only the topology's keys, a header's `src`
must be its connection's key, refusals are counted and logged, and the bytes on the wire are
encrypted."""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import zmq

from mpsl.actions import Msg
from nodes.keys import load_pair, load_public, write_keys
from nodes.link import Inbox, Outbox
from nodes.node import Node
from nodes.security import CurveClient, CurveServer, NodeAuthenticator
from nodes.wire import Kind, Message
from tests.nodes.conftest import small_topology

pytestmark = pytest.mark.timeout(60)

PATTERN = b"\xde\xad\xbe\xefMPSL-SECRET!"  # 16 bytes no header or key can hold by chance


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Pairs for nodes a and b (the topology's folder) and for a rogue (another folder)."""
    root = tmp_path_factory.mktemp("keys")
    write_keys(root / "topo", ["a", "b"])
    write_keys(root / "rogue", ["rogue"])
    return root / "topo", root / "rogue"


class Net:
    """A context with b's authenticator running; every socket made here is closed at the end."""

    def __init__(self, topo_keys: Path) -> None:
        self.keys = topo_keys
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        allowed = {load_public(topo_keys, n): n for n in ("a", "b")}
        self.auth = NodeAuthenticator(self.ctx, allowed, owner="b")
        self.auth.start()
        self.made: list[Inbox | Outbox] = []

    def inbox(self, curve: bool = True) -> Inbox:
        server = CurveServer(*load_pair(self.keys, "b"), self.auth) if curve else None
        self.made.append(Inbox(self.ctx, "tcp://127.0.0.1:0", known_senders={"a", "b"},
                               curve=server))
        return self.made[-1]  # type: ignore[return-value]

    def client(self, folder: Path, name: str) -> CurveClient:
        return CurveClient(*load_pair(folder, name), load_public(self.keys, "b"))

    def outbox(self, addr: str, curve: CurveClient | None = None) -> Outbox:
        self.made.append(Outbox(self.ctx, addr, name="a->b", curve=curve))
        return self.made[-1]  # type: ignore[return-value]

    def close(self) -> None:
        for m in reversed(self.made):
            if isinstance(m, Outbox):
                m.close(drain=False, timeout=1)
            else:
                m.close()
        self.auth.stop()
        self.ctx.destroy(linger=0)


@pytest.fixture
def net(keys: tuple[Path, Path]) -> Iterator[Net]:
    n = Net(keys[0])
    try:
        yield n
    finally:
        n.close()


def _msg(src: str = "a", seq: int = 1, payload: bytes = b"\x01" * 64) -> Message:
    x = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    return Message(kind=Kind.ACT, src=src, owner=0, iter=0, mb=0, seq=seq, tensors={"x": x})


def _wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    return cond()


def test_allowed_key_delivers_and_src_is_its_node(net: Net, keys: tuple[Path, Path]) -> None:
    ib = net.inbox()
    ob = net.outbox(ib.address, net.client(keys[0], "a"))
    for i in range(20):
        ob.send(_msg(seq=i))
    got = [ib.recv(timeout=5) for _ in range(20)]
    assert [m.seq for m in got] == list(range(20)) and {m.src for m in got} == {"a"}
    assert bytes(got[0].tensors["x"].numpy()) == b"\x01" * 64
    assert ib.rejected == 0 and net.auth.refused == 0


def test_handshake_cost_is_a_one_off(net: Net, keys: tuple[Path, Path]) -> None:
    """First message (connect + CURVE handshake + ZAP) against later ones, CURVE and plain."""
    def first_and_next(curve: bool) -> tuple[float, float]:
        ib = net.inbox(curve)
        t0 = time.perf_counter()
        ob = net.outbox(ib.address, net.client(keys[0], "a") if curve else None)
        ob.send(_msg(seq=0))
        ib.recv(timeout=5)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(50):
            ob.send(_msg(seq=i + 1))
            ib.recv(timeout=5)
        return first, (time.perf_counter() - t0) / 50

    curve_first, curve_next = first_and_next(True)
    plain_first, plain_next = first_and_next(False)
    print(f"first message: curve {curve_first * 1e3:.2f} ms, plain {plain_first * 1e3:.2f} ms;"
          f" later: curve {curve_next * 1e6:.0f} us, plain {plain_next * 1e6:.0f} us")
    assert curve_first < 2.0 and curve_next < 0.05


def test_peer_without_key_cannot_deliver(net: Net, caplog: pytest.LogCaptureFixture) -> None:
    ib = net.inbox()
    ob = net.outbox(ib.address)  # plain PUSH: NULL mechanism
    ob.send(_msg())
    with caplog.at_level(logging.WARNING, logger="nodes.security"), \
            pytest.raises(TimeoutError):
        ib.recv(timeout=1.0)
    assert _wait_for(lambda: net.auth.refused >= 1)
    assert ib.received == 0
    assert any("without CURVE" in r.getMessage() for r in caplog.records)


def test_unknown_key_cannot_deliver_and_is_logged_with_its_address(
        net: Net, keys: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    ib = net.inbox()
    with caplog.at_level(logging.WARNING, logger="nodes.security"):
        ob = net.outbox(ib.address, net.client(keys[1], "rogue"))
        ob.send(_msg())
        with pytest.raises(TimeoutError):
            ib.recv(timeout=1.5)
        assert _wait_for(lambda: net.auth.refused >= 1)
    assert ib.received == 0
    lines = [r.getMessage() for r in caplog.records if "unknown CURVE key" in r.getMessage()]
    assert lines and "127.0.0.1" in lines[0]
    # libzmq retries the refused connection; the log says so at most once a second per peer
    assert len(lines) <= 3 and net.auth.refused >= len(lines)


def test_header_src_must_be_the_connections_node(net: Net, keys: tuple[Path, Path]) -> None:
    ib = net.inbox()
    ob = net.outbox(ib.address, net.client(keys[0], "a"))
    ob.send(_msg(src="b", seq=1))  # a speaking in b's name: b is a known sender
    ob.send(_msg(src="a", seq=2))
    msg = ib.recv(timeout=5)
    assert (msg.src, msg.seq) == ("a", 2) and ib.rejected == 1


def test_refusals_are_counted_and_logged_once_a_second_per_peer(
        caplog: pytest.LogCaptureFixture) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        auth = NodeAuthenticator(ctx, {}, owner="b")  # not started: refuse() needs no thread
        with caplog.at_level(logging.WARNING, logger="nodes.security"):
            for _ in range(5):
                auth.refuse("10.0.0.1", "unknown CURVE key")
            auth.refuse("10.0.0.2", "unknown CURVE key")
        assert auth.refused == 6
        peers = [r.getMessage().split(" from ")[1].split(":")[0] for r in caplog.records]
        assert peers == ["10.0.0.1", "10.0.0.2"]
    finally:
        ctx.term()


class Relay:
    """A TCP relay on 127.0.0.1 that records the bytes going from its client to `port`."""

    def __init__(self, port: int) -> None:
        self.port, self.captured, self._stop = port, bytearray(), threading.Event()
        self._listen = socket.create_server(("127.0.0.1", 0))
        self._listen.settimeout(0.1)
        self.address = f"tcp://127.0.0.1:{self._listen.getsockname()[1]}"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        socks: list[socket.socket] = []
        try:
            while not self._stop.is_set():
                try:
                    client = self._listen.accept()[0]
                    break
                except TimeoutError:
                    continue
            else:
                return
            server = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            socks = [client, server]
            while not self._stop.is_set():
                for s in select.select(socks, [], [], 0.1)[0]:
                    data = s.recv(1 << 16)
                    if not data:
                        return
                    if s is client:
                        self.captured += data
                    (server if s is client else client).sendall(data)
        finally:
            for s in socks:
                s.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._listen.close()


@pytest.mark.parametrize("curve", [True, False])
def test_tensor_bytes_never_cross_the_wire_in_clear(
        net: Net, keys: tuple[Path, Path], curve: bool) -> None:
    ib = net.inbox(curve)
    relay = Relay(int(ib.address.rsplit(":", 1)[1]))
    try:
        ob = net.outbox(relay.address, net.client(keys[0], "a") if curve else None)
        ob.send(_msg(payload=PATTERN * 256))
        msg = ib.recv(timeout=5)
        assert bytes(msg.tensors["x"].numpy()) == PATTERN * 256
    finally:
        relay.close()
    assert len(relay.captured) > 4096  # the tensor did pass through the relay
    # plain: the capture shows the tensor (the check works); CURVE: not a single copy
    assert (PATTERN in relay.captured) is not curve


def test_nodes_of_a_curve_topology_talk(tmp_path: Path, shut: Callable) -> None:
    topo, plan = small_topology(1, security={"mode": "curve", "keys": str(tmp_path)})
    write_keys(tmp_path, topo.node_names())
    server, owner = shut(Node(topo, plan, "node1")), shut(Node(topo, plan, "owner0"))
    owner.connect("node1", None)
    owner.send("node1", Msg.CONTROL, type="hello", trace=False)
    msg = server.recv_any("hello")
    assert (msg.src, msg.meta["type"]) == ("owner0", "hello")
    assert server.security.refused == 0 and server.inbox.rejected == 0
