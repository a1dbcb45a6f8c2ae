"""The topology a `--netns` run's nodes load: the same file, with `--set` assignments that move
every node to its namespace's address and take off the in-process shaping the kernel does.

The assignments come after the user's own `--set`; every node of the run gets the same ones,
so they agree on the run's settings. What they set:
- `aggregator.address`, `compute_nodes` (the list, each address replaced) and
  `data_owners.overrides` (each owner's entry, with its address) to the namespaces' addresses,
  each node keeping its port;
- `data_owners.per_process=1`: each owner in a process, so in a namespace, of its own (the
  kernel shapes a namespace's links, so owners sharing one would share their uplinks);
- the rates to null (unshaped in the process: the kernel shapes them), and the latencies to 0
  where the kernel has netem.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mpsl.names import AGGREGATOR
from mpsl.overrides import apply_overrides
from mpsl.schema import TopologyError
from mpsl.topology import Topology

RATE_FIELDS = ("uplink_mbps", "downlink_mbps")


def raw_document(path: str | Path, overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The topology file's YAML document with the user's `--set` assignments applied."""
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, Mapping):
        raise TopologyError(str(path), "<top>", data, "a mapping at the top level")
    return apply_overrides(data, overrides, str(path))


def port_of(address: str) -> int:
    """The port of `tcp://host:port`."""
    return int(address.rpartition(":")[2])


def netns_overrides(doc: Mapping[str, Any], topo: Topology, ips: Mapping[str, str],
                    kernel_latency: bool) -> list[str]:
    """The `--set` assignments of a `--netns` run (see the module's docstring); `ips` maps
    each node to its namespace's IP, `doc` is `raw_document`."""
    def addr(name: str) -> str:
        return f"tcp://{ips[name]}:{port_of(topo.address_of(name))}"

    drop = RATE_FIELDS + (("latency_ms",) if kernel_latency else ())
    compute = [dict(e, address=addr(str(e["name"])))
               if isinstance(e, Mapping) and e.get("name") in ips else e
               for e in doc.get("compute_nodes") or []]
    owners_doc = doc.get("data_owners") or {}
    given = {int(e["index"]): dict(e) for e in owners_doc.get("overrides") or []}
    per_owner = []
    for o in topo.owners:
        entry = {k: v for k, v in given.get(o.index, {}).items() if k not in drop}
        entry.update(index=o.index, address=addr(o.name))
        per_owner.append(entry)
    sets = [f"aggregator.address={addr(AGGREGATOR)}",
            f"data_owners.overrides={json.dumps(per_owner)}",
            "data_owners.per_process=1",
            "data_owners.uplink_mbps=null",
            "data_owners.downlink_mbps=null",
            "links.compute_mbps=null"]
    if compute:
        sets.insert(1, f"compute_nodes={json.dumps(compute)}")
    if kernel_latency:
        sets += ["data_owners.latency_ms=0", "links.compute_latency_ms=0"]
    return sets
