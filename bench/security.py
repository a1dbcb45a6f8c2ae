"""CurveZMQ's cost: epoch time with `security: curve` against none, and wire throughput with
CURVE against without.

Definitions (version 1, fixed before the first run):
- **Epoch time.** vgg5 (BatchNorm) on synthetic 3x32x32, B = 32, K = 2 owners and one server,
  PiPar with cuts [2] and N = 4, 5 iterations per owner and epoch, 4 epochs; a run's time is
  the mean `wall_s` of epochs 2-4 (epoch 1 holds the warm-up and the CURVE handshakes). Two
  networks: 4G (10/25 Mbit/s, owners at `compute_scale` 5, as the other benchmarks) and
  unshaped loopback (no rate limit, `compute_scale` 1: the links cost only their software
  path, where encryption weighs most). Each round runs both securities back to back, the
  order alternating by round; overhead = median over rounds of curve / none - 1 (paired
  within a round). **Targets: <= 2% at 4G, <= 15% unshaped.**
- **Throughput.** One Outbox to one Inbox in two processes on loopback, unshaped, GB/s of
  tensor payload over `n` messages after `warm` (the handshake among them); 5 rounds
  alternating plain and CURVE, medians, ratio CURVE / plain, at 1 MiB and 32 MiB.
Nothing is fitted.

    .venv/bin/python -m bench.security [--quick] [--rounds 3] [--results DIR]

`--quick`: one round, unshaped only, 2 epochs of 2 iterations, throughput at 1 MiB only (8 MiB
of messages).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import zmq

from bench import harness, stats
from bench.harness import NETWORKS, publish, run_calm, run_meta, synthetic, topology
from nodes.keys import load_pair, load_public, write_keys
from nodes.link import Inbox, Outbox
from nodes.security import CurveClient, CurveServer, NodeAuthenticator
from nodes.wire import Kind, Message

SIZES = {"1MiB": 1 << 20, "32MiB": 32 << 20}
EPOCHS, ITERATIONS, OWNERS = 4, 5, 2
NETS = {"4G": (*NETWORKS["4G"], 5.0), "unshaped": (None, None, 1.0)}  # up, down, scale
TARGETS = {"4G": 2.0, "unshaped": 15.0}


# --------------------------------------------------------------------------- epoch time


def _doc(net: str, keys: Path | None, epochs: int = EPOCHS,
         iterations: int = ITERATIONS) -> dict[str, Any]:
    up, down, scale = NETS[net]
    doc = topology(owners=OWNERS, compute=1, mode="pipar",
                   dataset=synthetic(OWNERS * iterations * 32, test_samples=64),
                   training={"epochs": epochs, "batch_size": 32, "lr": 0.05, "momentum": 0.9,
                             "max_iterations": iterations},
                   up=up, down=down, compute_scale=scale, cuts=(2,), micro_batches=4)
    if keys is not None:
        doc["security"] = {"mode": "curve", "keys": str(keys)}
    return doc


def epoch_rows(rounds: int, keys: Path, nets: tuple[str, ...] = tuple(NETS), quick: bool = False
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per round and network both runs' times; and per network the overhead summary (`quick`:
    2 epochs of 2 iterations, one attempt)."""
    shape = (2, 2) if quick else (EPOCHS, ITERATIONS)
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        for net in nets:
            order = ("none", "curve") if r % 2 == 0 else ("curve", "none")
            for sec in order:
                m = run_calm(_doc(net, keys if sec == "curve" else None, *shape),
                             attempts=1 if quick else 3)
                runs.append({"round": r + 1, "network": net, "security": sec,
                             "epoch_s": stats.mean_after_warmup(m.walls),
                             "steal_pct": m.steal_pct,
                             "rejected": m.results["summary"]["rejected_messages"]})
                print(f"round {r + 1} {net} {sec}: {runs[-1]['epoch_s']:.3f} s", flush=True)
    summary = []
    for net in nets:
        pairs = [(a["epoch_s"], b["epoch_s"]) for a in runs for b in runs
                 if a["network"] == b["network"] == net and a["round"] == b["round"]
                 and a["security"] == "none" and b["security"] == "curve"]
        ratios = [c / n for n, c in pairs]
        overhead = 100 * (statistics.median(ratios) - 1)
        summary.append({"network": net, "none_s": statistics.median(n for n, _ in pairs),
                        "curve_s": statistics.median(c for _, c in pairs),
                        "overhead_pct": overhead, "per_round_pct": ", ".join(
                            f"{100 * (x - 1):.1f}" for x in ratios),
                        "target_pct": f"<= {TARGETS[net]:g}", "met": overhead <= TARGETS[net]})
    return runs, summary


# --------------------------------------------------------------------------- throughput


def _receiver(conn: Any, keys: str | None) -> None:
    """Receive rounds on a plain or CURVE inbox; send back (arrival time, bytes) per message."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    auth = server = None
    if keys is not None:
        auth = NodeAuthenticator(ctx, {load_public(keys, "a"): "a"}, owner="b")
        auth.start()
        server = CurveServer(*load_pair(keys, "b"), auth)
    inbox = Inbox(ctx, "tcp://127.0.0.1:0", known_senders={"a"}, curve=server)
    conn.send(inbox.address)
    try:
        while conn.recv() == "go":
            recs: list[tuple[float, int]] = []
            while (m := inbox.recv(60.0)).kind != Kind.CONTROL:
                recs.append((time.time(), sum(t.nbytes for t in m.tensors.values())))
            conn.send(recs)
    finally:
        inbox.close()
        if auth is not None:
            auth.stop()
        ctx.term()


def _rate(keys: Path | None, size: int, n: int, warm: int) -> float:
    """GB/s of payload from one outbox to a fresh receiver process (plain when keys is None)."""
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_receiver, args=(child, keys and str(keys)))
    proc.start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        address = parent.recv()
        curve = None
        if keys is not None:
            curve = CurveClient(*load_pair(keys, "a"), load_public(keys, "b"))
        box = Outbox(ctx, address, name="a->b", curve=curve)
        payload = torch.ones(size, dtype=torch.uint8)
        parent.send("go")
        for i in range(warm + n):
            box.send(Message(Kind.ACT, "a", seq=i, tensors={"x": payload}))
        box.send(Message(Kind.CONTROL, "a", meta={"op": "end"}))
        recs = parent.recv()
        parent.send("stop")
        box.close()
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
        ctx.term()
    first, rest = recs[warm - 1], recs[warm:]
    return sum(b for _, b in rest) / (rest[-1][0] - first[0]) / 1e9


def throughput_rows(keys: Path, rounds: int, quick: bool) -> list[dict[str, Any]]:
    rows = []
    for label, size in list(SIZES.items())[:1 if quick else None]:
        n = max(8, (8 if quick else 256) * (1 << 20) // size * 4)
        plain, curve = [], []
        for r in range(rounds):
            for sec in (("plain", "curve") if r % 2 == 0 else ("curve", "plain")):
                (plain if sec == "plain" else curve).append(
                    _rate(keys if sec == "curve" else None, size, n, warm=4))
        p, c = statistics.median(plain), statistics.median(curve)
        rows.append({"size": label, "messages": n, "plain_GBps": p, "curve_GBps": c,
                     "curve_over_plain": c / p})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one round, fewer messages")
    ap.add_argument("--rounds", type=int, default=3, help="paired rounds of the epoch runs")
    harness.results_option(ap)
    args = ap.parse_args(argv)
    harness.use_results(args.results)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mpsl-keys-") as tmp:
        keys = Path(tmp)
        names = [f"owner{k}" for k in range(OWNERS)] + ["node1", "aggregator", "a", "b"]
        write_keys(keys, names)
        tput = throughput_rows(keys, 1 if args.quick else 5, args.quick)
        runs, summary = epoch_rows(1 if args.quick else args.rounds, keys,
                                   ("unshaped",) if args.quick else tuple(NETS), args.quick)
    meta = run_meta(wall_s=time.perf_counter() - started, quick=args.quick)
    name = "security.quick" if args.quick else "security"
    command = "python -m bench.security" + (" --quick" if args.quick else "")
    publish(name, command, meta, [
        ("", "epoch time, curve against none (mean of epochs 2-4)", summary, 3),
        (".runs", "every run", runs, 3),
        (".throughput", "wire throughput, one outbox to one inbox, unshaped", tput, 3)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
