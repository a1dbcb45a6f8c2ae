"""A run under a flood of hostile messages ends with the weights of a quiet run.

mlp (norm: none) on digits, 2 owners, 1 compute node, PiPar: once plain, once while a thread
sends 10,000 hostile messages to the live compute node (and a few hundred to owner0 and to the
aggregator), forging sender names (security is off) and using the real run id, read from the
aggregator's log. Every kind of hostility is sent: malformed and oversize frames, sizes claimed
but not sent, tensors of the wrong shape, dtype or labels for the part and micro-batch, unknown
owners and senders, past and far-future iterations and rounds, duplicates of iterations done,
kinds and CONTROL types the role never takes, GLOBAL and stop from a non-aggregator, another
run's id, missing and mistyped meta. None is a message a role could take: what is checked is
that each is refused, counted, and that training is untouched.

Accounting: a node counts a message only once it reads it, and stops reading at its end. The
flood is made before the run and sent when it starts, but for the duplicates of owner0's
iterations 0 and 1, sent once the monitor has seen iteration 3 done. Its last message to node1
(of a run id of its own) is logged by node1 when read, and a pipe keeps its order, so once that
line is in node1's log every message sent to node1 was read and the counts are exact: each
node's drops by reason (inbox and rules) add up to exactly what was sent to it (no legitimate
message is ever dropped). The run has epochs enough for that; were node1 to stop before the
end of the flood, only `counted <= sent` would hold, and the test fails saying that the run was
too short.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import pytest
import torch
import yaml
import zmq

from mpsl.actions import Msg
from mpsl.data import micro_batches
from mpsl.plan import make_plan
from mpsl.topology import load
from mpsl.training import num_layers
from nodes.admission import Rules
from nodes.wire import Message, encode
from tests.e2e.conftest import topology_doc

TO_COMPUTE, TO_OTHERS = 10_000, 300
SENTINEL = "f" * 16  # the run id of the flood's last message to node1
PLACEHOLDER = "run-id-goes-here"  # replaced by the real one (of the same length) when sent
DUPLICATE = 6  # the work messages (i % 16) sent as duplicates of iterations done
Frames = list[bytes | memoryview]


def _doc() -> dict:
    return topology_doc(owners=2, compute=1, training={"epochs": 32, "batch_size": 30},
                        plan={"cuts": [2], "micro_batches": 3})


def _frames(msg: Message) -> Frames:
    return [bytes(f) for f in encode(msg)]


def _raw(header: dict, *frames: bytes) -> Frames:
    return [msgpack.packb(header, use_bin_type=True), *frames]


class Forger:
    """Hostile messages for one node of the run `run`, by what makes them hostile."""

    def __init__(self, rules: Rules, run: str) -> None:
        self.r, self.run, self.seq = rules, run, 0

    def msg(self, kind: Msg, src: str, *, owner: int = -1, it: int = -1, mb: int = -1,
            tensors: dict[str, torch.Tensor] | None = None, run: str | None = None,
            **meta: Any) -> Frames:
        self.seq += 1
        return _frames(Message(kind=str(kind), src=src, owner=owner, iter=it, mb=mb,
                               seq=self.seq, tensors=tensors or {}, meta=meta,
                               run=self.run if run is None else run))

    def act(self, owner: int, it: int, mb: int = 0, *, x: torch.Tensor | None = None,
            y: torch.Tensor | None = None, src: str | None = None, run: str | None = None,
            kind: Msg = Msg.ACT, **meta: Any) -> Frames:
        """An ACT for part 1: as the owner would send it, but for what is changed."""
        r = self.r
        batch = r._batch(owner % 2, it % (r.epochs * r.per_epoch[0]))
        n = min(r.plan.micro_batches[owner % 2], batch)
        size = micro_batches(batch, n)[mb % n]
        tensors = {"x": torch.zeros(size, *r.model.part_in[1]) if x is None else x,
                   "y": torch.zeros(size, dtype=torch.int64) if y is None else y}
        m = {"part": 1, "n_mb": n, "batch": batch, "epoch": it // r.per_epoch[owner % 2], **meta}
        return self.msg(kind, src or f"owner{owner}", owner=owner, it=it, mb=mb,
                        tensors=tensors, run=run, **m)

    def malformed(self, i: int) -> Frames:
        ok = self.act(0, 0)
        head = msgpack.unpackb(ok[0])
        return [
            [b"\xc1" + bytes([i % 256]) * (i % 40)],  # not msgpack
            _raw({"v": 1, "kind": "ACT"}),  # keys missing
            _raw(dict(head, v=7), *ok[1:]),  # unknown version
            _raw(dict(head, kind="PWN"), *ok[1:]),  # unknown kind
            [ok[0]],  # fewer frames than tensors
            [ok[0], ok[1], ok[2] + b"\0\0\0\0"],  # a frame longer than its shape
            _raw(dict(head, tensors=[{"name": "x", "dtype": "object", "shape": [1]}]), b"\0"),
            _raw(dict(head, tensors=[{"name": "x", "dtype": "float32",  # claims 2**90 bytes
                                      "shape": [1 << 30, 1 << 30, 1 << 30]}]), b"\0" * 4),
            _raw(dict(head, src="mallory"), *ok[1:]),  # an unknown sender
            _raw(dict(head, owner="0"), *ok[1:]),  # a mistyped header field
        ][i % 10]

    def work(self, i: int, now: int) -> Frames:
        """An ACT or GRAD the compute node must refuse, whatever its iteration is now: `now`
        is near owner0's (from the monitor, which may lag), and only ever sent with a fault
        of its own, as a correct message of a near iteration would be taken."""
        r, a = self.r, self.act
        size = micro_batches(30, 3)[0]
        return [
            lambda: a(0, now, x=torch.zeros(size + 1, *r.model.part_in[1])),  # wrong rows
            lambda: a(0, now, x=torch.zeros(size, 7)),  # wrong features
            lambda: a(0, now, x=torch.zeros(size, *r.model.part_in[1], dtype=torch.float64)),
            lambda: a(1, now, y=torch.zeros(size, dtype=torch.int32)),
            lambda: a(1, now, y=torch.full((size,), 99)),  # labels out of range
            lambda: a(5, now, src="owner0"),  # an unknown owner
            lambda: a(0, 10**7),  # in place of a duplicate (sent apart, see Flood)
            lambda: a(1, 10**6 + i),  # far in the future
            lambda: a(0, 10_000 + i),  # past the run's last iteration
            lambda: a(0, now, mb=7),  # no such micro-batch
            lambda: a(0, now, part=0),  # not this node's part
            lambda: a(0, now, epoch="0"),  # mistyped meta
            lambda: a(0, now, batch=None),  # missing meta
            lambda: a(0, now, src="owner1"),  # owner 1 sends owner 0's activation
            lambda: a(0, now, run="0" * 16),  # another run
            lambda: a(0, now, kind=Msg.GRAD),  # node1 runs the last part: it takes no GRAD
        ][i % 16]()

    def other(self, i: int, to: str) -> Frames:
        """A message of a kind or CONTROL type the role `to` never takes, or from the wrong
        sender, or of a round past or far ahead."""
        params = {k: torch.zeros(s, dtype=d) for k, (s, d) in self.r.model.params[0].items()}
        m = self.msg
        return [
            lambda: m(Msg.PARAMS, "owner0", owner=0, it=0, tensors=params, round=0, samples=1),
            lambda: m(Msg.GLOBAL, "node1", owner=0, it=0, tensors=params, round=0),
            lambda: m(Msg.GLOBAL, "aggregator", owner=0, it=10**5, tensors=params,
                      round=10**5),
            lambda: m(Msg.CONTROL, "owner0", type="stop"),
            lambda: m(Msg.CONTROL, "node1", type="abort", reason="forged"),
            lambda: m(Msg.CONTROL, "owner1", type="hello", settings={}, digest="x"),
            lambda: m(Msg.CONTROL, "owner1", owner=0, it=0, type="sync", round=0, samples=1),
            lambda: m(Msg.METRICS, "owner0", owner=0, it=0, type="loss", epoch=0, loss="x",
                      samples=30),
            lambda: m(Msg.METRICS, "owner1", type="summary", node="owner1"),
            lambda: m(Msg.PARAMS, "owner1", owner=1, it=0, tensors=params, round=0),
            lambda: m(Msg.PARAMS, "node1", it=0, tensors=params, round=0, part=1),
            lambda: m(Msg.PARAMS, "owner0", owner=0, it=10**4, tensors=params, round=10**4,
                      samples=self.r.samples[0], epoch_end=True),
        ][i % 12]()


class Flood:
    """The hostile sender: every message made before the run (under a placeholder run id),
    sent at once when the run starts (its id from the aggregator's log); the duplicates of
    owner0's iterations 0 and 1 once the monitor has seen its iteration 3 done; the sentinel
    last."""

    def __init__(self, run_dir: Path, topo_path: Path) -> None:
        self.run_dir, self.topo = run_dir, load(topo_path)
        plan = make_plan(self.topo, num_layers(self.topo))
        self.forge = Forger(Rules(self.topo, plan, "node1"), PLACEHOLDER)
        self.burst: list[tuple[str, Frames]] = []
        self.duplicates = 0
        for i in range(TO_COMPUTE - 1):
            if i < 3:
                frames = [b"\x80" + b"\0" * (17 << 20)]  # a 17 MiB header: over the 16 MiB cap
            elif i % 3 == 0:
                frames = self.forge.malformed(i)
            elif i % 3 == 1 and i % 16 == DUPLICATE:
                frames = []
                self.duplicates += 1
            elif i % 3 == 1:
                frames = self.forge.work(i, 5)
            else:
                frames = self.forge.other(i // 3, "node1")
            if frames:
                self.burst.append(("node1", frames))
            if i < 2 * TO_OTHERS:
                to = "owner0" if i % 2 else "aggregator"
                extra = self.forge.malformed(i) if i % 4 < 2 else self.forge.other(i // 4, to)
                self.burst.append((to, extra))
        self.sent: Counter[str] = Counter()
        self.progress = dict.fromkeys(range(len(self.topo.owners)), -1)  # last iteration
        # reported per owner (it may lag)
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def on_message(self, msg: Message) -> None:
        t = msg.meta.get("type")
        if t == "loss":
            self.progress[msg.meta["owner"]] = msg.meta["iter"]
        if self.thread is None and t == "start":
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()

    def _run_id(self) -> bytes:
        text = (self.run_dir / "logs" / "aggregator.log").read_text()
        found = re.search(r"run ([0-9a-f]{16}): every node said hello, starting", text)
        assert found, "no run id in the aggregator's log"
        return found.group(1).encode()

    def _run(self) -> None:
        ctx = zmq.Context()
        try:
            self._send(ctx, self._run_id())
        except BaseException as err:  # reported by the test
            self.error = err
        finally:
            ctx.destroy(linger=5000 if self.error is None else 0)
            self.done.set()

    def _send(self, ctx: zmq.Context, run: bytes) -> None:
        socks = {}
        for name in ("node1", "owner0", "aggregator"):
            socks[name] = ctx.socket(zmq.PUSH)
            socks[name].setsockopt(zmq.SNDTIMEO, 10_000)  # a node gone: raise, do not hang
            socks[name].connect(self.topo.address_of(name))

        def send(to: str, frames: Frames) -> None:
            head = bytes(frames[0])  # the run id: a msgpack str of the placeholder's length
            socks[to].send_multipart([head.replace(PLACEHOLDER.encode(), run), *frames[1:]],
                                     copy=False)
            self.sent[to] += 1

        for to, frames in self.burst:
            send(to, frames)
        deadline = time.monotonic() + 30
        while self.progress[0] < 3:  # iterations 0 and 1 of owner0 are done on node1
            assert time.monotonic() < deadline, "owner0 never reached iteration 3"
            time.sleep(0.01)
        for i in range(self.duplicates):
            send("node1", self.forge.act(0, i % 2))
        # the last one, after all the others on the same pipe (ZeroMQ keeps a pipe's order):
        # once node1 logs it, node1 has read every message sent to it
        send("node1", self.forge.act(0, 0, run=SENTINEL))


def _run(run_topology, doc: dict, flood: Flood | None) -> tuple[dict, Path, float]:
    t0 = time.monotonic()
    results, out = run_topology(doc, on_message=flood.on_message if flood else None)
    return results, out, time.monotonic() - t0


@pytest.mark.timeout(120)
def test_a_flood_of_hostile_messages_changes_nothing(run_topology, tmp_path):
    doc = _doc()
    plain, out, t_plain = _run(run_topology, doc, None)
    want = torch.load(out / "model.pt", weights_only=True)
    assert all(sum(n["dropped"].values()) == 0 for n in plain["nodes"].values()), plain["nodes"]

    doc = _doc()  # fresh ports
    topo_path = tmp_path / "fuzz.yaml"
    topo_path.write_text(yaml.safe_dump(doc))
    flood = Flood(tmp_path / "run", topo_path)
    results, out, t_fuzz = _run(run_topology, doc, flood)
    assert flood.thread is not None, "the run never started"
    flood.thread.join(30)
    assert flood.done.is_set() and flood.error is None, flood.error
    got = torch.load(out / "model.pt", weights_only=True)
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k
    nodes = results["nodes"]
    read_all = f"of another run ('{SENTINEL}')" in (out / "logs" / "node1.log").read_text()
    counts = {name: sum(nodes[name]["dropped"].values()) for name in flood.sent}
    print(f"\nplain run {t_plain:.1f} s, fuzzed run {t_fuzz:.1f} s; sent {dict(flood.sent)}")
    for name in flood.sent:
        print(f"{name}: {dict(sorted(nodes[name]['dropped'].items()))}")
    assert counts["node1"] <= flood.sent["node1"]  # every message counted was sent
    assert read_all, (f"node1 stopped before reading the whole flood ({counts['node1']} of "
                      f"{flood.sent['node1']} read): give the run more epochs")
    assert counts == dict(flood.sent)
    assert all(nodes[n]["rejected_messages"] == flood.sent[n] for n in flood.sent)
    assert nodes["owner1"]["dropped"] == {}
    reasons = set(nodes["node1"]["dropped"])
    assert {"wire: oversize", "wire: not msgpack", "wire: unknown sender", "wire: another run",
            "wire: frame length", "wire: frame count", "wire: dtype not allowed",
            "wrong shape", "wrong dtype", "labels out of range", "unknown owner",
            "iteration too far ahead", "kind not taken", "wrong sender", "bad meta",
            "wrong part", "wrong micro-batch", "no task takes it"} <= reasons, reasons
    assert reasons & {"past iteration", "stale or duplicate iteration"}
