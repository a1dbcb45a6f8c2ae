"""The simulator's shared work: owners alike share their compiled tasks (planner.workload), a
send to the owner is put in per owner, memory peaks come from the arrays of a node's log
(planner.simstate.MemoryLog), and the garbage collector is left as it was found."""

from __future__ import annotations

import gc
import random

from mpsl.plan import make_plan
from planner.cost import simulate
from planner.engine import Engine
from planner.simstate import MemoryLog
from planner.workload import Workload, label_of
from tests.planner.test_steady import LAYERS, _profile
from tests.planner.util import topo


def _fleet(K: int, overrides: list[dict[str, object]] | None = None):
    t = topo(mode="mpsl", labels="local", training={"batch_size": 8},
             plan={"cuts": [1, 3, 5], "micro_batches": 2},
             data_owners={"count": K, "overrides": overrides or []},
             compute_nodes=[{"name": f"node{i}", "address": f"tcp://127.0.0.1:{5900 + i}"}
                            for i in range(2)])
    return t, make_plan(t, LAYERS, [1, 3, 5])


def test_owners_alike_share_their_compiled_tasks():
    t, plan = _fleet(5, [{"index": 4, "cuts": [2, 3, 5]}])
    work = Workload(t, plan, _profile(random.Random(0)), 3, None)
    first = work.tasks(0, 2)
    assert all(work.tasks(k, 2) is first for k in range(1, 4))
    assert work.tasks(4, 2) is not first  # an owner with cuts of its own
    names = [n for n, _ in first]
    assert names == [None, "node0", "node1"]  # the owner's own node first
    sends = [s for _, ts in first for task in ts for s in work.steps(task) if s.dst is None
             and s.key is not None]
    assert sends and {label_of(s, "owner3")[:8] for s in sends} == {">owner3:"}


def test_a_send_to_the_owner_reaches_that_owner():
    t, plan = _fleet(3)
    est = simulate(t, plan, _profile(random.Random(1)), iterations=2, record=True)
    assert est.events is not None
    back = [e for e in est.events if e.resource_name.startswith("node1->owner")]
    assert len(back) == 3 * 2 * 2  # owners x iterations x micro-batches
    for e in back:
        assert e.action.startswith(f">owner{e.owner}:"), e
        assert e.resource_name == f"node1->owner{e.owner}"


def _reference(log: list[tuple[float, int, int]]) -> tuple[int, int, int]:
    """Peaks by sorting (time, change) and summing, as the log was once read."""
    total = acts = bufs = peak = peak_a = peak_b = 0
    for _, d, cat in sorted(log, key=lambda e: (e[0], e[1])):
        total += d
        acts += 0 if cat else d
        bufs += d if cat else 0
        peak, peak_a, peak_b = max(peak, total), max(peak_a, acts), max(peak_b, bufs)
    return peak, peak_a, peak_b


def test_memory_peaks_frees_first_at_a_tie():
    rng = random.Random(3)
    for _ in range(50):
        mem, log = MemoryLog(), []
        for _ in range(rng.randint(0, 60)):
            t, n, cat = float(rng.randint(0, 8)), rng.choice([100, 300, 7000]), rng.randint(0, 1)
            for when, d in ((t, n), (t + rng.randint(0, 3), -n)):
                log.append((when, d, cat))
                (mem.buf if cat else mem.act)(when, d)
        assert mem.peaks() == _reference(log)


def test_the_collector_is_left_as_found():
    t, plan = _fleet(4)
    prof = _profile(random.Random(2))
    assert gc.isenabled()
    simulate(t, plan, prof, iterations=3)
    assert gc.isenabled()
    gc.disable()
    try:
        Engine(t, plan, {n: prof for n in ("owner0", "owner1", "owner2", "owner3", "node0",
                                           "node1")}, 3, None, False).run()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_short_last_batch_has_the_micro_batches_the_nodes_cut():
    """vgg5 with BatchNorm on 2x2 inputs trains on 2 samples and more: the batch of 8 in 4
    micro-batches of 2, the last of 3 in one (mpsl.data.micro_batch_count, as the nodes)."""
    t = topo(model={"name": "vgg5", "norm": "batch"}, training={"batch_size": 8},
             dataset={"options": {"shape": [1, 2, 2], "size": 11}},
             plan={"cuts": [2], "micro_batches": 4})
    work = Workload(t, make_plan(t, 5, [2]), _profile(random.Random(0)), None, None)
    assert work.sizes == [[[2, 2, 2, 2], [3]]]
