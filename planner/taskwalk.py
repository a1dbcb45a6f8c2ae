"""The cut model's terms of one owner group, read off the schedule's tasks.

One walk over `mpsl.schedule.iteration_tasks` of the group's representative (the tasks do not
depend on the cuts, only on the placement, N and the schedule) gives every term; nothing here
knows which schedule made the tasks:

- processor seconds: each F or B of part p at micro-batch size b adds part p's per-layer
  times at b (an x-row) to its node; each STEP the opt_s rows of the parts it steps plus
  `step_s` per part (and `wake_step_s` on an emulated node); an emulated node (which sleeps
  after every action) pays a wake-up on every pass;
- link seconds: each SEND of an ACT or GRAD the bytes at its cut (a z-row: out_bytes of the
  layer before the cut x b, labels with an ACT when shared, a header) / rate; the node that
  runs the last part sends one METRICS message (a header) to the aggregator per iteration;
- the path: the iteration as a graph of start times (`planner.taskpath`);
- memory: activations live from a part's F to its B, walked in list order (see `memory`).

Compute nodes serve every owner of the group (SL: owners take turns, so one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mpsl.actions import Action, Msg, Op, Task
from mpsl.data import micro_batches
from mpsl.dryrun import run_order
from mpsl.names import AGGREGATOR, CPU
from mpsl.plan import Plan
from mpsl.schedule import in_flight, iteration_tasks, tasks_by_node
from planner.forms import Form
from planner.profile import Profile
from planner.resources import HEADER_BYTES, LABEL_BYTES, Hop, Links

Order = tuple[dict[int, int], dict[str, list[tuple[Task, int]]]]  # GroupWalk.run_order's


@dataclass
class OwnerGroup:
    """Owners alike in profile, N, links, memory cap and emulation, stood for by the first."""

    rep: str
    index: int  # the representative's owner index
    members: list[str]
    profile: Profile
    n: int
    uplink: float | None
    downlink: float | None
    cap: float | None
    sleeps: bool = False  # emulated slower device: it wakes for every pass


@dataclass
class Setting:
    """What the walks of all groups share."""

    plan: Plan  # placement and schedule; its cuts are placeholders
    batch: int
    labels: bool  # labels ride with every ACT
    sl: bool  # owners take turns
    split: bool  # SL with several groups: compute resources per group
    links: Links
    emulated: set[str]
    profs: Mapping[str, Profile]
    smallest: int  # the least micro-batch the model trains on (`mpsl.data.micro_batch_count`)


@dataclass
class NodeUse:
    """One owner's iteration on one node: per part, the peak of live activation samples and
    the peak left live between two tasks; per cut, the samples of the messages received."""

    peak: dict[int, int] = field(default_factory=dict)
    carried: dict[int, int] = field(default_factory=dict)
    received: dict[int, int] = field(default_factory=dict)


class GroupWalk:
    """The terms of one owner group, from its representative's tasks."""

    def __init__(self, setting: Setting, group: OwnerGroup) -> None:
        self.s, self.g = setting, group
        self._shared = _shared(setting.plan, group.index, group.n)
        self.tasks = self._shared.tasks
        self.sizes = micro_batches(setting.batch, group.n)
        self.mult = 1 if setting.sl else len(group.members)
        self.out = [lp.out_bytes for lp in group.profile.layers][:-1]
        self._rows: dict[tuple[int, str, int], list[float]] = {}
        self._prefix: dict[int, list[Form]] = {}
        # forms shared by actions, tasks and messages alike but for their micro-batch (most
        # micro-batches have one size): one Form object each, so sums and evaluations
        # (`planner.forms.distinct_forms`) see it once
        self._forms: dict[tuple[object, ...], Form] = {}
        self._task_forms: dict[tuple[object, ...], list[Form]] = {}

    # ---------------------------------------------------------------- nodes and actions

    def prof(self, node: str) -> Profile:
        return self.g.profile if node == self.g.rep else self.s.profs[node]

    def sleeps(self, node: str) -> bool:
        return self.g.sleeps if node == self.g.rep else node in self.s.emulated

    def parts_on(self, node: str) -> list[int]:
        return [p for p in range(self.s.plan.num_parts)
                if self.s.plan.node_of(p, self.g.rep) == node]

    def _row(self, prof: Profile, what: str, b: int) -> list[float]:
        """Per-layer seconds of `prof`: forward ("F") or backward ("B") at b, or opt_s."""
        key = (id(prof), what, b)
        row = self._rows.get(key)
        if row is None:
            layers = prof.layers
            row = ([lp.fwd(b) for lp in layers] if what == "F" else
                   [lp.bwd(b) for lp in layers] if what == "B" else [lp.opt_s for lp in layers])
            self._rows[key] = row
        return row

    def _size(self, a: Action) -> int | None:
        return None if a.mb is None else self.sizes[a.mb]

    def action_form(self, node: str, a: Action) -> Form:
        """Processor seconds of one action on `node` (one Form per node, kind and size)."""
        key = ("action", node, a.op, a.part, self._size(a))
        got = self._forms.get(key)
        if got is None:
            got = self._forms[key] = self._action_form(node, a)
        return got

    def _action_form(self, node: str, a: Action) -> Form:
        f = Form()
        prof, sleeps = self.prof(node), self.sleeps(node)
        if a.op in (Op.FORWARD, Op.BACKWARD):
            assert a.part is not None and a.mb is not None
            f.add_x(a.part, self._row(prof, str(a.op), self.sizes[a.mb]))
            if sleeps:
                f.const = prof.wake_fwd_s if a.op is Op.FORWARD else prof.wake_bwd_s
        elif a.op is Op.STEP:
            parts = self.parts_on(node) if a.part is None else [a.part]
            for p in parts:
                f.add_x(p, self._row(prof, "opt", 0))
            f.const = len(parts) * prof.step_s + (prof.wake_step_s if sleeps and parts else 0.0)
        elif a.op is not Op.SEND:
            raise ValueError(f"the cut model does not time {a} inside an iteration")
        return f

    def prefixes(self, task: Task) -> list[Form]:
        """Processor seconds of the task's first i actions, for i = 0..len(actions)."""
        got = self._prefix.get(id(task))
        if got is None:
            key = ("task", task.node, *((a.op, a.part, self._size(a), a.msg, a.dst)
                                        for a in task.actions))
            got = self._task_forms.get(key)
            if got is None:
                got = [Form()]
                for a in task.actions:
                    got.append(got[-1] if a.op is Op.SEND else
                               got[-1].plus(self.action_form(task.node, a)))
                self._task_forms[key] = got
            self._prefix[id(task)] = got
        return got

    def duration(self, task: Task) -> Form:
        return self.prefixes(task)[-1]

    def wake(self, task: Task) -> float:
        """What the task's first pass costs more when it starts on an idle processor (an
        emulated node pays it on every pass already)."""
        if self.sleeps(task.node):
            return 0.0
        first = next((a for a in task.actions if a.is_pass), None)
        prof = self.prof(task.node)
        return 0.0 if first is None else (prof.wake_fwd_s if first.op is Op.FORWARD
                                          else prof.wake_bwd_s)

    def message(self, task: Task, index: int) -> tuple[Hop, Form]:
        """The link of the SEND at `index` and its transmission seconds (one Form per link,
        cut, kind and size)."""
        a = task.actions[index]
        assert a.dst is not None and a.mb is not None
        part = task.sent_part(index)
        cut = part if a.msg is Msg.ACT else part - 1
        b = self.sizes[a.mb]
        hop = self.s.links(task.node, a.dst)
        key = ("message", hop.name, a.msg, cut, b)
        f = self._forms.get(key)
        if f is None:
            f = self._forms[key] = Form()
            if hop.rate_mbps is not None:
                per_byte = hop.tx_s(1.0)
                f.add_z(cut, self.out, b * per_byte)
                labels = LABEL_BYTES * b if a.msg is Msg.ACT and self.s.labels else 0
                f.const = (labels + HEADER_BYTES) * per_byte
        return hop, f

    # ---------------------------------------------------------------- busy time

    def processor(self, node: str) -> str:
        if node == self.g.rep or not self.s.split:
            return node
        return f"{node}/{self.g.rep}"

    def link(self, hop: Hop, src: str, dst: str) -> tuple[str, int]:
        """The resource name of a link and the owners whose messages it carries."""
        if self.g.rep in (src, dst):
            return hop.name, 1
        return (f"{hop.name}/{self.g.rep}" if self.s.split else hop.name), self.mult

    def loads(self) -> dict[str, Form]:
        """Busy seconds per processor and link in one iteration of every owner of the group."""
        terms: dict[str, dict[int, tuple[Form, int]]] = {}  # by resource, by form: its count

        def count(name: str, f: Form, k: int) -> None:
            got = terms.setdefault(name, {})
            old = got.get(id(f))
            got[id(f)] = (f, k + (old[1] if old is not None else 0))

        for task in self.tasks:
            k = 1 if task.node == self.g.rep else self.mult
            count(self.processor(task.node), self.duration(task), k)
            for i, a, _ in task.sends():
                assert a.dst is not None
                hop, f = self.message(task, i)
                if hop.rate_mbps is not None:
                    name, k = self.link(hop, task.node, a.dst)
                    count(name, f, k)
        out: dict[str, Form] = {}
        for name, forms in terms.items():
            total = out[name] = Form()
            for f, k in forms.values():
                total.add(f, k)
        last = self.s.plan.node_of(self.s.plan.num_parts - 1, self.g.rep)
        hop = self.s.links(last, AGGREGATOR)  # the loss report (METRICS)
        if hop.rate_mbps is not None:
            name, k = self.link(hop, last, AGGREGATOR)
            out.setdefault(name, Form()).const += k * hop.tx_s(HEADER_BYTES)
        return out

    # ---------------------------------------------------------------- memory

    def memory(self) -> dict[str, NodeUse]:
        """Live activation samples per node and part, walking each node's tasks in list
        order: part p of micro-batch m is live from its F to its B."""
        out: dict[str, NodeUse] = {}
        for node, tasks in tasks_by_node(self.tasks).items():
            use = out[node] = NodeUse()
            live: dict[int, int] = {}
            for task in tasks:
                if task.key is not None:
                    msg, part, mb = task.key
                    cut = part - 1 if msg is Msg.ACT else part
                    use.received[cut] = use.received.get(cut, 0) + self.sizes[mb]
                for a in task.actions:
                    if a.is_pass:
                        assert a.part is not None and a.mb is not None
                        sign = 1 if a.op is Op.FORWARD else -1
                        live[a.part] = live.get(a.part, 0) + sign * self.sizes[a.mb]
                        use.peak[a.part] = max(use.peak.get(a.part, 0), live[a.part])
                for p, v in live.items():
                    use.carried[p] = max(use.carried.get(p, 0), v)
        return out

    # ---------------------------------------------------------------- the path

    def run_order(self) -> Order:
        """A dry run of the iteration (`mpsl.dryrun`, the execution rule): each task's rank in
        its node's run order, and each link's messages in the order they are sent. Done once
        for every walk of the same tasks."""
        if self._shared.order is None:
            self._shared.order = self._run_order()
        return self._shared.order

    def _run_order(self) -> Order:
        rank: dict[int, int] = {}
        links: dict[str, list[tuple[Task, int]]] = {}
        for task, i, resource in run_order(self.s.plan, {self.g.index: self.tasks}):
            if resource != CPU:
                links.setdefault(resource, []).append((task, i))
            else:  # a task's rank: when its first action ran
                rank.setdefault(id(task), len(rank))
        return rank, links


@dataclass
class _Iteration:
    """An iteration's tasks (the same for every batch size, cut and profile) and, once asked
    for, their dry run's order."""

    tasks: list[Task]
    order: Order | None = None


_iterations: dict[tuple[object, ...], _Iteration] = {}
_KEPT = 1024  # iterations kept across walks (the planner walks the same ones many times)


def forget() -> None:
    """Forget the iterations kept (for timing the planner from a cold start)."""
    _iterations.clear()


def _shared(plan: Plan, owner: int, n: int) -> _Iteration:
    """`iteration_tasks(plan, owner, n)`, made once for every walk of the same placement,
    owner, N and micro-batches in flight (schedules that agree in it make the same tasks)."""
    key = (plan.placement, in_flight(plan, n), owner, n)  # the schedules' tasks differ in it
    got = _iterations.get(key)
    if got is None:
        if len(_iterations) >= _KEPT:
            _iterations.clear()
        got = _iterations[key] = _Iteration(iteration_tasks(plan, owner, n))
    return got
