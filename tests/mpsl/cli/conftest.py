"""Topology files and profiles for the CLI tests, and `mpsl ...` run in-process."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mpsl.cli import main

TOPOLOGY: dict[str, Any] = {
    "name": "cli",
    "model": {"name": "mlp", "norm": "none"},
    "dataset": {"name": "synthetic", "options": {"size": 256}},
    "training": {"batch_size": 16, "epochs": 2},
    "mode": "pipar",
    "plan": {"cuts": [2], "micro_batches": 2},
    "data_owners": {"count": 2, "uplink_mbps": 10, "downlink_mbps": 20},
    "compute_nodes": [{"name": "server", "address": "tcp://127.0.0.1:5590"}],
}
# deep enough that every error naming the file is far longer than 80 columns
LONG = "a-folder-name-long-enough-to-wrap-any-terminal/" * 3


def write(folder: Path, doc: dict[str, Any] | None = None, **changes: Any) -> str:
    """TOPOLOGY (or `doc`) with top-level sections replaced, written to folder/topo.yaml."""
    d = copy.deepcopy(doc or TOPOLOGY)
    d.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "topo.yaml"
    path.write_text(yaml.safe_dump(d))
    return str(path)


def profile_csv(folder: Path, layers: int = 4, name: str = "p.csv", **kw: Any) -> str:
    from planner.profile import Profile

    path = folder / name
    Profile.synthetic(layers, **kw).to_csv(path)
    return str(path)


class Cli:
    """`mpsl ARGS` through `main`, with what it printed."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        rc = main([str(a) for a in args])
        out, err = self.capsys.readouterr()
        return rc, out, err

    def json(self, *args: str) -> dict[str, Any]:
        rc, out, err = self(*args, "--format", "json")
        assert rc == 0, err
        data = json.loads(out)  # one object and nothing else on stdout
        assert isinstance(data, dict)
        return data

    def error(self, *args: str, code: int = 2) -> str:
        """The one error line of a failing command."""
        rc, out, err = self(*args)
        assert rc == code, (out, err)
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        return lines[0]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys)
