"""`mpsl profile TOPOLOGY`: measure the topology's model, layer by layer, on this host."""

from __future__ import annotations

import argparse

from mpsl.cli.common import add_format, add_set, load_topology
from mpsl.cli.output import Output
from mpsl.cli.tables import profile_data, profile_tables

NAME = "profile"
HELP = "measure a per-layer profile on this host"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("topology")
    p.add_argument("--out", help="write the profile CSV here")
    p.add_argument("--device", default="cpu",
                   help="measure on this torch device: cpu (default), cuda or cuda:N")
    add_set(p)
    add_format(p)


def run(args: argparse.Namespace, out: Output) -> int:
    from planner.measure import device_clock
    from planner.resources import host_profile

    topo = load_topology(args)
    device_clock(args.device)  # a device this host lacks: refused before anything is measured
    where = "this host" if args.device == "cpu" else f"{args.device} of this host"
    out.note(f"profiling {topo.model.name} on {where} (one torch thread)...")
    prof = host_profile(topo, device=args.device)
    if args.out:
        prof.to_csv(args.out)
    out.result(profile_data(topo.model.name, prof, args.out), profile_tables)
    return 0
