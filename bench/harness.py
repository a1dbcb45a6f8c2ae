"""What the benchmarks share: topologies on free loopback ports, local runs with their trace and
the machine's CPU steal, the machine and commit they ran on, tables and result files."""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from mpsl.plan import Plan, make_plan
from mpsl.topology import Topology, load
from mpsl.trace import Event, read_events
from mpsl.training import num_layers

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"  # where save/publish write; `use_results` changes it
RESULTS_DEFAULT = RESULTS
NETWORKS = {"4G": (10.0, 25.0), "4G+": (20.0, 40.0), "WiFi": (50.0, 50.0)}
PATIENT_S = 600.0  # see `patient`
console = Console(width=140)
__all__ = ["NETWORKS", "RESULTS", "Measured", "console", "load_doc", "num_layers", "parse_doc",
           "publish", "results_dir", "results_option", "run", "run_calm", "run_meta",
           "synthetic", "topology", "use_results", "wait_for_quiet"]


def topology(*, owners: int, compute: int, mode: str, model: str = "vgg5",
             dataset: Mapping[str, Any], training: Mapping[str, Any], up: float | None,
             down: float | None, compute_scale: float = 1.0, cuts: Sequence[int] = (2,),
             micro_batches: int = 1, labels: str = "shared", latency_ms: float = 0.0,
             norm: str = "batch", timeout_s: float = 300, schedule: str = "gpipe",
             ports: Sequence[int] | None = None) -> dict[str, Any]:
    """A topology document with every node on a loopback port (`ports`: free ones)."""
    if ports is None:
        from nodes.ports import free_ports

        ports = free_ports(compute + 1 + owners, consecutive=True)
    base = ports[compute + 1]
    doc: dict[str, Any] = {
        "name": "bench",
        "model": {"name": model, "norm": norm},
        "dataset": dict(dataset),
        "training": dict(training),
        "mode": mode,
        "labels": labels,
        "plan": {"cuts": list(cuts), "micro_batches": micro_batches},
        "data_owners": {"count": owners, "base_port": base, "compute_scale": compute_scale,
                        "uplink_mbps": up, "downlink_mbps": down, "latency_ms": latency_ms},
        "compute_nodes": [{"name": f"node{i + 1}", "address": f"tcp://127.0.0.1:{ports[i]}"}
                          for i in range(compute)],
        "aggregator": {"address": f"tcp://127.0.0.1:{ports[compute]}"},
        "runtime": {"timeout_s": timeout_s},
    }
    if schedule != "gpipe":
        doc["schedule"] = schedule
    return doc


SYNTHETIC_SHAPE = (3, 32, 32)  # the synthetic data set's default image shape


def synthetic(size: int, shape: Sequence[int] = SYNTHETIC_SHAPE, classes: int = 10,
              test_samples: int | None = None) -> dict[str, Any]:
    """The `dataset:` of a synthetic data set. The default shape is left out of its options:
    a YAML list there is unhashable where mpsl.training caches labels by the options."""
    options: dict[str, Any] = {"num_classes": classes, "size": size}
    if tuple(shape) != SYNTHETIC_SHAPE:
        options["shape"] = list(shape)
    doc: dict[str, Any] = {"name": "synthetic", "options": options}
    if test_samples is not None:
        doc["test_samples"] = test_samples
    return doc


def patient(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with an owner lost only after PATIENT_S of silence (and nodes waiting longer for
    a message): on the shared 2-core machine (1-minute load up to 25) an owner's heartbeat can
    be starved for longer than the default 20 s."""
    doc["failure"] = {"timeout_s": PATIENT_S}
    doc["runtime"] = {**doc.get("runtime", {}), "timeout_s": 1.5 * PATIENT_S}
    return doc


def load_doc(doc: Mapping[str, Any], folder: Path) -> tuple[Path, Topology]:
    path = folder / "topology.yaml"
    path.write_text(yaml.safe_dump(dict(doc)))
    return path, load(path)


def parse_doc(doc: Mapping[str, Any]) -> Topology:
    """The topology of a document (loaded from a temporary file, as `mpsl` loads one)."""
    with tempfile.TemporaryDirectory() as tmp:
        return load_doc(doc, Path(tmp))[1]


@dataclass
class Measured:
    """One local run: its results.json, its trace (events.jsonl), the CPU steal during it,
    the seconds from starting the nodes to their end (`wall_s`, start-up included), and its
    final weights (model.pt) where asked for."""

    results: dict[str, Any]
    events: list[Event]
    steal_pct: float
    wall_s: float
    steal_attempts: list[float] = field(default_factory=list)
    weights: dict[str, Any] | None = None

    @property
    def walls(self) -> list[float]:
        """Every epoch's `wall_s`, in order."""
        return [e["wall_s"] for e in self.results["epochs"]]


def run(doc: Mapping[str, Any], plan: Plan | None = None, weights: bool = False) -> Measured:
    """Run a topology locally, one process per node (nodes.launch.LocalCluster); `weights`:
    keep the run's final weights."""
    import torch

    from nodes.launch import LocalCluster

    with tempfile.TemporaryDirectory(prefix="mpsl-bench-") as tmp:
        path, topo = load_doc(doc, Path(tmp))
        plan = plan or make_plan(topo, num_layers(topo))
        before, started = cpu_jiffies(), time.perf_counter()
        res = LocalCluster(str(path), (), topo, plan, Path(tmp) / "run").run()
        wall = time.perf_counter() - started
        trace = Path(tmp) / "run" / "events.jsonl"
        events = read_events(trace) if trace.exists() else []
        steal = steal_pct(before, cpu_jiffies())
        kept = torch.load(Path(tmp) / "run" / "model.pt", weights_only=True) if weights else None
        return Measured(res, events, steal, wall, [steal], kept)


def run_calm(doc: Mapping[str, Any], plan: Plan | None = None, max_steal_pct: float = 5.0,
             attempts: int = 3) -> Measured:
    """`run`, repeated (at most `attempts` times) while CPU steal during the run exceeds
    `max_steal_pct`; the attempt with the least steal counts.

    The choice looks at steal only, never at the measured time, so it does not favour fast
    runs. `steal_attempts` lists the steal of every attempt, in order.
    """
    tried: list[Measured] = []
    for _ in range(max(1, attempts)):
        tried.append(run(doc, plan))
        if tried[-1].steal_pct <= max_steal_pct:
            break
    best = min(tried, key=lambda m: m.steal_pct)
    best.steal_attempts = [m.steal_pct for m in tried]
    return best


def cpu_jiffies() -> tuple[int, int]:
    """(steal, total) CPU time of this machine so far, from /proc/stat; (0, 0) elsewhere.

    On a shared VM, steal is the time other guests ran on this guest's cores: the load
    average does not see it, and it slows every process alike.
    """
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields)


def steal_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / total if total > 0 else 0.0


def wait_for_quiet(max_load: float, max_wait_s: float, poll_s: float = 20.0,
                   max_steal_pct: float = 5.0, window_s: float = 3.0) -> float:
    """Wait (bounded) until the 1-minute load average is below `max_load` and CPU steal over
    `window_s` below `max_steal_pct`; return the load (at once when `max_wait_s` <= 0)."""
    if max_wait_s <= 0:
        return os.getloadavg()[0]
    deadline = time.monotonic() + max_wait_s
    while True:
        before = cpu_jiffies()
        time.sleep(window_s)
        steal = steal_pct(before, cpu_jiffies())
        load = os.getloadavg()[0]
        if load < max_load and steal < max_steal_pct or time.monotonic() >= deadline:
            return load
        console.print(f"[dim]load {load:.2f} (< {max_load}?), steal {steal:.1f}% "
                      f"(< {max_steal_pct}%?): waiting {poll_s:.0f} s[/dim]")
        time.sleep(poll_s)


# ---------------------------------------------------------------- where and when


def machine() -> str:
    """This machine in a few words: CPU model and cores."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def commit() -> str:
    """The repository's commit, `+dirty` when the working tree has changes."""
    def git(*args: str) -> str:
        try:  # a machine without git (a GPU machine's image) or a copy without .git: unknown
            out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        except OSError:
            return ""
        return out.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run_meta(**extra: Any) -> dict[str, Any]:
    """What every results JSON records: date (UTC), commit, machine, and `extra`."""
    return {"date": now(), "commit": commit(), "machine": machine(), **extra}


# ---------------------------------------------------------------- tables and files


def results_option(ap: argparse.ArgumentParser) -> None:
    """`--results DIR`: where a benchmark writes its files (default bench/results)."""
    ap.add_argument("--results", type=Path, default=None, metavar="DIR",
                    help="results folder (default bench/results)")


def use_results(folder: Path | str | None) -> Path:
    """Write every later result under `folder` (None: bench/results); made if missing."""
    global RESULTS
    RESULTS = RESULTS_DEFAULT if folder is None else Path(folder)
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS


def results_dir() -> Path:
    """The folder results go to now (`use_results`)."""
    return RESULTS


def save(name: str, rows: list[dict[str, Any]], meta: Mapping[str, Any],
         paper: Sequence[Mapping[str, Any]] | None = None) -> None:
    """bench/results/NAME.csv (one row per cell; a column for every key of any row) and
    NAME.json (rows and how they were made; `paper`: the rows of the paper table, each
    {figure, metric, paper, ours, verdict, reason}, which `python -m bench` gathers)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f"{name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns(rows))
        w.writeheader()
        w.writerows(rows)
    doc: dict[str, Any] = {"meta": dict(meta), "rows": rows}
    if paper is not None:
        doc["paper"] = [dict(r) for r in paper]
    (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")


def columns(rows: list[dict[str, Any]]) -> list[str]:
    """Every key of any row, in the order first seen (rows of different kinds share a table)."""
    return list(dict.fromkeys(k for r in rows for k in r))


def cell(v: Any, digits: int) -> str:
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def show(title: str, rows: list[dict[str, Any]], digits: int = 3) -> Table:
    table = Table(title=title)
    cols = columns(rows)
    for col in cols:
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(*[cell(r.get(c, ""), digits) for c in cols])
    console.print(table)
    return table


def markdown(rows: list[dict[str, Any]], digits: int = 3) -> str:
    """The rows as a Markdown table, for bench/README.md."""
    cols = columns(rows)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(cell(r.get(c, ""), digits) for c in cols) + " |")
    return "\n".join(out)


def header(meta: Mapping[str, Any], command: str) -> str:
    """The first lines of a results .md file: command, date, commit, machine, load, steal."""
    lines = [f"`{command}`: {meta['date']}, commit {meta['commit']}, {meta['machine']}."]
    if "load_1min" in meta and "steal_pct" in meta:
        ld, st = meta["load_1min"], meta["steal_pct"]
        lines.append(f"1-min load {ld['start']:.2f} at the start, max {ld['max']:.2f}; CPU "
                     f"steal per run median {st['median']:.1f}%, max {st['max']:.1f}%; whole "
                     f"run {meta.get('wall_s', 0.0):.0f} s.")
    return "\n".join(lines) + "\n\n"


def write_md(path: Path, command: str, rows: list[dict[str, Any]], digits: int = 3) -> None:
    """A results .md of one table: the header (command, date, commit, machine), the rows."""
    path.write_text(header(run_meta(), command) + markdown(rows, digits) + "\n")


def publish(name: str, command: str, meta: Mapping[str, Any],
            tables: Sequence[tuple[str, str, list[dict[str, Any]], int]],
            paper: Sequence[Mapping[str, Any]] | None = None) -> None:
    """Show every table and write it: bench/results/NAME{suffix}.csv and .json for each
    (suffix, title, rows, digits), and NAME.md with the header and all tables; `paper` rows
    go into NAME.json (`save`)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    parts = [header(meta, command)]
    for suffix, title, rows, digits in tables:
        if not rows:
            continue
        show(title, rows, digits)
        save(name + suffix, rows, meta if not suffix else {"date": meta["date"]},
             paper if not suffix else None)
        parts.append(f"{title}:\n\n{markdown(rows, digits)}\n")
    (RESULTS / f"{name}.md").write_text("\n".join(parts))
    console.print(f"whole run {meta.get('wall_s', 0.0):.0f} s; wrote {RESULTS / name}.*")


def readme_section(name: str, paper: Sequence[Mapping[str, Any]], verdict: str = "") -> None:
    """End RESULTS/NAME.md with its "For bench/README" section: the paper rows, then the
    verdict in words when there is one."""
    tail = f"\n{verdict}\n" if verdict else ""
    with open(results_dir() / f"{name}.md", "a") as f:
        f.write(f"\n## For bench/README\n\n{markdown(list(paper), 2)}\n{tail}")


def steal_summary(steals: Sequence[float]) -> dict[str, float]:
    """The runs' CPU steal % for a run's meta: median and max (0 with no run)."""
    import statistics

    values = list(steals) or [0.0]
    return {"median": statistics.median(values), "max": max(values)}
