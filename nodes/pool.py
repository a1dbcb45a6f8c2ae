"""Several data owners in one process (`data_owners.per_process`): each keeps its own data,
sockets, link emulation and compute emulation (its CPU time is its thread's), and runs in a
thread of its own; they share the process's torch runtime, so a fleet of emulated devices,
which mostly sleep, fits on one machine. An owner's work is the same as in a process of its
own: the run's weights are too.

What the owners share is the process: its peak RSS is each one's `peak_rss_bytes`, and when one
owner fails the process ends (exit 1) once it has logged why, so that the launcher restarts the
group (each owner rejoins) or goes on without it.
"""

from __future__ import annotations

import logging
import math
import os
import threading

import torch

from mpsl.plan import Plan
from mpsl.topology import Topology

log = logging.getLogger(__name__)
PROCESS_MB = 250  # resident memory of an owner process before its data (torch, zmq, numpy)


def owners_per_process(topo: Topology, available_mb: float | None = None) -> int:
    """The topology's `data_owners.per_process`, or, when not given, 1 while a process per
    owner fits in half of the memory available now, else the fewest owners per process that
    fit."""
    if topo.owners_per_process is not None:
        return topo.owners_per_process
    mb = available_mb if available_mb is not None else _available_mb()
    processes = max(1, int(mb / 2 / PROCESS_MB))
    return max(1, math.ceil(len(topo.owners) / processes))


def _available_mb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 4096.0  # not Linux: assume a small machine


def run_owners(topo: Topology, plan: Plan, names: list[str]) -> None:
    """Run the owners `names` to the end of training, each in a thread; exit(1) at once when
    one fails (the others cannot finish a run it left)."""
    from nodes.data_owner import DataOwner

    owners = [DataOwner(topo, plan, topo.owner(n).index) for n in names]
    for o in owners:
        log.info("%s: data-owner node listening at %s", o.name, o.inbox.address)

    def run_one(owner: DataOwner) -> None:
        torch.set_num_threads(topo.runtime.torch_threads)  # per thread, as OpenMP counts it
        try:
            owner.run()
            log.info("%s: finished (%d messages dropped)", owner.name, owner.rejected_messages)
        except BaseException as err:  # noqa: BLE001 - one owner down ends the group
            log.error("%s: %s: %s", owner.name, type(err).__name__, err)
            logging.shutdown()
            os._exit(1)
        finally:
            owner.close()

    threads = [threading.Thread(target=run_one, args=(o,), name=o.name, daemon=True)
               for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
