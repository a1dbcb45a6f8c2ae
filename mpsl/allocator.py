"""The C allocator of a training process: keep freed memory for the next step."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # the largest glibc accepts on 64-bit
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024
_kept = False


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for the next step instead of returning it to the OS.

    By default glibc serves each allocation above a (moving) threshold with its own mmap and
    trims the heap when its top is free, so a training step page-faults its activations and
    gradients in anew every time. That costs CPU time in the kernel: on this project's 2-core
    VM, a data owner's backward of vgg5's first two layers (micro-batch 32) took 68 ms instead
    of 31 ms. Allocations up to 32 MiB now come from the heap, which keeps up to 1 GiB of free
    memory. Once per process; returns False where the C library has no mallopt (not glibc).
    """
    global _kept
    if _kept:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None or sys.platform == "darwin":
        return False
    _kept = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return _kept
