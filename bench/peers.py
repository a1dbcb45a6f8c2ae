"""Against the reference implementations: the same vgg5 configuration run by mpsl, by PiPar's
published code (blessonvar/PipeLearn, patched to run here: bench/peers/pipelearn.patch) and by
`torch.distributed.pipelining` (GPipe and 1F1B, two CPU processes over gloo).

Definitions (version 1, fixed before the first run):
- Configuration: vgg5 (batch norm; PipeLearn's VGG5 has the same layers and parameter
  counts), synthetic 3x32x32 data, 10 classes, B = 32, `--samples` per owner (96: 3
  iterations), SGD lr 0.01 momentum 0.9, 2 epochs, one torch thread per process, links
  unshaped (PipeLearn shapes with `sudo wondershaper` on eth0 and torch's pipelining not at all,
  so no run here is shaped), every process on this machine.
- Modes: FL (the whole model on every owner; PipeLearn: `layer_num_on_client` -1) and
  pipelined (PiPar: owner layers [0, 2), server [2, 5), N = 4 micro-batches; PipeLearn:
  `layer_num_on_client` 2, `pipe_batch_num` 4; torch: stage 0 on rank 0, stage 1 with the loss
  on rank 1), K = 1, 2, 4 owners (torch: K = 1 only: one pipeline has one data source and one
  model, not K owners' copies), plus K = 1 pipelined at N = 8.
- Epoch time: the second epoch (the first carries start-up and warm-up). mpsl: results.json
  `wall_s` of epoch 2 (end to end, the aggregation and the evaluation between epochs in it);
  PipeLearn: each client's own epoch timer (sent to the server with its timing, patched into
  the server's stats), the slowest client; not the server's timer, which in FL runs behind
  clients that do not wait for it; torch: rank 0's wall time of the epoch's iterations between
  two barriers.
- Marginal cost per micro-batch: (T(N = 8) - T(N = 4)) / (4 x iterations), K = 1 pipelined,
  per system: what one more micro-batch adds to the epoch.
- Every run (mpsl's too) is started in a session of its own: with the kernel's autogroup
  scheduling (on here) a session shares a loaded machine's CPU as one, so runs in the
  benchmark's own session would get less of it than runs in a new one.
- Interleaved: every repeat runs every (system, configuration) in turn. Targets: mpsl's epoch
  time <= 0.8x PipeLearn's and <= torch's in every configuration.

    .venv/bin/python -m bench.peers [--repeats 1] [--samples 96] [--quick] [--results DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from bench import harness, stats
from bench.harness import console, run_meta, synthetic, topology

PATCH = Path(__file__).resolve().parent / "peers" / "pipelearn.patch"
MIRROR = Path("/work/.mirror/blessonvar+PipeLearn/repo")
BATCH, EPOCHS, CUT = 32, 2, 2
TIMEOUT_S = 600.0


@contextmanager
def group(cmds: list[list[str]], cwd: Path, env: dict[str, str], logs: Path) -> Iterator[
        list[subprocess.Popen[bytes]]]:
    """Start every command in its own process group; kill every group on the way out."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, cmd in enumerate(cmds):
            with open(logs / f"p{i}.log", "wb") as log:
                procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True))
            time.sleep(2.0 if i == 0 else 0.2)  # the first (a server) listens first
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def wait_all(procs: list[subprocess.Popen[bytes]], logs: Path, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    for i, p in enumerate(procs):
        try:
            rc = p.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{what}: process {i} still running after {TIMEOUT_S:.0f} s; "
                               f"log {logs / f'p{i}.log'}") from None
        if rc != 0:
            tail = (logs / f"p{i}.log").read_text(errors="replace")[-800:]
            raise RuntimeError(f"{what}: process {i} exit {rc}:\n{tail}")


# ---------------------------------------------------------------- PipeLearn


def pipelearn_checkout(source: Path, into: Path) -> Path:
    """A copy of PipeLearn's newest commit with bench/peers/pipelearn.patch applied."""
    if not source.exists():
        raise FileNotFoundError(f"{source}: no PipeLearn snapshot (fetch github:blessonvar/"
                                "PipeLearn, or give --pipelearn DIR)")
    repo = into / "PipeLearn"
    subprocess.run(["git", "clone", "-q", str(source), str(repo)], check=True)
    subprocess.run(["git", "apply", str(PATCH)], cwd=repo, check=True)
    return repo


def pipelearn(repo: Path, owners: int, mode: str, n: int, samples: int) -> float:
    """One PipeLearn run; the second epoch's time on the clients' own timers (the slowest)."""
    from nodes.ports import free_ports

    shutil.rmtree(repo / "results", ignore_errors=True)
    config = {"experiment_name": "mpsl-bench", "server_address": "127.0.0.1",
              "port": free_ports(1)[0], "client_num": owners, "dataset_name": "CIFAR-10",
              "model_name": "VGG5", "data_size": samples * owners, "test_data_size": BATCH,
              "epoch_num": EPOCHS, "aggregation_frequency": -1, "batch_size": BATCH,
              "enable_val": False, "enable_test": False,
              "layer_num_on_client": -1 if mode == "FL" else CUT, "pipe_batch_num": n,
              "profile_iter_num": 0, "uplink_bandwidth": 0, "downlink_bandwidth": 0,
              "thread_num": 1}
    (repo / "config.json").write_text(json.dumps(config))
    py = sys.executable
    cmds = [[py, "run.py", "-s"]] + [[py, "run.py", "-i", str(i)] for i in range(owners)]
    logs = repo / "logs"
    logs.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with group(cmds, repo, env, logs) as procs:
        wait_all(procs, logs, f"PipeLearn {mode} K={owners} N={n}")
    lines = (repo / "results" / "results.csv.jsonl").read_text().splitlines()
    return float(max(json.loads(line)["client_epoch_times"][1] for line in lines))


# ---------------------------------------------------------------- torch.distributed.pipelining


def torch_pipe(schedule: str, n: int, samples: int, workdir: Path) -> float:
    """One run of two ranks (gloo) of `torch_worker`; the second epoch's time on rank 0."""
    from nodes.ports import free_ports

    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_ports(1)[0]),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(harness.ROOT)}
    logs = workdir / f"torch-{schedule}-{n}"
    logs.mkdir(parents=True, exist_ok=True)
    cmds = [[sys.executable, "-m", "bench.peers", "--torch-worker", schedule, str(n),
             str(samples), str(rank)] for rank in (1, 0)]
    with group(cmds, harness.ROOT, env, logs) as procs:
        wait_all(procs, logs, f"torch {schedule} N={n}")
    out = (logs / "p1.log").read_text().splitlines()
    times = [json.loads(line)["epoch_s"] for line in out if line.startswith("{")]
    return float(times[1])


def torch_worker(schedule: str, n: int, samples: int, rank: int) -> None:
    """One rank of the torch pipeline: vgg5's layers [0, 2) (rank 0) or [2, 5) with the loss."""
    import torch
    import torch.distributed as dist
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    from mpsl.models import build_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    layers = list(build_model("vgg5", 10, 3, 32, "batch").children())
    part = torch.nn.Sequential(*(layers[:CUT] if rank == 0 else layers[CUT:]))
    stage = PipelineStage(part, rank, 2, torch.device("cpu"))
    kind = ScheduleGPipe if schedule == "gpipe" else Schedule1F1B
    sched = kind(stage, n, loss_fn=torch.nn.functional.cross_entropy)
    opt = torch.optim.SGD(part.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (samples,), generator=gen)
    for _ in range(EPOCHS):
        dist.barrier()
        started = time.perf_counter()
        for i in range(0, samples - BATCH + 1, BATCH):
            opt.zero_grad()
            if rank == 0:
                sched.step(x[i:i + BATCH])
            else:
                sched.step(target=y[i:i + BATCH])
            opt.step()
        dist.barrier()
        if rank == 0:
            print(json.dumps({"epoch_s": time.perf_counter() - started}), flush=True)
    dist.destroy_process_group()


# ---------------------------------------------------------------- mpsl


def mpsl_session(owners: int, mode: str, n: int, samples: int, workdir: Path) -> float:
    """`mpsl` in a process of its own session, as every peer runs: with the kernel's autogroup
    scheduling, a session shares the CPU with the other sessions as one, so the peers' runs
    would otherwise get more of a loaded machine than the benchmark's own session."""
    logs = workdir / f"mpsl-{mode}-{owners}-{n}"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(harness.ROOT)}
    cmd = [sys.executable, "-m", "bench.peers", "--mpsl-worker", mode, str(owners), str(n),
           str(samples)]
    with group([cmd], harness.ROOT, env, logs) as procs:
        wait_all(procs, logs, f"mpsl {mode} K={owners} N={n}")
    out = (logs / "p0.log").read_text().splitlines()
    return float(next(json.loads(line) for line in out if line.startswith("{"))["epoch_s"])


def mpsl(owners: int, mode: str, n: int, samples: int) -> float:
    """One mpsl run (`harness.run`); the second epoch's wall_s."""
    doc = topology(owners=owners, compute=1, mode="fl" if mode == "FL" else "pipar",
                   dataset=synthetic(samples * owners),
                   training={"epochs": EPOCHS, "batch_size": BATCH, "lr": 0.01,
                             "momentum": 0.9, "seed": 0},
                   up=None, down=None, cuts=(CUT,), micro_batches=n)
    return float(harness.run(doc).walls[1])


# ---------------------------------------------------------------- the comparison


def configs(quick: bool) -> list[tuple[str, int, int]]:
    """(mode, K, N) of every configuration, in run order."""
    if quick:
        return [("pipelined", 1, 4)]
    return ([("FL", k, 1) for k in (1, 2, 4)] + [("pipelined", k, 4) for k in (1, 2, 4)]
            + [("pipelined", 1, 8)])


def systems(mode: str, owners: int, quick: bool) -> list[str]:
    if quick:
        return ["torch GPipe"]
    out = ["mpsl", "PipeLearn"]
    if mode == "pipelined" and owners == 1:
        out += ["torch GPipe", "torch 1F1B"]
    return out


def one(system: str, cfg: tuple[str, int, int], samples: int, repo: Path | None,
        workdir: Path) -> float:
    mode, k, n = cfg
    if system == "mpsl":
        return mpsl_session(k, mode, n, samples, workdir)
    if system == "PipeLearn":
        assert repo is not None
        return pipelearn(repo, k, mode, n, samples)
    return torch_pipe("gpipe" if system == "torch GPipe" else "1f1b", n, samples, workdir)


def measure(args: argparse.Namespace, workdir: Path, repo: Path | None,
            loads: list[float]) -> dict[tuple[str, str, int, int], list[float]]:
    """Every (system, configuration), `args.repeats` times, interleaved; failures are NaN."""
    times: dict[tuple[str, str, int, int], list[float]] = {}
    for rep in range(args.repeats):
        for cfg in configs(args.quick):
            for system in systems(cfg[0], cfg[1], args.quick):
                try:
                    t = one(system, cfg, args.samples, repo, workdir)
                except (RuntimeError, OSError, ValueError, IndexError) as err:
                    console.print(f"[red]{system} {cfg}: {err}[/red]")
                    t = float("nan")
                times.setdefault((system, *cfg), []).append(t)
                loads.append(os.getloadavg()[0])
                console.print(f"rep {rep} {system} {cfg}: epoch {t:.3f} s, load {loads[-1]:.1f}")
    return times


def rows_of(times: dict[tuple[str, str, int, int], list[float]]) -> list[dict[str, Any]]:
    """One row per configuration: every system's median epoch time and mpsl's ratios."""
    out = []
    for cfg in dict.fromkeys(k[1:] for k in times):
        row: dict[str, Any] = {"mode": cfg[0], "owners": cfg[1], "N": cfg[2]}
        for system in ("mpsl", "PipeLearn", "torch GPipe", "torch 1F1B"):
            if (system, *cfg) in times:
                row[f"{system} s"] = stats.median(times[(system, *cfg)])
        m = row.get("mpsl s")
        if m is not None:
            if "PipeLearn s" in row:
                row["mpsl/PipeLearn"] = m / row["PipeLearn s"]
            torches = [row[c] for c in ("torch GPipe s", "torch 1F1B s") if c in row]
            if torches:
                row["mpsl/best torch"] = m / min(torches)
        out.append(row)
    return out


def marginal(rows: list[dict[str, Any]], samples: int) -> list[dict[str, Any]]:
    """Per system: (T(N = 8) - T(N = 4)) / (4 x iterations), K = 1 pipelined."""
    four = next((r for r in rows if r["mode"] == "pipelined" and r["owners"] == 1
                 and r["N"] == 4), None)
    eight = next((r for r in rows if r["mode"] == "pipelined" and r["owners"] == 1
                  and r["N"] == 8), None)
    if four is None or eight is None:
        return []
    extra = 4 * (samples // BATCH)
    return [{"system": s[:-2], "T(N=4) s": four[s], "T(N=8) s": eight[s],
             "ms per extra micro-batch": 1000 * (eight[s] - four[s]) / extra}
            for s in four if s.endswith(" s") and s in eight]


def paper_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's two targets, as rows of the paper table (the peers have no paper number)."""
    out = []
    for col, target, what in (("mpsl/PipeLearn", 0.8, "PiPar's code (PipeLearn)"),
                              ("mpsl/best torch", 1.0, "torch.distributed.pipelining")):
        vals = [(r[col], r) for r in rows if col in r and r[col] == r[col]]
        if not vals:
            continue
        worst, r = max(vals, key=lambda v: v[0])
        ok = worst <= target
        out.append({"figure": "reference implementations", "metric":
                    f"mpsl's epoch time over {what}'s, worst configuration",
                    "paper": target, "ours": round(worst, 2), "verdict": "met" if ok else
                    "not met", "reason": f"worst: {r['mode']} K = {r['owners']} N = {r['N']}; "
                    f"target <= {target}; {len(vals)} configurations, unshaped links"})
    return out


def verdict(rows: list[dict[str, Any]], marg: list[dict[str, Any]]) -> str:
    """The verdict in words."""
    parts = []
    for col, target in (("mpsl/PipeLearn", 0.8), ("mpsl/best torch", 1.0)):
        vals = [r[col] for r in rows if col in r and r[col] == r[col]]
        if vals:
            bad = sum(v > target for v in vals)
            parts.append(f"{col}: {min(vals):.2f}-{max(vals):.2f} (target <= {target}; "
                         f"{bad} of {len(vals)} configurations over it).")
    for m in marg:
        parts.append(f"{m['system']}: {m['ms per extra micro-batch']:.1f} ms per extra "
                     "micro-batch.")
    return " ".join(parts)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--samples", type=int, default=96, help="per owner")
    ap.add_argument("--pipelearn", type=Path, default=MIRROR,
                    help="a PipeLearn checkout (git) to copy and patch")
    ap.add_argument("--quick", action="store_true",
                    help="torch GPipe only, K = 1, N = 4, 64 samples")
    ap.add_argument("--mpsl-worker", nargs=4, metavar=("MODE", "K", "N", "SAMPLES"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--torch-worker", nargs=4, metavar=("SCHEDULE", "N", "SAMPLES", "RANK"),
                    help=argparse.SUPPRESS)
    harness.results_option(ap)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.mpsl_worker:
        mode, k, n, samples = args.mpsl_worker
        print(json.dumps({"epoch_s": mpsl(int(k), mode, int(n), int(samples))}), flush=True)
        return 0
    if args.torch_worker:
        sched, n, samples, rank = args.torch_worker
        torch_worker(sched, int(n), int(samples), int(rank))
        return 0
    if args.quick:
        args.repeats, args.samples = 1, 64
    started, loads = time.perf_counter(), [os.getloadavg()[0]]
    harness.use_results(args.results)
    with tempfile.TemporaryDirectory(prefix="mpsl-peers-") as tmp:
        repo = None if args.quick else pipelearn_checkout(args.pipelearn, Path(tmp))
        times = measure(args, Path(tmp), repo, loads)
    rows = rows_of(times)
    marg = marginal(rows, args.samples)
    paper = paper_rows(rows)
    meta = run_meta(samples_per_owner=args.samples, batch=BATCH, epochs=EPOCHS, cut=CUT,
                    repeats=args.repeats, quick=args.quick,
                    times={" ".join(map(str, k)): v for k, v in times.items()},
                    load_1min={"start": loads[0], "max": max(loads)},
                    steal_pct={"median": 0.0, "max": 0.0},
                    wall_s=time.perf_counter() - started)
    name = "peers.quick" if args.quick else "peers"
    cmd = "python -m bench.peers" + (" --quick" if args.quick else
                                     f" --repeats {args.repeats} --samples {args.samples}")
    harness.publish(name, cmd, meta, [
        ("", "epoch time (s, second epoch, median of repeats), unshaped links", rows, 3),
        (".marginal", "marginal cost per micro-batch, K = 1 pipelined", marg, 2)], paper)
    harness.readme_section(name, paper, verdict(rows, marg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
