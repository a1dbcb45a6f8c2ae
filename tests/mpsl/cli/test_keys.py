"""`mpsl keys`: file names and modes, every node of a topology, JSON, one-line errors."""

from __future__ import annotations

import stat
from pathlib import Path

import zmq.auth

from tests.mpsl.cli.conftest import TOPOLOGY, write


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_for_named_nodes(cli, tmp_path):
    rc, out, err = cli("keys", "--out", tmp_path / "k", "owner0", "server")
    assert rc == 0 and err == ""
    assert "wrote 2 key pair(s)" in out
    files = sorted(p.name for p in (tmp_path / "k").iterdir())
    assert files == ["owner0.key", "owner0.key_secret", "server.key", "server.key_secret"]
    for name in ("owner0", "server"):
        pub, sec = tmp_path / "k" / f"{name}.key", tmp_path / "k" / f"{name}.key_secret"
        assert _mode(sec) == 0o600 and _mode(pub) == 0o644
        public, secret = zmq.auth.load_certificate(sec)
        assert secret is not None and zmq.auth.load_certificate(pub) == (public, None)
    assert zmq.auth.load_certificate(tmp_path / "k" / "owner0.key")[0] != \
        zmq.auth.load_certificate(tmp_path / "k" / "server.key")[0]


def test_keys_for_every_node_of_a_topology_into_its_keys_folder(cli, tmp_path):
    # the folder does not exist yet: `mpsl keys` makes it, although mode curve requires it
    topo = write(tmp_path, security={"mode": "curve", "keys": "keys"})
    js = cli.json("keys", "--topology", topo)
    assert js["out"] == str(tmp_path / "keys")
    assert [k["name"] for k in js["keys"]] == ["owner0", "owner1", "server", "aggregator"]
    for k in js["keys"]:
        assert Path(k["public"]).is_file() and _mode(Path(k["secret"])) == 0o600
    before = (tmp_path / "keys" / "server.key").read_bytes()
    cli.json("keys", "--topology", topo, "server")  # names restrict; a pair is replaced
    assert (tmp_path / "keys" / "server.key").read_bytes() != before


def test_keys_errors(cli, tmp_path):
    assert "give node names, or --topology" in cli.error("keys", "--out", tmp_path)
    plain = write(tmp_path, TOPOLOGY)
    assert "give --out DIR" in cli.error("keys", "--topology", plain)
    assert "not a node name" in cli.error("keys", "--out", tmp_path, "../x")
