"""`mpsl keys --out DIR NAME...`: a CURVE key pair per node, for `security: {mode: curve}`.

Writes `NAME.key` (the public key, for every machine of the deployment) and `NAME.key_secret`
(the node's own, mode 0600: copy it only to the machine that runs NAME) per node, in the
format of `zmq.auth.create_certificates`. With `--topology T` and no NAME, one pair for every
node of T, into `--out` or else T's `security.keys`. Existing pairs of the same names are
replaced.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from mpsl.cli.common import add_format, add_set, load_topology
from mpsl.cli.output import Output

NAME = "keys"
HELP = "write a CURVE key pair per node (for security: {mode: curve})"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="node names (default: --topology's)")
    p.add_argument("--out", help="the keys folder (default: the topology's security.keys)")
    p.add_argument("--topology", help="write keys for every node of this topology")
    add_set(p)
    add_format(p)


def run(args: argparse.Namespace, out: Output) -> int:
    from nodes.keys import write_keys

    names, folder = list(args.names), args.out
    if args.topology:
        # the keys folder may not exist yet: read the topology as if it had no security
        topo = load_topology(args, ["security.mode=none"])
        names = names or topo.node_names()
        folder = folder or topo.security.keys
    if not names:
        raise ValueError("mpsl keys: give node names, or --topology TOPOLOGY")
    if not folder:
        raise ValueError("mpsl keys: give --out DIR (the topology has no security.keys)")
    written = write_keys(folder, names)
    data = {"out": str(folder), "keys": [
        {"name": n, "public": str(pub), "secret": str(sec)} for n, pub, sec in written]}
    out.result(data, keys_lines)
    return 0


def keys_lines(data: Mapping[str, Any]) -> list[str]:
    keys = data["keys"]
    lines = [f"wrote {len(keys)} key pair(s) to {data['out']} (secrets mode 0600):"]
    lines += [f"  {k['name']}: {k['public']}, {k['secret']}" for k in keys]
    return lines
