"""Epoch time of FL, SFL, PiPar and MP-SL on emulated Raspberry Pi owners and 4G/4G+/WiFi links.

What runs: vgg5 on synthetic 32x32x3 data, K = 4 owners x 160 samples, B = 32 (5 iterations
per owner and epoch), SGD with momentum 0.9, one server, every node a process on this machine.
The owners run `compute_scale` times slower than this host (`rpi3b_scale`: this host's
single-thread GFLOP/s over RPI3B_GFLOPS).

Definitions (version 2, issue 17; the same in every run):
- Plans: PiPar, SFL and MP-SL (owner, server, owner with the loss) are planned exactly as
  `mpsl run` plans `plan: auto` (`mpsl.cli.common.resolve_plan`): `choose_plan(topo)` with
  no profile, so it measures this host with `planner.resources.host_profile` (micro-batch
  sizes 1, 2, 4, ..., 32, 3 repeats, the topology's optimizer), once per (network, mode).
  FL has nothing to plan.
- Epoch time: each run trains `--epochs` (2) epochs; its time is the median `wall_s` of the
  epochs after the first (epoch 1 holds the warm-up); a cell is the median over `--repeats`.
- Idle, per epoch: epoch wall time minus the node's processor busy time in that epoch (from
  the run's trace, events clipped to the epoch), the mean over the epochs after the first:
  the warm-up is left out as from the epoch time. Devices: the median over owners.
- `time_over_bound`: training time over the busiest processor or link (results.json).
- CPU steal is recorded per run (bench/harness.py); its median and max are in the JSON.
Nothing is fitted; `RPI3B_GFLOPS` is an assumption about the device, stated below.

    .venv/bin/python -m bench.epoch_time [--repeats 3] [--quick] [--results DIR]

`--quick` (a smoke run of a few seconds): 4G, PiPar alone with a fixed plan (cut 2, N = 4),
one iteration per epoch, one repeat.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from bench import harness, stats
from bench.harness import (
    NETWORKS,
    Measured,
    console,
    parse_doc,
    publish,
    run,
    run_meta,
    synthetic,
    topology,
)
from mpsl.cli.common import resolve_plan
from mpsl.models import build_model
from mpsl.names import owner_index

K = 4
SAMPLES = 160  # per owner: 5 iterations of 32
BATCH = 32
# A Raspberry Pi 3B (4x Cortex-A53 at 1.2 GHz) sustains about 2.5 GFLOP/s in float32 PyTorch
# training with its 4 threads: NEON peaks near 4x9.6 GFLOP/s, and convolution training
# reaches 5-10% of peak on it (Linpack, which is far friendlier, reaches about 6 GFLOP/s).
RPI3B_GFLOPS = 2.5
MODES: dict[str, dict[str, Any]] = {
    "FL": {"mode": "fl", "compute": 1},
    "SFL": {"mode": "sfl", "compute": 1},
    "PiPar": {"mode": "pipar", "compute": 1},
    "MP-SL": {"mode": "mpsl", "compute": 1, "labels": "local", "cuts": (1, 3)},
}


def rpi3b_scale() -> tuple[float, float]:
    """How much slower a Pi 3B trains vgg5 than this host's one thread: (scale, host GFLOP/s)."""
    torch.set_num_threads(1)
    model = build_model("vgg5", 10, 3, 32, "batch")
    macs = 0

    def count(mod: torch.nn.Module, inp: object, out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            macs += out[0].numel() * k
        elif isinstance(mod, torch.nn.Linear):
            macs += mod.in_features * mod.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    model(torch.randn(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    x, y = torch.randn(BATCH, 3, 32, 32), torch.randint(0, 10, (BATCH,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    times = []
    for i in range(13):
        t = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t)
    flops = 3 * 2 * macs * BATCH  # forward + backward ~ 3x the forward multiply-adds
    host = flops / stats.median(times) / 1e9
    return round(host / RPI3B_GFLOPS, 1), host


def doc_for(mode: str, net: str, scale: float, epochs: int,
            quick: bool = False) -> dict[str, Any]:
    up, down = NETWORKS[net]
    training = {"epochs": epochs, "batch_size": BATCH, "lr": 0.01, "momentum": 0.9}
    doc = topology(
        owners=K, dataset=synthetic(SAMPLES * K),
        training=training | ({"max_iterations": 1} if quick else {}),
        up=up, down=down, compute_scale=scale, **MODES[mode],
    )
    if mode != "FL" and not quick:
        doc["plan"] = {"auto": True}
    elif quick and mode == "PiPar":
        doc["plan"] = {"cuts": [2], "micro_batches": 4}
    return doc


def entry(m: Measured) -> dict[str, Any]:
    """One run's epoch time, idle per epoch after the warm-up, time over bound and steal."""
    res = m.results
    owners = [n for n in res["nodes"] if owner_index(n) is not None]
    server = "node1" if "node1" in res["nodes"] else None

    def idle(node: str) -> float:  # the trace's clock: epoch 1 starts at t_start
        return stats.idle_per_epoch(m.events, node, m.walls, start=res["t_start"])

    return {
        "epoch_s": stats.median_after_warmup(m.walls),
        "server_idle_s": idle(server) if server else float("nan"),
        "device_idle_s": stats.median(idle(o) for o in owners),
        "time_over_bound": res["summary"]["time_over_bound"],
        "steal_pct": m.steal_pct,
        "plan": res["plan"],
    }


def cell_rows(net: str, cell: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    t = {m: stats.median(e["epoch_s"] for e in cell[m]) for m in cell}
    rows = []
    for mode, es in cell.items():
        rows.append({
            "network": net, "mode": mode,
            "cuts": "-" if mode == "FL" else str(es[0]["plan"]["cuts"]),
            "N": es[0]["plan"]["micro_batches"][0], "epoch_s": t[mode],
            "server_idle_s": stats.median(e["server_idle_s"] for e in es),
            "device_idle_s": stats.median(e["device_idle_s"] for e in es),
            "pipar_speedup": t[mode] / t["PiPar"],
            "time_over_bound": stats.median(e["time_over_bound"] for e in es),
            "fastest": "yes" if t[mode] == min(t.values()) else ""})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="4G, PiPar alone, one iteration")
    harness.results_option(ap)
    args = ap.parse_args(argv)
    harness.use_results(args.results)
    started = time.perf_counter()
    modes = ["PiPar"] if args.quick else list(MODES)
    nets = ["4G"] if args.quick else list(NETWORKS)
    repeats = 1 if args.quick else args.repeats
    scale, host = rpi3b_scale()
    console.print(f"host: {host:.1f} GFLOP/s on one thread; Pi 3B assumed {RPI3B_GFLOPS} "
                  f"GFLOP/s -> owners' compute_scale = {scale}")
    rows, raw = [], []
    for net in nets:
        # `mpsl run`'s own path for `plan: auto`: choose_plan profiles this host itself
        plans = {mode: resolve_plan(parse_doc(doc_for(mode, net, scale, args.epochs,
                                                      args.quick)), None)
                 for mode in modes}
        cell: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        for rep in range(repeats):
            for mode in modes:
                e = entry(run(doc_for(mode, net, scale, args.epochs, args.quick),
                              plans.get(mode)))
                cell[mode].append(e)
                raw.append({"network": net, "mode": mode, "repeat": rep, **e})
                console.print(f"{net} {mode} rep {rep}: epoch {e['epoch_s']:.2f} s, plan "
                              f"{e['plan']['cuts']} N={e['plan']['micro_batches'][0]}, steal "
                              f"{e['steal_pct']:.1f}%")
        rows += cell_rows(net, cell)
    steals = [r["steal_pct"] for r in raw]
    meta = run_meta(owners=K, samples_per_owner=SAMPLES, batch=BATCH, repeats=repeats,
                    epochs=args.epochs, compute_scale=scale, host_gflops=host,
                    rpi3b_gflops=RPI3B_GFLOPS, raw=raw,
                    steal_pct={"median": stats.median(steals), "max": max(steals)},
                    wall_s=time.perf_counter() - started)
    name = "epoch_time.quick" if args.quick else "epoch_time"
    publish(name, "python -m bench.epoch_time" + (" --quick" if args.quick else ""),
            meta, [("", "Epoch time (median of repeats); pipar_speedup = time / PiPar's",
                    rows, 2)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
