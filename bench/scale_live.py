"""A live fleet on one machine: K data owners of vgg5, pooled in a few processes, over real
sockets; epoch time, the server's busy share and the run's total memory, against the cost
model's estimate of the same epoch and against what the fleet's passes ask of this host's cores.

Definitions (version 3, fixed before its first run; version 2 (results/history/scale_live.v2.md)
had every column but the host's; version 1 ran the owners at this host's speed,
`compute_scale` 1: results/history/scale_live.v1.md):
- vgg5 (batch norm) on synthetic 3x32x32 data, PiPar with cuts [2] and N = 4 (labels shared),
  one compute node, B = 32, 3 iterations per owner and epoch (96 samples each), 3 epochs
  (version 2: 2; the third keeps every process running until epoch 2's message),
  4G links for every owner (10 / 25 Mbps), owners' `compute_scale` 10 (a device ten times
  slower than this host: an owner's pass is 1/10 CPU and 9/10 sleep), seed 0.
- K = 8, 16, 32, 64, 100 owners, `data_owners.per_process` = ceil(K / 8): at most 8 owner
  processes (nodes.pool), started by nodes.launch.LocalCluster.
- **Epoch time**: the second epoch's `wall_s` (the first carries the start-up and warm-up).
  **Server busy share**: the compute node's busy time over the run's training time
  (results.json). **Total RSS**: the peak, over samples every 0.25 s, of the sum of VmRSS of
  every process of the run (launcher excluded).
- **Estimate**: `planner.simulate` of the same topology and plan with this host's vgg5 profile,
  measured once at the start; error = (estimate - measured) / measured.
- **Host floor** (`planner.hostload.host_load`, same profile): the CPU seconds per epoch of
  every node's passes at this host's speed (`passes CPU`), over the cores this process may use:
  no epoch on this host can be shorter. **Bounded error**: that of max(estimate, floor).
- **Measured CPU**: the user + system CPU seconds of every process of the run (launcher
  excluded, from /proc/PID/stat), summed, between the monitor's epoch messages of epochs 1 and
  2 (epoch 2 and the evaluation that ends it); **host CPU share**: that over cores x the time
  between the two messages.
- One run per K; no target (the issue's goal is K = 100 end to end on this machine).

    .venv/bin/python -m bench.scale_live [--owners 8 16 32 64 100] [--quick] [--results DIR]

`--quick`: K = 2 alone, a one-repeat profile, written as scale_live.quick.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import NETWORKS, load_doc, publish, run_meta, synthetic, topology
from mpsl.plan import make_plan
from mpsl.training import num_layers
from nodes.launch import LocalCluster
from planner import Profile, measure_profile, profile_sizes, simulate
from planner.hostload import host_cores, host_load

SHAPE, CLASSES, BATCH, ITERS, EPOCHS, N = (3, 32, 32), 10, 32, 3, 3, 4
MAX_OWNER_PROCESSES = 8
OWNER_SCALE = 10.0
TICKS = os.sysconf("SC_CLK_TCK")  # /proc/PID/stat counts CPU time in these


def doc_for(owners: int) -> dict[str, Any]:
    up, down = NETWORKS["4G"]
    doc = topology(owners=owners, compute=1, mode="pipar", model="vgg5",
                   dataset=synthetic(BATCH * ITERS * owners, SHAPE, CLASSES, 64),
                   training={"epochs": EPOCHS, "batch_size": BATCH, "lr": 0.01,
                             "max_iterations": ITERS, "seed": 0},
                   up=up, down=down, cuts=(2,), micro_batches=N, timeout_s=600,
                   compute_scale=OWNER_SCALE)
    doc["data_owners"]["per_process"] = math.ceil(owners / MAX_OWNER_PROCESSES)
    return doc


def rss_kib(pid: int) -> int:
    """VmRSS of a process, KiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """The peak of the summed RSS of a cluster's processes, sampled in a thread."""

    def __init__(self, cluster: LocalCluster, every_s: float = 0.25) -> None:
        self.cluster, self.every_s, self.peak_kib = cluster, every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            total = sum(rss_kib(p.handle.pid) for p in list(self.cluster.procs))
            self.peak_kib = max(self.peak_kib, total)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


class EpochCpu:
    """The run's processes' summed CPU seconds at each of the monitor's epoch messages."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.marks: list[tuple[float, float]] = []  # (monotonic time, CPU seconds)

    def __call__(self, msg: Any) -> None:
        if msg.meta.get("type") == "epoch":
            total = sum(cpu_s(p.handle.pid) for p in list(self.cluster.procs))
            self.marks.append((time.monotonic(), total))

    def second_epoch(self) -> tuple[float, float]:
        """CPU seconds between the first two epoch messages, and the seconds between them."""
        (t1, c1), (t2, c2) = self.marks[:2]
        return c2 - c1, t2 - t1


def live(owners: int, prof: Profile) -> dict[str, Any]:
    """One run of K owners: the measured epoch against the estimate and the host's floor."""
    with tempfile.TemporaryDirectory(prefix="mpsl-scale-") as tmp:
        path, topo = load_doc(doc_for(owners), Path(tmp))
        plan = make_plan(topo, num_layers(topo))
        cluster = LocalCluster(str(path), (), topo, plan, Path(tmp) / "run")
        cpu = EpochCpu(cluster)
        started = time.perf_counter()
        with RssSampler(cluster) as rss:
            results = cluster.run(cpu)
        wall = time.perf_counter() - started
        processes = len(cluster.procs)
    est = simulate(topo, plan, prof)
    load = host_load(topo, plan, prof, est.epoch_s)
    measured = results["epochs"][1]["wall_s"]
    server = results["nodes"]["node1"]["busy_s"]
    used, between = cpu.second_epoch()
    bounded = max(est.epoch_s, load.floor_s)
    return {"owners": owners, "owner_processes": processes - 2,
            "epoch_s": measured, "estimate_s": est.epoch_s,
            "error_pct": 100 * (est.epoch_s - measured) / measured,
            "passes_cpu_s": load.cpu_s, "host_floor_s": load.floor_s,
            "bounded_error_pct": 100 * (bounded - measured) / measured,
            "measured_cpu_s": used, "host_cpu_share": used / (load.cores * between),
            "server_busy_share": server / results["summary"]["train_s"],
            "total_rss_mib": rss.peak_kib / 1024, "run_wall_s": wall,
            "accuracy": results["summary"]["final_test_accuracy"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--owners", type=int, nargs="+", default=[8, 16, 32, 64, 100])
    ap.add_argument("--quick", action="store_true", help="K = 2, a one-repeat profile")
    harness.results_option(ap)
    args = ap.parse_args(argv)
    harness.use_results(args.results)
    if args.quick:
        args.owners = [2]
    started = time.perf_counter()
    prof = (measure_profile("vgg5", SHAPE, CLASSES, "batch", profile_sizes(BATCH), 1,
                            wake_repeats=1) if args.quick else
            measure_profile("vgg5", SHAPE, CLASSES, "batch", profile_sizes(BATCH), 11))
    rows = []
    for k in args.owners:
        rows.append(live(k, prof))
        print(rows[-1], flush=True)
    meta = run_meta(wall_s=time.perf_counter() - started, owners=args.owners,
                    cores=host_cores())
    owners = " ".join(str(k) for k in args.owners)
    name, cmd = ("scale_live.quick", "--quick") if args.quick else ("scale_live",
                                                                    f"--owners {owners}")
    publish(name, f"python -m bench.scale_live {cmd}", meta,
            [("", "K owners of vgg5, pooled: measured epoch against the cost model", rows, 3)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
