"""The cost model against pipelines worked out by hand, action by action."""

from __future__ import annotations

import time

import pytest

from mpsl.plan import make_plan
from planner.cost import simulate
from planner.profile import Profile
from planner.resources import AVERAGE_BYTES_PER_S, HEADER_BYTES

from .util import act_bytes, grad_bytes, layer, profile, rate_for, topo

O = 1000  # bytes per sample at the cuts


def timeline(est, it=0):
    """{(resource, kind, owner, mb): (t0, t1)} of one iteration, aggregation left out."""
    return {(e.resource, e.kind, e.owner, e.mb): (e.t0, e.t1) for e in est.events
            if e.iter == it and e.kind not in ("PARAMS", "GLOBAL", "AVG")}


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
    ("owner0", "0F", 0, 0): (0, 1), ("owner0", "0F", 0, 1): (1, 2),
    ("owner0", "0F", 0, 2): (2, 3),
    ("owner0->server", "ACT", 0, 0): (1, 3), ("owner0->server", "ACT", 0, 1): (3, 5),
    ("owner0->server", "ACT", 0, 2): (5, 7),
    ("server", "1F", 0, 0): (3, 4), ("server", "1B", 0, 0): (4, 5),
    ("server", "1F", 0, 1): (5, 6), ("server", "1B", 0, 1): (6, 7),
    ("server", "1F", 0, 2): (7, 8), ("server", "1B", 0, 2): (8, 9),
    ("server", "STEP", 0, -1): (9, 9.5),
    ("server->owner0", "GRAD", 0, 0): (5, 6), ("server->owner0", "GRAD", 0, 1): (7, 8),
    ("server->owner0", "GRAD", 0, 2): (9, 10),
    ("owner0", "0B", 0, 0): (6, 8), ("owner0", "0B", 0, 1): (8, 10),
    ("owner0", "0B", 0, 2): (10, 12), ("owner0", "STEP", 0, -1): (12, 12.5),
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
    assert est.busy_s["owner0->server"] == pytest.approx(6)
    assert est.bottleneck == "owner0"
    # activations: three forwards before the first backward; buffers: two ACTs queued
    assert est.memory_detail["owner0"] == {"params": 0, "activations": 30,
                                           "buffers": 2 * act_bytes(O, 1)}
    assert est.memory_bytes["owner0"] == 30 + 2 * act_bytes(O, 1)


WAKE_F, WAKE_B = 0.25, 0.5  # extra seconds of a pass after an idle processor


def with_wake(prof):
    return Profile(prof.layers, prof.source, wake_fwd_s=WAKE_F, wake_bwd_s=WAKE_B)


def test_wake_up_after_idle_only():
    """Fig. 2 with wake-ups: a task that starts on an idle processor pays for its first pass;
    the server's queued tasks and the owner's queued backwards run warm."""
    t, prof = pipar_one_owner()
    est = simulate(t, make_plan(t, 2), with_wake(prof), iterations=1, record=True)
    check(timeline(est), {
        ("owner0", "0F", 0, 0): (0, 1.25), ("owner0", "0F", 0, 1): (1.25, 2.25),
        ("owner0", "0F", 0, 2): (2.25, 3.25),
        ("owner0->server", "ACT", 0, 0): (1.25, 3.25),
        ("owner0->server", "ACT", 0, 1): (3.25, 5.25),
        ("owner0->server", "ACT", 0, 2): (5.25, 7.25),
        ("server", "1F", 0, 0): (3.25, 4.5), ("server", "1B", 0, 0): (4.5, 5.5),
        ("server", "1F", 0, 1): (5.5, 6.5), ("server", "1B", 0, 1): (6.5, 7.5),
        ("server", "1F", 0, 2): (7.5, 8.5), ("server", "1B", 0, 2): (8.5, 9.5),
        ("server", "STEP", 0, -1): (9.5, 10),
        ("server->owner0", "GRAD", 0, 0): (5.5, 6.5),
        ("server->owner0", "GRAD", 0, 1): (7.5, 8.5),
        ("server->owner0", "GRAD", 0, 2): (9.5, 10.5),
        ("owner0", "0B", 0, 0): (6.5, 9), ("owner0", "0B", 0, 1): (9, 11),
        ("owner0", "0B", 0, 2): (11, 13), ("owner0", "STEP", 0, -1): (13, 13.5),
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
        ("owner0", "0F", 0, 0): (0, 1.25), ("owner0", "0F", 0, 1): (1.25, 2.5),
        ("owner0", "0F", 0, 2): (2.5, 3.75),
        ("owner0", "0B", 0, 0): (6.5, 9), ("owner0", "0B", 0, 1): (9, 11.5),
        ("owner0", "0B", 0, 2): (11.5, 14), ("owner0", "STEP", 0, -1): (14, 14.5),
    })
    assert got[("owner0->server", "ACT", 0, 2)] == pytest.approx((5.25, 7.25))


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
    assert got[("server", "STEP", 0, -1)] == pytest.approx((9.5, 10.125))
    assert got[("owner0", "0B", 0, 2)] == pytest.approx((11.5, 14))
    assert got[("owner0", "STEP", 0, -1)] == pytest.approx((14, 14.6875))


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
        ("owner0", "0F", 0, 0): (0, 1), ("owner0", "0F", 0, 1): (1, 2),
        ("owner0->node1", "ACT", 0, 0): (1, 2), ("owner0->node1", "ACT", 0, 1): (2, 3),
        ("node1", "1F", 0, 0): (2, 3), ("node1", "1F", 0, 1): (3, 4),
        ("node1->node2", "ACT", 0, 0): (3, 3), ("node1->node2", "ACT", 0, 1): (4, 4),
        ("node2", "2F", 0, 0): (3.5, 4.5), ("node2", "2B", 0, 0): (4.5, 5.5),
        ("node2", "2F", 0, 1): (5.5, 6.5), ("node2", "2B", 0, 1): (6.5, 7.5),
        ("node2", "STEP", 0, -1): (7.5, 8),
        ("node2->node1", "GRAD", 0, 0): (5.5, 5.5), ("node2->node1", "GRAD", 0, 1): (7.5, 7.5),
        ("node1", "1B", 0, 0): (6, 8), ("node1", "1B", 0, 1): (8, 10),
        ("node1", "STEP", 0, -1): (10, 10.5),
        ("node1->owner0", "GRAD", 0, 0): (8, 9), ("node1->owner0", "GRAD", 0, 1): (10, 11),
        ("owner0", "0B", 0, 0): (9, 10), ("owner0", "0B", 0, 1): (11, 12),
        ("owner0", "STEP", 0, -1): (12, 12.5),
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
        ("owner0", "0F", 0, 0): (0, 1), ("owner0->server", "ACT", 0, 0): (1, 2),
        ("server", "1F", 0, 0): (2, 3), ("server->owner0", "ACT", 0, 0): (3, 4),
        ("owner0", "2F", 0, 0): (4, 5), ("owner0", "2B", 0, 0): (5, 6),
        ("owner0->server", "GRAD", 0, 0): (6, 7), ("server", "1B", 0, 0): (7, 8),
        ("server", "STEP", 0, -1): (8, 8.5), ("server->owner0", "GRAD", 0, 0): (8, 9),
        ("owner0", "0B", 0, 0): (9, 10), ("owner0", "STEP", 0, -1): (10, 11),
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
        expected[(f"owner{k}", "0F", k, 0)] = (0, 1)
        expected[(f"owner{k}", "0F", k, 1)] = (1, 2)
        expected[(f"owner{k}->server", "ACT", k, 0)] = (1, 2)
        expected[(f"owner{k}->server", "ACT", k, 1)] = (2, 3)
    expected.update({
        ("server", "1F", 0, 0): (2, 3), ("server", "1B", 0, 0): (3, 4),
        ("server", "1F", 1, 0): (4, 5), ("server", "1B", 1, 0): (5, 6),
        ("server", "1F", 0, 1): (6, 7), ("server", "1B", 0, 1): (7, 8),
        ("server", "STEP", 0, -1): (8, 8.5),
        ("server", "1F", 1, 1): (8.5, 9.5), ("server", "1B", 1, 1): (9.5, 10.5),
        ("server", "STEP", 1, -1): (10.5, 11),
        ("server->owner0", "GRAD", 0, 0): (4, 5), ("server->owner0", "GRAD", 0, 1): (8, 9),
        ("server->owner1", "GRAD", 1, 0): (6, 7), ("server->owner1", "GRAD", 1, 1): (10.5, 11.5),
        ("owner0", "0B", 0, 0): (5, 6), ("owner0", "0B", 0, 1): (9, 10),
        ("owner0", "STEP", 0, -1): (10, 10.5),
        ("owner1", "0B", 1, 0): (7, 8), ("owner1", "0B", 1, 1): (11.5, 12.5),
        ("owner1", "STEP", 1, -1): (12.5, 13),
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
    glob = {e.owner: e for e in est.events if e.kind == "GLOBAL" and e.iter == 0}
    for k in (0, 1):
        first = min(e.t0 for e in est.events if e.resource == f"owner{k}" and e.iter == 1)
        assert first == pytest.approx(glob[k].t1)  # no latency: arrival = end of GLOBAL
        assert first >= 13  # after owner1's STEP: a barrier
    avg = [e for e in est.events if e.resource == "server" and e.kind == "AVG"]
    assert len(avg) == 2
    later = min(e.t0 for e in est.events if e.resource == "server" and e.iter == 1
                and e.kind != "AVG")
    assert later >= avg[0].t1


def test_compute_node_averages_before_next_round():
    t, prof = shared_server(aggregate_every=1)
    prof = profile(prof.layers[0], layer(1, 1, opt=0.5, out=10, params=int(40e9), act=50))
    est = simulate(t, make_plan(t, 2), prof, iterations=2, record=True)
    avg = next(e for e in est.events if e.resource == "server" and e.kind == "AVG")
    assert avg.t1 - avg.t0 == pytest.approx(2 * 40e9 / AVERAGE_BYTES_PER_S)
    assert avg.t0 == pytest.approx(11)  # after both copies' STEPs
    starts = [e.t0 for e in est.events if e.resource == "server" and e.iter == 1
              and e.kind in ("1F", "1B")]
    assert min(starts) == pytest.approx(avg.t1)


def test_sl_owners_take_turns():
    t, prof = shared_server()
    t = topo(mode="sl", training={"batch_size": 2}, plan={"cuts": [1]},
             data_owners={"count": 2, "uplink_mbps": rate_for(1, act_bytes(O, 2)),
                          "downlink_mbps": rate_for(1, grad_bytes(O, 2))})
    est = simulate(t, make_plan(t, 2), prof, iterations=1, record=True)
    # N = 1: F 2, ACT 1, server F+B 4, GRAD 1, B 2, STEP 0.5: owner0 ends at 10.5
    step0 = next(e for e in est.events if e.resource == "owner0" and e.kind == "STEP")
    assert step0.t1 == pytest.approx(10.5)
    up = (100 + HEADER_BYTES) / act_bytes(O, 2)
    down = (100 + HEADER_BYTES) / grad_bytes(O, 2)
    first1 = min(e.t0 for e in est.events if e.resource == "owner1")
    assert first1 == pytest.approx(10.5 + up + down)
    assert est.epoch_s == pytest.approx(2 * (10.5 + up + down))
    assert est.memory_detail["server"]["params"] == 1000 * 2  # one shared copy
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
