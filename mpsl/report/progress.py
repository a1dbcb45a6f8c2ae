"""Live progress of a run from the monitor's messages: the epochs, and every owner's
iterations of the current epoch against its known total, with elapsed time and an ETA.

The clock starts with the monitor's `start` message (training starts), which carries the
number of epochs and every owner's iterations per epoch; each owner's bar starts again at
each epoch (a `loss` message carries the epoch and the iteration counted over the run).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich import progress as rp
from rich.console import Console

from mpsl.names import owner_index
from mpsl.spec import Topology


def _per_owner(value: Any) -> dict[int, int]:
    """`iterations` of a start message, a list by owner index or a mapping by index or name."""
    if isinstance(value, Mapping):
        out = {}
        for key, n in value.items():
            k = owner_index(key) if isinstance(key, str) and not key.isdigit() else int(key)
            if k is not None:
                out[k] = int(n)
        return out
    if isinstance(value, (list, tuple)):
        return {k: int(n) for k, n in enumerate(value)}
    return {}


class Progress:
    """Bars for the epochs and for each owner; feed `on_message` the monitor's messages."""

    def __init__(self, topo: Topology, console: Console, quiet: bool = False) -> None:
        self.console, self.quiet = console, quiet
        self.epochs = topo.training.epochs
        self.bar = rp.Progress(
            rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(),
            rp.TextColumn("{task.fields[info]}"), rp.TimeElapsedColumn(),
            rp.TextColumn("ETA"), rp.TimeRemainingColumn(),
            console=console, disable=quiet, transient=False,
        )
        self.epoch_task = self.bar.add_task(f"epoch 0/{self.epochs}", total=self.epochs,
                                            info="", start=False)
        self.owner_tasks = {o.index: self.bar.add_task(f"  {o.name}", total=None, info="",
                                                       start=False)
                            for o in topo.owners}
        self.totals: dict[int, int] = {}  # iterations per epoch, by owner index
        self.epoch_of: dict[int, int] = {}  # the epoch each owner's bar shows
        self.done: dict[int, int] = {}  # iterations of that epoch seen

    def __enter__(self) -> Progress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def on_message(self, msg: Any) -> None:
        """One monitor message (anything with a `meta` mapping holding its `type`)."""
        meta = msg.meta
        kind = meta.get("type")
        if kind == "start":
            self.on_start(meta)
        elif kind == "loss":
            self.on_loss(meta)
        elif kind == "epoch":
            self.on_epoch(meta)

    def on_start(self, meta: Mapping[str, Any]) -> None:
        if meta.get("epochs"):
            self.epochs = int(meta["epochs"])
        self.totals = _per_owner(meta.get("iterations"))
        self.bar.reset(self.epoch_task, total=self.epochs, completed=0,
                       description=f"epoch 1/{self.epochs}")
        for k, task in self.owner_tasks.items():
            self.bar.reset(task, total=self.totals.get(k), completed=0)

    def on_loss(self, meta: Mapping[str, Any]) -> None:
        k = int(meta["owner"])
        task = self.owner_tasks.get(k)
        if task is None:
            return
        epoch = int(meta.get("epoch", 0))
        if self.epoch_of.get(k, epoch) != epoch:  # a new epoch: the bar starts again
            self.bar.reset(task, total=self.totals.get(k), completed=0)
            self.done[k] = 0
        self.epoch_of[k] = epoch
        self.done[k] = self.done.get(k, 0) + 1
        total = self.totals.get(k)
        completed = (int(meta["iter"]) % total + 1) if total and "iter" in meta else self.done[k]
        if not self.bar.tasks[task].started:
            self.bar.start_task(task)
        self.bar.update(task, completed=completed, info=f"loss {float(meta['loss']):.4f}")

    def on_epoch(self, m: Mapping[str, Any]) -> None:
        loss = "-" if m.get("train_loss") is None else f"{m['train_loss']:.4f}"
        acc = m.get("test_accuracy")
        acc_text = "-" if acc is None else f"{acc:.2%}"
        if m.get("epsilon") is not None:  # classic DP: the privacy spent so far
            acc_text += f", epsilon {m['epsilon']:.3g}"
        ahead = min(m["epoch"] + 1, self.epochs)
        self.bar.update(self.epoch_task, completed=m["epoch"],
                        description=f"epoch {ahead}/{self.epochs}",
                        info=f"train loss {loss}, test acc {acc_text}")
        if self.quiet:
            self.console.print(f"epoch {m['epoch']}/{self.epochs}: {m['wall_s']:.2f} s, "
                               f"train loss {loss}, test accuracy {acc_text}",
                               markup=False, highlight=False, soft_wrap=True)
