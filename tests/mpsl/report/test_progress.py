"""The live progress: every owner's iterations of the current epoch against its total."""

from __future__ import annotations

import io
import time
from types import SimpleNamespace

from rich.console import Console

from mpsl.report import Progress
from mpsl.topology import parse

DOC = {
    "model": {"name": "mlp", "norm": "none"},
    "dataset": {"name": "digits"},
    "training": {"epochs": 2, "batch_size": 8},
    "plan": {"cuts": [2], "micro_batches": 2},
    "data_owners": {"count": 2},
    "compute_nodes": [{"name": "server", "address": "tcp://127.0.0.1:5590"}],
}


def msg(**meta):
    return SimpleNamespace(meta=meta)


def rendered(progress: Progress) -> str:
    console = Console(file=io.StringIO(), width=120, record=True)
    console.print(progress.bar.get_renderable())
    return console.export_text()


def test_owner_bars_count_each_epoch_against_its_total():
    p = Progress(parse(DOC, "t.yaml"), Console(file=io.StringIO()))
    owner0, owner1 = p.bar.tasks[p.owner_tasks[0]], p.bar.tasks[p.owner_tasks[1]]
    assert owner0.start_time is None and owner0.total is None  # no clock before training
    before = time.monotonic()
    p.on_message(msg(type="start", t=time.time(), epochs=2, iterations=[3, 5]))
    assert owner0.total == 3 and owner1.total == 5 and owner0.completed == 0
    assert owner0.start_time is not None and owner0.start_time >= before
    assert p.bar.tasks[p.epoch_task].start_time >= before
    for it in range(3):
        p.on_message(msg(type="loss", owner=0, iter=it, epoch=0, loss=1.5, samples=8))
    p.on_message(msg(type="loss", owner=1, iter=0, epoch=0, loss=2.0, samples=8))
    assert (owner0.completed, owner1.completed) == (3, 1)
    assert "3/3" in rendered(p) and "1/5" in rendered(p)
    p.on_message(msg(type="epoch", epoch=1, wall_s=1.0, train_loss=1.2, test_accuracy=0.5))
    p.on_message(msg(type="loss", owner=0, iter=3, epoch=1, loss=1.0, samples=8))  # epoch 2
    assert owner0.completed == 1 and owner0.total == 3  # the bar started again, same total
    text = rendered(p)
    assert "1/3" in text and "epoch 2/2" in text and "ETA" in text and "?" not in text


def test_totals_by_owner_name_and_counting_without_them():
    p = Progress(parse(DOC, "t.yaml"), Console(file=io.StringIO()))
    p.on_message(msg(type="start", t=0.0, epochs=2, iterations={"owner0": 4, "owner1": 2}))
    assert [p.bar.tasks[p.owner_tasks[k]].total for k in (0, 1)] == [4, 2]
    q = Progress(parse(DOC, "t.yaml"), Console(file=io.StringIO()))  # no start message seen
    for it, epoch in ((0, 0), (1, 0), (2, 1)):
        q.on_message(msg(type="loss", owner=1, iter=it, epoch=epoch, loss=1.0, samples=8))
    assert q.bar.tasks[q.owner_tasks[1]].completed == 1  # counted within the new epoch


def test_quiet_prints_one_line_per_epoch():
    out = io.StringIO()
    p = Progress(parse(DOC, "t.yaml"), Console(file=out, width=40), quiet=True)
    p.on_message(msg(type="epoch", epoch=1, wall_s=2.5, train_loss=None, test_accuracy=0.25))
    assert out.getvalue() == "epoch 1/2: 2.50 s, train loss -, test accuracy 25.00%\n"


def test_quiet_epoch_line_carries_epsilon_under_classic_dp():
    out = io.StringIO()
    p = Progress(parse(DOC, "t.yaml"), Console(file=out, width=40), quiet=True)
    p.on_message(msg(type="epoch", epoch=1, wall_s=2.5, train_loss=None, test_accuracy=0.25,
                     epsilon=3.456))
    assert out.getvalue() == ("epoch 1/2: 2.50 s, train loss -, test accuracy 25.00%, "
                              "epsilon 3.46\n")
