"""Training curves: the loss of every iteration per owner, and loss and accuracy per epoch."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mpsl.names import owner_name
from mpsl.report.figure import pyplot, save

MAX_LEGEND = 8  # owners named in the legend; more are drawn unnamed


def draw_curves(results: Mapping[str, Any], path: str | Path) -> Path:
    """curves.png of `curves_figure`."""
    return save(curves_figure(results), path)


def curves_figure(results: Mapping[str, Any]) -> Any:
    """Loss per iteration (results.json `losses`), loss and accuracy per epoch."""
    plt = pyplot()
    fig, (it_ax, loss_ax, acc_ax) = plt.subplots(1, 3, figsize=(15, 4))
    _per_iteration(it_ax, results.get("losses") or [])
    epochs = results.get("epochs") or []
    xs = [e["epoch"] for e in epochs]
    for key, label in (("train_loss", "train"), ("test_loss", "test")):
        pts = [(x, e.get(key)) for x, e in zip(xs, epochs) if e.get(key) is not None]
        if pts:
            loss_ax.plot(*zip(*pts), marker="o", label=label)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss per epoch")
    loss_ax.legend(fontsize="small")
    acc_ax.plot(xs, [e.get("test_accuracy") for e in epochs], marker="o")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy per epoch")
    for ax in (loss_ax, acc_ax):
        ax.set_xticks(xs)
    return fig


def _per_iteration(ax: Any, losses: list[Mapping[str, Any]]) -> None:
    by_owner: dict[int, list[tuple[int, float]]] = {}
    for row in losses:
        by_owner.setdefault(int(row["owner"]), []).append((int(row["iter"]), float(row["loss"])))
    for k in sorted(by_owner):
        pts = sorted(by_owner[k])
        ax.plot(*zip(*pts), linewidth=1,
                label=owner_name(k) if len(by_owner) <= MAX_LEGEND else None)
    if 0 < len(by_owner) <= MAX_LEGEND:
        ax.legend(fontsize="small")
    if not by_owner:
        ax.text(0.5, 0.5, "no per-iteration losses", ha="center", transform=ax.transAxes)
    ax.set(xlabel="iteration (of each owner)", ylabel="train loss", title="loss per iteration")
    ax.xaxis.get_major_locator().set_params(integer=True)
