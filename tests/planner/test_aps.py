"""Choosing N (planner.nchoice: eq. 14, then the simulator), the exhaustive search, the ranked
plan report (planner.aps)."""

from __future__ import annotations

import re

import pytest

from mpsl.plan import make_plan
from mpsl.spec import ScheduleSpec
from planner.aps import choose_plan, exhaustive
from planner.cost import simulate
from planner.cutmodel import build
from planner.ilp import Infeasible
from planner.nchoice import NEAR_TIE, choose_n, eq14_start
from planner.profile import LayerProfile, Profile
from planner.resources import max_micro_batches, node_profiles

from .util import layer, profile, topo


def model_best_n(t, plan, profs):
    """The N in 1..B with the smallest T of the cut model at the plan's cuts (fewer on a tie)."""
    spec = ScheduleSpec(plan.schedule, plan.max_in_flight)
    times = {n: build(t, profs, [n] * len(t.owners), schedule=spec).evaluate(plan.cuts)[0]
             for n in range(1, t.training.batch_size + 1)}
    best = min(times.values())
    return min(n for n, v in times.items() if v <= best * (1 + 1e-9))


@pytest.mark.parametrize(("schedule", "latency_ms", "n"), [
    ("gpipe", 0, 8), ("gpipe", 3000, 8), ("1f1b", 1000, 3), ("1f1b", 3000, 2)])
def test_eq14_start_is_the_cut_models_best_n(schedule, latency_ms, n):
    """The start of the N search is the model's best N for the plan's schedule: under 1f1b a
    long round trip with two micro-batches in flight wants few micro-batches, gpipe many."""
    prof = profile(layer(1, 1), layer(1, 1))  # device F b, server F+B 2b per micro-batch
    t = topo(training={"batch_size": 8}, plan={"cuts": [1], "micro_batches": 1},
             data_owners={"count": 1, "latency_ms": latency_ms}, schedule=schedule)
    plan = make_plan(t, 2)
    profs = node_profiles(t, prof)
    assert eq14_start(t, plan, profs) == (model_best_n(t, plan, profs),) == (n,)


def test_eq14_start_single_batch_modes():
    prof = profile(layer(1, 1), layer(1, 1))
    sfl = topo(mode="sfl", training={"batch_size": 4}, plan={"cuts": [1]})
    assert eq14_start(sfl, make_plan(sfl, 2), node_profiles(sfl, prof)) == (1,)


def small_two_hop(**changes):
    base = dict(training={"batch_size": 8}, plan={"cuts": [2], "micro_batches": 1},
                dataset={"options": {"size": 48}},
                data_owners={"count": 2, "uplink_mbps": 2, "downlink_mbps": 8, "latency_ms": 2})
    for key, value in changes.items():
        base[key] = {**base[key], **value} if key in ("data_owners", "training") else value
    t = topo(**base)
    sizes = [4000, 2000, 1000, 500, 40]
    prof = Profile(tuple(LayerProfile(f"l{i}", 2e-4, 1e-3, 2e-4, 2e-3, 1e-4, sizes[i],
                                      20000 * (i + 1), sizes[i]) for i in range(5)), "t")
    return t, prof


def test_choose_n_finds_the_best_n():
    t, prof = small_two_hop()
    plan = make_plan(t, 5)
    n = choose_n(t, plan, prof)
    times = {k: simulate(t, make_plan(t, 5, micro_batches=k), prof).epoch_s
             for k in range(1, 9)}
    got = simulate(t, make_plan(t, 5, micro_batches=list(n)), prof).epoch_s
    best = min(times.values())
    assert got <= best * (1 + NEAR_TIE)
    # a near-tie goes to fewer micro-batches: no smaller N is within the band
    assert all(times[k] > best * (1 + NEAR_TIE) for k in range(1, n[0]))


def test_choose_n_scans_past_a_local_minimum_and_breaks_ties_last(monkeypatch):
    """Every N is simulated, so a drop past a local minimum is found; ties (within 1%) are
    broken among all N tried, after the walk, so 0.1% steps do not hold it at small N."""
    import types

    import planner.nchoice as nchoice

    curve: dict[int, float] = {}
    monkeypatch.setattr(nchoice, "simulate", lambda topo, plan, *a, **k: types.SimpleNamespace(
        epoch_s=curve[plan.micro_batches[0]]))
    monkeypatch.setattr(nchoice, "eq14_start", lambda *a: (2, 2))  # tries 1, 2, 4, 8 first
    t, prof = small_two_hop()
    assert max_micro_batches(t) == 8
    curve.update({1: 10.0, 2: 9.0, 3: 8.5, 4: 8.0, 5: 8.5, 6: 9.0, 7: 5.0, 8: 9.5})
    assert choose_n(t, make_plan(t, 5), prof) == (7, 7)  # past the local minimum at 4
    curve.update({1: 10.0, 2: 9.0, 3: 8.99, 4: 8.98, 5: 8.97, 6: 8.96, 7: 5.0, 8: 9.5})
    assert choose_n(t, make_plan(t, 5), prof) == (7, 7)
    curve[6] = 5.04  # within NEAR_TIE of the fastest: fewer micro-batches win
    assert choose_n(t, make_plan(t, 5), prof) == (6, 6)


def test_choose_n_simulates_none_where_the_bound_leaves_one_n(monkeypatch):
    """Where `screened` leaves one of the first N tried (eq. 14's start scaled) and screens
    its neighbours too, that N is the choice and nothing is simulated; a neighbour left
    brings the simulations back."""
    import types

    import planner.nchoice as nchoice

    t, prof = small_two_hop()
    K = len(t.owners)
    runs: list[int] = []

    def sim(topo, plan, *a, **k):
        runs.append(plan.micro_batches[0])
        return types.SimpleNamespace(epoch_s=1.0)

    monkeypatch.setattr(nchoice, "simulate", sim)
    monkeypatch.setattr(nchoice, "eq14_start", lambda *a: (2,) * K)  # tries 1, 2, 4, 8
    asked: list[int] = []

    def only(*kept: int):
        def screened(ns: tuple[int, ...]) -> bool:
            asked.append(ns[0])
            return ns[0] not in kept
        return screened

    plan = make_plan(t, 5)
    # 300 iterations x N_max 8 is past SCAN_BUDGET: no scan of every N
    assert choose_n(t, plan, prof, iterations=300, screened=only(4)) == (4,) * K
    assert runs == [] and {1, 2, 3, 4, 5, 8} <= set(asked)
    assert choose_n(t, plan, prof, iterations=300, screened=only(4, 5)) == (4,) * K
    assert sorted(runs) == [4, 5]


def test_batch_norm_on_1x1_maps_caps_n():
    """mobilenetv3_small at 32x32 has BatchNorm on 1x1 maps, which cannot train on 1 sample."""
    base = {"training": {"batch_size": 8}}
    bn = topo(model={"name": "mobilenetv3_small", "norm": "batch"},
              dataset={"options": {"size": 48, "shape": [3, 32, 32]}}, **base)
    gn = topo(model={"name": "mobilenetv3_small", "norm": "group"},
              dataset={"options": {"size": 48, "shape": [3, 32, 32]}}, **base)
    assert max_micro_batches(bn) == 4
    assert max_micro_batches(gn) == 8
    assert max_micro_batches(topo(**base)) == 8  # the mlp has no BatchNorm


def test_exhaustive_covers_the_space():
    t, prof = small_two_hop()
    cands = exhaustive(t, prof, ns=[1, 2, 4])
    assert len(cands) == 4 * 3
    times = [c.estimate.epoch_s for c in cands]
    assert times == sorted(times)
    pinned, _ = small_two_hop(plan={"auto": True, "pinned_cuts": [3]})
    assert {c.plan.cuts for c in exhaustive(pinned, prof, ns=[2])} == {(3,)}


def test_choose_plan_against_the_exhaustive_optimum():
    t, prof = small_two_hop()
    report = choose_plan(t, prof, top=3)
    best = exhaustive(t, prof)[0]
    assert best.estimate.epoch_s / report.best.estimate.epoch_s >= 0.97
    assert report.best is report.candidates[0]
    assert [c.estimate.epoch_s for c in report.candidates] == sorted(
        c.estimate.epoch_s for c in report.candidates)
    assert report.solver == "enum" and report.solve_s > 0
    assert any("topology" in c.source for c in report.candidates)  # its own plan is ranked


def test_report_json():
    t, prof = small_two_hop()
    report = choose_plan(t, prof, top=2)
    js = report.to_json()
    assert set(js) == {"best", "candidates", "solver", "solve_s", "lower_bound_s",
                       "bound_from", "gap", "bound_s"}
    assert js["lower_bound_s"] <= report.best.estimate.epoch_s and js["gap"] >= 0
    best = js["best"]
    assert set(best) >= {"cuts", "placement", "micro_batches", "schedule", "estimate", "source"}
    assert set(best["estimate"]) >= {"iteration_s", "epoch_s", "busy_s", "memory_bytes"}
    assert best["placement"] == ["owner", "server"] and len(best["micro_batches"]) == 2
    assert "server" in best["estimate"]["busy_s"] and "owner0->server" in best["estimate"]["busy_s"]
    assert len(js["candidates"]) == len(report.candidates) >= 2
    assert best == report.best.to_json()


@pytest.mark.parametrize(("mine", "other"), [("gpipe", "1f1b"), ("1f1b", "gpipe")])
def test_choose_plan_ranks_the_other_schedule(mine, other):
    """The best plan of the schedule the topology does not name is ranked too, said so in its
    source, and planned for that schedule."""
    t, prof = small_two_hop(schedule=mine)
    report = choose_plan(t, prof, top=10)
    theirs = [c for c in report.candidates if c.source.startswith(f"ilp ({other})")]
    assert len(theirs) == 1 and theirs[0].plan.schedule == other
    assert all(c.plan.schedule == mine for c in report.candidates if c not in theirs)
    assert theirs[0].ilp_T is not None


def test_choose_plan_modes():
    t, prof = small_two_hop(mode="fl")
    report = choose_plan(t, prof)
    assert report.best.plan.cuts == () and len(report.candidates) == 1
    t, prof = small_two_hop(mode="sfl")
    assert set(choose_plan(t, prof).best.plan.micro_batches) == {1}
    t, prof = small_two_hop(mode="fl", data_owners={"count": 1, "memory_mb": 0.01})
    with pytest.raises(Infeasible, match="FL does not fit on owner0"):
        choose_plan(t, prof)


def test_choose_plan_simulates_each_whole_epoch_once(monkeypatch):
    """choose_n's whole epochs are the candidates' estimates (memory included); a plan with
    one micro-batch per owner is simulated once for both schedules; estimates are unchanged."""
    import dataclasses

    import planner.aps as aps
    import planner.nchoice as nchoice

    whole: list[object] = []

    def counted(topo, plan, profs, **kw):
        if kw.get("iterations") is None:
            whole.append(nchoice.sim_key(plan))
        return simulate(topo, plan, profs, **kw)

    monkeypatch.setattr(aps, "simulate", counted)  # the candidates' estimates
    monkeypatch.setattr(nchoice, "simulate", counted)  # choose_n's
    t, prof = small_two_hop()
    report = choose_plan(t, prof, top=3)
    assert len(whole) == len(set(whole))
    profs = node_profiles(t, prof)
    for c in report.candidates:
        fresh = simulate(t, c.plan, profs, epochs=t.training.epochs)
        assert c.estimate.epoch_s == fresh.epoch_s and c.estimate.memory_bytes == fresh.memory_bytes
    one = make_plan(t, 5, None, 1)
    assert nchoice.sim_key(one) == nchoice.sim_key(dataclasses.replace(one, schedule="1f1b"))
    three = make_plan(t, 5, None, 3)  # two parts: 1F1B's window of 2 holds back the third
    assert nchoice.sim_key(dataclasses.replace(three, schedule="1f1b")) != three
    wide = dataclasses.replace(three, schedule="1f1b", max_in_flight=3)  # all three go out
    assert nchoice.sim_key(wide) == three


@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_eq14_start_builds_paths_only_where_they_may_win(count, schedule):
    """eq. 14's start builds path graphs only for the N whose busy terms are not above the
    least T found: the N chosen is the full scan's (`model_best_n`) at every cut."""
    for latency_ms in (0, 40):
        t, prof = small_two_hop(data_owners={"count": count, "latency_ms": latency_ms},
                                schedule=schedule)
        profs = node_profiles(t, prof)
        for cut in range(1, 5):
            plan = make_plan(t, 5, [cut], 1, schedule)
            assert eq14_start(t, plan, profs) == (model_best_n(t, plan, profs),) * count


def test_choose_plan_leaves_out_cuts_that_cannot_win():
    """Cuts whose lower bound is above the best epoch found are not simulated (noted); the
    best plan is the one found simulating every candidate."""
    t, prof = small_two_hop()
    screened = choose_plan(t, prof, top=4)
    every = choose_plan(t, prof, top=4, bound=False)
    assert screened.best.plan == every.best.plan
    assert screened.best.estimate.epoch_s == every.best.estimate.epoch_s
    left = [n for n in screened.notes if "not simulated: no plan with these cuts" in n]
    assert left
    ranked = {c.source for c in screened.candidates}
    for c in every.candidates:
        if any(n.startswith(f"{c.source} (cuts {list(c.plan.cuts)})") for n in left):
            assert c.source not in ranked
            assert c.estimate.epoch_s > screened.best.estimate.epoch_s


@pytest.mark.parametrize("count", [2, 3])
def test_choose_plan_leaves_out_n_that_cannot_win(count, monkeypatch):
    """An N whose bound at a candidate's cuts is above the best epoch found is not simulated
    by choose_n (noted); where that is every N tried, the candidate is left out. Every such
    N, simulated, is slower than the best plan, which is the one found simulating all."""
    import planner.nchoice as nchoice

    t, prof = small_two_hop(data_owners={"count": count})
    runs: dict[str, dict[tuple[object, ...], float]] = {"screened": {}, "every": {}}

    def recorded(into):
        def sim(topo, plan, profs, **kw):
            est = simulate(topo, plan, profs, **kw)
            assert kw.get("iterations") is None  # whole epochs: comparable with the best
            into[(plan.cuts, plan.micro_batches, plan.schedule)] = est.epoch_s
            return est
        return sim

    monkeypatch.setattr(nchoice, "simulate", recorded(runs["screened"]))
    screened = choose_plan(t, prof, top=4)
    monkeypatch.setattr(nchoice, "simulate", recorded(runs["every"]))
    every = choose_plan(t, prof, top=4, bound=False)
    assert screened.best.plan == every.best.plan
    assert screened.best.estimate.epoch_s == every.best.estimate.epoch_s
    skipped = set(runs["every"]) - set(runs["screened"])
    assert skipped and any("bounded at" in n for n in screened.notes)
    assert all(runs["every"][k] > screened.best.estimate.epoch_s for k in skipped)
    if count == 3:  # ilp#2's every N: left out, its N in runs
        assert any("every N tried" in n for n in screened.notes)
        assert any(re.search(r"N = \d+-\d+ every N tried", n) for n in screened.notes)
        gone = {n.split(" (cuts")[0] for n in screened.notes if "every N tried" in n}
        assert gone and not gone & {c.source for c in screened.candidates}


def test_the_cut_models_n_is_simulated_whole_first_and_ranked():
    """With the bound, the ILP's first cuts at eq. 14's N are simulated whole before
    choose_n tries other N (so the bound can screen those); where choose_n then picks
    another N, that plan is ranked as well, under its own source."""
    t, prof = small_two_hop(data_owners={"count": 2})
    report = choose_plan(t, prof, top=4)
    opening = [c for c in report.candidates if c.source == "ilp (the cut model's N)"]
    assert len(opening) == 1
    plan = opening[0].plan
    profs = node_profiles(t, prof)
    assert plan.micro_batches == eq14_start(t, plan, profs)
    assert plan.micro_batches != next(c for c in report.candidates
                                      if c.source == "ilp").plan.micro_batches
    assert any(n.startswith(f"ilp (cuts {list(plan.cuts)}): N = ") for n in report.notes)
    unbounded = choose_plan(t, prof, top=4, bound=False)
    assert all("cut model" not in c.source for c in unbounded.candidates)


def test_choose_plan_time_budget():
    """Past the budget only the ILP's first candidate (and the topology's plan) is
    simulated; the others are named in the notes."""
    t, prof = small_two_hop()
    report = choose_plan(t, prof, top=4, budget_s=0.0, bound=False)
    assert {c.source for c in report.candidates} <= {"ilp", "ilp = topology", "topology"}
    spent = [n for n in report.notes if n.endswith("the time budget was spent")]
    assert len(spent) == 4  # ilp#2..#4 and the other schedule's
