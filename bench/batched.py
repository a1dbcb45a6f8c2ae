"""Batched per-owner copies: compute-node throughput with `batch_owners: auto` against `off`.

Run: ``.venv/bin/python -m bench.batched [--quick] [--owners 1,2,4,...] [--norms none,...]``.
Writes ``bench/results/batched.csv``, ``.json`` and ``.md`` (``--quick``: ``batched.quick.*``, K = 4
alone; ``--results DIR`` writes under DIR).

What runs (`part` server): vgg5's server part as ``topologies/two_hop.yaml`` has it (the model
built by mpsl.models for digits-shaped inputs, 1x8x8, 10 classes; cut 2: layers [2, 5), the
loss on the server, labels shared), batch B = 32 in N = 4 micro-batches of 8, SGD with
momentum 0.9. Two real `ComputeNode`s in this process, one `auto`, one `off`, same topology
with K owners, one torch thread. A *round* is one iteration of every owner: K x N ACT messages
(random activations and labels) are admitted first, then the node's `serve()` runs them all:
F, B and the GRAD for every micro-batch, the STEP after each owner's last one. Sends are
recorded, not sent (the same work in both modes, on another thread in a real node). `part`
middle: the same model in MP-SL's U-shape, cuts [1, 3], the node runs layers [1, 3); a round
serves the K x N ACTs (forwards), then the K x N GRADs (backwards, which recompute the
batched forwards), both timed.

Metrics: throughput = K x N / (wall time of `serve()`), micro-batches per second; a mode's
value is the median over `--repeat` rounds, the rounds of the two modes interleaved (which
goes first alternates), after one warm-up round each (the first batched round probes each
layer's kernels, nodes.folding). speedup = batched / sequential throughput (ratio of
medians); cpu_speedup the same from the thread's CPU time, less sensitive to a loaded host.
The per-micro-batch milliseconds at K = 1, 2, 4, ... are the profile of the batched part the
planner reads (planner.batched). After the rounds, both nodes' copies must hold bitwise the
same weights (`equal`).

Target: speedup >= 2 at K = 16 with norm none.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from typing import Any

import torch

from bench import harness
from bench.harness import console, publish, run_meta, synthetic, topology, wait_for_quiet
from mpsl.plan import make_plan
from mpsl.topology import parse
from mpsl.training import build_full_model
from nodes.compute import ComputeNode
from nodes.wire import Kind, Message

B, N, CUT = 32, 4, 2
TARGET_K, TARGET = 16, 2.0


PARTS = {"server": ("pipar", "shared", (CUT,)), "middle": ("mpsl", "local", (1, 3))}


def make_node(owners: int, norm: str, batch: str, rounds: int, part: str = "server"
              ) -> ComputeNode:
    """A compute node of vgg5's `part` for `owners` owners, its sends recorded."""
    mode, labels, cuts = PARTS[part]
    doc = topology(owners=owners, compute=1, mode=mode, labels=labels, model="vgg5", norm=norm,
                   dataset=synthetic(owners * B * (rounds + 2), shape=(1, 8, 8)),
                   training={"epochs": 1, "batch_size": B, "lr": 0.05, "optimizer": "sgd",
                             "momentum": 0.9, "seed": 0},
                   up=None, down=None, cuts=cuts, micro_batches=N)
    topo = parse(doc, "bench.yaml")
    spec = dataclasses.replace(topo.compute_nodes[0], batch_owners=batch)
    topo = dataclasses.replace(topo, compute_nodes=(spec,))
    node = ComputeNode(topo, make_plan(topo, len(build_full_model(topo))), "node1")
    node.send = lambda *a, **kw: None  # type: ignore[method-assign]
    return node


def close(node: ComputeNode) -> None:
    for box in node.outboxes.values():
        box.close(drain=False, timeout=1)
    node.inbox.close()
    node.security.stop()
    node.ctx.term()


def messages(owners: int, it: int, shape: torch.Size, kind: Kind = Kind.ACT,
             labels: bool = True) -> list[Message]:
    """Every owner's N activations (or gradients) of iteration `it`, micro-batch by
    micro-batch."""
    g = torch.Generator().manual_seed(it)
    msgs = []
    for mb in range(N):
        for k in range(owners):
            tensors = {"x" if kind == Kind.ACT else "g": torch.randn(shape, generator=g)}
            if labels:
                tensors["y"] = torch.randint(0, 10, (shape[0],), generator=g)
            msgs.append(Message(kind=kind, src=f"owner{k}", owner=k, iter=it, mb=mb,
                                tensors=tensors,
                                meta={"part": 1, "n_mb": N, "batch": B, "epoch": 0}))
    return msgs


def served(node: ComputeNode, msgs: list[Message]) -> tuple[float, float]:
    """Admit messages, then time `serve()`: (wall, CPU) seconds."""
    for m in msgs:
        assert node.rules.check(m, node.run_id) is None
        node.route_one(m)
    t0, c0 = time.perf_counter(), time.thread_time()
    node.serve()
    return time.perf_counter() - t0, time.thread_time() - c0


def one_round(node: ComputeNode, it: int, shapes: tuple[torch.Size, torch.Size], part: str
              ) -> tuple[float, float]:
    """One iteration of every owner: (wall, CPU) seconds of serving it."""
    owners = len(node.owners)
    if part == "server":
        took = served(node, messages(owners, it, shapes[0]))
    else:
        fwd = served(node, messages(owners, it, shapes[0], labels=False))
        bwd = served(node, messages(owners, it, shapes[1], Kind.GRAD, labels=False))
        took = (fwd[0] + bwd[0], fwd[1] + bwd[1])
    assert node.queue.unfinished == 0
    return took


def measure(owners: int, norm: str, repeat: int, part: str = "server") -> dict[str, Any]:
    """One cell: both modes at K = `owners`, rounds interleaved."""
    nodes = {m: make_node(owners, norm, m, repeat, part) for m in ("off", "auto")}
    full = build_full_model(nodes["off"].topo)
    cuts = PARTS[part][2]
    with torch.no_grad():
        x = full[:cuts[0]](torch.zeros(B // N, 1, 8, 8))
        shapes = (x.shape, full[cuts[0]:cuts[-1]](x).shape)
    times: dict[str, list[tuple[float, float]]] = {m: [] for m in nodes}
    try:
        for it in range(repeat + 1):
            order = ("off", "auto") if it % 2 else ("auto", "off")
            for m in order:
                took = one_round(nodes[m], it, shapes, part)
                if it > 0:  # round 0 warms up
                    times[m].append(took)
        equal = all(torch.equal(a, b) for k in range(owners) for a, b in zip(
            nodes["off"].copies[(k, 1)].module.state_dict().values(),
            nodes["auto"].copies[(k, 1)].module.state_dict().values()))
        calls = nodes["auto"].batcher.calls if nodes["auto"].batcher else {}
    finally:
        for node in nodes.values():
            close(node)
    mbs = owners * N
    med = {m: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
           for m, t in times.items()}
    return {"part": part, "norm": norm, "K": owners,
            "seq_mb_per_s": mbs / med["off"][0], "batched_mb_per_s": mbs / med["auto"][0],
            "speedup": med["off"][0] / med["auto"][0],
            "cpu_speedup": med["off"][1] / med["auto"][1],
            "seq_ms_per_mb": 1e3 * med["off"][0] / mbs,
            "batched_ms_per_mb": 1e3 * med["auto"][0] / mbs,
            "owners_per_call": max(calls, default=1), "equal": equal}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--owners", default="1,2,4,8,16,32,64")
    ap.add_argument("--norms", default="none,group,batch")
    ap.add_argument("--parts", default="server,middle")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--quick", action="store_true",
                    help="K = 4; norm none; 3 rounds; no wait for a quiet machine")
    harness.results_option(ap)
    args = ap.parse_args(argv)
    harness.use_results(args.results)
    owners = [4] if args.quick else [int(k) for k in args.owners.split(",")]
    norms = ["none"] if args.quick else args.norms.split(",")
    repeat = 3 if args.quick else args.repeat
    torch.set_num_threads(1)
    load = wait_for_quiet(max_load=1.5, max_wait_s=0 if args.quick else 120)
    t0 = time.monotonic()
    parts = ["server"] if args.quick else args.parts.split(",")
    rows = []
    for part in parts:
        for norm in norms if part == "server" else ["none"]:
            for k in owners:
                rows.append(measure(k, norm, repeat, part))
                console.print(rows[-1])
    targets = [r for r in rows if r["K"] == TARGET_K and r["norm"] == "none"
               and r["part"] == "server"]
    target_rows = [{"metric": f"speedup at K = {TARGET_K}, server part, norm none",
                    "value": r["speedup"],
                    "target": f">= {TARGET}", "met": r["speedup"] >= TARGET} for r in targets]
    meta = run_meta(load_1min={"start": load, "max": max(load, os.getloadavg()[0])},
                    wall_s=time.monotonic() - t0, repeat=repeat, torch=torch.__version__)
    name = "batched.quick" if args.quick else "batched"
    cmd = "python -m bench.batched" + (" --quick" if args.quick else "")
    publish(name, cmd, meta, [("", "Compute-node throughput, batched vs sequential copies",
                               rows, 3), (".targets", "Targets", target_rows, 2)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
