"""The simulator's trace: every message of training on its link, with its times; rounds and
epochs counted as the runtime counts them; the execution rule shared with the dry run."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from mpsl.actions import Action, Op
from mpsl.dryrun import dry_run
from mpsl.names import CPU, OWNER
from mpsl.plan import make_plan
from mpsl.trace import Event, is_round_event
from planner.cost import simulate
from planner.resources import AVERAGE_BYTES_PER_S

from .test_cost import H, O, pipar_one_owner, shared_server
from .util import act_bytes, grad_bytes, layer, profile, rate_for, topo

TWO_NODES = [{"name": "node1", "address": "tcp://127.0.0.1:5590"},
             {"name": "node2", "address": "tcp://127.0.0.1:5591"}]


def round_messages(est):
    """Events without a micro-batch other than STEPs (METRICS, PARAMS, GLOBAL, CONTROL, AVG),
    in time order."""
    return sorted((e for e in est.events if e.mb is None and not e.action.startswith("STEP")),
                  key=lambda e: (e.t0, e.node, e.action))


def check_events(got, expected):
    """The same events, fields exact and times to rounding, in the same (time) order."""
    expected = sorted(expected, key=lambda e: (e.t0, e.node, e.action))
    fields = [(e.node, e.resource, e.action, e.owner, e.iter, e.mb, e.bytes) for e in got]
    assert fields == [(e.node, e.resource, e.action, e.owner, e.iter, e.mb, e.bytes)
                      for e in expected]
    assert [t for e in got for t in (e.t0, e.t1)] == pytest.approx(
        [t for e in expected for t in (e.t0, e.t1)], abs=1e-9)


def test_round_messages_of_one_owner():
    """Fig. 2 with 100 B of owner and 1000 B of server parameters: the server's loss report
    when its tasks are done (unshaped link), the owner's PARAMS and sync at its STEP's end on
    its uplink (ACT-sized bytes take 2 s); the server averages its one copy as soon as the
    sync is in, then sends its PARAMS; the aggregator's AVG and GLOBAL on the downlink."""
    t, _ = pipar_one_owner()
    prof = profile(layer(1, 2, opt=0.5, out=O, act=10, params=100),
                   layer(1, 1, opt=0.5, out=10, act=10, params=1000))
    est = simulate(t, make_plan(t, 2), prof, iterations=1, record=True)
    a, g = act_bytes(O, 1), grad_bytes(O, 1)
    up, sync = 2 * (100 + H) / a, 2 * H / a
    avg, down = 100 / AVERAGE_BYTES_PER_S, (100 + H) / g
    server_avg = 1000 / AVERAGE_BYTES_PER_S
    check_events(round_messages(est), [
        Event("server", "server->aggregator", ">aggregator:METRICS", 0, 0, None, 9.5, 9.5, H),
        Event("owner0", "owner0->aggregator", ">aggregator:PARAMS", 0, 0, None, 12.5,
              12.5 + up, 100 + H),
        Event("owner0", "owner0->server", ">server:CONTROL", 0, 0, None, 12.5, 12.5 + sync, H),
        Event("server", CPU, "AVG1", None, 0, None, 12.5 + sync, 12.5 + sync + server_avg),
        Event("server", "server->aggregator", ">aggregator:PARAMS", None, 0, None,
              12.5 + sync + server_avg, 12.5 + sync + server_avg, 1000 + H),
        Event("aggregator", CPU, "AVG", None, 0, None, 12.5 + up, 12.5 + up + avg),
        Event("aggregator", "aggregator->owner0", ">owner0:GLOBAL", 0, 0, None,
              12.5 + up + avg, 12.5 + up + avg + down, 100 + H),
    ])
    assert est.epoch_s == pytest.approx(12.5 + up + avg + down)


def test_syncs_go_down_the_chain_and_the_last_node_reports_the_loss():
    """owner -> node1 -> node2 (loss), compute links unshaped with 0.5 s latency: node1
    forwards the owner's sync at once to node2 (not back to the owner); each compute node
    averages (no parameters: 0 s) and sends its PARAMS when the sync is in; node2 reports
    the loss after its STEP at 8. The epoch ends with node2's averaging, after GLOBAL."""
    t = topo(training={"batch_size": 2}, plan={"cuts": [1, 2], "micro_batches": 2},
             data_owners={"count": 1, "uplink_mbps": rate_for(1, act_bytes(O, 1)),
                          "downlink_mbps": rate_for(1, grad_bytes(O, 1))},
             compute_nodes=TWO_NODES, links={"compute_latency_ms": 500})
    prof = profile(layer(1, 1, opt=0.5, out=O), layer(1, 2, opt=0.5, out=O),
                   layer(1, 1, opt=0.5, out=10))
    est = simulate(t, make_plan(t, 3), prof, iterations=1, record=True)
    up, down = H / act_bytes(O, 1), H / grad_bytes(O, 1)
    check_events(round_messages(est), [
        Event("node2", "node2->aggregator", ">aggregator:METRICS", 0, 0, None, 8, 8, H),
        Event("owner0", "owner0->aggregator", ">aggregator:PARAMS", 0, 0, None, 12.5,
              12.5 + up, H),
        Event("owner0", "owner0->node1", ">node1:CONTROL", 0, 0, None, 12.5, 12.5 + up, H),
        Event("node1", "node1->node2", ">node2:CONTROL", 0, 0, None, 12.5 + up, 12.5 + up, H),
        Event("node1", CPU, "AVG1", None, 0, None, 12.5 + up, 12.5 + up),
        Event("node2", CPU, "AVG2", None, 0, None, 13 + up, 13 + up),
        Event("node1", "node1->aggregator", ">aggregator:PARAMS", None, 0, None, 12.5 + up,
              12.5 + up, H),
        Event("aggregator", CPU, "AVG", None, 0, None, 12.5 + up, 12.5 + up),
        Event("aggregator", "aggregator->owner0", ">owner0:GLOBAL", 0, 0, None, 12.5 + up,
              12.5 + up + down, H),
        Event("node2", "node2->aggregator", ">aggregator:PARAMS", None, 0, None, 13 + up,
              13 + up, H),
    ])
    assert est.epoch_s == pytest.approx(13 + up) and 13 + up > 12.5 + up + down


def test_u_shape_owner_reports_the_loss_on_its_uplink():
    """Labels local: the owner reports the loss after its STEP (10 to 11) on its uplink,
    where the PARAMS queues behind it; the sync goes to the server, which forwards nothing."""
    t = topo(mode="mpsl", labels="local", training={"batch_size": 1},
             plan={"cuts": [1, 2], "micro_batches": 1},
             data_owners={"count": 1, "uplink_mbps": rate_for(1, grad_bytes(O, 1)),
                          "downlink_mbps": rate_for(1, grad_bytes(O, 1))})
    prof = profile(*(layer(1, 1, opt=0.5, out=O) for _ in range(3)))
    est = simulate(t, make_plan(t, 3), prof, iterations=1, record=True)
    h = H / grad_bytes(O, 1)
    check_events(round_messages(est), [
        Event("owner0", "owner0->aggregator", ">aggregator:METRICS", 0, 0, None, 11, 11 + h, H),
        Event("owner0", "owner0->server", ">server:CONTROL", 0, 0, None, 11, 11 + h, H),
        Event("owner0", "owner0->aggregator", ">aggregator:PARAMS", 0, 0, None, 11 + h,
              11 + 2 * h, H),
        Event("server", CPU, "AVG1", None, 0, None, 11 + h, 11 + h),
        Event("server", "server->aggregator", ">aggregator:PARAMS", None, 0, None, 11 + h,
              11 + h, H),
        Event("aggregator", CPU, "AVG", None, 0, None, 11 + 2 * h, 11 + 2 * h),
        Event("aggregator", "aggregator->owner0", ">owner0:GLOBAL", 0, 0, None, 11 + 2 * h,
              11 + 3 * h, H),
    ])
    assert est.epoch_s == pytest.approx(11 + 3 * h)


def test_sl_epoch_ends_with_the_last_params_not_a_forwarded_sync():
    """SL over node1 -> node2 (0.5 s apart): the epoch ends when the last owner's PARAMS is
    in; node2 gets that owner's sync later and only then sends its PARAMS, which starts
    nothing."""
    t = topo(mode="sl", training={"batch_size": 2}, plan={"cuts": [1, 2]},
             data_owners={"count": 2, "uplink_mbps": 1, "downlink_mbps": 1},
             compute_nodes=TWO_NODES, links={"compute_latency_ms": 500})
    prof = profile(*(layer(1e-3, 1e-3, opt=1e-3, out=O, params=64) for _ in range(3)))
    est = simulate(t, make_plan(t, 3), prof, iterations=1, record=True)
    last = [e for e in est.events if e.action == ">aggregator:PARAMS" and e.owner is not None]
    assert est.epoch_s == pytest.approx(max(e.t1 for e in last))
    (node2,) = [e for e in est.events if e.resource == "node2->aggregator"
                and e.action == ">aggregator:PARAMS"]
    assert node2.t0 > est.epoch_s and node2.iter == 0
    assert not [e for e in est.events if e.kind.startswith("AVG")]  # one shared copy


def test_epochs_count_iterations_per_owner_and_rounds_on():
    """Three epochs of owners with 2 and 1 iterations, aggregating every iteration (2 rounds
    per epoch): each epoch's events are the first's, shifted by the epoch; iterations count
    on per owner, round ids by 2; every (resource, action, owner, iter) occurs once."""
    t, prof = shared_server(aggregate_every=1)
    plan = make_plan(t, 2)
    one = simulate(t, plan, prof, samples=[4, 2], record=True)
    three = simulate(t, plan, prof, samples=[4, 2], epochs=3, record=True)
    n = len(one.events)
    assert len(three.events) == 3 * n and three.events[:n] == one.events
    for i in (1, 2):
        for a, b in zip(one.events, three.events[i * n:(i + 1) * n]):
            assert (b.t0, b.t1) == pytest.approx((a.t0 + i * one.epoch_s, a.t1 + i * one.epoch_s))
            shift = 2 * i if is_round_event(a.action) else (2 if a.owner == 0 else 1) * i
            assert (b.node, b.resource, b.action, b.owner, b.mb, b.bytes, b.iter) == (
                a.node, a.resource, a.action, a.owner, a.mb, a.bytes, a.iter + shift)

    def iters(action, **match):
        return sorted(e.iter for e in three.events if e.action == action
                      and all(getattr(e, k) == v for k, v in match.items()))

    assert iters("0F0", owner=0) == list(range(6)) and iters("0F0", owner=1) == [0, 1, 2]
    assert iters(">aggregator:METRICS", owner=1) == [0, 1, 2]
    assert iters(">aggregator:PARAMS", owner=1) == list(range(6))  # an empty round too
    assert iters("AVG", node="aggregator") == list(range(6))
    assert iters("AVG1", node="server") == list(range(6))
    assert iters(">aggregator:PARAMS", node="server") == [1, 3, 5]  # each epoch's end
    keys = Counter((e.resource, e.action, e.owner, e.iter) for e in three.events)
    assert max(keys.values()) == 1
    assert three.total_s == pytest.approx(3 * one.epoch_s)


def test_every_action_prints_as_an_action():
    t = topo(mode="mpsl", labels="local", training={"batch_size": 3, "aggregate_every": 1},
             plan={"cuts": [1, 2, 3], "micro_batches": 3}, compute_nodes=TWO_NODES,
             data_owners={"count": 2, "uplink_mbps": 5, "downlink_mbps": 9},
             schedule="1f1b")
    prof = profile(*(layer(1e-3, 2e-3, opt=1e-4, params=64, act=8) for _ in range(4)))
    est = simulate(t, make_plan(t, 4), prof, iterations=2, epochs=2, record=True)
    assert {str(Action.from_str(e.action)) for e in est.events} == {e.action for e in est.events}
    kinds = {e.kind for e in est.events}
    assert {">node1:CONTROL", ">node2:CONTROL", ">aggregator:METRICS", "AVG1", "AVG2",
            "AVG", "0F", "3B", "STEP", "STEP1", ">owner1:GLOBAL"} <= kinds
    assert ">owner0:CONTROL" not in kinds


CHAINS = [("pipar", "shared", ["server"]), ("mpsl", "local", ["server"]),
          ("pipar", "shared", ["node1", "node2"]), ("mpsl", "local", ["node1", "node2"])]


def chain_plan(mode, labels, chain, ns, schedule):
    nodes = [{"name": c, "address": f"tcp://127.0.0.1:{5590 + i}"} for i, c in enumerate(chain)]
    t = topo(mode=mode, labels=labels, training={"batch_size": 4}, compute_nodes=nodes,
             plan={"micro_batches": 1, "auto": True}, data_owners={"count": len(ns)},
             schedule=schedule)
    parts = len(chain) + (2 if labels == "local" else 1)
    return t, make_plan(t, parts, list(range(1, parts)), list(ns))


def cpu_order(events):
    """Per node, its passes and STEPs in time order: (owner, action), and their times."""
    out: dict[str, list] = {}
    for e in sorted(events, key=lambda e: e.t0):
        if e.resource == CPU and e.owner is not None:
            out.setdefault(e.node, []).append((e.owner, e.action, e.t0, e.t1))
    return out


def check_same_order(sim, dry):
    a, b = cpu_order(sim), cpu_order(dry)
    assert {n: [x[:2] for x in v] for n, v in a.items()} == {
        n: [x[:2] for x in v] for n, v in b.items()}
    for n in a:
        assert [x[2:] for x in a[n]] == [pytest.approx(x[2:]) for x in b[n]], n


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("mode,labels,chain", CHAINS)
@pytest.mark.parametrize("ns", [(2,), (3, 2), (1, 4, 2)])
def test_same_order_as_the_dry_run(mode, labels, chain, ns, schedule):
    """With the dry run's durations (one unit per pass and STEP, messages at once), every
    node runs the same actions at the same times: one execution rule."""
    t, plan = chain_plan(mode, labels, chain, ns, schedule)
    mine = plan.parts_on(OWNER)
    prof = profile(*(layer(0, 0, fwd_a=1, bwd_a=1, opt=1 / len(mine) if p in mine else 1)
                     for p in range(plan.num_parts)))
    check_same_order(simulate(t, plan, prof, iterations=1, record=True).events, dry_run(plan))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("mode,labels,chain", CHAINS)
@pytest.mark.parametrize("ns", [(3, 2), (1, 4, 2)])
def test_same_order_as_the_dry_run_with_shaken_durations(mode, labels, chain, ns, schedule,
                                                         seed):
    """Every node's own pass and STEP durations, drawn at random (no two messages meet by
    chance), given to both: the same order and times."""
    t, plan = chain_plan(mode, labels, chain, ns, schedule)
    rng = random.Random(seed)
    names = [o.name for o in t.owners] + list(t.chain)
    profs = {n: profile(*(layer(0, 0, fwd_a=rng.uniform(0.1, 1), bwd_a=rng.uniform(0.1, 1),
                                opt=rng.uniform(0.1, 1)) for _ in range(plan.num_parts)))
             for n in names}
    mine = plan.parts_on(OWNER)

    def duration(node: str, a: Action) -> float:
        p = profs[node]
        if a.op is Op.SEND:
            return 0.0
        if a.op is Op.STEP:
            return p.step([plan.parts[i] for i in (mine if a.part is None else [a.part])])
        lp = p.layers[a.part]
        return lp.fwd_a if a.op is Op.FORWARD else lp.bwd_a

    est = simulate(t, plan, profs, iterations=1, record=True)
    check_same_order(est.events, dry_run(plan, duration=duration))
