"""A run's results from the nodes' summaries: results.json (every node's busy and idle time,
memory and dropped messages, every link, the summary), the trace, and the files of the run
folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mpsl.metrics import busy_seconds, link_bytes, write_results
from mpsl.trace import Event, events_from_rows, write_events


def node_row(summary: dict[str, Any], busy: float, wall: float) -> dict[str, Any]:
    """One node of results.json from its summary: busy and idle time, memory, rejections, the
    connections CURVE refused, and the messages it dropped by reason (`wire: ...` for those its
    inbox refused)."""
    keys = ("peak_rss_bytes", "peak_tensor_bytes", "state_bytes", "activation_peak_bytes",
            "rejected_messages", "refused_connections")
    return {"busy_s": busy, "idle_s": wall - busy, **{k: summary[k] for k in keys},
            "dropped": dict(sorted(summary.get("dropped", {}).items()))}



def assemble(run: dict[str, Any], summaries: dict[str, dict[str, Any]],
             t_end: float) -> tuple[dict[str, Any], list[Event]]:
    """results.json from `run` (the run's own fields, `t_start` and `epochs` among them) and
    every node's summary; and the trace of the run (events from `t_start` on)."""
    events: list[Event] = []
    for s in summaries.values():
        events += events_from_rows(s["events"])
    events = [e for e in events if e.t1 >= run["t_start"]]
    wall = t_end - run["t_start"]
    busy = busy_seconds(events)
    nodes = {name: node_row(s, busy.get(name, 0.0), wall) for name, s in sorted(summaries.items())}
    links = {name: {"bytes": b, "busy_s": busy.get(name, 0.0)}
             for name, b in link_bytes(events).items()}
    bottleneck = max(busy, key=lambda k: busy[k]) if busy else ""
    bound = busy.get(bottleneck, 0.0)
    results = {**run, "nodes": nodes, "links": links, "summary": {
        "train_s": wall, "bottleneck": bottleneck, "bottleneck_busy_s": bound,
        "time_over_bound": wall / bound if bound else None,
        "final_test_accuracy": run["epochs"][-1]["test_accuracy"],
        "samples_per_owner": run["partition"]["samples"],
        "rejected_messages": sum(n["rejected_messages"] for n in nodes.values())}}
    return results, events


def write_run(run_dir: Path, results: dict[str, Any], events: list[Event],
              model_state: dict[str, torch.Tensor]) -> None:
    """results.json and .csv, events.jsonl, and model.pt (written whole, then renamed)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_results(run_dir, results)
    write_events(run_dir / "events.jsonl", events)
    tmp = run_dir / "model.pt.tmp"
    torch.save(model_state, tmp)
    os.replace(tmp, run_dir / "model.pt")
