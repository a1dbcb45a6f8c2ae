"""Tests of mpsl.allocator: a training step page-faults less once freed memory is kept."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest

from mpsl.allocator import keep_freed_memory

# Ten training steps of vgg5's first two layers (micro-batch 32, as a data owner runs them),
# in a fresh process; prints the minor page faults per step.
STEPS = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from mpsl.allocator import keep_freed_memory
    assert keep_freed_memory()
from mpsl.models import build_model
torch.set_num_threads(1)
model = build_model("vgg5", 10, 3, 32, "batch").train()
part = torch.nn.Sequential(*list(model.children())[:2])
x = torch.rand(32, 3, 32, 32)
def step():
    out = part(x)
    out.backward(torch.ones_like(out))
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""

ON_GLIBC = sys.platform.startswith("linux") and bool(ctypes.util.find_library("c"))
glibc = pytest.mark.skipif(not ON_GLIBC, reason="mallopt is glibc's")


def faults_per_step(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True,
                         timeout=120, check=True)
    return float(out.stdout.strip())


@glibc
def test_keep_freed_memory_is_set_once_and_says_so() -> None:
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True


@glibc
def test_a_training_step_faults_less_with_freed_memory_kept() -> None:
    default, kept = faults_per_step("default"), faults_per_step("keep")
    assert kept < 0.7 * default, (default, kept)
