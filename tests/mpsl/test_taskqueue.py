"""Tests of mpsl.taskqueue: the execution rule, step by step."""

from __future__ import annotations

from mpsl.actions import Msg, Task
from mpsl.plan import Plan
from mpsl.schedule import iteration_tasks, tasks_by_node
from mpsl.taskqueue import TaskQueue

PLAN = Plan(5, (2,), ("owner", "server"), (3, 3))


def node_tasks(node: str, owner: int, plan: Plan = PLAN):  # noqa: ANN201
    return tasks_by_node(iteration_tasks(plan, owner, plan.micro_batches[owner]))[node]


def test_owner_barrier_first_then_triggered_in_arrival_order_then_step() -> None:
    q = TaskQueue()
    q.add(0, 0, node_tasks("owner0", 0), t=0.0)
    burst = q.pop()
    assert burst is not None and str(burst.task).startswith("[0F0") and q.pop() is None
    # gradients arrive while the burst runs: they wait for it, then run oldest first
    assert q.deliver(0, 0, (Msg.GRAD, 0, 2), 1.0) is not None
    assert q.deliver(0, 0, (Msg.GRAD, 0, 0), 2.0) is not None
    assert not q  # behind the burst
    assert q.finish(burst, 3.0) is False
    first = q.pop()
    assert first is not None and str(first.task) == "[<server:GRAD2 0B2]"
    q.finish(first, 4.0)
    second = q.pop()
    assert second is not None and str(second.task) == "[<server:GRAD0 0B0]"
    q.finish(second, 5.0)
    assert q.pop() is None  # the STEP waits for the last backward
    q.deliver(0, 0, (Msg.GRAD, 0, 1), 6.0)
    last = q.pop()
    assert last is not None
    q.finish(last, 7.0)
    step = q.pop()
    assert step is not None and str(step.task) == "[STEP]" and q.unfinished == 1
    assert q.finish(step, 8.0) is True and q.unfinished == 0


def test_unexpected_or_duplicate_messages_are_refused() -> None:
    q = TaskQueue()
    q.add(0, 0, node_tasks("server", 0), t=0.0)
    assert q.expects(0, 0, (Msg.ACT, 1, 0))
    assert q.deliver(0, 0, (Msg.ACT, 1, 0), 1.0) is not None
    assert q.deliver(0, 0, (Msg.ACT, 1, 0), 1.5) is None  # a duplicate
    assert q.deliver(1, 0, (Msg.ACT, 1, 0), 1.5) is None  # an owner it has no tasks of
    assert q.deliver(0, 7, (Msg.ACT, 1, 0), 1.5) is None  # an iteration it has not
    assert q.deliver(0, 0, (Msg.GRAD, 1, 0), 1.5) is None  # a kind it does not take


def test_compute_node_serves_owners_oldest_arrival_first_ties_to_lower_owner() -> None:
    q = TaskQueue()
    for k in (0, 1):
        q.add(k, 0, node_tasks("server", k), t=0.0)
    q.deliver(1, 0, (Msg.ACT, 1, 0), 1.0)
    q.deliver(0, 0, (Msg.ACT, 1, 0), 2.0)
    q.deliver(0, 0, (Msg.ACT, 1, 1), 3.0)
    q.deliver(1, 0, (Msg.ACT, 1, 1), 3.0)  # a tie: owner 0 first
    order = []
    while (e := q.pop()) is not None:
        order.append((e.owner, e.task.key))
        q.finish(e, 10.0)
    assert order == [(1, (Msg.ACT, 1, 0)), (0, (Msg.ACT, 1, 0)), (0, (Msg.ACT, 1, 1)),
                     (1, (Msg.ACT, 1, 1))]


def test_gated_rounds_wait_for_open() -> None:
    q = TaskQueue(gated=True)
    q.add(0, 0, node_tasks("server", 0), t=0.0, round_id=0)
    q.add(0, 1, node_tasks("server", 0), t=0.0, round_id=1)
    q.deliver(0, 1, (Msg.ACT, 1, 0), 1.0)  # next round's work arrives early
    assert q.pop() is None
    q.deliver(0, 0, (Msg.ACT, 1, 0), 2.0)
    e = q.pop()
    assert e is not None and e.iteration == 0 and e.round == 0 and q.pop() is None
    q.open(1)
    e = q.pop()
    assert e is not None and e.iteration == 1 and e.arrival == 1.0


def test_drop_owner_forgets_its_tasks_and_keeps_the_others():
    q = TaskQueue(gated=True)
    tasks = [Task.from_str("s", 0, "[<o:ACT0 1F0]"), Task.from_str("s", 0, "[1B0]")]
    q.add(0, 0, tasks, 0.0)
    q.add(1, 0, tasks, 0.0)
    q.add(1, 1, tasks, 0.0, round_id=1)
    assert q.deliver(1, 0, (Msg.ACT, 1, 0), 1.0) is not None
    assert q.drop_owner(1) == 2 and q.unfinished == 1
    assert not q and not q.expects(1, 1, (Msg.ACT, 1, 0))
    assert q.deliver(0, 0, (Msg.ACT, 1, 0), 2.0) is not None
    entry = q.pop()
    assert entry is not None and entry.owner == 0


def test_a_task_runs_ahead_only_of_its_owner_s_older_tasks_of_other_kinds():
    from mpsl.taskqueue import may_run_ahead

    before: dict[int, set[str | None]] = {0: {"B"}}
    assert not may_run_ahead(before, 0, "B")  # owner 0's older B holds its next B back
    assert may_run_ahead(before, 1, "F")
    assert may_run_ahead(before, 1, "B")  # owner 1's older F does not
    assert not may_run_ahead(before, 1, "F")
    assert not may_run_ahead(before, 2, None)  # a task that never batches stays in place
    assert not may_run_ahead(before, 2, "FB")  # and holds back every later one of its owner
