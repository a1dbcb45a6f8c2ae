"""What a topology asks that its data or memory cannot give: warnings before any node starts.

- `training.batch_size` larger than an owner's data (its iterations are partial batches);
- `dataset.samples_per_owner` more than the owners get from the data set;
- a plan whose memory estimate on a node exceeds that node's `memory_mb`;
- a fleet whose passes need more of this host's CPU than its cores give in the estimated
  epoch (`host_load_line`: `mpsl run` emulates every node here);
and, as errors, a node name that the topology does not give the role (`check_node`), an
address that cannot be bound here (`check_bindable`), an epoch ending in a batch smaller than
the model trains on (`check_last_batches`) and the security a run starts with
(`security_line`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from mpsl.names import AGGREGATOR, owner_group, owner_index
from mpsl.plan import Plan
from mpsl.spec import Topology

if TYPE_CHECKING:
    from planner.profile import Profile

MIB = 1 << 20  # `memory_mb` counts MiB
MAX_NAMED = 3  # owners named in one warning; more are counted


def _names(items: Sequence[tuple[str, int]]) -> str:
    shown = ", ".join(f"{name} ({n} samples)" for name, n in items[:MAX_NAMED])
    more = len(items) - MAX_NAMED
    return shown + (f" and {more} more owner(s)" if more > 0 else "")


def data_warnings(topo: Topology, samples: Sequence[int] | None = None) -> list[str]:
    """Warnings about the owners' data against batch_size and samples_per_owner."""
    from mpsl.training import dataset_train_size, owner_samples

    samples = list(owner_samples(topo) if samples is None else samples)
    out = []
    B = topo.training.batch_size
    short = [(o.name, s) for o, s in zip(topo.owners, samples) if s < B]
    if short:
        out.append(f"training.batch_size ({B}) is larger than the data of {_names(short)}: "
                   f"every epoch there is one partial batch")
    want = topo.dataset.samples_per_owner
    if want is not None and samples and min(samples) < want:
        total = dataset_train_size(topo.dataset)
        out.append(f"dataset.samples_per_owner ({want}) is more than the owners get: "
                   f"{topo.dataset.name} has {total} training samples for {len(samples)} "
                   f"owner(s), {min(samples)} to {max(samples)} each")
    return out


def check_last_batches(topo: Topology, samples: Sequence[int] | None = None) -> None:
    """ValueError (one line) naming the first owner whose epoch ends in a batch smaller than
    the model trains on (a norm that would normalize a single value:
    `mpsl.geometry.smallest_batch`), which would stop the run there."""
    from mpsl.training import input_shape, owner_samples, smallest_micro_batch

    smallest = smallest_micro_batch(topo)
    if smallest == 1:
        return
    B, cap = topo.training.batch_size, topo.training.max_iterations
    for o, n in zip(topo.owners, owner_samples(topo) if samples is None else samples):
        last, batches = n % B, -(-n // B)
        if 0 < last < smallest and (cap is None or cap >= batches):
            side = input_shape(topo)[0][1]
            raise ValueError(
                f"{topo.source}: {o.name}'s epoch ends in a batch of {last} sample(s) ({n} "
                f"samples, training.batch_size {B}), and {topo.model.name} with norm "
                f"{topo.model.norm} on {side}x{side} inputs trains on {smallest} or more: "
                f"change training.batch_size or dataset.samples_per_owner")


def memory_caps(topo: Topology) -> dict[str, float]:
    """`memory_mb` of every capped owner and compute node."""
    caps = {o.name: o.memory_mb for o in topo.owners}
    caps.update({c.name: c.memory_mb for c in topo.compute_nodes})
    return {n: c for n, c in caps.items() if c is not None}


def over_caps(topo: Topology, memory_bytes: Mapping[str, int], what: str = "the plan") -> list[str]:
    """One warning per node whose estimate exceeds its memory_mb (owners past MAX_NAMED as
    one line with the largest estimate)."""
    over = [(n, memory_bytes[n], cap) for n, cap in memory_caps(topo).items()
            if memory_bytes.get(n, 0) > cap * MIB]
    owners = [o for o in over if owner_index(o[0]) is not None]
    if len(owners) > MAX_NAMED:
        worst = max(owners, key=lambda o: o[1] - o[2] * MIB)
        over = [o for o in over if o not in owners]
        over.append((f"{len(owners)} owners ({worst[0]} the most)", worst[1], worst[2]))
    return [f"{name}: {what} needs about {est / MIB:.3g} MB (parameters, optimizer state, "
            f"activations in flight, message buffers), more than its memory_mb {cap:g}"
            for name, est, cap in over]


def memory_warnings(topo: Topology, plan: Plan) -> list[str]:
    """The plan's memory per node, estimated from exact byte sizes (no timing), against each
    memory_mb; nothing to do (and nothing measured) when no node is capped."""
    if not memory_caps(topo):
        return []
    from planner.cost import simulate
    from planner.measure import byte_profile

    est = simulate(topo, plan, byte_profile(topo), iterations=1)
    return over_caps(topo, est.memory_bytes)


def host_load_line(topo: Topology, plan: Plan, host: Profile) -> tuple[str, bool] | None:
    """What running every node of `topo` on this host (`host`: its profile) asks of its
    cores (`planner.hostload`), and whether the epochs measured will be the host's rather
    than the fleet's; None where the cost model cannot time the plan with `host`."""
    from planner.cost import simulate
    from planner.hostload import host_load
    from planner.resources import PlanningError, node_profiles

    if any(c.device != "cpu" and c.profile is None for c in topo.compute_nodes):
        return None  # its GPU's profile would be measured: not for a line before the run
    try:
        est = simulate(topo, plan, node_profiles(topo, host, measure=False), memory=False)
        load = host_load(topo, plan, host, est.epoch_s)
    except PlanningError:  # profiles whose layers disagree with each other or the plan
        return None
    if load.host_bound:
        return (f"this host cannot run the fleet at its devices' speed: {load.describe()}; "
                f"the run will time this host, not the fleet"), True
    return f"this host: {load.describe()}", False


def _loopback(address: str) -> bool:
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: may be anywhere


def security_line(topo: Topology, insecure: bool, names: Iterable[str] | None = None) -> str:
    """The one line a run or node states about its links' security at start.

    With `security: curve`, the key files are checked first (KeyFileError naming the first
    missing one; secret keys of `names`, default every node). Without it, a topology with an
    address off this machine is refused (ValueError) unless `insecure`.
    """
    from nodes.keys import check_key_files

    if topo.security.mode == "curve":
        check_key_files(topo, names)
        return f"security: CurveZMQ on every link, keys in {topo.security.keys}"
    remote = [n for n in topo.node_names() if not _loopback(topo.address_of(n))]
    if remote and not insecure:
        raise ValueError(
            f"{topo.source}: {remote[0]} listens at {topo.address_of(remote[0])}, off this "
            f"machine, and security is off: set security: {{mode: curve, keys: DIR}} (keys "
            f"from `mpsl keys`), or pass --insecure")
    return ("security off: links are neither authenticated nor encrypted (security: "
            "{mode: curve, keys: DIR} turns CurveZMQ on)")


def check_node(topo: Topology, role: str, name: str) -> None:
    """ValueError (one line) unless the topology has a node `name` of `role` (for data owners,
    every owner of a group `owner0..owner7`)."""
    names = {"data-owner": [o.name for o in topo.owners], "compute": list(topo.chain),
             "aggregator": [AGGREGATOR]}[role]
    if role == "data-owner" and (".." in name or "," in name):
        for one in owner_group(name):
            check_node(topo, role, one)
        return
    if name not in names:
        shown = ", ".join(names[:MAX_NAMED]) + (", ..." if len(names) > MAX_NAMED else "")
        raise ValueError(f"{topo.source}: no {role} node named {name!r} (its {role} nodes: "
                         f"{shown or 'none'})")


def check_devices(topo: Topology, names: Iterable[str]) -> None:
    """ValueError (one line) naming the first compute node of `names` whose `device` this
    machine does not have."""
    import torch

    wanted = set(names)
    for i, c in enumerate(topo.compute_nodes):
        if c.name not in wanted or c.device == "cpu":
            continue
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(c.device.partition(":")[2] or 0)
        if index >= count:
            raise ValueError(f"{topo.source}: compute_nodes[{i}].device: {c.device} for "
                             f"{c.name}, but this machine has {count or 'no'} CUDA device(s)")


def check_bindable(topo: Topology, names: Iterable[str]) -> None:
    """OSError (one line) naming the first node of `names` whose address this machine cannot
    bind now: in use, or not one of its addresses."""
    for name in names:
        address = topo.address_of(name)
        host, _, port = address.split("://", 1)[-1].rpartition(":")
        host = host.strip("[]")
        if host == "*" or not port.isdigit() or int(port) == 0:
            continue  # any interface or any port: nothing to check
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ binds
            try:
                sock.bind((host, int(port)))
            except OSError as err:
                raise OSError(f"{topo.source}: {name} cannot listen at {address}: "
                              f"{err.strerror or err}") from None
