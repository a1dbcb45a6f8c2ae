"""The settings every node of a run must share, and the field named when they differ."""

from __future__ import annotations

from dataclasses import replace

from mpsl.plan import make_plan
from mpsl.settings import first_difference, run_settings, settings_digest
from mpsl.topology import parse
from mpsl.training import num_layers
from tests.mpsl.cli.conftest import TOPOLOGY


def settings(**changes):
    topo = parse({**TOPOLOGY, **changes}, "t.yaml")
    return run_settings(topo, make_plan(topo, num_layers(topo)))


def test_settings_hold_the_run_wide_fields_and_the_plan():
    s = settings()
    assert s["training.batch_size"] == "16" and s["model.name"] == "'mlp'"
    assert s["owners.1.uplink_mbps"] == "10.0" and s["plan_file.cuts"] == "[2]"
    assert not any(k.startswith(("runtime", "source")) or k.endswith(("profile", "root"))
                   for k in s)


def test_per_machine_fields_do_not_change_the_digest():
    a = parse(dict(TOPOLOGY), "here/t.yaml")
    b = replace(parse({**TOPOLOGY, "runtime": {"timeout_s": 5, "torch_threads": 2}},
                      "/elsewhere/t.yaml"),
                dataset=replace(a.dataset, root="/data/elsewhere"))
    plan = make_plan(a, num_layers(a))
    assert settings_digest(run_settings(a, plan)) == settings_digest(run_settings(b, plan))


def test_the_first_different_field_is_named_with_both_values():
    mine, theirs = settings(), settings(training={"batch_size": 16, "epochs": 3})
    assert settings_digest(mine) != settings_digest(theirs)
    assert first_difference(mine, theirs) == "training.epochs is 3 there, 2 here"
    first = min(mine)
    assert first_difference(mine, {}) == f"{first} is missing there, {mine[first]} here"
    assert first_difference(mine, dict(mine)) is None


def test_of_the_failure_section_only_checkpoint_is_run_wide():
    base = settings()
    assert base["failure.checkpoint"] == "False"
    assert not any(k.startswith("failure.") and k != "failure.checkpoint" for k in base)
    assert settings(failure={"timeout_s": 3, "heartbeat_s": 0.5}) == base
    assert first_difference(base, settings(failure={"checkpoint": True})) == \
        "failure.checkpoint is True there, False here"
