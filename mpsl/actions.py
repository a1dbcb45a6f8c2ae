"""Actions, triggers and tasks: the vocabulary of a schedule, printed and parsed back.

An action prints as the timeline shows it, and `Action.from_str` reads that form back::

    1F3            forward of part 1 on micro-batch 3
    0B12           backward of part 0 on micro-batch 12
    >server:ACT3   send micro-batch 3's activation to `server` (GRAD: its input gradient)
    >aggregator:PARAMS
                   a message without a micro-batch (PARAMS, GLOBAL, CONTROL, METRICS)
    STEP, STEP1    optimizer step of every part the node runs, or of part 1
    AVG, AVG1      averaging of model copies (the aggregator's FedAvg, a compute node's part)
    PLAN           a re-plan, and a node's switch to the new plan

A SEND carries what the pass just before it in its task made: an ACT follows the forward
whose output it is, a GRAD the backward whose input gradient it is; so a SEND needs no part.
A task is a list of actions run back to back on one node, started by one message (its
trigger, `<owner0:ACT3`) or, without one, a barrier.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass, field


class Op(str, enum.Enum):
    """What an action does."""

    FORWARD = "F"
    BACKWARD = "B"
    SEND = ">"
    STEP = "STEP"
    AVG = "AVG"
    PLAN = "PLAN"  # a re-plan and the switch to its plan (nodes.replan)

    def __str__(self) -> str:
        return self.value


class Msg(str, enum.Enum):
    """Message kinds: on the wire, on a link of the trace, in a SEND and a trigger."""

    ACT = "ACT"
    GRAD = "GRAD"
    PARAMS = "PARAMS"
    GLOBAL = "GLOBAL"
    CONTROL = "CONTROL"
    METRICS = "METRICS"

    def __str__(self) -> str:
        return self.value


PASSES = (Op.FORWARD, Op.BACKWARD)
_PASS = re.compile(r"(\d+)([FB])(\d+)")
_SEND = re.compile(r">(.+):(ACT|GRAD|PARAMS|GLOBAL|CONTROL|METRICS)(\d*)")
_WHOLE = re.compile(r"(STEP|AVG|PLAN)(\d*)")
_TRIGGER = re.compile(r"<(.+):(ACT|GRAD)(\d+)")


class ActionError(ValueError):
    """Text that is not an action, trigger or task, or an action with fields out of place."""


INTERNED = 4096  # actions kept by the constructors below: equal ones are one object

# per op, whether an Action has part, mb, msg and dst (None: either)
_FIELDS: dict[Op, tuple[bool | None, ...]] = {
    Op.FORWARD: (True, True, False, False), Op.BACKWARD: (True, True, False, False),
    Op.SEND: (False, None, True, True), Op.STEP: (None, False, False, False),
    Op.AVG: (None, False, False, False), Op.PLAN: (False, False, False, False)}


@dataclass(frozen=True)
class Action:
    """One step of a task; construct with `forward`, `backward`, `send`, `step` or `avg`."""

    op: Op
    part: int | None = None
    mb: int | None = None
    msg: Msg | None = None
    dst: str | None = None

    def __post_init__(self) -> None:
        fields = (self.part is not None, self.mb is not None, self.msg is not None,
                  self.dst is not None)
        wanted = _FIELDS[self.op]
        if any(w is not None and w != f for w, f in zip(wanted, fields)):
            raise ActionError(f"{self.op.name} takes part/mb/msg/dst as {wanted}, got {self!r}")

    @staticmethod
    @functools.lru_cache(maxsize=INTERNED)
    def forward(part: int, mb: int) -> Action:
        return Action(Op.FORWARD, part, mb)

    @staticmethod
    @functools.lru_cache(maxsize=INTERNED)
    def backward(part: int, mb: int) -> Action:
        return Action(Op.BACKWARD, part, mb)

    @staticmethod
    @functools.lru_cache(maxsize=INTERNED)
    def send(msg: Msg, dst: str, mb: int | None = None) -> Action:
        return Action(Op.SEND, None, mb, msg, dst)

    @staticmethod
    @functools.lru_cache(maxsize=INTERNED)
    def step(part: int | None = None) -> Action:
        return Action(Op.STEP, part)

    @staticmethod
    def avg(part: int | None = None) -> Action:
        return Action(Op.AVG, part)

    @staticmethod
    def plan() -> Action:
        return Action(Op.PLAN)

    @property
    def is_pass(self) -> bool:
        return self.op in PASSES

    @property
    def kind(self) -> str:
        """The action without its micro-batch, for grouping: `1F`, `>server:ACT`, `STEP1`."""
        if self.op in PASSES:
            return f"{self.part}{self.op}"
        if self.op is Op.SEND:
            return f">{self.dst}:{self.msg}"
        return str(self)

    def __str__(self) -> str:  # .value: an enum's own formatting is slow on hot paths
        op = self.op
        if op is Op.FORWARD or op is Op.BACKWARD:
            return f"{self.part}{op.value}{self.mb}"
        if op is Op.SEND:
            assert self.msg is not None
            return f">{self.dst}:{self.msg.value}{'' if self.mb is None else self.mb}"
        return f"{op.value}{'' if self.part is None else self.part}"

    @staticmethod
    def from_str(text: str) -> Action:
        """The action that prints as `text` (the inverse of `str`)."""
        if m := _PASS.fullmatch(text):
            return Action(Op(m.group(2)), int(m.group(1)), int(m.group(3)))
        if m := _SEND.fullmatch(text):
            mb = int(m.group(3)) if m.group(3) else None
            return Action.send(Msg(m.group(2)), m.group(1), mb)
        if m := _WHOLE.fullmatch(text):
            return Action(Op(m.group(1)), int(m.group(2)) if m.group(2) else None)
        raise ActionError(f"not an action: {text!r} (expected e.g. 1F3, 0B0, >server:ACT3, "
                          f"STEP, STEP1, AVG)")


@dataclass(frozen=True)
class Trigger:
    """The message a task waits for: `msg` (ACT or GRAD) of micro-batch `mb`, sent by `src`."""

    src: str
    msg: Msg
    mb: int

    def __str__(self) -> str:
        return f"<{self.src}:{self.msg}{self.mb}"

    @staticmethod
    def from_str(text: str) -> Trigger:
        m = _TRIGGER.fullmatch(text)
        if not m:
            raise ActionError(f"not a trigger: {text!r} (expected e.g. <owner0:ACT3)")
        return Trigger(m.group(1), Msg(m.group(2)), int(m.group(3)))


TriggerKey = tuple[Msg, int, int]  # (message kind, the part it is for, micro-batch)


@dataclass(frozen=True)
class Task:
    """Actions run back to back on `node` for data owner `owner`, started by `trigger` (or,
    without one, a barrier: it waits for every earlier task of its owner on the node)."""

    node: str
    owner: int
    trigger: Trigger | None
    actions: tuple[Action, ...]
    # (msg, part, mb) of the message that starts this task, None for a barrier (set once:
    # the task queues read it for every task they are given)
    key: TriggerKey | None = field(init=False, repr=False, compare=False)
    # (index, action, part sent from) of every ACT or GRAD it sends (`sends`), found once
    sent: tuple[tuple[int, Action, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.actions:
            raise ActionError(f"a task of {self.node} has no actions")
        if self.trigger is not None:
            first = self.actions[0]
            wanted = Op.FORWARD if self.trigger.msg is Msg.ACT else Op.BACKWARD
            if first.op is not wanted or first.mb != self.trigger.mb:
                raise ActionError(f"a task started by {self.trigger} begins with the pass it "
                                  f"feeds ({wanted}{self.trigger.mb}), not {first}")
        sent = tuple((i, a, self._sent_part(i)) for i, a in enumerate(self.actions)
                     if a.op is Op.SEND and a.msg in (Msg.ACT, Msg.GRAD))
        object.__setattr__(self, "sent", sent)
        key = None
        if self.trigger is not None:
            part = self.actions[0].part
            assert part is not None
            key = (self.trigger.msg, part, self.trigger.mb)
        object.__setattr__(self, "key", key)

    def sent_part(self, index: int) -> int:
        """The part whose tensor the SEND at `index` carries: the pass just before it."""
        for i, _, part in self.sent:
            if i == index:
                return part
        return self._sent_part(index)  # raises: no ACT or GRAD is sent there

    def _sent_part(self, index: int) -> int:
        a = self.actions[index]
        made = Op.FORWARD if a.msg is Msg.ACT else Op.BACKWARD
        for prev in reversed(self.actions[:index]):
            if prev.is_pass:
                if prev.op is not made or prev.mb != a.mb:
                    break
                assert prev.part is not None
                return prev.part
        raise ActionError(f"{a} in task {self} does not follow the {made} pass of micro-batch "
                          f"{a.mb} that makes it")

    def sends(self) -> tuple[tuple[int, Action, int], ...]:
        """(index, action, part sent from) of every ACT or GRAD this task sends."""
        return self.sent

    def __str__(self) -> str:
        head = [str(self.trigger)] if self.trigger else []
        return "[" + " ".join(head + [str(a) for a in self.actions]) + "]"

    @staticmethod
    def from_str(node: str, owner: int, text: str) -> Task:
        """The task of `node` for `owner` that prints as `text` (`[<s:GRAD0 0B0]`)."""
        if not (text.startswith("[") and text.endswith("]")):
            raise ActionError(f"not a task: {text!r} (expected e.g. [<server:GRAD0 0B0])")
        words = text[1:-1].split()
        trigger = Trigger.from_str(words.pop(0)) if words and words[0].startswith("<") else None
        return Task(node, owner, trigger, tuple(Action.from_str(w) for w in words))
