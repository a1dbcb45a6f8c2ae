"""A node's checkpoint: written atomically (a temporary file, fsync, rename, fsync of the
folder), so that a crash during the write leaves the previous one whole; read with
`weights_only=True`; refused in one line when it is torn, foreign (another node, run settings
or run) or of another format."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, torn, or not this node's of this run."""


def checkpoint_path(folder: str | Path, node: str) -> Path:
    return Path(folder) / f"{node}.ckpt"


def save_checkpoint(path: str | Path, state: Mapping[str, Any], *, node: str, digest: str,
                    run_id: str, round_id: int) -> None:
    """Write `state` (tensors, numbers, strings, and dicts and lists of them) as `node`'s
    checkpoint of round `round_id`, replacing the previous one only once it is on disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "node": node, "digest": digest, "run_id": run_id,
               "round": round_id, "state": dict(state)}
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a crash
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, *, node: str, digest: str,
                    run_id: str | None = None) -> dict[str, Any]:
    """The checkpoint at `path` as saved (`round`, `run_id`, `state`, ...); CheckpointError
    unless it is whole, of this format, of `node`, of these run settings (`digest`) and, when
    given, of run `run_id`."""
    path = Path(path)
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint") from None
    except Exception as err:  # a torn zip, or not torch's format at all
        raise CheckpointError(f"{path}: torn or not a checkpoint ({type(err).__name__})") \
            from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint of format {FORMAT}")
    for key, want in (("node", node), ("digest", digest), ("run_id", run_id)):
        if want is not None and payload.get(key) != want:
            raise CheckpointError(f"{path}: a checkpoint of another {key.replace('_', ' ')} "
                                  f"({payload.get(key)!r}, expected {want!r})")
    if type(payload.get("round")) is not int or not isinstance(payload.get("state"), dict):
        raise CheckpointError(f"{path}: a checkpoint without its round or state")
    return payload
