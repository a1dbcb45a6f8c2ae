"""Network namespaces for `mpsl run --netns`: one namespace per node process, each joined by a
veth pair to one bridge of the run, links shaped by the kernel (nodes.kernel_links).

A run is named by a random tag: namespaces `mpsl-TAG-I`, bridge `mpslTAG`, host veth ends
`mpslTAGhI` (the other end is `eth0` in its namespace), addresses `10.213.X.0/24` with X free
on this host (the host is `.1` on the bridge, process I is `.I+2`). The run holds an flock on
`/run/mpsl-netns/TAG.lock` while it lives; at the start of a run, every namespace and bridge of
a tag whose lock nobody holds (a run that died, even by SIGKILL) is removed. Everything is made
under one lock, `/run/mpsl-netns/setup.mutex`, so concurrent runs neither clash nor clean each
other. `KernelNetwork` removes what it made on any exit (an error, Ctrl-C, SIGTERM).

Nothing here binds anything: the nodes bind their inboxes at their namespace's address, the
launcher its monitor at the host's address on the bridge, never an address off this machine.

Re-planning (`replan`) is refused with `--netns` (`refuse_replan`), before any namespace or
node is made: a node measures a link's rate from its own send events (nodes.throughput), which
span the in-process shaping; under `--netns` the kernel shapes the links behind the socket, so
a send ends once ZeroMQ has the bytes and its events say nothing of the link's rate, and the
rates the plan assumed are null in the nodes' topology (the kernel takes them). The drift test
would compare socket writes against an unshaped link. Measuring there would take the kernel's
counters (`tc -s`, per qdisc, read in each sender's namespace) or the receivers' arrival times.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from mpsl.names import AGGREGATOR
from mpsl.topology import Topology, load
from nodes.kernel_links import Link, directed_links, links_from, tc_commands
from nodes.netns_topology import netns_overrides, raw_document

log = logging.getLogger(__name__)
STATE = Path("/run/mpsl-netns")
NETNS_DIR = Path("/run/netns")
SUBNET = "10.213"
CLONE_NEWNET = 0x40000000
CMD_TIMEOUT_S = 10.0
MAX_PROCESSES = 250  # addresses .2 to .251 of the run's /24
_NS = re.compile(r"^mpsl-([0-9a-f]{6})-\d+$")
_PROBE_NS = re.compile(r"^mpsl-probe-(\d+)$")
_BRIDGE = re.compile(r"^mpsl([0-9a-f]{6})$")


class NetnsError(OSError):
    """`--netns` cannot run here, or a namespace, link or qdisc could not be made (one line)."""


@dataclass(frozen=True)
class Capabilities:
    """What this machine allows: `reason` says why `--netns` cannot run (None: it can);
    `netem`: whether the kernel can delay packets (else latency stays in the process)."""

    reason: str | None
    netem: bool = False

    @property
    def allowed(self) -> bool:
        return self.reason is None


def sh(cmd: Sequence[str], check: bool = True) -> str:
    """Run one `ip`/`tc` command; NetnsError (one line: the command and its error) on failure
    when `check`."""
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True,
                              timeout=CMD_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        if check:
            raise NetnsError(f"`{' '.join(cmd)}`: {err}") from None
        return ""
    if check and done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[0]
        raise NetnsError(f"`{' '.join(cmd)}` failed: {why}")
    return done.stdout


@functools.cache
def probe() -> Capabilities:
    """Whether this machine allows `--netns` (root, iproute2, namespaces, veth, bridge, HTB,
    TBF, u32), and netem, tried once in a scratch namespace that is removed at once."""
    if os.geteuid() != 0:
        return Capabilities("--netns needs root (network namespaces and tc); run as root, "
                            "or without --netns")
    missing = [t for t in ("ip", "tc") if shutil.which(t) is None]
    if missing:
        return Capabilities(f"--netns needs `{missing[0]}` (install iproute2)")
    ns = f"mpsl-probe-{os.getpid()}"
    tc = ["tc", "-n", ns]
    try:
        sh(["ip", "netns", "add", ns])
        sh(["ip", "-n", ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1"])
        sh(["ip", "-n", ns, "link", "add", "b0", "type", "bridge"])
        sh(["ip", "-n", ns, "link", "set", "p0", "master", "b0"])
        sh([*tc, "qdisc", "add", "dev", "p1", "root", "handle", "1:", "htb"])
        sh([*tc, "class", "add", "dev", "p1", "parent", "1:", "classid", "1:1", "htb",
            "rate", "10mbit"])
        sh([*tc, "filter", "add", "dev", "p1", "parent", "1:", "protocol", "ip", "prio", "1",
            "u32", "match", "ip", "dst", "10.0.0.1/32", "flowid", "1:1"])
        sh([*tc, "qdisc", "add", "dev", "p1", "parent", "1:1", "handle", "2:", "tbf", "rate",
            "10mbit", "burst", "3028", "limit", "1048576"])
        try:
            sh([*tc, "qdisc", "add", "dev", "p0", "root", "netem", "delay", "1ms"])
            netem = True
        except NetnsError:
            netem = False
        return Capabilities(None, netem)
    except NetnsError as err:
        return Capabilities(f"--netns is not allowed here: {err}")
    finally:
        sh(["ip", "netns", "del", ns], check=False)


def enter(namespace: str) -> None:
    """Move this thread (so the threads and sockets it makes from now on) into `namespace`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / namespace, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into network namespace {namespace}: {os.strerror(err)}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _held(path: Path) -> bool:
    """Whether a live run holds the lock file `path`."""
    try:
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def clean_leftovers() -> list[str]:
    """Remove the namespaces and bridges of runs that died (their tag's lock is free, or
    gone) and scratch namespaces of probes whose process ended; return what was removed."""
    live = {p.stem for p in STATE.glob("*.lock") if _held(p)}
    for p in STATE.glob("*.lock"):
        if p.stem not in live:
            p.unlink(missing_ok=True)
    removed = []
    names = sorted(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else []
    for ns in names:
        m, pm = _NS.match(ns), _PROBE_NS.match(ns)
        dead = (m is not None and m.group(1) not in live) or (
            pm is not None and not Path(f"/proc/{pm.group(1)}").exists())
        if dead:
            sh(["ip", "netns", "del", ns], check=False)
            removed.append(ns)
    for line in sh(["ip", "-o", "link", "show", "type", "bridge"], check=False).splitlines():
        name = line.split(":")[1].strip().split("@")[0] if line.count(":") >= 2 else ""
        m = _BRIDGE.match(name)
        if m is not None and m.group(1) not in live:
            sh(["ip", "link", "del", name], check=False)
            removed.append(name)
    if removed:
        log.warning("--netns: removed the leftovers of runs that died: %s", ", ".join(removed))
    return removed


def _free_subnet() -> int:
    """A third octet X such that no address of this host is in 10.213.X.0/24."""
    used = set(re.findall(rf"inet {re.escape(SUBNET)}\.(\d+)\.",
                          sh(["ip", "-o", "-4", "addr", "show"])))
    for x in range(256):
        if str(x) not in used:
            return x
    raise NetnsError(f"--netns: every {SUBNET}.X.0/24 is in use on this host")


@dataclass
class KernelNetwork:
    """The namespaces, veths and bridge of one `--netns` run, and its `tc` shaping; a context
    manager that makes them on entry and removes them on exit, whatever the exit."""

    processes: list[str]  # one namespace each, in this order
    links: list[Link]  # shaped by the kernel on each sender's veth
    netem: bool = False
    tag: str = ""
    namespaces: dict[str, str] = field(default_factory=dict)  # process -> namespace
    ips: dict[str, str] = field(default_factory=dict)  # process -> its address
    host_ip: str = ""
    commands: list[list[str]] = field(default_factory=list)  # every command that made it
    _lock: TextIO | None = None

    @property
    def bridge(self) -> str:
        return f"mpsl{self.tag}"

    def __enter__(self) -> KernelNetwork:
        if len(self.processes) > MAX_PROCESSES:
            raise NetnsError(f"--netns: {len(self.processes)} processes, at most "
                             f"{MAX_PROCESSES} on one bridge")
        STATE.mkdir(parents=True, exist_ok=True)
        try:
            with _locked(STATE / "setup.mutex"):
                clean_leftovers()
                self._claim()
                self._make(_free_subnet())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _claim(self) -> None:
        """A tag no other run has, and its lock, held till `close`."""
        while True:
            tag = secrets.token_hex(3)
            path = STATE / f"{tag}.lock"
            if not path.exists() and not (NETNS_DIR / f"mpsl-{tag}-0").exists():
                break
        self._lock = open(path, "w")  # noqa: SIM115 - held till close()
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self._lock.write(f"{os.getpid()}\n")
        self._lock.flush()
        self.tag = tag

    def _run(self, cmd: list[str]) -> None:
        self.commands.append(cmd)
        sh(cmd)

    def _make(self, x: int) -> None:
        """The bridge, then a namespace, veth pair and address per process, then the qdiscs."""
        self.host_ip = f"{SUBNET}.{x}.1"
        br = self.bridge
        self._run(["ip", "link", "add", br, "type", "bridge"])
        self._run(["ip", "addr", "add", f"{self.host_ip}/24", "dev", br])
        self._run(["ip", "link", "set", br, "up"])
        for i, name in enumerate(self.processes):
            ns, host_end = f"mpsl-{self.tag}-{i}", f"mpsl{self.tag}h{i}"
            self.namespaces[name], self.ips[name] = ns, f"{SUBNET}.{x}.{i + 2}"
            self._run(["ip", "netns", "add", ns])
            self._run(["ip", "link", "add", host_end, "mtu", "1500", "type", "veth", "peer",
                       "name", "eth0", "mtu", "1500", "netns", ns])
            self._run(["ip", "link", "set", host_end, "master", br, "up"])
            self._run(["ip", "-n", ns, "addr", "add", f"{self.ips[name]}/24", "dev", "eth0"])
            self._run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            self._run(["ip", "-n", ns, "link", "set", "lo", "up"])
        for name in self.processes:
            for cmd in tc_commands(self.namespaces[name], links_from(self.links, name),
                                   self.ips, self.netem):
                self._run(cmd)

    def close(self) -> None:
        """Remove every veth pair, namespace and the bridge; free the tag. (A namespace goes
        once no process is in it, and takes its veth end along, but the kernel does that in
        the background: the pairs are deleted here, at once, from their host ends.)"""
        for i, ns in enumerate(self.namespaces.values()):
            sh(["ip", "link", "del", f"mpsl{self.tag}h{i}"], check=False)
            sh(["ip", "netns", "del", ns], check=False)
        if self.tag:
            sh(["ip", "link", "del", self.bridge], check=False)
        self.namespaces.clear()
        if self._lock is not None:
            (STATE / f"{self.tag}.lock").unlink(missing_ok=True)
            self._lock.close()
            self._lock = None

    def describe(self) -> str:
        """One line: what this run's network is and where latency is emulated."""
        n = len(self.processes)
        latency = "by netem" if self.netem else "in the process (this kernel has no netem)"
        return (f"netns: {n} namespaces mpsl-{self.tag}-0..{n - 1} on bridge {self.bridge} "
                f"({self.host_ip.rsplit('.', 1)[0]}.0/24, this host .1); rates by the kernel "
                f"(htb + tbf on each sender's veth); latency {latency}")

    def record(self) -> dict[str, Any]:
        """What `netns.json` in the run folder holds: names, addresses, every command."""
        return {"tag": self.tag, "bridge": self.bridge, "host": self.host_ip,
                "namespaces": self.namespaces, "addresses": self.ips, "netem": self.netem,
                "commands": [" ".join(c) for c in self.commands]}


def processes(topo: Topology) -> list[str]:
    """The node processes of a `--netns` run, one namespace each (each owner in its own)."""
    return [AGGREGATOR, *topo.chain, *(o.name for o in topo.owners)]


@dataclass
class NetnsRun:
    """A `--netns` run's network (`net`, entered) and what its nodes load: the `--set`
    assignments after the user's (`overrides`) and the topology with them (`topology`)."""

    net: KernelNetwork
    overrides: list[str]
    topology: Topology


def refuse_replan(topo: Topology) -> None:
    """NetnsError (one line) when `topo` re-plans: its drift test cannot read the kernel's
    rates (see the module's docstring)."""
    if topo.replan.enabled:
        raise NetnsError(f"{topo.source}: field 'replan': no re-planning with --netns: the "
                         "kernel shapes the links, and the nodes measure only their "
                         "in-process links' rates (set replan: off)")


@contextlib.contextmanager
def netns_run(path: str, user_overrides: Sequence[str], topo: Topology,
              caps: Capabilities, run_dir: Path | None = None) -> Iterator[NetnsRun]:
    """Make the network of a `--netns` run of `topo` (loaded from `path` with
    `user_overrides`), yield it, and remove it on any exit. `run_dir`: where netns.json goes."""
    refuse_replan(topo)
    if not caps.allowed:
        raise NetnsError(caps.reason)
    with KernelNetwork(processes(topo), directed_links(topo), caps.netem) as net:
        sets = netns_overrides(raw_document(path, list(user_overrides)), topo, net.ips,
                               caps.netem)
        everything = [*user_overrides, *sets]
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "netns.json").write_text(
                json.dumps({**net.record(), "overrides": sets}, indent=2) + "\n")
        yield NetnsRun(net, everything, load(path, everything))
