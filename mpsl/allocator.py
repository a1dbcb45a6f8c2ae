"""The C allocator of a training process: keep freed memory for the next step."""

from __future__ import annotations

import ctypes

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # the largest glibc accepts on 64-bit
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024
_kept = False


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for the next step instead of returning it to the OS.

    By default glibc serves each allocation above a moving threshold with its own mmap, and
    trims the heap once its free top exceeds another. A node's mix of sizes (activations,
    gradients, messages, several threads) keeps defeating the moving threshold, so its steps
    page-fault their tensors in again: kernel CPU time, which an emulated device multiplies
    by its compute_scale. Allocations up to 32 MiB now come from the heap, which keeps up to
    1 GiB free. Once per process; returns False where the C library has no mallopt (not
    glibc).
    """
    global _kept
    if not _kept:
        try:
            mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
        except (OSError, AttributeError):
            return False
        _kept = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
            mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return _kept
