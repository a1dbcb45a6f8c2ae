"""Tests for nodes.wire's `encode(copy=False)`: frames that are the tensors' own memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nodes.wire import Message, decode, encode


def _addr(frame: object) -> int:
    return int(np.frombuffer(frame, dtype=np.uint8).ctypes.data)


def _msg(**tensors: torch.Tensor) -> Message:
    return Message(kind="ACT", src="owner0", tensors=tensors)


@pytest.mark.parametrize("t", [
    torch.randn(1 << 18),  # 1 MiB
    torch.randn(64, 1024, requires_grad=True),
    torch.randn(1 << 17).to(torch.bfloat16),
    torch.arange(100, dtype=torch.int64),  # small
    torch.rand(3, 5) > 0.5,
])
def test_encode_without_copy_frames_are_views_of_the_tensors(t: torch.Tensor) -> None:
    frames = encode(_msg(x=t), copy=False)
    assert _addr(frames[1]) == t.data_ptr(), "no copy: the frame is the tensor's memory"
    got = decode([bytes(f) for f in frames]).tensors["x"]
    assert got.dtype == t.dtype and torch.equal(got, t.detach())


def test_encode_without_copy_sends_no_bytes_for_an_empty_tensor() -> None:
    t = torch.zeros(2, 0, 3)
    frames = encode(_msg(x=t), copy=False)
    assert frames[1] == b""
    assert decode(frames).tensors["x"].shape == (2, 0, 3)


def test_encode_with_copy_frames_are_private() -> None:
    t = torch.randn(1 << 18)
    frames = encode(_msg(x=t))
    assert _addr(frames[1]) != t.data_ptr()


@pytest.mark.parametrize("make", [
    lambda b: b.t(),  # strided
    lambda b: b[:, ::2],
    lambda b: torch._neg_view(b),  # a lazy negation: numpy cannot see it
])
def test_encode_without_copy_copies_tensors_without_contiguous_bytes_once(make) -> None:
    base = torch.randn(256, 512)
    t = make(base)
    want = t.clone()
    frames = encode(_msg(x=t), copy=False)
    assert _addr(frames[1]) != base.data_ptr()
    base.fill_(0.0)  # the frame is a private copy: later writes to the source do not show
    assert torch.equal(decode([bytes(f) for f in frames]).tensors["x"], want)
