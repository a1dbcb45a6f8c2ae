"""planner.batchsim: a compute node with `batch_owners: auto` groups its owners' ready tasks
as nodes.batched does and times them by its batched profile; `off` changes nothing."""

from __future__ import annotations

import dataclasses

import pytest

from mpsl.plan import make_plan
from nodes.batched import task_kind
from planner.batched import BatchedProfile
from planner.batchsim import kind_of
from planner.cost import simulate
from planner.profile import Profile, ProfileError, batched_path
from planner.workload import Workload

from .test_cost import O
from .util import act_bytes, grad_bytes, layer, profile, rate_for, topo

# 0.75 at 2 owners per call, 0.5 at 4: 0.625 at 3 (interpolated)
TABLE = BatchedProfile((1, 2, 4), (1.0, 0.75, 0.5))


def batched(prof: Profile, table: BatchedProfile | None = TABLE) -> Profile:
    return dataclasses.replace(prof, batched=table)


def two_hop(owners: int, mode: str):
    """PiPar, B = 2 in 2 micro-batches: owner F 1 s, ACT upload 2 s; the server's F+B 1+1 s
    and STEP 0.5 s; GRAD download 1 s; owner B 2 s."""
    t = topo(training={"batch_size": 2}, plan={"cuts": [1], "micro_batches": 2},
             data_owners={"count": owners, "uplink_mbps": rate_for(2, act_bytes(O, 1)),
                          "downlink_mbps": rate_for(1, grad_bytes(O, 1))},
             compute_nodes=[{"name": "server", "address": "tcp://127.0.0.1:5590",
                             "batch_owners": mode}])
    prof = profile(layer(1, 2, opt=0.5, out=O, act=10), layer(1, 1, opt=0.5, out=10, act=10))
    return t, prof


def u_shape(owners: int, mode: str):
    """MP-SL's U-shape, one micro-batch of 1: the node's middle part F 1 s, B 2 s, STEP 0.5 s;
    ACT upload 2 s, ACT and GRAD download 1 s."""
    t = topo(mode="mpsl", labels="local", training={"batch_size": 1},
             plan={"cuts": [1, 2], "micro_batches": 1},
             data_owners={"count": owners, "uplink_mbps": rate_for(2, act_bytes(O, 1, False)),
                          "downlink_mbps": rate_for(1, grad_bytes(O, 1))},
             compute_nodes=[{"name": "node", "address": "tcp://127.0.0.1:5590",
                             "batch_owners": mode}])
    prof = profile(layer(1, 2, opt=0.5, out=O, act=10), layer(1, 2, opt=0.5, out=O, act=10),
                   layer(1, 1, opt=0.5, out=10, act=10))
    return t, prof


def processor(est, node):
    """(action, owner, mb, t0, t1) of the node's processor events, AVG left out, in order."""
    return [(e.action, e.owner, e.mb, e.t0, e.t1) for e in sorted(
        est.events, key=lambda e: (e.t0, e.owner if e.owner is not None else -1))
        if e.node == node and e.resource_name == node and not e.action.startswith("AVG")]


def check(got, expected):
    assert [g[:3] for g in got] == [x[:3] for x in expected]
    assert [t for g in got for t in g[3:]] == pytest.approx(
        [t for x in expected for t in x[3:]], abs=1e-9)


def test_three_owners_fused_tasks_run_as_one_call():
    """Every owner's ACT0 is in at 3 s: one group of 3 (factor 0.625), F 3 x 1 s -> 1.875 s,
    then B alike, each phase split evenly in owner order; the GRADs at 6.75 s. ACT1s (in at
    5 s) wait for the node: the next group at 6.75 s, then the three STEPs in one phase."""
    t, prof = two_hop(3, "auto")
    est = simulate(t, make_plan(t, 2), batched(prof), iterations=1, record=True)
    p = 0.625
    rows = []
    for action, mb, t0 in [("1F0", 0, 3.0), ("1B0", 0, 3 + 3 * p), ("1F1", 1, 3 + 6 * p),
                           ("1B1", 1, 3 + 9 * p)]:
        rows += [(action, k, mb, t0 + k * p, t0 + (k + 1) * p) for k in range(3)]
    rows += [("STEP1", k, None, 10.5 + 0.5 * k, 11 + 0.5 * k) for k in range(3)]
    check(processor(est, "server"), rows)
    grads = sorted((e.t0, e.owner) for e in est.events if e.action.startswith(">owner")
                   and "GRAD" in e.action)
    assert grads == [(6.75, 0), (6.75, 1), (6.75, 2), (10.5, 0), (10.5, 1), (10.5, 2)]
    assert est.busy_s["server"] == pytest.approx(4 * 3 * p + 1.5)
    off = simulate(two_hop(3, "off")[0], make_plan(t, 2), batched(prof), iterations=1)
    assert off.busy_s["server"] == pytest.approx(13.5)
    assert est.epoch_s == pytest.approx(off.epoch_s - 5.5)  # 16.5 -> 12 at the last STEP


def test_middle_part_forwards_batch_from_three_and_backwards_recompute():
    """U-shape, 3 owners: the three forwards run as one call (3 x 1 s x 0.625 = 1.875 s), the
    ACTs leave at its end (4.875 s). Each GRAD is back at 4.875 + 1 (ACT down) + 1 + 1
    (owner F+B) + 2 (GRAD up) = 9.875 s: one call of the three backwards with their forwards
    recomputed, 3 x (1 + 2) s x 0.625 = 5.625 s, then the GRADs and the three STEPs in one
    phase. Off: 3 x 1 s of forwards, 3 x 2 s of backwards."""
    t, prof = u_shape(3, "auto")
    est = simulate(t, make_plan(t, 3), batched(prof), iterations=1, record=True)
    p, b0 = 0.625, 9.875
    rows = [("1F0", k, 0, 3 + k * p, 3 + (k + 1) * p) for k in range(3)]
    rows += [("1B0", k, 0, b0 + 3 * k * p, b0 + 3 * (k + 1) * p) for k in range(3)]
    rows += [("STEP1", k, None, 15.5 + 0.5 * k, 16 + 0.5 * k) for k in range(3)]
    check(processor(est, "node"), rows)
    sent = sorted((e.t0, e.action[-4:], e.owner) for e in est.events if e.node == "node"
                  and e.resource_name != "node" and e.mb is not None)
    assert sent == [(3 + 3 * p, "ACT0", k) for k in range(3)] + [
        (15.5, "RAD0", k) for k in range(3)]
    assert est.busy_s["node"] == pytest.approx(4 * 3 * p + 1.5)
    off = simulate(u_shape(3, "off")[0], make_plan(t, 3), batched(prof), iterations=1)
    assert off.busy_s["node"] == pytest.approx(3 * (1 + 2 + 0.5))


def test_a_middle_part_of_two_owners_runs_as_without_batching():
    """Two forwards run one by one (fewer than MIN_FORWARD), so their backwards keep their
    graphs: the schedule is off's, every time equal."""
    t, prof = u_shape(2, "auto")
    auto = simulate(t, make_plan(t, 3), batched(prof), iterations=1, record=True)
    off = simulate(u_shape(2, "off")[0], make_plan(t, 3), batched(prof), iterations=1,
                   record=True)
    assert processor(auto, "node") == processor(off, "node")
    assert auto.epoch_s == off.epoch_s


@pytest.mark.parametrize("make,layers", [(two_hop, 2), (u_shape, 3)])
@pytest.mark.parametrize("owners", [1, 4])
def test_off_or_no_batched_profile_changes_nothing(make, layers, owners):
    """`off` with a batched profile, and `auto` without one, give the estimate of a profile
    without one, bit for bit (events, busy, memory), steady-state skipping as before."""
    t, prof = make(owners, "off")
    plan = make_plan(t, layers)
    base = simulate(t, plan, prof, iterations=5, record=True)
    for topo_, p in [(t, batched(prof)), (make(owners, "auto")[0], prof)]:
        est = simulate(topo_, plan, p, iterations=5, record=True)
        assert est.events == base.events
        assert (est.epoch_s, est.busy_s, est.memory_bytes) == (
            base.epoch_s, base.busy_s, base.memory_bytes)
        fast = simulate(topo_, plan, p, iterations=5)
        assert fast.epoch_s == simulate(t, plan, prof, iterations=5).epoch_s
    if owners == 4:  # auto with a profile: owners batched, the schedule differs
        est = simulate(make(owners, "auto")[0], plan, batched(prof), iterations=5)
        assert est.epoch_s != base.epoch_s


@pytest.mark.parametrize("mode,labels,cuts,schedule", [
    ("pipar", "shared", [1], "gpipe"), ("pipar", "shared", [1], "1f1b"),
    ("mpsl", "local", [1, 2], "gpipe"), ("mpsl", "local", [1, 2], "1f1b"),
    ("pipar", "shared", [1, 2], "1f1b")])
def test_task_kinds_are_the_runtimes(mode, labels, cuts, schedule):
    """kind_of on the compiled steps says what nodes.batched.task_kind says of the tasks."""
    nodes = [{"name": f"n{i}", "address": f"tcp://127.0.0.1:{5590 + i}"} for i in range(2)]
    t = topo(mode=mode, labels=labels, schedule=schedule,
             plan={"cuts": cuts, "micro_batches": 3},
             compute_nodes=nodes[:len(cuts) if mode == "pipar" else 1])
    plan = make_plan(t, 3)
    prof = profile(*[layer(1, 1) for _ in range(3)])
    work = Workload(t, plan, prof, 1, None)
    last = plan.num_parts - 1
    kinds = set()
    for _, tasks in work.tasks(0, 3):
        for task in tasks:
            kinds.add(kind_of(work.steps(task), last))
            assert kind_of(work.steps(task), last) == task_kind(task.actions, last), task
    assert kinds - {None}


def test_the_batched_profile_lies_beside_the_profile_csv(tmp_path):
    prof = batched(profile(layer(1, 2, opt=0.5), layer(1, 1)))
    path = tmp_path / "p.csv"
    prof.to_csv(path)
    assert batched_path(path) == tmp_path / "p.batched.csv"
    back = Profile.from_csv(path)
    assert back.batched == TABLE
    assert back.scaled(2.0).batched == TABLE
    batched(prof, None).to_csv(tmp_path / "q.csv")
    assert Profile.from_csv(tmp_path / "q.csv").batched is None
    batched_path(path).write_text("part,norm,K,seq_ms_per_mb,batched_ms_per_mb\n"
                                  "server,none,2,1.0,0.5\nmiddle,none,2,1.0,0.7\n")
    with pytest.raises(ProfileError, match=r"p\.batched\.csv: not a batched profile"):
        Profile.from_csv(path)


def test_the_planner_ranks_with_batching_and_claims_no_busy_bound():
    """With a batching node the busy-term lower bound (one task at a time) does not hold: the
    planner neither prunes by it nor reports it; its estimates are the batched simulation's."""
    from planner.aps import choose_plan

    t, prof = two_hop(4, "auto")
    report = choose_plan(t, batched(prof), iterations=2, top=3)
    assert report.bound is None
    best = report.best
    again = simulate(t, best.plan, batched(prof), iterations=2)
    assert best.estimate.epoch_s == again.epoch_s
    off = choose_plan(two_hop(4, "off")[0], batched(prof), iterations=2, top=3)
    assert off.bound is not None


def test_an_owner_s_task_never_runs_ahead_of_its_older_ones_of_its_kind():
    """Owner 2's older backward (that cannot batch: *) holds back its next backward, which
    runs after it; owner 1's older forward does not hold back its backward (a forward and a
    backward of other micro-batches touch no gradient in common)."""
    from types import SimpleNamespace

    from planner.batchsim import Batching

    ready = [SimpleNamespace(owner=int(n[0]), name=n) for n in
             ("0B", "1F", "1B", "2B*", "2B", "3B")]
    stub = SimpleNamespace(key=lambda e: None if e.name.endswith("*") else (e.name[1], 8),
                           kind=lambda e: e.name[1])
    got = [([e.name for e in g], kind) for g, kind in Batching.groups(stub, ready)]
    assert got == [(["0B", "1B", "3B"], "B"), (["1F"], "F"), (["2B*"], None), (["2B"], "B")]
