"""Transport benchmark: our Outbox/Inbox against raw ZeroMQ and memcpy, shaped rates, latency.

Run: ``.venv/bin/python -m bench.transport [--quick] [--unshaped]``. Two processes on loopback
TCP: this one sends, a spawned one receives and timestamps arrivals (``time.time()``, same host
clock). Writes ``bench/results/transport.csv`` and ``.json`` (``--unshaped``: the unshaped
cells only, into ``transport.unshaped.*``).

Metrics: unshaped throughput (GB/s of tensor payload; each the median of 5 rounds alternating
ours, ours with ``copy=False`` (how the runtime sends ACT and GRAD) and raw ZeroMQ; a path's
ratio to raw is the ratio of medians), shaped rate at the receiver over a stream of messages,
one-way latency of 1 KiB messages on an idle link (median of 15); ``--repeat`` runs, medians
reported. Targets: shaped rate within 2% for 1 MiB and larger, latency within 1 ms of the
configured one, unshaped throughput >= 80% of raw ZeroMQ for 1 MiB and larger (>= 90% with
``copy=False``). Nothing is fitted. ``--quick``: 1 round, 64 KiB and 8 MiB, 10 and 1000 Mbps.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import zmq

from bench.harness import columns, write_md
from mpsl.actions import Action, Msg
from mpsl.trace import Event
from nodes.link import Inbox, Outbox
from nodes.wire import Kind, Message

SIZES = {"64KiB": 64 << 10, "1MiB": 1 << 20, "8MiB": 8 << 20, "32MiB": 32 << 20}
SIZES_QUICK = dict(list(SIZES.items())[::2])  # a smoke run's (with RATES[::4])
RATES = [10, 20, 50, 100, 1000]
LATENCIES = [0.005, 0.020]
RESULTS = Path(__file__).resolve().parent / "results"
RECV_TIMEOUT = 60.0


# ------------------------------------------------------------------------- receiver process


def _receiver(conn) -> None:
    """Serve commands from the pipe: receive one cell's messages, send back arrival records."""
    torch.set_num_threads(1)
    ctx = zmq.Context()
    inbox = Inbox(ctx, "tcp://127.0.0.1:0")
    raw = ctx.socket(zmq.PULL)
    raw.setsockopt(zmq.RCVHWM, 100_000)
    raw.setsockopt(zmq.LINGER, 0)
    raw_port = raw.bind_to_random_port("tcp://127.0.0.1")
    conn.send((inbox.address, f"tcp://127.0.0.1:{raw_port}"))
    try:
        while True:
            cmd = conn.recv()
            records: list[tuple[int, float, float, int]] = []
            if cmd == "ours":
                while True:
                    m = inbox.recv(RECV_TIMEOUT)
                    now = time.time()
                    if m.kind == Kind.CONTROL:
                        break
                    nbytes = sum(t.nbytes for t in m.tensors.values())
                    records.append((m.seq, now, float(m.meta.get("t", 0.0)), nbytes))
                    del m
            elif cmd == "raw":
                while True:
                    if not raw.poll(int(RECV_TIMEOUT * 1000)):
                        raise TimeoutError("raw receive")
                    frames = raw.recv_multipart(copy=False)
                    now = time.time()
                    if len(frames) == 1:
                        break
                    records.append((len(records), now, 0.0, sum(len(f) for f in frames[1:])))
                    del frames
            else:
                break
            conn.send(records)
    finally:
        inbox.close()
        raw.close(linger=0)
        ctx.term()


class Receiver:
    """The spawned receiving process."""

    def __init__(self) -> None:
        sp = mp.get_context("spawn")
        self.conn, child = sp.Pipe()
        self.proc = sp.Process(target=_receiver, args=(child,), daemon=True)
        self.proc.start()
        if not self.conn.poll(60):
            raise TimeoutError("receiver did not start")
        self.ours, self.raw = self.conn.recv()

    def start(self, what: str) -> None:
        self.conn.send(what)

    def result(self) -> list[tuple[int, float, float, int]]:
        if not self.conn.poll(RECV_TIMEOUT + 5):
            raise TimeoutError("receiver did not answer")
        return self.conn.recv()

    def close(self) -> None:
        try:
            self.conn.send("quit")
            self.proc.join(10)
        finally:
            if self.proc.is_alive():
                self.proc.terminate()
                self.proc.join(5)


# ------------------------------------------------------------------------- measurements


def _rate(records: list[tuple[int, float, float, int]], skip: int) -> float:
    """Bytes per second between the arrival of record ``skip - 1`` and the last one."""
    first, rest = records[skip - 1], records[skip:]
    return sum(r[3] for r in rest) / (rest[-1][1] - first[1])


def ours_unshaped(rx: Receiver, ctx: zmq.Context, size: int, n: int, warm: int,
                  copy: bool = True) -> float:
    payload = torch.ones(size, dtype=torch.uint8)
    ob = Outbox(ctx, rx.ours, name="bench")
    rx.start("ours")
    try:
        for i in range(warm + n):
            ob.send(Message(Kind.ACT, "bench", seq=i, tensors={"x": payload}), copy=copy)
        ob.send(Message(Kind.CONTROL, "bench", meta={"op": "end"}))
        recs = rx.result()
    finally:
        ob.close()
    assert [r[0] for r in recs] == list(range(warm + n)), "lost or reordered"
    return _rate(recs, warm)


def raw_unshaped(rx: Receiver, ctx: zmq.Context, size: int, n: int, warm: int,
                 chunk: int | None = None) -> float:
    buf = torch.ones(size, dtype=torch.uint8).numpy()
    step = chunk or size
    parts = [memoryview(buf[i:i + step]) for i in range(0, size, step)]
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.SNDHWM, 100_000)
    s.connect(rx.raw)
    rx.start("raw")
    try:
        for _ in range(warm + n):
            s.send_multipart([b"h" * 100, *parts], copy=False)
        s.send(b"end")
        recs = rx.result()
    finally:
        s.close(linger=1000)
    return _rate(recs, warm)


def memcpy(size: int) -> tuple[float, float]:
    """(copy into an existing buffer, clone into a fresh one) in bytes per second."""
    src = torch.ones(size, dtype=torch.uint8)
    dst = torch.empty_like(src)
    out = []
    for fn in (lambda: dst.copy_(src), lambda: src.clone()):
        fn()
        n = max(5, int(2e9 // size))
        t = time.perf_counter()
        for _ in range(n):
            fn()
        out.append(size * n / (time.perf_counter() - t))
    return out[0], out[1]


def shaped(rx: Receiver, ctx: zmq.Context, rate: float, size: int, budget_s: float
           ) -> dict[str, float]:
    """Achieved rate at ``rate`` Mbps: inter-arrival over k>=2 messages, else one timed message."""
    t_msg = size * 8 / (rate * 1e6)
    k = max(2, min(4000, math.ceil(budget_s / t_msg) + 1))
    if 2 * t_msg > 6 * budget_s:  # two would take too long (10 Mbps x 8 MiB, say)
        k = 1
    payload = torch.ones(size, dtype=torch.uint8)
    events: list[Event] = []
    ob = Outbox(ctx, rx.ours, name="bench", rate_mbps=rate, burst_bytes=64 << 10 if k > 1 else 0,
                on_event=events.append)
    rx.start("ours")
    try:
        for i in range(k):
            ob.send(Message(Kind.ACT, "bench", seq=i, tensors={"x": payload},
                            meta={"t": time.time()}))
        ob.send(Message(Kind.CONTROL, "bench", meta={"op": "end"}))
        recs = rx.result()
        ob.flush(10)
    finally:
        ob.close()
    # header + frames, as sent
    wire = [e.bytes for e in events if Action.from_str(e.action).msg is Msg.ACT]
    assert [r[0] for r in recs] == list(range(k)), "lost or reordered"
    if k > 1:  # steady state: the bucket's burst and the transport time cancel out
        achieved = sum(wire[1:]) * 8 / (recs[-1][1] - recs[0][1]) / 1e6
    else:  # one message, burst 0: from send() to arrival (includes encode and transport)
        achieved = wire[0] * 8 / (recs[0][1] - recs[0][2]) / 1e6
    return {"messages": k, "achieved_mbps": achieved, "error_pct": 100 * (achieved / rate - 1)}


def latency(rx: Receiver, ctx: zmq.Context, rate: float | None, lat: float, n: int
            ) -> list[float]:
    """One-way delays (s) of small messages on an idle link (within the burst: no queueing)."""
    ob = Outbox(ctx, rx.ours, name="bench", rate_mbps=rate, latency_s=lat)
    rx.start("ours")
    x = torch.ones(1024, dtype=torch.uint8)
    try:
        for i in range(n):
            ob.send(Message(Kind.ACT, "bench", seq=i, tensors={"x": x}, meta={"t": time.time()}))
            time.sleep(lat + 0.01)
        ob.send(Message(Kind.CONTROL, "bench", meta={"op": "end"}))
        recs = rx.result()
    finally:
        ob.close()
    return [r[1] - r[2] for r in recs]


def unshaped(rx: Receiver, ctx: zmq.Context, quick: bool) -> list[dict]:
    """Throughput of ours (copying and zero-copy) against raw ZeroMQ, per size."""
    rows: list[dict] = []
    rounds, sizes = (1, SIZES_QUICK) if quick else (5, SIZES)
    for label, size in sizes.items():
        # Rounds alternate ours, ours zero-copy and raw, so that load from other processes on
        # this machine hits them alike; medians over the rounds are reported.
        n = max(8, int((0.05e9 if quick else 0.4e9) // size))
        warm = max(2, n // 5)
        got: dict[str, list[float]] = {"ours": [], "handover": [], "raw": [], "raw4": []}
        for _ in range(rounds):
            got["ours"].append(ours_unshaped(rx, ctx, size, n, warm))
            got["handover"].append(ours_unshaped(rx, ctx, size, n, warm, copy=False))
            got["raw"].append(raw_unshaped(rx, ctx, size, n, warm))
            if size > 4 << 20:
                got["raw4"].append(raw_unshaped(rx, ctx, size, n, warm, chunk=4 << 20))
        med = {k: statistics.median(v) if v else 0.0 for k, v in got.items()}
        mc, clone = memcpy(size)
        pct = {k: [round(100 * a / b, 1) for a, b in zip(got[k], got["raw"])]
               for k in ("ours", "handover")}
        rows.append({"test": "unshaped", "size": label, "bytes": size, "messages": n,
                     "rounds": rounds, "ours_GBps": med["ours"] / 1e9,
                     "ours_handover_GBps": med["handover"] / 1e9, "raw_zmq_GBps": med["raw"] / 1e9,
                     "raw_zmq_4MiB_chunks_GBps": med["raw4"] / 1e9 if got["raw4"] else None,
                     "memcpy_GBps": mc / 1e9, "clone_GBps": clone / 1e9,
                     "ours_vs_raw_pct": 100 * med["ours"] / med["raw"],
                     "ours_handover_vs_raw_pct": 100 * med["handover"] / med["raw"],
                     "ours_vs_raw_pct_per_round": pct["ours"],
                     "ours_handover_vs_raw_pct_per_round": pct["handover"]})
        print(f"unshaped {label}: raw {med['raw'] / 1e9:.2f} GB/s; per round, % of raw: ours "
              f"{pct['ours']}, copy=False {pct['handover']}", flush=True)
    return rows


# ------------------------------------------------------------------------- main


def run(quick: bool, only_unshaped: bool = False) -> list[dict]:
    rows: list[dict] = []
    torch.set_num_threads(1)
    ctx = zmq.Context()
    rx = Receiver()
    try:
        rows += unshaped(rx, ctx, quick)
        if only_unshaped:
            return rows
        budget, rates = (0.3, RATES[::4]) if quick else (2.0, RATES)
        for rate in rates:
            for label, size in (SIZES_QUICK if quick else SIZES).items():
                if quick and size * 8 / (rate * 1e6) > 2.0:
                    continue
                r = shaped(rx, ctx, rate, size, budget)
                rows.append({"test": "shaped", "size": label, "bytes": size,
                             "rate_mbps": rate, **r})
                print(f"shaped {rate} Mbps {label}: {r['achieved_mbps']:.3f} Mbps "
                      f"({r['error_pct']:+.2f}%, {r['messages']} msgs)", flush=True)
        for rate in [None, *rates]:
            base = 0.0
            for lat in [0.0, *LATENCIES]:  # 0: the software path alone, as a baseline
                d = latency(rx, ctx, rate, lat, 3 if quick else 15)
                med = statistics.median(d)
                base = med if lat == 0 else base
                rows.append({"test": "latency", "rate_mbps": rate or 0, "latency_ms": lat * 1e3,
                             "median_ms": med * 1e3, "min_ms": min(d) * 1e3,
                             "max_ms": max(d) * 1e3, "error_ms": (med - lat) * 1e3,
                             "added_ms": (med - base) * 1e3})
                print(f"latency {rate} Mbps {lat * 1e3:.0f} ms: median {med * 1e3:.2f} ms "
                      f"[{min(d) * 1e3:.2f}, {max(d) * 1e3:.2f}]", flush=True)
    finally:
        rx.close()
        ctx.term()
    return rows


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def table(rows: list[dict]) -> None:
    """Print the results as rich tables."""
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title="Unshaped throughput: GB/s of tensor payload, loopback TCP, two processes, "
                    "median of alternating rounds")
    for c in ["size", "raw ZeroMQ", "ours (copy)", "ours/raw", "ours, copy=False",
              "copy=False/raw", "raw, 4 MiB chunks", "memcpy", "clone"]:
        t.add_column(c, justify="right")
    for r in [r for r in rows if r["test"] == "unshaped"]:
        t.add_row(r["size"], f"{r['raw_zmq_GBps']:.2f}", f"{r['ours_GBps']:.2f}",
                  f"{r['ours_vs_raw_pct']:.0f}%", f"{r['ours_handover_GBps']:.2f}",
                  f"{r['ours_handover_vs_raw_pct']:.0f}%", _num(r["raw_zmq_4MiB_chunks_GBps"]),
                  f"{r['memcpy_GBps']:.1f}", f"{r['clone_GBps']:.1f}")
    con.print(t)
    if not any(r["test"] != "unshaped" for r in rows):
        return
    t = Table(title="Shaped rate: achieved Mbps (error %)")
    t.add_column("rate Mbps", justify="right")
    for s in SIZES:
        t.add_column(s, justify="right")
    for rate in RATES:
        cells = {r["size"]: r for r in rows if r["test"] == "shaped" and r["rate_mbps"] == rate}
        t.add_row(str(rate), *[
            f"{cells[s]['achieved_mbps']:.3f} ({cells[s]['error_pct']:+.2f}%)" if s in cells
            else "-" for s in SIZES])
    con.print(t)
    t = Table(title="One-way delay of 1 KiB messages on an idle link, send() to recv() (ms); "
                    "added = median minus the same link's median at 0 ms")
    for c in ["rate Mbps", "configured", "median", "min", "max", "error", "added vs 0 ms"]:
        t.add_column(c, justify="right")
    for r in [r for r in rows if r["test"] == "latency"]:
        t.add_row(str(r["rate_mbps"] or "unshaped"), f"{r['latency_ms']:.1f}",
                  f"{r['median_ms']:.2f}", f"{r['min_ms']:.2f}", f"{r['max_ms']:.2f}",
                  f"{r['error_ms']:+.2f}", f"{r['added_ms']:.2f}")
    con.print(t)


def medians(runs: list[list[dict]]) -> list[dict]:
    """One row per cell: the median of every number over the runs (rows matched by position)."""
    out = []
    for cells in zip(*runs):
        row = dict(cells[0])
        for k, v in row.items():
            if len({repr(c[k]) for c in cells}) == 1:
                continue  # the same in every run (a cell's key, say)
            if isinstance(v, float) or (isinstance(v, int) and not isinstance(v, bool)):
                row[k] = statistics.median(c[k] for c in cells)
            elif isinstance(v, list):
                row[k] = [c[k] for c in cells]
        row["runs"] = len(cells)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="1 round, 2 sizes and rates, fewer")
    ap.add_argument("--repeat", type=int, default=1, help="runs; medians are reported")
    ap.add_argument("--unshaped", action="store_true",
                    help="only the unshaped cells; results in transport.unshaped.*")
    ap.add_argument("--out", "--results", dest="out", type=Path, default=RESULTS, help="folder")
    args = ap.parse_args(argv)
    t0 = time.time()
    runs = []
    for i in range(args.repeat):
        print(f"run {i + 1} of {args.repeat}", flush=True)
        runs.append(run(args.quick, args.unshaped))
    rows = medians(runs) if args.repeat > 1 else runs[0]
    table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    flat = [{"run": "median", **r} for r in rows] if args.repeat > 1 else []
    flat += [{"run": i + 1, **r} for i, run_rows in enumerate(runs) for r in run_rows]
    stem = ("transport.unshaped" if args.unshaped else "transport") + ".quick" * args.quick
    with open(args.out / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns(flat))
        w.writeheader()
        w.writerows(flat)
    info = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "quick": args.quick,
            "unshaped_only": args.unshaped, "seconds": round(time.time() - t0, 1),
            "python": platform.python_version(), "torch": torch.__version__,
            "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(), "cpus": os.cpu_count(),
            "repeat": args.repeat, "rows": rows, "runs": runs}
    (args.out / f"{stem}.json").write_text(json.dumps(info, indent=1))
    write_md(args.out / f"{stem}.md", f"python -m bench.transport --repeat {args.repeat}"
             f"{' --quick' * args.quick}{' --unshaped' * args.unshaped}", rows)
    print(f"wrote {args.out}/{stem}.csv and .json in {info['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
