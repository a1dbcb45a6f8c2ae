"""A CURVE run with rogues at its door: a process without a key, and one whose key is not on the
allow-list, send to the live compute node during training; nothing they send is delivered, the
node counts the refused connections, and the run ends with the weights of the same run without
them (norm none, same seed: exact)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nodes.keys import write_keys
from nodes.wire import Message
from tests.e2e.conftest import topology_doc

pytestmark = pytest.mark.timeout(180)

ROGUE = """
import sys, time, zmq, zmq.auth
address, server_key, rogue_secret = sys.argv[1:4]
ctx = zmq.Context()
sock = ctx.socket(zmq.PUSH)
sock.setsockopt(zmq.LINGER, 0)
if rogue_secret != "-":  # a CURVE client with a key of its own, not on the allow-list
    sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(rogue_secret)
    sock.curve_serverkey = zmq.auth.load_certificate(server_key)[0]
sock.connect(address)
for _ in range(30):  # whatever it sends, were it delivered, would be dropped as malformed
    try:  # a refused handshake can take the peer away between the poll and the send
        if sock.poll(0, zmq.POLLOUT):
            sock.send(b"rogue", flags=zmq.NOBLOCK)
    except zmq.Again:
        pass
    time.sleep(0.1)
ctx.destroy(linger=0)
"""

def _doc(keys: Path) -> dict:
    return topology_doc(owners=2, training={"epochs": 12},
                        security={"mode": "curve", "keys": str(keys)})


def test_rogues_without_an_allowed_key_cannot_deliver(run_topology, tmp_path: Path) -> None:
    keys, rogue = tmp_path / "keys", tmp_path / "rogue"
    quiet, out = run_topology(_doc(_keys(keys, rogue)))
    want = torch.load(out / "model.pt", weights_only=True)
    assert quiet["nodes"]["node1"]["refused_connections"] == 0

    doc = _doc(keys)  # fresh ports
    node1 = load_address(doc)
    rogues: list[subprocess.Popen[bytes]] = []

    def on_message(msg: Message) -> None:
        if msg.meta.get("type") == "start":
            for secret in ("-", str(rogue / "rogue.key_secret")):
                rogues.append(subprocess.Popen([sys.executable, "-c", ROGUE, node1,
                                                str(keys / "node1.key"), secret]))

    try:
        results, out = run_topology(doc, on_message=on_message)
        assert all(p.wait(timeout=30) == 0 for p in rogues)  # each ran to its end
    finally:
        for p in rogues:
            p.kill()
            p.wait(timeout=10)
    assert len(rogues) == 2
    got = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(got[k], want[k]) for k in want)  # no stop, nothing reached a model
    node = results["nodes"]["node1"]
    assert node["refused_connections"] >= 2  # each rogue's attempts: refused, counted
    assert node["rejected_messages"] == 0  # none got as far as the inbox
    log = (out / "logs" / "node1.log").read_text()
    assert "unknown CURVE key" in log and "without CURVE" in log


def _keys(keys: Path, rogue: Path) -> Path:
    write_keys(keys, ["aggregator", "node1", "owner0", "owner1"])
    write_keys(rogue, ["rogue"])
    return keys


def load_address(doc: dict) -> str:
    return next(c["address"] for c in doc["compute_nodes"] if c["name"] == "node1")
