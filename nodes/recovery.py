"""Recovery from a lost compute node or aggregator: each node's state at the end of its latest
aggregation rounds, and the rollback that takes every node back to the last committed one.

A round is committed once every compute node saved its state of that round and the aggregator
saved its own (nodes.rollback). A compute node or the aggregator restarted with the same name
resumes from its checkpoint of the last commit; the other nodes roll back to their state of that
round, which they still hold: a node saves round r + 1 only after round r was committed, so the
last two rounds it saved always include the last commit.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nodes.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nodes.parts import PartCopy

KEEP = 2  # rounds a node keeps: the last commit, and the round after it


class Rollback(Exception):
    """The aggregator rolls the run back: every node resumes at round `round_id` (so the last
    committed aggregation is `round_id - 1`) under the wire id `run`; with `params`, a compute
    node also sends its part's PARAMS of that commit (the aggregator evaluates that epoch)."""

    def __init__(self, round_id: int, run: str, params: bool = False) -> None:
        super().__init__(f"rolled back to round {round_id}")
        self.round_id, self.run, self.params = round_id, run, params


class Restarted(Exception):
    """The aggregator heard the hello of a compute node that restarted during the run."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} restarted")
        self.name = name


class RoundStore:
    """A node's state at the end of its latest KEEP rounds: in memory, and on disk (atomic,
    nodes.checkpoint) when `folder` is set, one file per round, `NODE.rROUND.ckpt`."""

    def __init__(self, node: str, digest: str, folder: str | Path | None) -> None:
        self.node, self.digest = node, digest
        self.folder = Path(folder) if folder is not None else None
        self.memory: dict[int, dict[str, Any]] = {}

    def path(self, round_id: int) -> Path:
        assert self.folder is not None
        return self.folder / f"{self.node}.r{round_id}.ckpt"

    def save(self, round_id: int, state: Mapping[str, Any], run_id: str,
             disk: bool = True) -> None:
        """Keep `state` as the node's state at the end of `round_id` (a copy on the CPU: the
        node goes on changing its tensors, and a GPU's memory is for training), then forget
        rounds older than the KEEP latest; `disk`: in its checkpoint too."""
        self.memory[round_id] = on_cpu(dict(state))
        for old in sorted(self.memory)[:-KEEP]:
            del self.memory[old]
        if self.folder is None or not disk:
            return
        save_checkpoint(self.path(round_id), state, node=self.node, digest=self.digest,
                        run_id=run_id, round_id=round_id)
        for old in self.on_disk()[:-KEEP]:
            self.path(old).unlink(missing_ok=True)

    def load(self, round_id: int, run_id: str) -> dict[str, Any]:
        """The state saved at the end of `round_id`: from memory, or from its checkpoint (a
        restarted node); CheckpointError when neither holds it."""
        if round_id in self.memory:
            return copy.deepcopy(self.memory[round_id])
        if self.folder is None:
            raise CheckpointError(f"{self.node}: no state of round {round_id} (no checkpoint "
                                  "folder)")
        state: dict[str, Any] = load_checkpoint(self.path(round_id), node=self.node,
                                                digest=self.digest, run_id=run_id)["state"]
        return state

    def on_disk(self) -> list[int]:
        """The rounds whose checkpoint files are in the folder, oldest first."""
        if self.folder is None or not self.folder.is_dir():
            return []
        prefix = f"{self.node}.r"
        rounds = []
        for p in self.folder.glob(f"{self.node}.r*.ckpt"):
            number = p.name[len(prefix):-len(".ckpt")]
            if number.lstrip("-").isdigit():
                rounds.append(int(number))
        return sorted(rounds)

    def clear(self) -> None:
        """Forget every round, and delete the files (the run ended: nothing to resume)."""
        self.memory.clear()
        for r in self.on_disk():
            self.path(r).unlink(missing_ok=True)


def on_cpu(state: Any) -> Any:
    """A deep copy of `state` (dicts, lists and tuples of tensors and plain values) with every
    tensor on the CPU."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        out = state.copy()  # the same kind of dict (a state_dict is an OrderedDict)
        for k, v in state.items():
            out[k] = on_cpu(v)
        return out
    if type(state) in (list, tuple):
        return type(state)(on_cpu(v) for v in state)
    return copy.deepcopy(state)


def copies_state(copies: Mapping[tuple[int, int], PartCopy]) -> dict[str, Any]:
    """The modules and optimizer states of a node's copies, and the RNG state."""
    parts = {f"{k}/{p}": {"module": c.module.state_dict(), "optimizer": c.optimizer.state_dict()}
             for (k, p), c in copies.items()}
    return {"copies": parts, "rng": torch.get_rng_state()}


def load_copies_state(copies: Mapping[tuple[int, int], PartCopy], state: Mapping[str, Any],
                      where: str) -> None:
    """Load `copies_state`'s output back; CheckpointError naming `where` if it does not fit."""
    saved = state.get("copies")
    if not isinstance(saved, dict) or set(saved) != {f"{k}/{p}" for k, p in copies}:
        raise CheckpointError(f"{where}: a state of other parts or owners")
    try:
        for (k, p), c in copies.items():
            c.module.load_state_dict(saved[f"{k}/{p}"]["module"])
            c.optimizer.load_state_dict(saved[f"{k}/{p}"]["optimizer"])
            c.optimizer.zero_grad(set_to_none=True)
        torch.set_rng_state(state["rng"])
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise CheckpointError(f"{where}: a state that does not fit ({err})"[:300]) from None
