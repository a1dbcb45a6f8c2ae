"""Measure a batched profile (planner.batched) on this host: a part's forward and backward for
g owners' copies one by one and in one folded call (nodes.folding), g = 1, 2, 4, 8, 16.

What is timed, per g: the sequential side runs each of g copies of the part on its own
micro-batch, forward then backward (the loss a sum of the output: its cost is negligible);
the batched side runs the g micro-batches through a `FoldedPart` of g copies in one call,
then one backward and `settle` (each copy's slice of the gradients to its `.grad`), as
nodes.batched's fused task does. The two sides alternate, one warm-up each (the first folded
call probes every layer's kernels), then `repeats` rounds, which side goes first
alternating; times are the thread's CPU seconds (one torch thread: steadier than wall time on
a shared host), the ratio is of the medians.
Optimizer steps are left out: the simulator times them as without batching.

Which part: `topology_part` picks the layers of the first compute node with `batch_owners:
auto` by the topology's cuts, or, with `plan: auto` (no cuts yet), the second half of the
model; the factor measured there is what the planner uses for any part on any batching node.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence

from mpsl.topology import Topology
from mpsl.training import input_shape
from planner.batched import BatchedProfile

SIZES = (1, 2, 4, 8, 16)


def topology_part(topo: Topology, num_layers: int) -> tuple[int, int] | None:
    """The layers [a, b) the batched profile is measured on, None where no compute node
    batches (module doc)."""
    nodes = [i for i, c in enumerate(topo.compute_nodes) if c.batch_owners == "auto"]
    if not nodes or topo.mode in ("sl", "fl"):
        return None
    cuts = topo.plan.cuts
    if cuts is None or nodes[0] >= len(cuts):
        return (num_layers // 2, num_layers)
    i = nodes[0]
    return (cuts[i], cuts[i + 1] if i + 1 < len(cuts) else num_layers)


def measure_topology(topo: Topology, repeats: int = 5) -> BatchedProfile | None:
    """The batched profile of the topology's batching part (`topology_part`) at its
    micro-batch size, or None (no node batches; a layer that cannot fold)."""
    from mpsl.models import build_model

    shape, classes = input_shape(topo)
    model = build_model(topo.model.name, classes, shape[0], shape[1], topo.model.norm)
    mods = list(model.children())
    span = topology_part(topo, len(mods))
    if span is None:
        return None
    batch = max(1, topo.training.batch_size // max(1, topo.plan.micro_batches))
    return measure_batched(mods, shape, span, batch, SIZES, repeats)


def measure_batched(mods: Sequence[object], shape: tuple[int, int, int], span: tuple[int, int],
                    batch: int, sizes: Sequence[int] = SIZES, repeats: int = 5
                    ) -> BatchedProfile | None:
    """Time layers `span` of the model's layers `mods` at every g of `sizes` (module doc);
    None when the part cannot fold."""
    import torch
    from torch import nn

    from nodes.folding import FoldedPart, fold

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        layers = [m for m in mods if isinstance(m, nn.Module)]
        head, part = nn.Sequential(*layers[:span[0]]), nn.Sequential(*layers[span[0]:span[1]])
        part.train()
        if fold(part, 1) is None:
            return None
        with torch.no_grad():
            x = head(torch.randn(batch, *shape))
        times = {}
        for g in sizes:
            seq = [copy.deepcopy(part) for _ in range(g)]
            folded = FoldedPart([copy.deepcopy(part) for _ in range(g)])
            xs = [x.clone() for _ in range(g)]
            took: dict[str, list[float]] = {"seq": [], "bat": []}
            for r in range(repeats + 1):
                for side in ("seq", "bat") if r % 2 else ("bat", "seq"):
                    t0 = time.thread_time()
                    if side == "seq":
                        for m, xi in zip(seq, xs):
                            torch.autograd.backward(m(xi.requires_grad_(True)).sum())
                    else:
                        call = folded.run(list(range(g)), [xi.detach().requires_grad_(True)
                                                           for xi in xs])
                        torch.autograd.backward(call.out.sum())
                        folded.settle(call)
                    if r:  # round 0 warms up (and probes the folded kernels)
                        took[side].append(time.thread_time() - t0)
            times[g] = (statistics.median(took["seq"]) / g, statistics.median(took["bat"]) / g)
    finally:
        torch.set_num_threads(threads)
    return BatchedProfile.from_times(times)
