"""Tests of mpsl.schedule: exact schedules, structural properties, and a dry run for deadlocks."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpsl.actions import Action, Msg, Op, Task, Trigger
from mpsl.dryrun import ScheduleError, dry_run, run_order
from mpsl.names import CPU, OWNER, owner_name
from mpsl.plan import Plan
from mpsl.schedule import iteration_tasks, tasks_by_node
from mpsl.schedule_text import format_tasks

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
    keys = {(t.node, t.key) for t in tasks if t.key is not None}
    assert ("node", (Msg.ACT, 1, 0)) in keys and ("owner0", (Msg.ACT, 2, 0)) in keys
    assert ("node", (Msg.GRAD, 1, 0)) in keys and ("owner0", (Msg.GRAD, 0, 0)) in keys


def test_three_compute_nodes_shared_labels() -> None:
    assert schedule((O, "a", "b", "c"), 2) == (
        "owner0: [0F0 >a:ACT0 0F1 >a:ACT1] [<a:GRAD0 0B0] [<a:GRAD1 0B1] [STEP]\n"
        "a: [<owner0:ACT0 1F0 >b:ACT0] [<owner0:ACT1 1F1 >b:ACT1]"
        " [<b:GRAD0 1B0 >owner0:GRAD0] [<b:GRAD1 1B1 >owner0:GRAD1 STEP1]\n"
        "b: [<a:ACT0 2F0 >c:ACT0] [<a:ACT1 2F1 >c:ACT1]"
        " [<c:GRAD0 2B0 >a:GRAD0] [<c:GRAD1 2B1 >a:GRAD1 STEP2]\n"
        "c: [<b:ACT0 3F0 3B0 >b:GRAD0] [<b:ACT1 3F1 3B1 >b:GRAD1 STEP3]"
    )


def one_f_one_b(placement: tuple[str, ...], n_mb: int, window: int | None) -> str:
    cuts = tuple(range(1, len(placement)))
    plan = Plan(6, cuts, placement, (n_mb,), schedule="1f1b", max_in_flight=window)
    return format_tasks(iteration_tasks(plan, 0, n_mb))


def test_1f1b_two_parts_keeps_the_window() -> None:
    assert one_f_one_b((O, "s"), 4, 2) == (
        "owner0: [0F0 >s:ACT0 0F1 >s:ACT1] [<s:GRAD0 0B0 0F2 >s:ACT2]"
        " [<s:GRAD1 0B1 0F3 >s:ACT3] [<s:GRAD2 0B2] [<s:GRAD3 0B3] [STEP]\n"
        "s: [<owner0:ACT0 1F0 1B0 >owner0:GRAD0] [<owner0:ACT1 1F1 1B1 >owner0:GRAD1]"
        " [<owner0:ACT2 1F2 1B2 >owner0:GRAD2] [<owner0:ACT3 1F3 1B3 >owner0:GRAD3 STEP1]"
    )


def test_1f1b_window_defaults_to_the_parts_and_is_capped_by_n() -> None:
    default = one_f_one_b((O, "a", O), 5, None)  # three parts: three in flight
    assert default.startswith("owner0: [0F0 >a:ACT0 0F1 >a:ACT1 0F2 >a:ACT2] [<a:ACT0 2F0")
    assert "[<a:GRAD0 0B0 0F3 >a:ACT3] [<a:GRAD1 0B1 0F4 >a:ACT4] [<a:GRAD2 0B2]" in default
    wide = one_f_one_b((O, "s"), 2, 8)  # a window wider than N is GPipe
    assert wide == schedule((O, "s"), 2)


def test_1f1b_is_gpipe_in_fl_and_for_compute_nodes() -> None:
    assert one_f_one_b((O,), 3, 1) == schedule((O,), 3)
    gp = iteration_tasks(Plan(6, (1, 3), (O, "a", "b"), (4,)), 0, 4)
    ob = iteration_tasks(Plan(6, (1, 3), (O, "a", "b"), (4,), "1f1b", 1), 0, 4)
    assert [t for t in gp if t.node != "owner0"] == [t for t in ob if t.node != "owner0"]


def test_string_forms_round_trip() -> None:
    cases = {
        Action.forward(1, 0): "1F0",
        Action.backward(0, 12): "0B12",
        Action.send(Msg.GRAD, "node1", 3): ">node1:GRAD3",
        Action.send(Msg.PARAMS, "aggregator"): ">aggregator:PARAMS",
        Action.step(): "STEP",
        Action.step(2): "STEP2",
        Action.avg(): "AVG",
        Action.avg(1): "AVG1",
    }
    for action, text in cases.items():
        assert str(action) == text and Action.from_str(text) == action
    assert Trigger("owner3", Msg.ACT, 4) == Trigger.from_str("<owner3:ACT4")
    assert str(Trigger("owner3", Msg.ACT, 4)) == "<owner3:ACT4"
    assert str(Task("n", 0, None, (Action.step(),))) == "[STEP]"
    task = Task("n", 0, Trigger("s", Msg.GRAD, 1), (Action.backward(0, 1),))
    assert str(task) == "[<s:GRAD1 0B1]" and Task.from_str("n", 0, str(task)) == task
    assert owner_name(7) == "owner7"
    assert Action.forward(1, 0).kind == "1F" and Action.send(Msg.ACT, "s", 2).kind == ">s:ACT"


@pytest.mark.parametrize("text", ["", "F0", "1X0", ">server", ">s:FOO1", "STEPx", "1F", "[0F0"])
def test_from_str_refuses_what_is_not_an_action(text: str) -> None:
    from mpsl.actions import ActionError

    with pytest.raises(ActionError):
        Task.from_str("n", 0, text) if text.startswith("[") else Action.from_str(text)


def test_tasks_check_their_actions() -> None:
    from mpsl.actions import ActionError

    with pytest.raises(ActionError, match="begins with the pass it feeds"):
        Task("n", 0, Trigger("s", Msg.GRAD, 1), (Action.forward(0, 1),))
    with pytest.raises(ActionError, match="does not follow"):
        Task("n", 0, None, (Action.forward(0, 0), Action.send(Msg.ACT, "s", 1)))
    with pytest.raises(ActionError, match="no actions"):
        Task("n", 0, None, ())
    with pytest.raises(ActionError):
        Action(Op.SEND, part=1, msg=Msg.ACT, dst="s")  # a SEND has no part of its own
    t = Task("n", 0, None, (Action.forward(2, 0), Action.send(Msg.ACT, "s", 0)))
    assert t.sent_part(1) == 2 and list(t.sends()) == [(1, t.actions[1], 2)]
    with pytest.raises(ActionError, match="does not follow"):
        t.sent_part(0)  # a pass, not a send
    assert Action.forward(2, 0) is t.actions[0]  # equal actions are one object (interned)


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
# Structural properties over random plans of both schedules


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
    sched = draw(st.sampled_from(["gpipe", "1f1b"]))
    window = draw(st.one_of(st.none(), st.integers(1, 4))) if sched == "1f1b" else None
    return Plan(layers, tuple(cuts), placement, ns, sched, window)


def dest_part(task: Task, index: int) -> int:
    a = task.actions[index]
    return task.sent_part(index) + (1 if a.msg is Msg.ACT else -1)


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

    # one F and one B per part and micro-batch, on the node running the part
    fb = Counter((a.op, a.part, a.mb, t.node) for t in tasks for a in t.actions if a.is_pass)
    want = {(k, p, mb, node[p]): 1 for k in (Op.FORWARD, Op.BACKWARD)
            for p in range(plan.num_parts) for mb in range(n)}
    assert dict(fb) == want

    # every SEND meets exactly one task triggered by it, and every trigger has its SEND
    sends = [(t, i) for t in tasks for i, _, _ in t.sends()]
    triggered = [t for t in tasks if t.trigger is not None]
    assert len(sends) == len(triggered) == 2 * n * (plan.num_parts - 1)
    matched: list[Task] = []
    for t, i in sends:
        a = t.actions[i]
        q = dest_part(t, i)
        assert t.node == node[t.sent_part(i)] and 0 <= q < plan.num_parts and a.dst == node[q]
        hits = [u for u in triggered
                if u.trigger == Trigger(t.node, a.msg, a.mb) and u.node == a.dst
                and u.key == (a.msg, q, a.mb)]
        assert len(hits) == 1, (str(a), t)
        matched.append(hits[0])
    assert len({id(u) for u in matched}) == len(triggered)

    # a triggered task starts with the pass its message feeds
    for u in triggered:
        assert u.key is not None and u.node == node[u.key[1]]

    # compute nodes STEP their part once, last, in the task of its last backward
    steps = [(t, a) for t in tasks for a in t.actions if a.op is Op.STEP]
    compute_parts = [p for p in range(plan.num_parts) if plan.placement[p] != O]
    assert sorted(a.part for _, a in steps if a.part is not None) == compute_parts
    for t, a in steps:
        if a.part is not None:
            assert t.node == node[a.part] and t.actions[-1] == a
            assert Action.backward(a.part, n - 1) in t.actions

    # the owner ends with exactly one untriggered [STEP] and opens with its forward burst
    own = [t for t in tasks if t.node == me]
    assert own[-1] == Task(me, owner, None, (Action.step(),))
    assert sum(a == Action.step() for t in tasks for a in t.actions) == 1
    assert own[0].trigger is None and own[0].actions[0] == Action.forward(0, 0)
    assert [t for t in tasks if t.trigger is None] == [own[0], own[-1]]

    # every action prints and parses back, and so does every task
    assert all(Task.from_str(t.node, t.owner, str(t)) == t for t in tasks)


# ----------------------------------------------------------------------------------------------
# The dry run (mpsl.dryrun): the execution rule of mpsl.taskqueue, K owners sharing the nodes


def shaken(seed: int, latency: bool):  # noqa: ANN201 - (duration, delay) for dry_run
    rng = random.Random(seed)
    delays: dict[tuple[str, str], float] = {}

    def duration(node: str, a: Action) -> float:
        return 0.0 if a.op is Op.SEND else rng.uniform(0.1, 1.0)

    def delay(src: str, dst: str) -> float:
        if (src, dst) not in delays:
            delays[(src, dst)] = rng.uniform(0.0, 2.0) if latency else 0.0
        return delays[(src, dst)]

    return duration, delay


def check_causality(plan: Plan, log: list) -> None:
    when: dict[tuple, tuple[float, float]] = {}
    cpu = [e for e in log if e.resource == CPU]
    for e in cpu:
        a = Action.from_str(e.action)
        if a.is_pass:
            key = (e.owner, a.op, a.part, a.mb)
            assert key not in when
            when[key] = (e.t0, e.t1)
    for (owner, op, p, mb), (t0, _) in when.items():
        if op is Op.FORWARD and p > 0:
            assert when[(owner, Op.FORWARD, p - 1, mb)][1] <= t0
        if op is Op.BACKWARD:
            assert when[(owner, Op.FORWARD, p, mb)][1] <= t0
            if p < plan.num_parts - 1:
                assert when[(owner, Op.BACKWARD, p + 1, mb)][1] <= t0
    for e in cpu:
        a = Action.from_str(e.action)
        if a.op is not Op.STEP:
            continue
        parts = [a.part] if a.part is not None else plan.parts_on(O)
        for p in parts:  # a step follows every backward of the parts it steps
            for mb in range(plan.micro_batches[e.owner]):
                assert when[(e.owner, Op.BACKWARD, p, mb)][1] <= e.t0, (e.node, e.action)
    per_node: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for e in cpu:
        per_node[e.node].append((e.t0, e.t1))
    for spans in per_node.values():  # one action at a time per processor
        spans.sort()
        assert all(a[1] <= b[0] + 1e-12 for a, b in zip(spans, spans[1:]))
    if plan.schedule == "1f1b" and plan.num_parts > 1:  # never more than W in flight
        window = plan.max_in_flight or plan.num_parts
        for owner in range(len(plan.micro_batches)):
            edges = sorted([(t0, 1) for (k, op, p, _), (t0, _) in when.items()
                            if k == owner and op is Op.FORWARD and p == 0]
                           + [(t1, -1) for (k, op, p, _), (_, t1) in when.items()
                              if k == owner and op is Op.BACKWARD and p == 0])
            live = peak = 0
            for _, d in edges:
                live += d
                peak = max(peak, live)
            assert peak <= window


@SIMS
@given(plan=plans(), seed=st.integers(0, 2**32 - 1), latency=st.booleans())
def test_dry_run_every_task_runs(plan: Plan, seed: int, latency: bool) -> None:
    duration, delay = shaken(seed, latency)
    log = dry_run(plan, duration=duration, delay=delay)
    check_causality(plan, log)
    expected = sum(len(t.actions) for k, n in enumerate(plan.micro_batches)
                   for t in iteration_tasks(plan, k, n))
    assert len(log) == expected


@pytest.mark.parametrize("sched", ["gpipe", "1f1b"])
@pytest.mark.parametrize("placement", [(O,), (O, "s"), (O, "s", O), (O, "a", "b", O),
                                       (O, "a", "b", "c"), (O, "a", "b", "c", O)])
@pytest.mark.parametrize("ns", [(1,), (3,), (2, 2), (1, 4, 2)])
def test_dry_run_fixed_cases(placement: tuple[str, ...], ns: tuple[int, ...], sched: str) -> None:
    plan = Plan(8, tuple(range(1, len(placement))), placement, ns, sched)
    for seed in range(3):
        duration, delay = shaken(seed, latency=seed > 0)
        check_causality(plan, dry_run(plan, duration=duration, delay=delay))


@pytest.mark.parametrize("sched", ["gpipe", "1f1b"])
@pytest.mark.parametrize("placement", [(O, "s"), (O, "a", "b", O), (O, "a", "b", "c")])
def test_run_order_is_the_dry_runs_trace(placement: tuple[str, ...], sched: str) -> None:
    """The trace-free run order names, action for action, what the dry run's trace shows."""
    plan = Plan(8, tuple(range(1, len(placement))), placement, (3, 2), sched)
    tasks = {k: iteration_tasks(plan, k, n) for k, n in enumerate(plan.micro_batches)}
    order = run_order(plan, tasks)
    trace = dry_run(plan, tasks)
    assert len(order) == len(trace)
    for (task, i, resource), e in zip(order, trace):
        assert (task.node, task.owner, str(task.actions[i]), resource) == (
            e.node, e.owner, e.action, e.resource)


def test_run_order_refuses_a_deadlock_as_the_dry_run_does() -> None:
    plan = Plan(5, (2,), (O, "server"), (2,))
    tasks = iteration_tasks(plan, 0, 2)
    burst = Task("owner0", 0, None, tasks[0].actions[:-1])  # ACT1 is never sent
    with pytest.raises(ScheduleError, match="deadlock, never ran: owner0"):
        run_order(plan, {0: [burst, *tasks[1:]]})


def test_dry_run_detects_a_deadlock() -> None:
    """The checker itself: a schedule missing a message never finishes."""
    plan = Plan(5, (2,), (O, "server"), (2,))
    tasks = iteration_tasks(plan, 0, 2)
    burst = Task("owner0", 0, None, tasks[0].actions[:-1])  # ACT1 is never sent
    with pytest.raises(ScheduleError, match=r"deadlock, never ran: owner0: \[<server:GRAD1 0B1\]"
                       r" \[STEP\]; server: \[<owner0:ACT1 1F1 1B1 >owner0:GRAD1 STEP1\]$"):
        dry_run(plan, {0: [burst, *tasks[1:]]})


def test_dry_run_detects_a_message_nobody_takes() -> None:
    plan = Plan(5, (2,), (O, "server"), (1,))
    tasks = iteration_tasks(plan, 0, 1)
    send = Action.send(Msg.ACT, "server", 0)
    extra = Task("owner0", 0, None, (Action.forward(0, 0), send, send))  # sent twice
    with pytest.raises(ScheduleError, match="server: no task of owner 0 takes >server:ACT0"):
        dry_run(plan, {0: [extra, *tasks[1:]]})
