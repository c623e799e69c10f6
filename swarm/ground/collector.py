"""Python's cyclic garbage collector in a process whose live data only grows (the blackboard service).

The service keeps the decision state in memory, and it grows with every event. A full collection
scans all of it: measured at 64 claiming clients (scripts/bench_blackboard.py), full collections
came every 1.5 s and paused the event loop 25, 42, 52, 67, 85, 114 ms as the state grew, and those
pauses were the claims' p99. So after each full collection its survivors are frozen (`gc.freeze`):
the next one scans only what was born since. A frozen object that later becomes part of a garbage
cycle is not reclaimed until it is unfrozen, so every `thaw_seconds` the freeze is lifted and the
next full collection sees everything once.
"""

from __future__ import annotations

import gc
import time
from typing import Any

_state = {"installed": False, "thawed": 0.0}


def freeze_survivors(thaw_seconds: float = 3600.0) -> None:
    """From now on in this process, freeze what survives each full collection (idempotent)."""
    if _state["installed"]:
        return
    _state["installed"], _state["thawed"] = True, time.monotonic()

    def after(phase: str, info: dict[str, Any]) -> None:
        if phase != "stop" or info.get("generation") != 2:
            return
        if time.monotonic() - _state["thawed"] > thaw_seconds:
            gc.unfreeze()  # the next full collection reclaims cycles among what was frozen
            _state["thawed"] = time.monotonic()
        else:
            gc.freeze()

    gc.callbacks.append(after)
