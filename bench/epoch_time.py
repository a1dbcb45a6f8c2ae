"""Epoch time of FL, SFL, PiPar and MP-SL on emulated Raspberry Pi owners and 4G/4G+/WiFi links.

vgg5 on synthetic 32x32x3 data, K = 4 owners, one server, all processes on this machine. The
owners run `compute_scale` times slower than this host (see `rpi3b_scale`). PiPar, SFL and MP-SL
take their cuts (and PiPar and MP-SL their N) from the planner, as a user of `plan: auto` would.

    .venv/bin/python bench/epoch_time.py [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import time

import torch

from harness import NETWORKS, console, load_doc, markdown, median, run, save, show, topology
from mpsl.models import build_model
from planner import choose_plan, measure_profile

K = 4
SAMPLES = 160  # per owner: 5 iterations of 32
BATCH = 32
# A Raspberry Pi 3B (4x Cortex-A53 at 1.2 GHz) sustains about 2.5 GFLOP/s in float32 PyTorch
# training with its 4 threads: NEON peaks near 4x9.6 GFLOP/s, and convolution training
# reaches 5-10% of peak on it (Linpack, which is far friendlier, reaches about 6 GFLOP/s).
RPI3B_GFLOPS = 2.5


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
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t)
    flops = 3 * 2 * macs * BATCH  # forward + backward ~ 3x the forward multiply-adds
    host = flops / median(times) / 1e9
    return round(host / RPI3B_GFLOPS, 1), host


MODES = {
    "FL": dict(mode="fl", compute=1),
    "SFL": dict(mode="sfl", compute=1),
    "PiPar": dict(mode="pipar", compute=1),
    "MP-SL": dict(mode="mpsl", compute=1, labels="local", cuts=(1, 3)),
}


def doc_for(mode: str, net: str, scale: float, epochs: int) -> dict:
    up, down = NETWORKS[net]
    spec = dict(MODES[mode])
    return topology(
        owners=K, dataset={"name": "synthetic", "options": {"shape": [3, 32, 32],
                                                             "num_classes": 10,
                                                             "size": SAMPLES * K}},
        training={"epochs": epochs, "batch_size": BATCH, "lr": 0.01, "momentum": 0.9},
        up=up, down=down, compute_scale=scale, **spec,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="4G only, one repeat")
    args = ap.parse_args()
    nets = ["4G"] if args.quick else list(NETWORKS)
    repeats = 1 if args.quick else args.repeats
    scale, host = rpi3b_scale()
    console.print(f"host: {host:.1f} GFLOP/s on one thread; Pi 3B assumed {RPI3B_GFLOPS} "
                  f"GFLOP/s -> owners' compute_scale = {scale}")
    profile = measure_profile("vgg5", (3, 32, 32), 10, "batch", batch_sizes=(4, 16, 32))
    import tempfile
    from pathlib import Path

    rows, raw = [], []
    for net in nets:
        plans = {}
        with tempfile.TemporaryDirectory() as tmp:
            for mode in MODES:
                _, topo = load_doc(doc_for(mode, net, scale, args.epochs), Path(tmp))
                if mode != "FL":
                    plans[mode] = choose_plan(topo, profile).best.plan
        cell: dict[str, list[dict]] = {m: [] for m in MODES}
        for rep in range(repeats):
            for mode in MODES:
                res = run(doc_for(mode, net, scale, args.epochs), plans.get(mode))
                epoch_s = median(e["wall_s"] for e in res["epochs"][1:] or res["epochs"])
                owners = [v for k, v in res["nodes"].items() if k.startswith("owner")]
                server = res["nodes"].get("node1")
                # idle per epoch, as PiPar defines it: epoch wall time - processor busy time
                n_ep = len(res["epochs"])
                entry = {
                    "epoch_s": epoch_s,
                    "server_idle_s": server["idle_s"] / n_ep if server else float("nan"),
                    "device_idle_s": median(o["idle_s"] for o in owners) / n_ep,
                    "efficiency": res["summary"]["efficiency"],
                    "plan": res["plan"],
                }
                cell[mode].append(entry)
                raw.append({"network": net, "mode": mode, "repeat": rep, **entry})
                console.print(f"{net} {mode} rep {rep}: epoch {epoch_s:.2f} s, plan "
                              f"{res['plan']['cuts']} N={res['plan']['micro_batches'][0]}")
        t = {m: median(e["epoch_s"] for e in cell[m]) for m in MODES}
        for mode in MODES:
            es = cell[mode]
            rows.append({
                "network": net, "mode": mode,
                "cuts": "-" if mode == "FL" else str(es[0]["plan"]["cuts"]),
                "N": es[0]["plan"]["micro_batches"][0],
                "epoch_s": t[mode],
                "server_idle_s": median(e["server_idle_s"] for e in es),
                "device_idle_s": median(e["device_idle_s"] for e in es),
                "pipar_speedup": t[mode] / t["PiPar"],
                "efficiency": median(e["efficiency"] for e in es),
                "fastest": "yes" if t[mode] == min(t.values()) else "",
            })
    show("Epoch time (median of repeats); pipar_speedup = this mode's time / PiPar's", rows, 2)
    meta = {"date": datetime.date.today().isoformat(), "owners": K, "samples_per_owner": SAMPLES,
            "batch": BATCH, "repeats": repeats, "epochs": args.epochs,
            "compute_scale": scale, "host_gflops": host, "rpi3b_gflops": RPI3B_GFLOPS,
            "raw": raw}
    save("epoch_time", rows, meta)
    console.print(markdown(rows, 2))


if __name__ == "__main__":
    main()
