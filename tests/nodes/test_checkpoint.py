"""Checkpoints: a round trip with weights_only, atomic replacement (a writer killed mid-write
leaves the previous checkpoint loadable), and one-line refusals of torn or foreign files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nodes.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, save_checkpoint

STATE = {"copies": {"owner0": {"0.weight": torch.arange(6.0).reshape(2, 3)}},
         "optimizer": {"state": {0: {"momentum_buffer": torch.ones(3)}}, "param_groups": []},
         "rng": torch.get_rng_state(), "iteration": 7, "name": "node1"}


def save(path: Path, round_id: int = 3, **state: object) -> None:
    save_checkpoint(path, {**STATE, **state}, node="node1", digest="d", run_id="r",
                    round_id=round_id)


def test_round_trip(tmp_path: Path) -> None:
    path = checkpoint_path(tmp_path / "ckpt", "node1")
    save(path)
    got = load_checkpoint(path, node="node1", digest="d", run_id="r")
    assert got["round"] == 3 and got["run_id"] == "r"
    assert torch.equal(got["state"]["copies"]["owner0"]["0.weight"],
                       STATE["copies"]["owner0"]["0.weight"])
    assert got["state"]["iteration"] == 7 and torch.equal(got["state"]["rng"], STATE["rng"])
    assert [p.name for p in path.parent.iterdir()] == ["node1.ckpt"]  # no temporary left


@pytest.mark.parametrize("kw, message", [
    ({"node": "node2", "digest": "d"}, "a checkpoint of another node ('node1', expected 'node2')"),
    ({"node": "node1", "digest": "x"}, "a checkpoint of another digest ('d', expected 'x')"),
    ({"node": "node1", "digest": "d", "run_id": "q"},
     "a checkpoint of another run id ('r', expected 'q')"),
])
def test_a_foreign_checkpoint_is_refused_in_one_line(tmp_path: Path, kw, message) -> None:
    path = tmp_path / "node1.ckpt"
    save(path)
    with pytest.raises(CheckpointError, match=rf"^{path}: {message}$".replace("(", r"\(")
                       .replace(")", r"\)")):
        load_checkpoint(path, **kw)


def test_torn_missing_and_alien_files_are_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "node1.ckpt"
    with pytest.raises(CheckpointError, match=rf"^{path}: no checkpoint$"):
        load_checkpoint(path, node="node1", digest="d")
    save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"^{path}: torn or not a checkpoint \(\w+\)$"):
        load_checkpoint(path, node="node1", digest="d")
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a checkpoint of format 1"):
        load_checkpoint(path, node="node1", digest="d")


WRITER = """
import sys, torch
from nodes.checkpoint import save_checkpoint
big = {"w": torch.zeros(64 << 20, dtype=torch.uint8)}
print("ready", flush=True)
while True:  # rewrite until killed
    save_checkpoint(sys.argv[1], big, node="node1", digest="d", run_id="r", round_id=9)
"""


def test_a_writer_killed_mid_write_leaves_the_previous_checkpoint_whole(tmp_path: Path) -> None:
    path = tmp_path / "node1.ckpt"
    save(path, round_id=2)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 20
        while not any(p.name.startswith("node1.ckpt.tmp") for p in tmp_path.iterdir()):
            assert time.monotonic() < deadline, "the writer never started a write"
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)  # during a write: its temporary file exists
    finally:
        proc.kill()
        proc.wait(timeout=10)
    got = load_checkpoint(path, node="node1", digest="d")
    assert got["round"] in (2, 9)  # the previous one, or a later one written whole
    if got["round"] == 9:
        assert got["state"]["w"].numel() == 64 << 20
