"""The cyclic garbage collector paused while the planner works.

The planner makes many short-lived objects (forms, tasks, events, arrays) and few reference
cycles; each collection walks every live object of the process (torch's included), so
collections took a fifth of `mpsl plan`'s time and a third of a large simulation's. Objects
are still freed as their last reference goes; cycles wait for the collector, which runs again
when the block ends (as it was found: a block inside another leaves it paused).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Pause the cyclic collector for the block, then leave it as it was found."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
