"""Chaos: data owners, the compute node and the aggregator killed with SIGKILL at random times
during training and restarted by the launcher, and a flood of hostile messages; what each run
loses, against the bound, and its final weights and accuracy against a fault-free run.

Definitions (version 2, fixed before its first run; version 1 killed owners only and counted
samples):
- mlp (no norm) on scikit-learn's digits, K = 4 owners and one compute node, PiPar with cuts
  [2] and N = 4, B = 30, 6 epochs, one aggregation per epoch, seed 0; `failure`: heartbeat
  0.25 s, timeout 2 s, `restart: true`, `checkpoint: true` (the fault-free run too). Every
  node a process (nodes.launch.LocalCluster).
- Trial i injects fault i mod 4: kill an owner (drawn with `random.Random(i)`), kill node1,
  kill the aggregator, or flood node1 with tests/e2e/test_fuzz.py's 10,000 hostile messages.
  A kill comes once the monitor has seen a number of iteration losses (of the owner, or of
  all owners for node1 and the aggregator) drawn from 1 to 3/4 of an epoch's, in an epoch
  drawn from the first four.
- **Work lost**, in iterations: an owner kill loses the killed owner's iterations of the
  round in which it was lost (none reach an average); a server kill loses the iterations the
  owners started after the last commit (they are trained again: `redone_iterations`). **Bound**:
  one aggregation interval: the killed owner's iterations per round, or all owners' for a
  server kill. Target: lost <= bound in every trial.
- **Weights**: a server kill and the flood must end with the fault-free run's final weights,
  bit for bit (target); an owner kill changes an average, so only its accuracy difference is
  reported.

    .venv/bin/python -m bench.chaos [--trials 8] [--quick] [--results DIR]

`--quick`: the fault-free run and one trial (an owner kill), 2 epochs each, written as
chaos.quick.
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

import torch
import yaml

from bench import harness
from bench.harness import publish, run_meta, topology
from mpsl.plan import make_plan
from mpsl.topology import load
from mpsl.training import num_layers
from nodes.launch import LaunchError, LocalCluster

OWNERS, EPOCHS = 4, 6
QUICK_EPOCHS = 2  # a smoke run's
FAULTS = ("owner", "node1", "aggregator", "flood")


def _doc(epochs: int = EPOCHS) -> dict[str, Any]:
    doc = topology(owners=OWNERS, compute=1, mode="pipar", model="mlp", norm="none",
                   dataset={"name": "digits", "partition": "iid", "seed": 0},
                   training={"epochs": epochs, "batch_size": 30, "lr": 0.1, "momentum": 0.9,
                             "seed": 0},
                   up=None, down=None, cuts=(2,), micro_batches=4, timeout_s=30)
    doc["failure"] = {"heartbeat_s": 0.25, "timeout_s": 2.0, "restart": True,
                      "checkpoint": True}
    return doc


class Fault:
    """What a trial injects: SIGKILL of `victim` once the monitor has seen `after` losses in
    `epoch` (of that owner, or of all owners for a server), or the hostile flood."""

    def __init__(self, kind: str, victim: str, epoch: int, after: int) -> None:
        self.kind, self.victim, self.epoch, self.after = kind, victim, epoch, after
        self.seen, self.at = 0, None
        self.flood: Any = None

    def on_message(self, msg: Any, cluster: LocalCluster, topo: Any, started: float) -> None:
        if self.flood is not None:
            self.flood.on_message(msg)
            return
        if self.at is not None or msg.meta.get("type") != "loss" \
                or msg.meta.get("epoch") != self.epoch:
            return
        if self.kind == "owner" and msg.meta.get("owner") != topo.owner(self.victim).index:
            return
        self.seen += 1
        if self.seen >= self.after:
            proc = next(p for p in cluster.procs if p.name == self.victim)
            os.kill(proc.handle.pid, signal.SIGKILL)
            self.at = time.monotonic() - started


def run(fault: Fault | None, epochs: int = EPOCHS
        ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """One run of `epochs` with `fault` injected: results.json and the final weights."""
    with tempfile.TemporaryDirectory(prefix="mpsl-chaos-") as tmp:
        path = Path(tmp) / "t.yaml"
        path.write_text(yaml.safe_dump(_doc(epochs)))
        topo = load(path)
        cluster = LocalCluster(str(path), (), topo, make_plan(topo, num_layers(topo)),
                               Path(tmp) / "run")
        started = time.monotonic()
        if fault is not None and fault.kind == "flood":
            from tests.e2e.test_fuzz import Flood  # the fuzz test's hostile sender

            fault.flood = Flood(Path(tmp) / "run", path)

        def on_message(msg: Any) -> None:
            if fault is not None:
                fault.on_message(msg, cluster, topo, started)

        results = cluster.run(on_message)
        if fault is not None and fault.flood is not None and fault.flood.thread is not None:
            fault.flood.thread.join(30)
        return results, torch.load(Path(tmp) / "run" / "model.pt", weights_only=True)


def draw(trial: int, per_epoch: int, epochs: int = EPOCHS) -> Fault:
    """Trial `trial`'s fault (seeded by the trial number), in one of the first 4 epochs."""
    rng = random.Random(trial)
    kind = FAULTS[trial % len(FAULTS)]
    victim = f"owner{rng.randrange(OWNERS)}" if kind == "owner" else kind
    losses = per_epoch if kind == "owner" else OWNERS * per_epoch
    return Fault(kind, victim, rng.randrange(min(4, epochs)),
                 rng.randint(1, max(1, 3 * losses // 4)))


def trial_row(trial: int, fault: Fault, results: dict[str, Any],
              weights: dict[str, torch.Tensor], clean: dict[str, Any],
              clean_weights: dict[str, torch.Tensor], per_epoch: int) -> dict[str, Any]:
    """What one trial lost, against the bound, and its weights and accuracy."""
    failures = results["failures"]
    row: dict[str, Any] = {"trial": trial, "fault": fault.kind, "victim": fault.victim,
                           "kill_epoch": fault.epoch + 1 if fault.kind != "flood" else None,
                           "after_losses": fault.after if fault.kind != "flood" else None,
                           "survived": True, "killed_at_s": fault.at}
    if fault.kind == "owner":
        k = int(fault.victim[5:])
        lost = failures["lost"]
        round_id = lost[0]["round"] if lost else None
        row.update(lost_round=round_id, why=lost[0]["why"] if lost else "",
                   rejoined_round=failures["rejoined"][0]["round"] if failures["rejoined"]
                   else None,
                   lost_iterations=sum(1 for r in results["losses"]
                                       if r["owner"] == k and r["epoch"] == round_id),
                   bound_iterations=per_epoch)  # one round per epoch here
    elif fault.kind == "flood":
        dropped = results["nodes"]["node1"]["dropped"]
        row.update(lost_iterations=0, bound_iterations=0,
                   sent=sum(fault.flood.sent.values()) if fault.flood else 0,
                   dropped_at_node1=sum(dropped.values()))
    else:
        back = failures["rollbacks"]
        row.update(rollbacks=len(back), resumed_round=back[0]["round"] if back else None,
                   lost_iterations=sum(b["redone_iterations"] for b in back),
                   bound_iterations=OWNERS * per_epoch)
    row["within_bound"] = row["lost_iterations"] <= row["bound_iterations"]
    row["same_weights"] = weights.keys() == clean_weights.keys() and all(
        torch.equal(weights[k], clean_weights[k]) for k in clean_weights)
    acc = results["summary"]["final_test_accuracy"]
    row.update(accuracy=acc, accuracy_delta_pts=100 * (acc - clean["summary"]
                                                       ["final_test_accuracy"]))
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="one trial")
    harness.results_option(ap)
    args = ap.parse_args(argv)
    harness.use_results(args.results)
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    if args.quick:
        args.trials = 1
    started = time.perf_counter()
    clean, clean_weights = run(None, epochs)
    per_epoch = len([r for r in clean["losses"] if r["owner"] == 0 and r["epoch"] == 0])
    rows = []
    for trial in range(args.trials):
        fault = draw(trial, per_epoch, epochs)
        try:
            results, weights = run(fault, epochs)
        except LaunchError as err:  # the run did not survive: say so, with its error
            rows.append({"trial": trial, "fault": fault.kind, "victim": fault.victim,
                         "survived": False, "error": str(err).splitlines()[0]})
            print(f"trial {trial} failed: {err}", flush=True)  # with the node's log tail
            continue
        rows.append(trial_row(trial, fault, results, weights, clean, clean_weights,
                              per_epoch))
        print(f"trial {trial}: {rows[-1]}", flush=True)
    done = [r for r in rows if r["survived"]]
    exact = [r for r in done if r["fault"] != "owner"]
    summary = [{"trials": len(rows), "survived": len(done),
                "within_bound": sum(r["within_bound"] for r in done),
                "server_kills_and_floods": len(exact),
                "same_weights": sum(r["same_weights"] for r in exact),
                "fault_free_accuracy": clean["summary"]["final_test_accuracy"],
                "owner_kill_accuracy_delta_pts": [round(r["accuracy_delta_pts"], 2)
                                                  for r in done if r["fault"] == "owner"]}]
    meta = run_meta(wall_s=time.perf_counter() - started, trials=args.trials)
    name, cmd = ("chaos.quick", " --quick") if args.quick else ("chaos", f" --trials {args.trials}")
    publish(name, f"python -m bench.chaos{cmd}", meta, [
        ("", "faults injected and survived: work lost against one aggregation interval",
         rows, 3),
        (".summary", "summary", summary, 4)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
