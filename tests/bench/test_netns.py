"""bench.netns: the definitions (pair order, epoch time, where the time went) and the files it
writes, on made-up runs (no namespace, no node started)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import pytest

from bench import netns
from mpsl.trace import Event


def test_pairs_alternate_which_run_goes_first():
    assert [netns.pair_order(p) for p in range(3)] == [
        ("process", "kernel"), ("kernel", "process"), ("process", "kernel")]


def test_epoch_time_is_the_median_after_the_first():
    assert netns.epoch_time([9.0, 1.0, 3.0, 2.0]) == 2.0
    assert netns.epoch_time([4.0]) == 4.0


def test_cpu_seconds_of_this_process_and_of_none():
    sum(i * i for i in range(200_000))  # some CPU time of our own
    assert netns.process_cpu_s(os.getpid()) > 0
    assert netns.process_cpu_s(2**22 + 7) is None  # no such pid
    assert netns.softirq_s() >= 0


def test_processor_seconds_count_processor_actions_only(tmp_path):
    trace = tmp_path / "events.jsonl"
    events = [Event("owner0", "cpu", "0F0", 0, 0, 0, 1.0, 1.5),
              Event("owner0", "owner0->server", ">server:ACT0", 0, 0, 0, 1.5, 3.0, 10)]
    trace.write_text("".join(json.dumps(asdict(e)) + "\n" for e in events))
    assert netns.processor_seconds(trace) == pytest.approx(0.5)
    assert netns.processor_seconds(tmp_path / "none.jsonl") == 0.0


def test_write_ends_with_the_verdict_and_where_the_time_went(tmp_path):
    netns.use_results(tmp_path)
    summary = [{"case": "two_hop", "pairs": 2, "process_s": 1.0, "kernel_s": 1.02,
                "ratio_median": 1.02, "ratio_min": 1.0, "ratio_max": 1.04,
                "within_5pct": "yes", "cpu_ratio": 1.1, "busy_ratio": 1.3,
                "extra_softirq_s": 0.2}]
    runs = [{"case": "two_hop", "pair": 0, "shaping": s, "epoch_s": 1.0, "load_1min": 2.0,
             "steal_pct": 0.1} for s in ("process", "kernel")]
    meta = netns.run_meta(wall_s=1.0, quick=True, netem=False,
                          load_1min={"start": 1.0, "max": 2.0},
                          steal_pct={"median": 0.1, "max": 0.1})
    try:
        netns.write(True, meta, summary, runs)
    finally:
        netns.use_results(None)
    md = (tmp_path / "netns.quick.md").read_text()
    assert md.startswith("`.venv/bin/python -m bench.netns --quick`")
    assert "met in 1 of 1 cases (two_hop)" in md
    assert "node CPU seconds two_hop 1.100" in md and "extra softirq per run two_hop 0.20 s" in md


def test_diagnose_rotates_the_variants_and_summarizes_against_process():
    from bench import netns_diagnose as nd

    assert nd.rotated(0) == netns.VARIANTS
    assert nd.rotated(1) == (*netns.VARIANTS[1:], netns.VARIANTS[0])
    assert nd.rotated(4) == netns.VARIANTS
    epochs = {"process": 1.0, "kernel": 1.4, "namespaces": 1.0, "kernel_burst": 0.8}
    runs = [{"round": k, "variant": v, "epoch_s": e * (1 + k),
             **{s: 1.0 for s in netns.SPENT}} for k in range(3) for v, e in epochs.items()]
    rows = {r["variant"]: r for r in nd.summarize(runs)}
    assert rows["process"]["epoch_s"] == 2.0 and rows["process"]["ratio_to_process"] == 1.0
    assert rows["kernel"]["ratio_to_process"] == pytest.approx(1.4)
    assert rows["kernel_burst"]["rounds"] == 3
    assert "kernel 2.800 s (1.40x; node CPU 1.00 s" in nd.verdict(list(rows.values()))
