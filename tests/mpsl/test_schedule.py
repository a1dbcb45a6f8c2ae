"""Tests of mpsl.schedule: exact schedules, structural properties, and a dry run for deadlocks."""

from __future__ import annotations

import heapq
import random
from collections import Counter, defaultdict
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpsl.plan import Plan
from mpsl.schedule import (
    ACT,
    BACKWARD,
    FORWARD,
    GRAD,
    SEND,
    STEP,
    Action,
    Task,
    Trigger,
    format_tasks,
    iteration_tasks,
    owner_name,
    tasks_by_node,
)
from mpsl.topology import OWNER

O = OWNER
PROPS = settings(max_examples=150, deadline=None, derandomize=True)
SIMS = settings(max_examples=120, deadline=None, derandomize=True)


def schedule(placement: tuple[str, ...], n_mb: int, owner: int = 0, layers: int = 6) -> str:
    cuts = tuple(range(1, len(placement)))
    plan = Plan(layers, cuts, placement, (n_mb,) * (owner + 1))
    return format_tasks(iteration_tasks(plan, owner, n_mb))


# ----------------------------------------------------------------------------------------------
# Exact schedules


def test_pipar_two_parts_three_micro_batches() -> None:
    assert schedule((O, "server"), 3) == (
        "owner0: [0F0 >server:ACT0 0F1 >server:ACT1 0F2 >server:ACT2]"
        " [<server:GRAD0 0B0] [<server:GRAD1 0B1] [<server:GRAD2 0B2] [STEP]\n"
        "server: [<owner0:ACT0 1F0 1B0 >owner0:GRAD0] [<owner0:ACT1 1F1 1B1 >owner0:GRAD1]"
        " [<owner0:ACT2 1F2 1B2 >owner0:GRAD2 STEP1]"
    )


def test_sfl_one_micro_batch() -> None:
    assert schedule((O, "server"), 1) == (
        "owner0: [0F0 >server:ACT0] [<server:GRAD0 0B0] [STEP]\n"
        "server: [<owner0:ACT0 1F0 1B0 >owner0:GRAD0 STEP1]"
    )


def test_other_owner_names_its_node() -> None:
    assert schedule((O, "server"), 1, owner=2) == (
        "owner2: [0F0 >server:ACT0] [<server:GRAD0 0B0] [STEP]\n"
        "server: [<owner2:ACT0 1F0 1B0 >owner2:GRAD0 STEP1]"
    )


@pytest.mark.parametrize(("n_mb", "expected"), [
    (1, "owner0: [0F0 0B0] [STEP]"),
    (2, "owner0: [0F0 0B0 0F1 0B1] [STEP]"),
    (3, "owner0: [0F0 0B0 0F1 0B1 0F2 0B2] [STEP]"),
])
def test_fl_single_part(n_mb: int, expected: str) -> None:
    assert schedule((O,), n_mb) == expected


def test_mpsl_u_shape_two_compute_nodes() -> None:
    assert schedule((O, "node1", "node2", O), 2) == (
        "owner0: [0F0 >node1:ACT0 0F1 >node1:ACT1]"
        " [<node2:ACT0 3F0 3B0 >node2:GRAD0] [<node2:ACT1 3F1 3B1 >node2:GRAD1]"
        " [<node1:GRAD0 0B0] [<node1:GRAD1 0B1] [STEP]\n"
        "node1: [<owner0:ACT0 1F0 >node2:ACT0] [<owner0:ACT1 1F1 >node2:ACT1]"
        " [<node2:GRAD0 1B0 >owner0:GRAD0] [<node2:GRAD1 1B1 >owner0:GRAD1 STEP1]\n"
        "node2: [<node1:ACT0 2F0 >owner0:ACT0] [<node1:ACT1 2F1 >owner0:ACT1]"
        " [<owner0:GRAD0 2B0 >node1:GRAD0] [<owner0:GRAD1 2B1 >node1:GRAD1 STEP2]"
    )


def test_u_shape_one_compute_node() -> None:
    text = schedule((O, "node", O), 2)
    assert text == (
        "owner0: [0F0 >node:ACT0 0F1 >node:ACT1]"
        " [<node:ACT0 2F0 2B0 >node:GRAD0] [<node:ACT1 2F1 2B1 >node:GRAD1]"
        " [<node:GRAD0 0B0] [<node:GRAD1 0B1] [STEP]\n"
        "node: [<owner0:ACT0 1F0 >owner0:ACT0] [<owner0:ACT1 1F1 >owner0:ACT1]"
        " [<owner0:GRAD0 1B0 >owner0:GRAD0] [<owner0:GRAD1 1B1 >owner0:GRAD1 STEP1]"
    )
    # the two messages of each kind on the link are told apart by the part they are for
    tasks = iteration_tasks(Plan(5, (1, 3), (O, "node", O), (2,)), 0, 2)
    triggers = [t.trigger for t in tasks if t.trigger is not None]
    assert Trigger(ACT, 0, 1, "owner0") in triggers and Trigger(ACT, 0, 2, "node") in triggers
    assert Trigger(GRAD, 0, 1, "owner0") in triggers and Trigger(GRAD, 0, 0, "node") in triggers


def test_three_compute_nodes_shared_labels() -> None:
    assert schedule((O, "a", "b", "c"), 2) == (
        "owner0: [0F0 >a:ACT0 0F1 >a:ACT1] [<a:GRAD0 0B0] [<a:GRAD1 0B1] [STEP]\n"
        "a: [<owner0:ACT0 1F0 >b:ACT0] [<owner0:ACT1 1F1 >b:ACT1]"
        " [<b:GRAD0 1B0 >owner0:GRAD0] [<b:GRAD1 1B1 >owner0:GRAD1 STEP1]\n"
        "b: [<a:ACT0 2F0 >c:ACT0] [<a:ACT1 2F1 >c:ACT1]"
        " [<c:GRAD0 2B0 >a:GRAD0] [<c:GRAD1 2B1 >a:GRAD1 STEP2]\n"
        "c: [<b:ACT0 3F0 3B0 >b:GRAD0] [<b:ACT1 3F1 3B1 >b:GRAD1 STEP3]"
    )


def test_string_forms() -> None:
    assert str(Action(FORWARD, 1, 0)) == "1F0"
    assert str(Action(BACKWARD, 0, 12)) == "0B12"
    assert str(Action(SEND, 2, 3, GRAD, "node1")) == ">node1:GRAD3"
    assert str(Action(STEP)) == "STEP" and str(Action(STEP, 2)) == "STEP2"
    assert str(Trigger(ACT, 4, 1, "owner3")) == "<owner3:ACT4"
    assert str(Task("n", 0, None, (Action(STEP),))) == "[STEP]"
    task = Task("n", 0, Trigger(GRAD, 1, 0, "s"), (Action(BACKWARD, 0, 1),))
    assert str(task) == "[<s:GRAD1 0B1]"
    assert owner_name(7) == "owner7"


def test_rejects_zero_micro_batches() -> None:
    plan = Plan(5, (2,), (O, "server"), (1,))
    with pytest.raises(ValueError, match="at least one micro-batch, got 0"):
        iteration_tasks(plan, 0, 0)


def test_tasks_by_node_and_format_keep_order() -> None:
    tasks = iteration_tasks(Plan(5, (1, 2, 4), (O, "n1", "n2", O), (1,)), 0, 1)
    grouped = tasks_by_node(tasks)
    assert list(grouped) == ["owner0", "n1", "n2"]
    assert [t for ts in grouped.values() for t in ts] == tasks
    assert format_tasks([]) == ""


# ----------------------------------------------------------------------------------------------
# Structural properties over random plans


@st.composite
def plans(draw: st.DrawFn, max_owners: int = 3) -> Plan:
    if draw(st.booleans()) and draw(st.booleans()):  # FL, a quarter of the time
        placement: tuple[str, ...] = (O,)
    else:
        chain = tuple(f"c{i}" for i in range(1, draw(st.integers(1, 3)) + 1))
        placement = (O, *chain, *((O,) if draw(st.booleans()) else ()))
    layers = draw(st.integers(len(placement) + 1, len(placement) + 3))
    cuts = sorted(draw(st.sets(st.integers(1, layers - 1), min_size=len(placement) - 1,
                               max_size=len(placement) - 1)))
    k = draw(st.integers(1, max_owners))
    ns = tuple(draw(st.lists(st.integers(1, 4), min_size=k, max_size=k)))
    return Plan(layers, tuple(cuts), placement, ns)


def dest_part(a: Action) -> int:
    return a.part + 1 if a.msg == ACT else a.part - 1


@PROPS
@given(plan=plans(), data=st.data())
def test_structure(plan: Plan, data: st.DataObject) -> None:
    owner = data.draw(st.integers(0, len(plan.micro_batches) - 1))
    n = plan.micro_batches[owner]
    me = owner_name(owner)
    tasks = iteration_tasks(plan, owner, n)
    assert all(t.owner == owner for t in tasks)
    node = [plan.node_of(p, me) for p in range(plan.num_parts)]

    # tasks come grouped by node, owner first, then the chain in order
    order = list(dict.fromkeys(t.node for t in tasks))
    assert order == list(dict.fromkeys(node))
    assert [t.node for t in tasks] == sorted((t.node for t in tasks), key=order.index)

    # one F and one B per part and micro-batch, on the node running the part; F before B
    fb = Counter((a.kind, a.part, a.mb, t.node) for t in tasks for a in t.actions
                 if a.kind in (FORWARD, BACKWARD))
    want = {(k, p, mb, node[p]): 1 for k in (FORWARD, BACKWARD)
            for p in range(plan.num_parts) for mb in range(n)}
    assert dict(fb) == want

    # every SEND meets exactly one task triggered by it, and every trigger has its SEND
    sends = [(t, a) for t in tasks for a in t.actions if a.kind == SEND]
    triggered = [t for t in tasks if t.trigger is not None]
    assert len(sends) == len(triggered) == 2 * n * (plan.num_parts - 1)
    matched: list[Task] = []
    for t, a in sends:
        assert a.msg in (ACT, GRAD) and t.node == node[a.part]
        q = dest_part(a)
        assert 0 <= q < plan.num_parts and a.dst == node[q]
        hits = [u for u in triggered
                if u.trigger == Trigger(a.msg, a.mb, q, t.node) and u.node == a.dst]
        assert len(hits) == 1, (str(a), t)
        matched.append(hits[0])
        # the message leaves after the action that makes it, in the same task
        made = Action(FORWARD if a.msg == ACT else BACKWARD, a.part, a.mb)
        assert made in t.actions and t.actions.index(made) < t.actions.index(a)
    assert len({id(u) for u in matched}) == len(triggered)

    # a triggered task starts with the pass its message feeds
    for u in triggered:
        tr = u.trigger
        assert u.actions[0] == Action(FORWARD if tr.msg == ACT else BACKWARD, tr.part, tr.mb)
        assert u.node == node[tr.part]

    # compute nodes STEP their part once, last, in the task of its last backward
    steps = [(t, a) for t in tasks for a in t.actions if a.kind == STEP]
    compute_parts = [p for p in range(plan.num_parts) if plan.placement[p] != O]
    assert sorted(a.part for _, a in steps if a.part >= 0) == compute_parts
    for t, a in steps:
        if a.part >= 0:
            assert t.node == node[a.part] and t.actions[-1] == a
            assert Action(BACKWARD, a.part, n - 1) in t.actions

    # the owner ends with exactly one untriggered [STEP]
    own = [t for t in tasks if t.node == me]
    assert own[-1] == Task(me, owner, None, (Action(STEP),))
    assert sum(a == Action(STEP) for t in tasks for a in t.actions) == 1
    # and opens with its untriggered forward burst
    assert own[0].trigger is None and own[0].actions[0] == Action(FORWARD, 0, 0)
    assert [t for t in tasks if t.trigger is None] == [own[0], own[-1]]


# ----------------------------------------------------------------------------------------------
# Dry run: the documented execution rule, K owners sharing the compute nodes


def dry_run(plan: Plan, rng: random.Random, latency: bool,
            make: Callable[[Plan, int, int], list[Task]] = iteration_tasks) -> list[tuple]:
    """Run every owner's iteration under the module's rule; return (t0, t1, node, owner, action).

    A node runs one task at a time; a triggered task is ready once its message arrived and the
    barriers before it (of the same owner, on that node) are done; a barrier waits for every
    earlier task of its owner on that node; the ready task whose message arrived first runs
    first. Links deliver in order, after a latency (0: unlimited speed). Fails on a deadlock.
    """
    queues: dict[str, list[Task]] = defaultdict(list)
    for k, n in enumerate(plan.micro_batches):
        for t in make(plan, k, n):
            queues[t.node].append(t)
    done: dict[int, bool] = {id(t): False for ts in queues.values() for t in ts}
    started: set[int] = set()
    arrived: dict[tuple, float] = {}
    link_free: dict[tuple[str, str], float] = defaultdict(float)
    link_delay: dict[tuple[str, str], float] = {}
    busy_until: dict[str, float] = defaultdict(float)
    events: list[tuple] = []  # (time, seq, kind, payload)
    seq = 0
    log: list[tuple] = []

    def push(time: float, kind: str, payload: object) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (time, seq, kind, payload))

    def ready(node: str, i: int) -> float | None:
        t = queues[node][i]
        earlier = [u for u in queues[node][:i] if u.owner == t.owner]
        if t.trigger is None:
            return -1.0 if all(done[id(u)] for u in earlier) else None
        if not all(done[id(u)] for u in earlier if u.trigger is None):
            return None
        return arrived.get((node, t.owner, t.trigger))

    def start(node: str, now: float) -> None:
        if busy_until[node] > now:
            return
        cands = [(ready(node, i), i) for i, t in enumerate(queues[node])
                 if id(t) not in started]
        cands = [c for c in cands if c[0] is not None]
        if not cands:
            return
        _, i = min(cands)
        t = queues[node][i]
        started.add(id(t))
        clock = now
        for a in t.actions:
            dur = rng.uniform(0.1, 1.0) if a.kind in (FORWARD, BACKWARD, STEP) else 0.01
            log.append((clock, clock + dur, node, t.owner, a))
            clock += dur
            if a.kind == SEND:
                link = (node, a.dst)
                if link not in link_delay:
                    link_delay[link] = rng.uniform(0.0, 2.0) if latency else 0.0
                at = max(clock + link_delay[link], link_free[link])  # in order
                link_free[link] = at
                key = (a.dst, t.owner, Trigger(a.msg, a.mb, dest_part(a), node))
                push(at, "arrive", key)
        busy_until[node] = clock
        push(clock, "done", (node, id(t)))

    for node in queues:
        start(node, 0.0)
    while events:
        now, _, kind, payload = heapq.heappop(events)
        if kind == "arrive":
            assert payload not in arrived, f"message delivered twice: {payload}"
            arrived[payload] = now
        else:
            done[payload[1]] = True
        for node in queues:
            start(node, now)
    stuck = [f"{node}: {t}" for node, ts in queues.items() for t in ts if not done[id(t)]]
    assert not stuck, "deadlock, never ran: " + "; ".join(stuck)
    used = {(k[0], k[1], k[2]) for k in arrived}
    wanted = {(node, t.owner, t.trigger) for node, ts in queues.items() for t in ts if t.trigger}
    assert used == wanted  # no message went unused
    return log


def check_causality(plan: Plan, log: list[tuple]) -> None:
    when: dict[tuple, tuple[float, float]] = {}
    for t0, t1, _node, owner, a in log:
        if a.kind in (FORWARD, BACKWARD):
            key = (owner, a.kind, a.part, a.mb)
            assert key not in when
            when[key] = (t0, t1)
    for (owner, kind, p, mb), (t0, _) in when.items():
        if kind == FORWARD and p > 0:
            assert when[(owner, FORWARD, p - 1, mb)][1] <= t0
        if kind == BACKWARD:
            assert when[(owner, FORWARD, p, mb)][1] <= t0
            if p < plan.num_parts - 1:
                assert when[(owner, BACKWARD, p + 1, mb)][1] <= t0
    for t0, _, node, owner, a in log:
        if a.kind != STEP:
            continue
        parts = [a.part] if a.part >= 0 else plan.parts_on(O)
        for p in parts:  # a step follows every backward of the parts it steps
            for mb in range(plan.micro_batches[owner]):
                assert when[(owner, BACKWARD, p, mb)][1] <= t0, (node, owner, str(a))
    per_node: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for t0, t1, node, *_ in log:
        per_node[node].append((t0, t1))
    for spans in per_node.values():  # one action at a time per processor
        spans.sort()
        assert all(a[1] <= b[0] + 1e-12 for a, b in zip(spans, spans[1:]))


@SIMS
@given(plan=plans(), seed=st.integers(0, 2**32 - 1), latency=st.booleans())
def test_dry_run_every_task_runs(plan: Plan, seed: int, latency: bool) -> None:
    log = dry_run(plan, random.Random(seed), latency)
    check_causality(plan, log)
    expected = sum(len(t.actions) for k, n in enumerate(plan.micro_batches)
                   for t in iteration_tasks(plan, k, n))
    assert len(log) == expected


@pytest.mark.parametrize("placement", [(O,), (O, "s"), (O, "s", O), (O, "a", "b", O),
                                       (O, "a", "b", "c"), (O, "a", "b", "c", O)])
@pytest.mark.parametrize("ns", [(1,), (3,), (2, 2), (1, 4, 2)])
def test_dry_run_fixed_cases(placement: tuple[str, ...], ns: tuple[int, ...]) -> None:
    plan = Plan(8, tuple(range(1, len(placement))), placement, ns)
    for seed in range(3):
        check_causality(plan, dry_run(plan, random.Random(seed), latency=seed > 0))


def test_dry_run_detects_a_deadlock() -> None:
    """The checker itself: a schedule missing a message never finishes."""
    plan = Plan(5, (2,), (O, "server"), (2,))

    def broken(p: Plan, owner: int, n: int) -> list[Task]:
        lost = Trigger(ACT, 1, 1, "owner0")
        return [t for t in iteration_tasks(p, owner, n) if t.trigger != lost]

    with pytest.raises(AssertionError, match="deadlock, never ran: owner0: .*STEP"):
        dry_run(plan, random.Random(0), latency=False, make=broken)
