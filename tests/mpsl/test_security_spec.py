"""The topology's `security` field: defaults, the keys folder's path, and its one-line errors."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from mpsl.topology import SecuritySpec, TopologyError, load, parse

BASE: dict[str, Any] = {
    "model": {"name": "mlp"},
    "dataset": {"name": "digits"},
    "plan": {"cuts": [2], "micro_batches": 2},
    "data_owners": {"count": 2},
    "compute_nodes": [{"name": "server", "address": "tcp://127.0.0.1:5590"}],
}


def write(folder: Path, security: Any) -> Path:
    doc = copy.deepcopy(BASE)
    doc["security"] = security
    path = folder / "topo.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_default_is_plain() -> None:
    assert parse(BASE, "t.yaml").security == SecuritySpec("none", None)


def test_keys_relative_to_the_file_and_to_the_working_dir_with_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub" / "keys").mkdir(parents=True)
    path = write(tmp_path / "sub", {"mode": "curve", "keys": "keys"})
    assert load(path).security == SecuritySpec("curve", str(tmp_path / "sub" / "keys"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    topo = load(path, ["security.keys=mine"])
    assert Path(topo.security.keys or "").resolve() == (tmp_path / "mine").resolve()


def test_mode_none_does_not_need_the_keys_folder(tmp_path: Path) -> None:
    topo = load(write(tmp_path, {"mode": "none", "keys": "not-yet"}))
    assert topo.security == SecuritySpec("none", str(tmp_path / "not-yet"))


@pytest.mark.parametrize(("security", "field", "fragment"), [
    ({"mode": "tls"}, "security.mode", "got 'tls', expected one of none, curve"),
    ({"mode": "curve"}, "security.keys", "missing, expected a folder of key files"),
    ({"mode": "curve", "keys": "absent"}, "security.keys", "expected an existing folder"),
    ({"mode": "curve", "keys": 3}, "security.keys", "expected a non-empty string"),
    ({"mode": "curve", "key": "k"}, "security.key", "no such field (known: keys, mode)"),
    ("curve", "security", "expected a mapping"),
])
def test_errors_are_one_line_naming_file_and_field(
        tmp_path: Path, security: Any, field: str, fragment: str) -> None:
    path = write(tmp_path, security)
    with pytest.raises(TopologyError) as info:
        load(path)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{path}: field '{field}': ")
    assert fragment in text
