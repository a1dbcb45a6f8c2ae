"""Chaos: data owners killed with SIGKILL at random times during training, restarted by the
launcher; what the run loses, against the bound, and its accuracy against a fault-free run.

Definitions (version 1, fixed before the first run):
- mlp (no norm) on scikit-learn's digits, K = 4 owners and one compute node, PiPar with cuts
  [2] and N = 4, B = 30, 6 epochs, one aggregation per epoch, seed 0; `failure`: heartbeat
  0.25 s, timeout 2 s, `restart: true`. Every node a process (nodes.launch.LocalCluster).
- A trial kills one owner (drawn with `random.Random(trial)`) once the aggregator has seen a
  number of its iteration losses drawn from 1 to 3/4 of an epoch's iterations, in an epoch
  drawn from the first four.
- **Work lost**: the samples of the killed owner's iterations of the round in which it was
  lost (none of them reach an average). **Bound**: one aggregation interval of that owner
  (its samples per round). Target: lost <= bound in every trial.
- **Accuracy**: the final test accuracy of each trial against the fault-free run (the same
  seed); the difference is reported, no target (the owner's round is missing from one
  average, so the weights differ).
- Not injected: compute-node and aggregator kills (their checkpoint and resume is not built:
  the run stops with one line naming the node), and the hostile-message flood (its test is
  tests/e2e/test_fuzz.py, which also checks the final weights are unchanged).

    .venv/bin/python -m bench.chaos [--trials 5]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.harness import publish, run_meta, topology
from mpsl.plan import make_plan
from mpsl.topology import load
from mpsl.training import num_layers
from nodes.launch import LaunchError, LocalCluster

OWNERS, EPOCHS = 4, 6


def _doc() -> dict[str, Any]:
    doc = topology(owners=OWNERS, compute=1, mode="pipar", model="mlp", norm="none",
                   dataset={"name": "digits", "partition": "iid", "seed": 0},
                   training={"epochs": EPOCHS, "batch_size": 30, "lr": 0.1, "momentum": 0.9,
                             "seed": 0},
                   up=None, down=None, cuts=(2,), micro_batches=4, timeout_s=30)
    doc["failure"] = {"heartbeat_s": 0.25, "timeout_s": 2.0, "restart": True}
    return doc


def run(kill: tuple[str, int, int] | None) -> tuple[dict[str, Any], float | None]:
    """One run; `kill` = (owner, epoch, losses seen in it) SIGKILLs that owner then.
    Returns results.json and the kill's time from the start (None: no kill)."""
    with tempfile.TemporaryDirectory(prefix="mpsl-chaos-") as tmp:
        path = Path(tmp) / "t.yaml"
        path.write_text(yaml.safe_dump(_doc()))
        topo = load(path)
        cluster = LocalCluster(str(path), (), topo, make_plan(topo, num_layers(topo)),
                               Path(tmp) / "run")
        seen, at = [0], [None]
        started = time.monotonic()

        def on_message(msg: Any) -> None:
            if kill is None or at[0] is not None or msg.meta.get("type") != "loss":
                return
            name, epoch, after = kill
            if msg.meta.get("owner") == topo.owner(name).index \
                    and msg.meta.get("epoch") == epoch:
                seen[0] += 1
                if seen[0] >= after:
                    proc = next(p for p in cluster.procs if p.name == name)
                    os.kill(proc.handle.pid, signal.SIGKILL)
                    at[0] = time.monotonic() - started

        return cluster.run(on_message), at[0]


def trial_row(trial: int, results: dict[str, Any], killed_at: float | None,
              name: str, epoch: int, after: int, clean_acc: float) -> dict[str, Any]:
    """What one trial lost, against the bound, and its accuracy."""
    k = int(name[5:])
    samples = results["partition"]["samples"][k]
    lost = results["failures"]["lost"]
    round_id = lost[0]["round"] if lost else None
    wasted = sum(r["samples"] for r in results["losses"]
                 if r["owner"] == k and r["epoch"] == round_id)  # one round per epoch here
    rejoined = [e["round"] for e in results["failures"]["rejoined"]]
    acc = results["summary"]["final_test_accuracy"]
    return {"trial": trial, "owner": name, "kill_epoch": epoch + 1, "after_iterations": after,
            "survived": True, "killed_at_s": killed_at, "lost_round": round_id,
            "why": lost[0]["why"] if lost else "", "rejoined_round": rejoined[0] if rejoined
            else None, "samples_lost": wasted, "bound_samples": samples,
            "within_bound": wasted <= samples, "accuracy": acc,
            "accuracy_delta_pts": 100 * (acc - clean_acc)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args(argv)
    started = time.perf_counter()
    clean, _ = run(None)
    clean_acc = clean["summary"]["final_test_accuracy"]
    per_epoch = len([r for r in clean["losses"] if r["owner"] == 0 and r["epoch"] == 0])
    rows = []
    for trial in range(args.trials):
        rng = random.Random(trial)
        name = f"owner{rng.randrange(OWNERS)}"
        epoch, after = rng.randrange(4), rng.randint(1, max(1, 3 * per_epoch // 4))
        try:
            results, at = run((name, epoch, after))
        except LaunchError as err:  # the run did not survive: say so, with its error
            rows.append({"trial": trial, "owner": name, "kill_epoch": epoch + 1,
                         "after_iterations": after, "survived": False,
                         "error": str(err).splitlines()[0]})
            continue
        rows.append(trial_row(trial, results, at, name, epoch, after, clean_acc))
        print(f"trial {trial}: {rows[-1]}", flush=True)
    done = [r for r in rows if r["survived"]]
    summary = [{"trials": len(rows), "survived": len(done),
                "within_bound": sum(r["within_bound"] for r in done),
                "fault_free_accuracy": clean_acc,
                "accuracy_delta_pts_min": min((r["accuracy_delta_pts"] for r in done),
                                              default=None),
                "accuracy_delta_pts_max": max((r["accuracy_delta_pts"] for r in done),
                                              default=None)}]
    meta = run_meta(wall_s=time.perf_counter() - started, trials=args.trials)
    publish("chaos", f"python -m bench.chaos --trials {args.trials}", meta, [
        ("", "owners killed and restarted: work lost against one aggregation interval",
         rows, 3),
        (".summary", "summary", summary, 4)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
