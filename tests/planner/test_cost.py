"""The cost model against pipelines worked out by hand, action by action."""

from __future__ import annotations

import time

import pytest

from mpsl.plan import make_plan
from mpsl.trace import is_round_event
from planner.cost import simulate
from planner.profile import Profile
from planner.resources import AVERAGE_BYTES_PER_S, HEADER_BYTES

from .util import act_bytes, grad_bytes, layer, profile, rate_for, topo

O = 1000  # bytes per sample at the cuts
H = HEADER_BYTES


def timeline(est, it=0):
    """{(resource, action, owner): (t0, t1)} of one iteration's passes, STEPs, ACTs and GRADs
    (a processor's resource by its node's name)."""
    return {(e.resource_name, e.action, e.owner): (e.t0, e.t1) for e in est.events
            if e.iter == it and not is_round_event(e.action) and "METRICS" not in e.action}


def of(est, action, resource=None):
    """The recorded events of an action (and resource), in time order."""
    return sorted((e for e in est.events if e.action == action
                   and (resource is None or e.resource_name == resource)), key=lambda e: e.t0)


def check(got, expected, shift=0.0):
    assert set(got) == set(expected)
    for key, (t0, t1) in expected.items():
        assert got[key] == pytest.approx((t0 + shift, t1 + shift), abs=1e-9), key


def pipar_one_owner():
    """PiPar's Fig. 2: device F 1 s, upload 2 s, server F+B 1+1 s, download 1 s, device B 2 s."""
    t = topo(training={"batch_size": 3}, plan={"cuts": [1], "micro_batches": 3},
             data_owners={"count": 1, "uplink_mbps": rate_for(2, act_bytes(O, 1)),
                          "downlink_mbps": rate_for(1, grad_bytes(O, 1))})
    prof = profile(layer(1, 2, opt=0.5, out=O, act=10), layer(1, 1, opt=0.5, out=10, act=10))
    return t, prof


FIG2 = {
    ("owner0", "0F0", 0): (0, 1), ("owner0", "0F1", 0): (1, 2),
    ("owner0", "0F2", 0): (2, 3),
    ("owner0->server", ">server:ACT0", 0): (1, 3),
    ("owner0->server", ">server:ACT1", 0): (3, 5),
    ("owner0->server", ">server:ACT2", 0): (5, 7),
    ("server", "1F0", 0): (3, 4), ("server", "1B0", 0): (4, 5),
    ("server", "1F1", 0): (5, 6), ("server", "1B1", 0): (6, 7),
    ("server", "1F2", 0): (7, 8), ("server", "1B2", 0): (8, 9),
    ("server", "STEP1", 0): (9, 9.5),
    ("server->owner0", ">owner0:GRAD0", 0): (5, 6),
    ("server->owner0", ">owner0:GRAD1", 0): (7, 8),
    ("server->owner0", ">owner0:GRAD2", 0): (9, 10),
    ("owner0", "0B0", 0): (6, 8), ("owner0", "0B1", 0): (8, 10),
    ("owner0", "0B2", 0): (10, 12), ("owner0", "STEP", 0): (12, 12.5),
}


def test_pipar_fig2_one_owner():
    t, prof = pipar_one_owner()
    est = simulate(t, make_plan(t, 2), prof, iterations=1, record=True)
    check(timeline(est), FIG2)
    assert est.iteration_s == pytest.approx(12.5)
    agg = 2 * HEADER_BYTES / act_bytes(O, 1) + HEADER_BYTES / grad_bytes(O, 1)
    assert est.epoch_s == pytest.approx(12.5 + agg)
    assert est.busy_s["server"] == pytest.approx(6.5)
    assert est.busy_s["owner0"] == pytest.approx(9.5)
    # three ACTs of 2 s, then the sync after the upload: a header at the ACTs' rate
    assert est.busy_s["owner0->server"] == pytest.approx(6 + 2 * H / act_bytes(O, 1))
    assert est.bottleneck == "owner0"
    # activations: three forwards before the first backward; buffers: two ACTs queued
    assert est.memory_detail["owner0"] == {"params": 0, "activations": 30,
                                           "buffers": 2 * act_bytes(O, 1)}
    assert est.memory_bytes["owner0"] == 30 + 2 * act_bytes(O, 1)


def test_one_f_one_b_one_owner():
    """Fig. 2 under 1F1B with two micro-batches in flight: the third forward waits for the
    first gradient and runs right after its backward, GRAD1 waits for the owner to be free."""
    t, prof = pipar_one_owner()
    plan = make_plan(t, 2, schedule="1f1b")
    assert plan.schedule == "1f1b"
    est = simulate(t, plan, prof, iterations=1, record=True)
    check(timeline(est), {
        ("owner0", "0F0", 0): (0, 1), ("owner0", "0F1", 0): (1, 2),
        ("owner0->server", ">server:ACT0", 0): (1, 3),
        ("owner0->server", ">server:ACT1", 0): (3, 5),
        ("server", "1F0", 0): (3, 4), ("server", "1B0", 0): (4, 5),
        ("server->owner0", ">owner0:GRAD0", 0): (5, 6),
        ("server", "1F1", 0): (5, 6), ("server", "1B1", 0): (6, 7),
        ("server->owner0", ">owner0:GRAD1", 0): (7, 8),
        ("owner0", "0B0", 0): (6, 8), ("owner0", "0F2", 0): (8, 9),
        ("owner0->server", ">server:ACT2", 0): (9, 11),
        ("owner0", "0B1", 0): (9, 11),
        ("server", "1F2", 0): (11, 12), ("server", "1B2", 0): (12, 13),
        ("server", "STEP1", 0): (13, 13.5),
        ("server->owner0", ">owner0:GRAD2", 0): (13, 14),
        ("owner0", "0B2", 0): (14, 16), ("owner0", "STEP", 0): (16, 16.5),
    })
    assert est.iteration_s == pytest.approx(16.5)
    # two micro-batches' activations at most (GPipe: three); the free comes first at t = 8
    assert est.memory_detail["owner0"]["activations"] == 20


WAKE_F, WAKE_B = 0.25, 0.5  # extra seconds of a pass after an idle processor


def with_wake(prof):
    return Profile(prof.layers, prof.source, wake_fwd_s=WAKE_F, wake_bwd_s=WAKE_B)


def test_wake_up_after_idle_only():
    """Fig. 2 with wake-ups: a task that starts on an idle processor pays for its first pass;
    the server's queued tasks and the owner's queued backwards run warm."""
    t, prof = pipar_one_owner()
    est = simulate(t, make_plan(t, 2), with_wake(prof), iterations=1, record=True)
    check(timeline(est), {
        ("owner0", "0F0", 0): (0, 1.25), ("owner0", "0F1", 0): (1.25, 2.25),
        ("owner0", "0F2", 0): (2.25, 3.25),
        ("owner0->server", ">server:ACT0", 0): (1.25, 3.25),
        ("owner0->server", ">server:ACT1", 0): (3.25, 5.25),
        ("owner0->server", ">server:ACT2", 0): (5.25, 7.25),
        ("server", "1F0", 0): (3.25, 4.5), ("server", "1B0", 0): (4.5, 5.5),
        ("server", "1F1", 0): (5.5, 6.5), ("server", "1B1", 0): (6.5, 7.5),
        ("server", "1F2", 0): (7.5, 8.5), ("server", "1B2", 0): (8.5, 9.5),
        ("server", "STEP1", 0): (9.5, 10),
        ("server->owner0", ">owner0:GRAD0", 0): (5.5, 6.5),
        ("server->owner0", ">owner0:GRAD1", 0): (7.5, 8.5),
        ("server->owner0", ">owner0:GRAD2", 0): (9.5, 10.5),
        ("owner0", "0B0", 0): (6.5, 9), ("owner0", "0B1", 0): (9, 11),
        ("owner0", "0B2", 0): (11, 13), ("owner0", "STEP", 0): (13, 13.5),
    })


def test_emulated_device_wakes_for_every_pass():
    """An owner with compute_scale > 1 sleeps after every pass, so each one pays."""
    t, prof = pipar_one_owner()
    t = topo(training={"batch_size": 3}, plan={"cuts": [1], "micro_batches": 3},
             data_owners={"count": 1, "compute_scale": 2,
                          "uplink_mbps": t.owners[0].uplink_mbps,
                          "downlink_mbps": t.owners[0].downlink_mbps})
    prof = with_wake(prof)  # given per node: used as is, not scaled
    est = simulate(t, make_plan(t, 2), {"owner0": prof, "server": prof}, iterations=1,
                   record=True)
    got = timeline(est)
    owner = {k: v for k, v in got.items() if k[0] == "owner0"}
    check(owner, {
        ("owner0", "0F0", 0): (0, 1.25), ("owner0", "0F1", 0): (1.25, 2.5),
        ("owner0", "0F2", 0): (2.5, 3.75),
        ("owner0", "0B0", 0): (6.5, 9), ("owner0", "0B1", 0): (9, 11.5),
        ("owner0", "0B2", 0): (11.5, 14), ("owner0", "STEP", 0): (14, 14.5),
    })
    assert got[("owner0->server", ">server:ACT2", 0)] == pytest.approx((5.25, 7.25))


def test_step_costs_step_s_per_part_and_wake_step_s_after_a_sleep():
    """The test above with step_s = 0.125 and wake_step_s = 0.0625: the server's STEP takes
    0.5 + 0.125, the emulated owner's, which slept after its last backward, 0.5 + 0.125 +
    0.0625; the passes are as before."""
    t, prof = pipar_one_owner()
    t = topo(training={"batch_size": 3}, plan={"cuts": [1], "micro_batches": 3},
             data_owners={"count": 1, "compute_scale": 2,
                          "uplink_mbps": t.owners[0].uplink_mbps,
                          "downlink_mbps": t.owners[0].downlink_mbps})
    prof = Profile(prof.layers, prof.source, wake_fwd_s=WAKE_F, wake_bwd_s=WAKE_B,
                   step_s=0.125, wake_step_s=0.0625)
    est = simulate(t, make_plan(t, 2), {"owner0": prof, "server": prof}, iterations=1,
                   record=True)
    got = timeline(est)
    assert got[("server", "STEP1", 0)] == pytest.approx((9.5, 10.125))
    assert got[("owner0", "0B2", 0)] == pytest.approx((11.5, 14))
    assert got[("owner0", "STEP", 0)] == pytest.approx((14, 14.6875))


def test_next_iteration_starts_at_step():
    t, prof = pipar_one_owner()
    est = simulate(t, make_plan(t, 2), prof, iterations=2, record=True)
    check(timeline(est, 1), FIG2, shift=12.5)
    assert est.iteration_s == pytest.approx(12.5)
    assert est.iterations == {"owner0": 2}


def test_chain_of_two_compute_nodes():
    """owner -> node1 -> node2 (loss): compute links unshaped with 0.5 s latency."""
    t = topo(training={"batch_size": 2}, plan={"cuts": [1, 2], "micro_batches": 2},
             data_owners={"count": 1, "uplink_mbps": rate_for(1, act_bytes(O, 1)),
                          "downlink_mbps": rate_for(1, grad_bytes(O, 1))},
             compute_nodes=[{"name": "node1", "address": "tcp://127.0.0.1:5590"},
                            {"name": "node2", "address": "tcp://127.0.0.1:5591"}],
             links={"compute_latency_ms": 500})
    prof = profile(layer(1, 1, opt=0.5, out=O), layer(1, 2, opt=0.5, out=O),
                   layer(1, 1, opt=0.5, out=10))
    est = simulate(t, make_plan(t, 3), prof, iterations=1, record=True)
    check(timeline(est), {
        ("owner0", "0F0", 0): (0, 1), ("owner0", "0F1", 0): (1, 2),
        ("owner0->node1", ">node1:ACT0", 0): (1, 2), ("owner0->node1", ">node1:ACT1", 0): (2, 3),
        ("node1", "1F0", 0): (2, 3), ("node1", "1F1", 0): (3, 4),
        ("node1->node2", ">node2:ACT0", 0): (3, 3), ("node1->node2", ">node2:ACT1", 0): (4, 4),
        ("node2", "2F0", 0): (3.5, 4.5), ("node2", "2B0", 0): (4.5, 5.5),
        ("node2", "2F1", 0): (5.5, 6.5), ("node2", "2B1", 0): (6.5, 7.5),
        ("node2", "STEP2", 0): (7.5, 8),
        ("node2->node1", ">node1:GRAD0", 0): (5.5, 5.5),
        ("node2->node1", ">node1:GRAD1", 0): (7.5, 7.5),
        ("node1", "1B0", 0): (6, 8), ("node1", "1B1", 0): (8, 10),
        ("node1", "STEP1", 0): (10, 10.5),
        ("node1->owner0", ">owner0:GRAD0", 0): (8, 9),
        ("node1->owner0", ">owner0:GRAD1", 0): (10, 11),
        ("owner0", "0B0", 0): (9, 10), ("owner0", "0B1", 0): (11, 12),
        ("owner0", "STEP", 0): (12, 12.5),
    })
    assert est.iteration_s == pytest.approx(12.5)


def test_u_shape_tail_on_owner():
    """MP-SL's U-shape over one node: the server->owner0 link carries the ACT and the GRAD."""
    t = topo(mode="mpsl", labels="local", training={"batch_size": 1},
             plan={"cuts": [1, 2], "micro_batches": 1},
             data_owners={"count": 1, "uplink_mbps": rate_for(1, grad_bytes(O, 1)),
                          "downlink_mbps": rate_for(1, grad_bytes(O, 1))})
    prof = profile(*(layer(1, 1, opt=0.5, out=O) for _ in range(3)))
    est = simulate(t, make_plan(t, 3), prof, iterations=1, record=True)
    check(timeline(est), {
        ("owner0", "0F0", 0): (0, 1), ("owner0->server", ">server:ACT0", 0): (1, 2),
        ("server", "1F0", 0): (2, 3), ("server->owner0", ">owner0:ACT0", 0): (3, 4),
        ("owner0", "2F0", 0): (4, 5), ("owner0", "2B0", 0): (5, 6),
        ("owner0->server", ">server:GRAD0", 0): (6, 7), ("server", "1B0", 0): (7, 8),
        ("server", "STEP1", 0): (8, 8.5), ("server->owner0", ">owner0:GRAD0", 0): (8, 9),
        ("owner0", "0B0", 0): (9, 10), ("owner0", "STEP", 0): (10, 11),
    })


def shared_server(**training):
    t = topo(training={"batch_size": 2, **training}, plan={"cuts": [1], "micro_batches": 2},
             data_owners={"count": 2, "uplink_mbps": rate_for(1, act_bytes(O, 1)),
                          "downlink_mbps": rate_for(1, grad_bytes(O, 1))})
    prof = profile(layer(1, 1, opt=0.5, out=O, params=100, act=10),
                   layer(1, 1, opt=0.5, out=10, params=1000, act=50))
    return t, prof


def test_two_owners_share_a_server_oldest_first():
    t, prof = shared_server()
    est = simulate(t, make_plan(t, 2), prof, iterations=1, record=True)
    expected = {}
    for k in (0, 1):
        expected[(f"owner{k}", "0F0", k)] = (0, 1)
        expected[(f"owner{k}", "0F1", k)] = (1, 2)
        expected[(f"owner{k}->server", ">server:ACT0", k)] = (1, 2)
        expected[(f"owner{k}->server", ">server:ACT1", k)] = (2, 3)
    expected.update({
        ("server", "1F0", 0): (2, 3), ("server", "1B0", 0): (3, 4),
        ("server", "1F0", 1): (4, 5), ("server", "1B0", 1): (5, 6),
        ("server", "1F1", 0): (6, 7), ("server", "1B1", 0): (7, 8),
        ("server", "STEP1", 0): (8, 8.5),
        ("server", "1F1", 1): (8.5, 9.5), ("server", "1B1", 1): (9.5, 10.5),
        ("server", "STEP1", 1): (10.5, 11),
        ("server->owner0", ">owner0:GRAD0", 0): (4, 5),
        ("server->owner0", ">owner0:GRAD1", 0): (8, 9),
        ("server->owner1", ">owner1:GRAD0", 1): (6, 7),
        ("server->owner1", ">owner1:GRAD1", 1): (10.5, 11.5),
        ("owner0", "0B0", 0): (5, 6), ("owner0", "0B1", 0): (9, 10),
        ("owner0", "STEP", 0): (10, 10.5),
        ("owner1", "0B0", 1): (7, 8), ("owner1", "0B1", 1): (11.5, 12.5),
        ("owner1", "STEP", 1): (12.5, 13),
    })
    check(timeline(est), expected)
    assert est.iteration_s == pytest.approx((10.5 + 13) / 2)
    assert est.busy_s["server"] == pytest.approx(9)
    assert est.bottleneck == "server"
    # the aggregation: both PARAMS in (owner1's last), averaging, GLOBAL back
    up = (100 + HEADER_BYTES) / act_bytes(O, 1)
    avg = 2 * 100 / AVERAGE_BYTES_PER_S
    down = (100 + HEADER_BYTES) / grad_bytes(O, 1)
    assert est.epoch_s == pytest.approx(13 + up + avg + down)


@pytest.mark.parametrize("optimizer,momentum,factor", [("sgd", 0.0, 2), ("sgd", 0.9, 3),
                                                        ("adam", 0.0, 4)])
def test_memory_per_node(optimizer, momentum, factor):
    t, prof = shared_server(optimizer=optimizer, momentum=momentum)
    est = simulate(t, make_plan(t, 2), prof, iterations=1)
    # server: 2 copies of 1000 B of parameters; during [3, 4) owner0's micro-batch 0 holds
    # its activations (50 B) and three ACTs wait in the inbox
    assert est.memory_detail["server"]["params"] == 1000 * factor * 2
    assert est.memory_bytes["server"] == 1000 * factor * 2 + 50 + 3 * act_bytes(O, 1)
    assert est.memory_detail["owner0"]["activations"] == 20
    assert est.memory_bytes["owner0"] == 100 * factor + 20 + act_bytes(O, 1)


def test_aggregate_every_iteration_waits_for_global():
    t, prof = shared_server(aggregate_every=1)
    est = simulate(t, make_plan(t, 2), prof, iterations=2, record=True)
    for k in (0, 1):
        glob = of(est, f">owner{k}:GLOBAL")
        assert [e.iter for e in glob] == [0, 1]  # round ids
        first = min(e.t0 for e in est.events if e.node == f"owner{k}" and e.iter == 1
                    and e.action == "0F0")
        assert first == pytest.approx(glob[0].t1)  # no latency: arrival = end of GLOBAL
        assert first >= 13  # after owner1's STEP: a barrier
    avg = of(est, "AVG1", "server")
    assert [e.iter for e in avg] == [0, 1] and [e.owner for e in avg] == [None, None]
    later = min(e.t0 for e in est.events if e.resource_name == "server" and e.iter == 1
                and e.owner is not None)
    assert later >= avg[0].t1


def test_averaging_waits_for_the_last_sync():
    """The server averages its two copies once both owners' syncs are in and it is free: its
    last STEP ends at 11, owner1's STEP at 13, and owner1's sync (a header on its uplink)
    arrives at 13 + H / act_bytes; only then do the next round's tasks run."""
    t, prof = shared_server(aggregate_every=1)
    prof = profile(prof.layers[0], layer(1, 1, opt=0.5, out=10, params=int(40e9), act=50))
    est = simulate(t, make_plan(t, 2), prof, iterations=2, record=True)
    up = H / act_bytes(O, 1)
    syncs = [e for e in of(est, ">server:CONTROL") if e.iter == 0]
    assert [(e.node, e.resource, e.owner, e.mb, e.bytes) for e in syncs] == [
        ("owner0", "owner0->server", 0, None, H), ("owner1", "owner1->server", 1, None, H)]
    assert [t for e in syncs for t in (e.t0, e.t1)] == pytest.approx([10.5, 10.5 + up, 13, 13 + up])
    avg = of(est, "AVG1", "server")
    assert avg[0].resource == "cpu" and avg[0].iter == 0
    assert avg[0].t0 == pytest.approx(13 + up)
    assert avg[0].seconds == pytest.approx(2 * 40e9 / AVERAGE_BYTES_PER_S)
    starts = [e.t0 for e in est.events if e.resource_name == "server" and e.iter == 1
              and e.kind in ("1F", "1B")]
    assert min(starts) == pytest.approx(avg[0].t1)
    # at the epoch's end, the averaged part goes to the aggregator (an unshaped link)
    (params,) = of(est, ">aggregator:PARAMS", "server->aggregator")
    assert (params.iter, params.owner, params.bytes) == (1, None, int(40e9) + H)
    assert params.t0 == params.t1 == pytest.approx(avg[1].t1)


def test_sl_owners_take_turns():
    """The aggregator hands the owner part to each owner in turn (GLOBAL), which trains its
    epoch and hands it back (PARAMS); the epoch ends when the last PARAMS is in."""
    t, prof = shared_server()
    t = topo(mode="sl", training={"batch_size": 2}, plan={"cuts": [1]},
             data_owners={"count": 2, "uplink_mbps": rate_for(1, act_bytes(O, 2)),
                          "downlink_mbps": rate_for(1, grad_bytes(O, 2))})
    est = simulate(t, make_plan(t, 2), prof, iterations=1, record=True)
    up = (100 + H) / act_bytes(O, 2)
    down = (100 + H) / grad_bytes(O, 2)
    # N = 1: F 2, ACT 1, server F+B 4, GRAD 1, B 2, STEP 0.5: 10.5 after the GLOBAL
    assert [(e.t0, e.t1) for e in of(est, ">owner0:GLOBAL")] == [(0, pytest.approx(down))]
    (step0,) = of(est, "STEP", "owner0")
    assert step0.t1 == pytest.approx(down + 10.5)
    first1 = min(e.t0 for e in est.events if e.resource_name == "owner1")
    assert first1 == pytest.approx(10.5 + up + 2 * down)
    assert est.epoch_s == pytest.approx(2 * (10.5 + up + down))
    assert [e.iter for e in of(est, ">aggregator:PARAMS")] == [0, 0, 0]  # round = epoch
    assert not of(est, "AVG") and not of(est, "AVG1")  # one shared copy
    assert est.memory_detail["server"]["params"] == 1000 * 2
    assert est.iteration_s == pytest.approx(10.5)


def test_fl_runs_whole_model_on_owner():
    t = topo(mode="fl", training={"batch_size": 2}, plan={"cuts": [1], "micro_batches": 1},
             data_owners={"count": 1})
    prof = profile(layer(1, 2, opt=0.5, params=10), layer(1, 1, opt=0.25, params=10))
    est = simulate(t, make_plan(t, 2), prof, iterations=1, record=True)
    assert est.iteration_s == pytest.approx(2 * 2 + 2 * 3 + 0.75)
    assert "server" not in est.busy_s


def test_partial_last_batch_is_kept():
    t, prof = pipar_one_owner()
    est = simulate(t, make_plan(t, 2), prof, samples=[7], record=True)
    assert est.iterations == {"owner0": 3}
    last = {e.mb for e in est.events if e.iter == 2 and e.kind == "0F"}
    assert last == {0}  # one sample left: one micro-batch


def test_linear_in_micro_batches():
    t = topo(training={"batch_size": 1024}, plan={"cuts": [1], "micro_batches": 1024},
             data_owners={"count": 1, "uplink_mbps": 10, "downlink_mbps": 10})
    prof = profile(layer(1e-4, 2e-4, out=O), layer(1e-4, 1e-4, out=10))
    started = time.perf_counter()
    est = simulate(t, make_plan(t, 2), prof, iterations=1)
    assert time.perf_counter() - started < 2.0
    assert est.iteration_s > 0


def test_owner_without_data_joins_the_aggregation():
    t, prof = shared_server()
    est = simulate(t, make_plan(t, 2), prof, samples=[4, 0])
    assert est.iterations == {"owner0": 2, "owner1": 0} and est.epoch_s > 0
