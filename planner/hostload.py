"""What emulating a whole topology on one host costs that host: the CPU of its nodes' passes.

`mpsl run` starts every node on this machine. An emulated device (`compute_scale` s) runs
each pass at this host's speed and then sleeps (s-1)t: the sleep costs no CPU, the pass
does. The cost model's estimate is for the devices the topology describes, each its own
processor; on one host every CPU node's passes share its cores. Where they need more CPU per
epoch than the cores give in the estimated epoch, the run measures this host, not the fleet.

The CPU counted is the passes' alone, as the profile times them at this host's speed: the
messages, data loading and Python around them come on top, so the floor is a lower bound.
Compute nodes on a GPU (`device: cuda`) are not counted.
"""

from __future__ import annotations

import dataclasses
import os

from mpsl.names import AGGREGATOR
from mpsl.plan import Plan
from mpsl.topology import Topology
from planner.cost import simulate
from planner.profile import Profile


def host_cores() -> int:
    """The cores this process may run on (all of the machine's where the OS cannot say)."""
    if hasattr(os, "sched_getaffinity"):  # not on macOS
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class HostLoad:
    """The CPU seconds per epoch of every CPU node's passes at this host's speed, the host's
    cores, and the cost model's epoch for the topology's own devices."""

    cpu_s: float
    cores: int
    estimate_s: float

    @property
    def floor_s(self) -> float:
        """The shortest epoch this host can run: its passes' CPU spread over every core."""
        return self.cpu_s / self.cores

    @property
    def share(self) -> float:
        """The floor over the estimate: at 1 or more, epochs here are longer than estimated."""
        return self.floor_s / self.estimate_s if self.estimate_s > 0 else 0.0

    @property
    def host_bound(self) -> bool:
        return self.share >= 1.0

    def describe(self) -> str:
        return (f"the nodes' passes take {self.cpu_s:.3g} CPU s per epoch at this host's speed: "
                f"on its {self.cores} core(s) an epoch lasts at least {self.floor_s:.3g} s "
                f"({100 * self.share:.0f}% of the {self.estimate_s:.3g} s estimated)")

    def to_json(self) -> dict[str, float | int | bool]:
        return {"cpu_s": self.cpu_s, "cores": self.cores, "floor_s": self.floor_s,
                "estimate_s": self.estimate_s, "share": self.share,
                "host_bound": self.host_bound}


def at_host_speed(topo: Topology) -> Topology:
    """`topo` with every node at this host's speed: `compute_scale` 1 and no profile file of
    its own, as its passes really run when `mpsl run` emulates it here."""
    owners = tuple(dataclasses.replace(o, compute_scale=1.0, profile=None) for o in topo.owners)
    nodes = tuple(dataclasses.replace(c, compute_scale=1.0, profile=None)
                  for c in topo.compute_nodes)
    return dataclasses.replace(topo, owners=owners, compute_nodes=nodes)


def host_load(topo: Topology, plan: Plan, host: Profile, estimate_s: float, *,
              iterations: int | None = None, samples: list[int] | None = None,
              cores: int | None = None) -> HostLoad:
    """The load `plan` on `topo` puts on this host (`host`: its profile) per epoch, against
    the cost model's `estimate_s` for the same epoch on the topology's devices. `iterations`
    and `samples`: as the estimate was simulated with (`planner.cost.simulate`)."""
    fast = at_host_speed(topo)
    names = [o.name for o in fast.owners] + [c.name for c in fast.compute_nodes]
    est = simulate(fast, plan, dict.fromkeys(names, host), iterations=iterations,
                   samples=samples, memory=False)
    counted = [o.name for o in topo.owners] + [AGGREGATOR]
    counted += [c.name for c in topo.compute_nodes if c.device == "cpu"]
    cpu = sum(est.busy_s.get(name, 0.0) for name in counted)
    return HostLoad(cpu, cores or host_cores(), estimate_s)
