"""Tests of mpsl.allocator: freed tensor memory stays with the process for the next step."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest

# In a fresh process: hold 8 tensors of 24 MiB (pages touched), free them, and print how many
# MiB the resident set shrank by. glibc's defaults give such memory back to the OS (munmap, or
# a heap trim), so the next step page-faults it in again; kept, it does not shrink. Each
# mode runs in its own process: the setting holds for a whole process.
FREE_AND_MEASURE = """
import os, sys, torch
if sys.argv[1] == "keep":
    from mpsl.allocator import keep_freed_memory
    assert keep_freed_memory() and keep_freed_memory()  # set, then already set
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
held = [torch.empty(6 * 2**20).fill_(1.0) for _ in range(8)]
before = rss()
del held
print((before - rss()) / 2**20)
"""

ON_GLIBC = sys.platform.startswith("linux") and bool(ctypes.util.find_library("c"))
glibc = pytest.mark.skipif(not ON_GLIBC, reason="mallopt is glibc's")


def shrink_mib(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", FREE_AND_MEASURE, mode], capture_output=True,
                         text=True, timeout=120, check=True)
    return float(out.stdout.strip())


@glibc
def test_freed_tensors_stay_with_the_process_only_when_kept() -> None:
    default, kept = shrink_mib("default"), shrink_mib("keep")
    assert default > 150, f"glibc's default gave back only {default} MiB of 192"
    assert kept < 10, f"kept memory still shrank by {kept} MiB"
