"""What every node of a run must agree on: the topology's run-wide fields and the plan,
flattened to `field: value` text, with a digest that the nodes exchange in their hello.

Paths and the runtime and failure sections may differ per machine (each node resolves its
own files and picks its threads, waits and heartbeat), so they are left out; but for
`failure.checkpoint`: the aggregator commits a round only once every compute node saved it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from mpsl.plan import Plan
from mpsl.spec import Topology

PER_MACHINE = ("source", "runtime", "failure", "dataset.root", "security.keys",
               "owners_per_process")  # and `*.profile`, `*.device`
RUN_WIDE = ("failure.checkpoint",)  # inside a per-machine section


def run_settings(topo: Topology, plan: Plan) -> dict[str, str]:
    """Every run-wide field of `topo` and `plan`, as `{"training.epochs": "3", ...}`."""
    flat: dict[str, str] = {}
    _flatten("", dataclasses.asdict(topo), flat)
    _flatten("plan_file.", plan.to_json(), flat)
    return {k: v for k, v in flat.items() if not _per_machine(k)}


def settings_digest(settings: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(settings.items())).encode()).hexdigest()


def first_difference(mine: Mapping[str, str], theirs: Mapping[str, Any]) -> str | None:
    """The first field (in sorted order) whose value differs, as `field is X there, Y here`."""
    for key in sorted(set(mine) | set(theirs)):
        if mine.get(key) != theirs.get(key):
            return (f"{key} is {theirs.get(key, 'missing')} there, "
                    f"{mine.get(key, 'missing')} here")
    return None


def _per_machine(key: str) -> bool:
    if key in RUN_WIDE:
        return False
    return key.rsplit(".", 1)[-1] in ("profile", "device") or any(
        key == p or key.startswith(p + ".") for p in PER_MACHINE)


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}{k}.", v, out)
    elif isinstance(value, (list, tuple)) and value and all(
            isinstance(v, (Mapping, list, tuple)) for v in value):
        for i, v in enumerate(value):
            _flatten(f"{prefix}{i}.", v, out)
    else:
        out[prefix[:-1]] = repr(value)
