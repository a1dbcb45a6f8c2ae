"""A node's round states: the last two kept in memory and on disk, read back exactly, refused
in one line when foreign; a node's copies saved and loaded with their optimizer state."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nodes.checkpoint import CheckpointError
from nodes.parts import make_copies
from nodes.recovery import KEEP, RoundStore, copies_state, load_copies_state
from tests.nodes.conftest import small_topology


def test_the_store_keeps_the_last_rounds_in_memory_and_on_disk(tmp_path: Path) -> None:
    store = RoundStore("node1", "d", tmp_path)
    t = torch.zeros(3)
    store.save(-1, {"t": t}, "run", disk=False)
    for r in range(4):
        t += 1  # the node goes on changing its tensors in place
        store.save(r, {"t": t}, "run")
    assert KEEP == 2 and sorted(store.memory) == [2, 3] and store.on_disk() == [2, 3]
    assert torch.equal(store.load(2, "run")["t"], torch.full((3,), 3.0))
    got = store.load(3, "run")
    got["t"] += 100  # a loaded state is the caller's to change
    assert torch.equal(store.load(3, "run")["t"], torch.full((3,), 4.0))
    restarted = RoundStore("node1", "d", tmp_path)  # a new process: from disk
    assert torch.equal(restarted.load(2, "run")["t"], torch.full((3,), 3.0))
    with pytest.raises(CheckpointError, match=r"node1.r1.ckpt: no checkpoint$"):
        restarted.load(1, "run")
    with pytest.raises(CheckpointError, match=r"another run id \('run', expected 'other'\)$"):
        restarted.load(3, "other")
    with pytest.raises(CheckpointError, match=r"another digest"):
        RoundStore("node1", "e", tmp_path).load(3, "run")
    (tmp_path / "node1.rx.ckpt").write_bytes(b"")  # not a round: ignored
    restarted.clear()
    assert restarted.on_disk() == [] and [p.name for p in tmp_path.iterdir()] == ["node1.rx.ckpt"]
    with pytest.raises(CheckpointError, match=r"no state of round 0 \(no checkpoint folder\)"):
        RoundStore("owner0", "", None).load(0, "")


def test_copies_come_back_with_their_optimizer_and_rng_state() -> None:
    topo, plan = small_topology(owners=2, training={
        "epochs": 1, "batch_size": 8, "lr": 0.1, "optimizer": "sgd", "momentum": 0.9,
        "seed": 0})
    copies = make_copies(topo, plan, [1], [0, 1])
    for c in copies.values():  # a step, so that the momentum buffers exist
        for p in c.module.parameters():
            p.grad = torch.ones_like(p)
        c.optimizer.step()
    saved = copies_state(copies)
    rng = torch.get_rng_state()
    twin = make_copies(topo, plan, [1], [0, 1])
    torch.rand(5)
    load_copies_state(twin, saved, "test")
    assert torch.equal(torch.get_rng_state(), rng)
    for key, c in copies.items():
        for a, b in zip(c.module.parameters(), twin[key].module.parameters()):
            assert torch.equal(a, b)
        sa, sb = c.optimizer.state_dict()["state"], twin[key].optimizer.state_dict()["state"]
        assert sa.keys() == sb.keys() and sa
        assert all(torch.equal(sa[i]["momentum_buffer"], sb[i]["momentum_buffer"]) for i in sa)
    with pytest.raises(CheckpointError, match=r"^test: a state of other parts or owners$"):
        load_copies_state(make_copies(topo, plan, [1], [0]), saved, "test")
    broken = {**saved, "copies": {k: {"module": {}, "optimizer": v["optimizer"]}
                                  for k, v in saved["copies"].items()}}
    with pytest.raises(CheckpointError, match=r"^test: a state that does not fit"):
        load_copies_state(twin, broken, "test")


def test_a_round_kept_in_memory_is_a_copy_on_the_cpu() -> None:
    from collections import OrderedDict

    from nodes.recovery import on_cpu

    w = torch.ones(3)
    state = {"m": OrderedDict(w=w), "o": {"state": {0: {"buf": w * 2}}, "groups": [{"lr": 0.1}]},
             "pair": (w, 5), "rng": torch.get_rng_state()}
    got = on_cpu(state)
    assert type(got["m"]) is OrderedDict and got["pair"][1] == 5
    assert got["o"]["groups"] == [{"lr": 0.1}]
    assert got["o"]["groups"][0] is not state["o"]["groups"][0]
    w.add_(1)  # the node trains on: what was kept does not change
    assert torch.equal(got["m"]["w"], torch.ones(3)) and torch.equal(got["pair"][0], torch.ones(3))
    assert got["o"]["state"][0]["buf"].device.type == "cpu"
