"""What a person sees: live progress, the results tables, and the timeline and curves as PNG."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich import progress as rp
from rich.console import Console
from rich.table import Table

from mpsl.metrics import CPU, Event, read_events
from mpsl.plan import Plan
from mpsl.topology import Topology


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


class Progress:
    """Live progress of a run from the aggregator's METRICS: iterations per owner, the loss."""

    def __init__(self, topo: Topology, plan: Plan, console: Console, quiet: bool = False) -> None:
        self.console, self.quiet = console, quiet
        self.epochs = topo.training.epochs
        self.bar = rp.Progress(
            rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(),
            rp.TextColumn("{task.fields[info]}"), rp.TimeElapsedColumn(),
            console=console, disable=quiet, transient=False,
        )
        self.epoch_task = self.bar.add_task(f"epoch 0/{self.epochs}", total=self.epochs, info="")
        self.owner_tasks = {o.index: self.bar.add_task(f"  {o.name}", total=None, info="")
                            for o in topo.owners}

    def __enter__(self) -> Progress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def on_message(self, msg: Any) -> None:
        kind = msg.meta.get("type")
        if kind == "loss":
            self.bar.update(self.owner_tasks[msg.meta["owner"]], advance=1,
                            info=f"loss {msg.meta['loss']:.4f}")
        elif kind == "epoch":
            m = msg.meta
            loss = "-" if m["train_loss"] is None else f"{m['train_loss']:.4f}"
            self.bar.update(self.epoch_task, completed=m["epoch"],
                            description=f"epoch {m['epoch']}/{self.epochs}",
                            info=f"train loss {loss}, test acc {m['test_accuracy']:.2%}")
            if self.quiet:
                self.console.print(f"epoch {m['epoch']}/{self.epochs}: {m['wall_s']:.2f} s, "
                                   f"train loss {loss}, test accuracy {m['test_accuracy']:.2%}")


def results_tables(results: dict[str, Any]) -> list[Table]:
    """Epochs; nodes (busy, idle, memory); links (bytes, busy); the summary line."""
    ep = Table(title="Epochs")
    for col in ("epoch", "wall s", "train loss", "test accuracy"):
        ep.add_column(col, justify="right")
    for e in results["epochs"]:
        loss = "-" if e["train_loss"] is None else f"{e['train_loss']:.4f}"
        ep.add_row(str(e["epoch"]), f"{e['wall_s']:.2f}", loss, f"{e['test_accuracy']:.2%}")
    nodes = Table(title="Nodes")
    for col in ("node", "busy s", "idle s", "peak RSS MB", "peak tensors MB"):
        nodes.add_column(col, justify="right" if col != "node" else "left")
    for name, n in results["nodes"].items():
        nodes.add_row(name, f"{n['busy_s']:.2f}", f"{n['idle_s']:.2f}",
                      _mb(n["peak_rss_bytes"]), _mb(n["peak_tensor_bytes"]))
    links = Table(title="Links")
    for col in ("link", "MB", "busy s"):
        links.add_column(col, justify="right" if col != "link" else "left")
    for name, lk in sorted(results["links"].items()):
        links.add_row(name, _mb(lk["bytes"]), f"{lk['busy_s']:.2f}")
    s = results["summary"]
    eff = "-" if s["efficiency"] is None else f"{s['efficiency']:.2f}"
    summary = Table(title="Summary", show_header=False)
    summary.add_row("training time", f"{s['train_s']:.2f} s")
    summary.add_row("bottleneck", f"{s['bottleneck']} ({s['bottleneck_busy_s']:.2f} s busy)")
    summary.add_row("time / bottleneck bound", eff)
    summary.add_row("final test accuracy", f"{s['final_test_accuracy']:.2%}")
    return [ep, nodes, links, summary]


def draw_timeline(events: Iterable[Event], path: str | Path, title: str = "") -> Path:
    """A Gantt chart: one row per processor and link, one bar per action, coloured by kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    events = list(events)
    if not events:
        raise ValueError("no events to draw")
    t0 = min(e.t0 for e in events)
    rows = sorted({e.resource_name for e in events},
                  key=lambda r: (("->" in r), r))
    colors = {"F": "tab:blue", "B": "tab:orange", "STEP": "tab:green", "AGG": "tab:red",
              "ACT": "tab:cyan", "GRAD": "tab:olive", "PARAMS": "tab:purple",
              "GLOBAL": "tab:pink"}
    fig, ax = plt.subplots(figsize=(14, 0.35 * len(rows) + 1.5))
    for i, r in enumerate(rows):
        bars = [(e.t0 - t0, max(e.seconds, 1e-4)) for e in events if e.resource_name == r]
        kinds = [e.kind for e in events if e.resource_name == r]
        ax.broken_barh(bars, (i - 0.4, 0.8), facecolors=[colors.get(k, "grey") for k in kinds])
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("seconds")
    ax.set_title(title or "timeline")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    ax.legend(handles, list(colors), ncol=8, loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def draw_curves(results: dict[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e["epoch"] for e in results["epochs"]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [e["train_loss"] for e in results["epochs"]], marker="o")
    a.set_xlabel("epoch")
    a.set_ylabel("train loss")
    b.plot(epochs, [e["test_accuracy"] for e in results["epochs"]], marker="o")
    b.set_xlabel("epoch")
    b.set_ylabel("test accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def report_run(run_dir: str | Path, console: Console | None = None) -> list[Path]:
    """Print a run's tables and draw timeline.png and curves.png into its folder."""
    run_dir = Path(run_dir)
    try:
        results = json.loads((run_dir / "results.json").read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{run_dir}: no results.json (is it a run folder?)") from None
    if console is not None:
        for t in results_tables(results):
            console.print(t)
    events = read_events(run_dir / "events.jsonl")
    title = f"{results['topology']} {results['mode']}"
    return [draw_timeline(events, run_dir / "timeline.png", title),
            draw_curves(results, run_dir / "curves.png")]


__all__ = ["CPU", "Progress", "draw_curves", "draw_timeline", "report_run", "results_tables"]
