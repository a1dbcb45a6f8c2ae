"""What a topology asks that its data or memory cannot give: warnings before any node starts.

- `training.batch_size` larger than an owner's data (its iterations are partial batches);
- `dataset.samples_per_owner` more than the owners get from the data set;
- a plan whose memory estimate on a node exceeds that node's `memory_mb`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mpsl.names import owner_index
from mpsl.plan import Plan
from mpsl.spec import Topology

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
