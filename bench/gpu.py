"""Epoch time with the compute node's copies on the CPU and on a GPU (`compute_nodes[].device`).

What runs: PiPar (two parts, cut after layer 2, N = 4 micro-batches), vgg19 without norm on
synthetic 32x32x3 data, K = 4 owners x 64 samples, B = 32 (2 iterations per owner and epoch),
SGD with momentum 0.9, unshaped links, owners at this host's speed, one compute node; every
node a process on this machine, one torch thread each (`runtime.torch_threads`: the CPU arm is
one core's, as in every other benchmark here).

Definitions (version 1; the same in every run):
- Arms: the compute node's `device` is `cpu`, then `cuda`, alternating, `--repeats` (3) runs
  each; TF32 off (`NVIDIA_TF32_OVERRIDE=0`), so both arms train in float32.
- Epoch time: each run trains 2 epochs; its time is epoch 2's `wall_s` (epoch 1 holds the
  CUDA context, cuDNN's choice of kernels and every process's warm-up); a cell is the median
  over the repeats. `cpu_over_cuda`: the CPU arm's median over the GPU arm's.
- `max_weight_diff`: the largest absolute difference between the two arms' final weights
  (first repeat of each): the tests (`tests/e2e/test_gpu.py`) hold the equivalence; this
  reports it at the benchmark's size.
Nothing is fitted.

    python3 -m bench.gpu [--repeats 3] [--devices cpu cuda] [--results DIR]

`--quick` (a smoke run, no GPU needed with `--devices cpu`): vgg5, K = 2, one iteration per
epoch, one repeat. Without a CUDA device, `cuda` is refused in one line before any node starts.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch

from bench import harness, stats
from bench.harness import console, publish, run_meta, synthetic, topology

K = 4
SAMPLES = 64  # per owner: 2 iterations of 32
BATCH = 32
EPOCHS = 2


def doc_for(device: str, quick: bool) -> dict[str, Any]:
    training = {"epochs": EPOCHS, "batch_size": BATCH, "lr": 0.01, "momentum": 0.9}
    owners = 2 if quick else K
    doc = topology(owners=owners, compute=1, mode="pipar", model="vgg5" if quick else "vgg19",
                   dataset=synthetic(SAMPLES * owners),
                   training=training | ({"max_iterations": 1} if quick else {}),
                   up=None, down=None, cuts=(2,), micro_batches=4, norm="none")
    doc["compute_nodes"][0]["device"] = device
    return doc


def one_run(device: str, quick: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """One run's row and its final weights."""
    m = harness.run(doc_for(device, quick), weights=True)
    assert m.weights is not None
    return {"device": device, "epoch_s": m.walls[-1], "walls": m.walls, "run_s": m.wall_s,
            "steal_pct": m.steal_pct}, m.weights


def check_devices(devices: list[str]) -> str | None:
    """Why these devices cannot run here (one line), or None."""
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        return ("torch sees no CUDA device here: run on a GPU machine (bench/gpu_check.sh), or "
                "`--devices cpu` for a smoke run")
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="vgg5, K = 2, one iteration")
    harness.results_option(ap)
    args = ap.parse_args(argv)
    why = check_devices(args.devices)
    if why is not None:
        console.print(f"[red]error:[/] {why}")
        return 2
    harness.use_results(args.results)
    os.environ["NVIDIA_TF32_OVERRIDE"] = "0"  # every node process inherits it
    started = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {d: [] for d in args.devices}
    first: dict[str, dict[str, torch.Tensor]] = {}
    for _ in range(1 if args.quick else args.repeats):
        for device in args.devices:
            row, weights = one_run(device, args.quick)
            runs[device].append(row)
            first.setdefault(device, weights)
            console.print(f"{device}: epoch {row['epoch_s']:.2f} s (epochs {row['walls']})")
    rows = rows_of(runs, first)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    meta = run_meta(quick=args.quick, repeats=1 if args.quick else args.repeats, gpu=gpu,
                    torch=torch.__version__, runs=runs, wall_s=time.perf_counter() - started)
    name = "gpu.quick" if args.quick else "gpu"
    publish(name, "python3 -m bench.gpu" + (" --quick" if args.quick else ""), meta,
            [("", "Epoch time, compute node on each device (s; medians over the repeats)",
              rows, 4)])
    return 0


def rows_of(runs: dict[str, list[dict[str, Any]]],
            first: dict[str, dict[str, torch.Tensor]]) -> list[dict[str, Any]]:
    """One row per device: its median epoch time, the CPU arm's over it, and how far its
    weights are from the first device's."""
    median = {d: stats.median(r["epoch_s"] for r in rs) for d, rs in runs.items()}
    base = next(iter(first.values()))
    rows = []
    for device, rs in runs.items():
        diff = max(float((first[device][k].float() - base[k].float()).abs().max())
                   for k in base)
        rows.append({"device": device, "epoch_s": median[device], "runs": len(rs),
                     "cpu_over_this": median["cpu"] / median[device] if "cpu" in median
                     else float("nan"),
                     "max_weight_diff": diff,
                     "steal_pct": stats.median(r["steal_pct"] for r in rs)})
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
