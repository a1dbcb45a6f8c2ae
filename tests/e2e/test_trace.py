"""A real run's trace and results.json: every event an Action of the brief's vocabulary, with
its node, resource, owner, iteration (or round) and micro-batch where they belong."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from mpsl.actions import Action, Msg, Op
from mpsl.names import AGGREGATOR, CPU, link_name
from mpsl.plan import read_plan_file
from mpsl.trace import read_events
from tests.e2e.conftest import topology_doc

OWNERS, EPOCHS, ITERS, N = 2, 2, 3, 2
ROUNDS = 2  # aggregate_every 2 of 3 iterations: rounds end after 2 and 3
RESULT_KEYS = {"run_id", "topology", "source", "overrides", "mode", "labels", "schedule", "plan",
               "partition", "t_start", "epochs", "rounds", "failures", "losses", "nodes",
               "links", "summary"}
NODE_KEYS = {"busy_s", "idle_s", "peak_rss_bytes", "peak_tensor_bytes", "state_bytes",
             "activation_peak_bytes", "rejected_messages", "refused_connections",
             "dropped"}
SUMMARY_KEYS = {"train_s", "bottleneck", "bottleneck_busy_s", "time_over_bound",
                "final_test_accuracy", "samples_per_owner", "rejected_messages"}


def _run(run_topology) -> tuple[dict, Path, list]:
    """MP-SL's U-shape, 2 owners, 2 compute nodes, 1F1B with one micro-batch in flight."""
    doc = topology_doc(owners=OWNERS, compute=2, mode="mpsl", labels="local",
                       plan={"cuts": [1, 2, 3], "micro_batches": N},
                       schedule={"name": "1f1b", "max_in_flight": 1},
                       training={"epochs": EPOCHS, "max_iterations": ITERS,
                                 "aggregate_every": 2})
    monitor: list = []
    results, out = run_topology(doc, on_message=monitor.append)
    return results, out, monitor


def test_a_real_runs_trace_and_results(run_topology):
    results, out, monitor = _run(run_topology)
    events = read_events(out / "events.jsonl")
    plan = read_plan_file(out / "plan.json")
    assert plan.schedule == "1f1b" and plan.max_in_flight == 1
    rounds = set(range(EPOCHS * ROUNDS))
    iters = set(range(EPOCHS * ITERS))
    by_kind = collections.defaultdict(list)
    for e in events:
        a = Action.from_str(e.action)  # every action parses back, and prints the same
        assert str(a) == e.action
        assert e.t0 <= e.t1 and e.t1 >= results["t_start"]
        by_kind[(e.node, e.kind)].append(e)
        if e.resource == CPU:
            _check_processor(e, a, plan, iters, rounds)
        else:
            _check_link(e, a, iters, rounds)
    owners = [f"owner{k}" for k in range(OWNERS)]
    # F/B of every part where it runs, for every owner, iteration and micro-batch
    for node, parts in [("owner0", (0, 3)), ("owner1", (0, 3)), ("node1", (1,)), ("node2", (2,))]:
        for p in parts:
            for op in "FB":
                got = {(e.owner, e.iter, e.mb) for e in by_kind[(node, f"{p}{op}")]}
                mine = [int(node[-1])] if node.startswith("owner") else range(OWNERS)
                assert got == {(k, i, m) for k in mine for i in iters for m in range(N)}
    # averaging: one AVG{part} per round on each compute node, one AVG on the aggregator
    for node, kind in [("node1", "AVG1"), ("node2", "AVG2"), (AGGREGATOR, "AVG")]:
        assert sorted(e.iter for e in by_kind[(node, kind)]) == sorted(rounds)
        assert all(e.owner is None for e in by_kind[(node, kind)])
    # rounds on the links: PARAMS up, GLOBAL down, the sync down the chain, per owner
    for k, o in enumerate(owners):
        for node, kind in [(o, f">{AGGREGATOR}:PARAMS"), (AGGREGATOR, f">{o}:GLOBAL"),
                           (o, ">node1:CONTROL")]:
            assert sorted(e.iter for e in by_kind[(node, kind)]) == sorted(rounds), (node, kind)
            assert {e.owner for e in by_kind[(node, kind)]} == {k}
    forwarded = by_kind[("node1", ">node2:CONTROL")]
    assert sorted((e.owner, e.iter) for e in forwarded) == sorted(
        (k, r) for k in range(OWNERS) for r in rounds)
    for node in ("node1", "node2"):  # the compute part at each epoch's end
        params = by_kind[(node, f">{AGGREGATOR}:PARAMS")]
        assert sorted(e.iter for e in params) == [ROUNDS - 1, 2 * ROUNDS - 1]
        assert all(e.owner is None for e in params)
    for o in owners:  # the loss of every iteration, from the owner (labels local)
        assert sorted(e.iter for e in by_kind[(o, f">{AGGREGATOR}:METRICS")]) == sorted(iters)
    assert not any(e.kind.endswith("CONTROL") and e.node == AGGREGATOR for e in events)
    _check_one_f_one_b(events)
    _check_results(results, monitor, out)
    _check_counterparts(events, out, results)


def _check_counterparts(events: list, out: Path, results: dict) -> None:
    """Every measured event has its simulated twin, and the other way round: the same
    (resource, action, owner, iteration or round), as often, for the same plan and epochs."""
    from mpsl.topology import load
    from planner.cost import simulate
    from planner.measure import byte_profile

    topo = load(results["source"], results["overrides"])
    est = simulate(topo, read_plan_file(out / "plan.json"), byte_profile(topo),
                   epochs=len(results["epochs"]), record=True)
    assert est.events is not None

    def keys(evs: list) -> collections.Counter:
        return collections.Counter((e.resource_name, e.action, e.owner, e.iter) for e in evs)

    measured, simulated = keys(events), keys(est.events)
    assert measured - simulated == collections.Counter(), "measured, never simulated"
    assert simulated - measured == collections.Counter(), "simulated, never measured"


@pytest.mark.parametrize("mode", ["pipar", "sl"])
def test_every_measured_event_has_its_simulated_twin(run_topology, mode: str) -> None:
    """PiPar (the loss on the compute node) and SL (owners take turns), gpipe: as above."""
    doc = topology_doc(owners=2, compute=1, mode=mode,
                       plan={"cuts": [2], "micro_batches": 1 if mode == "sl" else 3},
                       training={"epochs": 2, "max_iterations": 2})
    results, out = run_topology(doc)
    _check_counterparts(read_events(out / "events.jsonl"), out, results)


def _check_processor(e, a: Action, plan, iters: set, rounds: set) -> None:
    """F, B, STEP and AVG: where they run, with owner, iteration (or round) and mb."""
    assert a.op is not Op.SEND
    if a.op is Op.AVG:
        assert e.owner is None and e.iter in rounds and e.mb is None
        assert (a.part is None) == (e.node == AGGREGATOR)
        return
    assert e.owner in range(OWNERS) and e.iter in iters
    owner = e.node.startswith("owner")
    if a.op is Op.STEP:
        assert e.mb is None and (a.part is None) == owner
        return
    assert e.mb in range(N)
    where = "owner" if owner else e.node
    assert a.part in plan.parts_on(where), (e.node, e.action)
    if owner:
        assert e.owner == int(e.node[len("owner"):])


def _check_link(e, a: Action, iters: set, rounds: set) -> None:
    """Messages: the link is sender->destination, bytes counted, iteration or round set."""
    assert a.op is Op.SEND and e.resource == link_name(e.node, a.dst)
    assert e.bytes > 0 and e.mb == a.mb
    if a.msg in (Msg.ACT, Msg.GRAD):
        assert e.owner in range(OWNERS) and e.iter in iters and e.mb in range(N)
    elif a.msg is Msg.METRICS:
        assert e.iter in iters and e.mb is None and a.dst == AGGREGATOR
    else:  # PARAMS, GLOBAL and the sync CONTROL carry the round
        assert e.iter in rounds and e.mb is None, e


def _check_one_f_one_b(events: list) -> None:
    """At most one micro-batch between forward and backward of the owner's first part."""
    for k in range(OWNERS):
        for it in range(EPOCHS * ITERS):
            seq = [e.action for e in sorted(events, key=lambda e: e.t0)
                   if e.node == f"owner{k}" and e.resource == CPU and e.iter == it
                   and e.action[:2] in ("0F", "0B")]
            assert seq == [a for m in range(N) for a in (f"0F{m}", f"0B{m}")], seq


def _check_results(results: dict, monitor: list, out: Path) -> None:
    assert set(results) == RESULT_KEYS
    assert results["source"] == str((out.parent / "test.yaml").resolve())
    assert results["overrides"] == [] and results["schedule"] == "1f1b"
    assert results["plan"] == read_plan_file(out / "plan.json").to_json()
    assert set(results["nodes"]) == {"owner0", "owner1", "node1", "node2", AGGREGATOR}
    assert all(set(n) == NODE_KEYS for n in results["nodes"].values())
    assert set(results["summary"]) == SUMMARY_KEYS
    assert results["summary"]["rejected_messages"] == 0
    assert results["summary"]["time_over_bound"] >= 1
    losses = results["losses"]
    assert sorted((r["owner"], r["iter"]) for r in losses) == sorted(
        (k, i) for k in range(OWNERS) for i in range(EPOCHS * ITERS))
    assert all(r["epoch"] == r["iter"] // ITERS for r in losses)
    start = next(m.meta for m in monitor if m.meta.get("type") == "start")
    assert start["t"] == results["t_start"]
    assert start["epochs"] == EPOCHS and start["iterations"] == [ITERS] * OWNERS
