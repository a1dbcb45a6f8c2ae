"""Tests for nodes.keys: writing pairs privately, and the check before any node starts."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from nodes.keys import KeyFileError, check_key_files, load_pair, load_public, write_keys
from tests.nodes.conftest import small_topology


def test_write_keys_private_secret_and_no_leftovers(tmp_path: Path) -> None:
    [(name, pub, sec)] = write_keys(tmp_path / "k", ["a", "a"])
    assert name == "a" and stat.S_IMODE(sec.stat().st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["a.key", "a.key_secret"]
    public, secret = load_pair(tmp_path / "k", "a")
    assert load_public(tmp_path / "k", "a") == public and len(secret) == 40


def test_check_key_files_names_the_missing_file(tmp_path: Path) -> None:
    topo, _ = small_topology(2, security={"mode": "curve", "keys": str(tmp_path)})
    write_keys(tmp_path, topo.node_names())
    check_key_files(topo)
    (tmp_path / "owner1.key_secret").unlink()
    check_key_files(topo, secrets_for=["owner0"])  # a node on another machine needs its own
    with pytest.raises(KeyFileError) as info:
        check_key_files(topo)
    text = str(info.value)
    assert text.startswith(f"{tmp_path / 'owner1.key_secret'}: CURVE key file missing")
    assert "mpsl keys --topology" in text and "\n" not in text
    (tmp_path / "node1.key").write_text("garbage\n")
    with pytest.raises(KeyFileError, match=r"node1\.key: CURVE key file unreadable"):
        check_key_files(topo, secrets_for=[])


def test_check_key_files_is_a_no_op_without_curve() -> None:
    topo, _ = small_topology(1)
    check_key_files(topo)
