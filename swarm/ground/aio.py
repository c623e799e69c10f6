"""Running an async main: on uvloop where installed, with SIGTERM and SIGINT as cancellation.

A signal cancels the main task, so every `finally` runs: claims are released, the leader lease is
given up, connections drain. A second signal while that happens exits at once (status 130).
`on_signal` hears of it too: Python 3.11's `wait_for` can swallow a cancellation that races a
reply (seen: a node that went on for minutes after its Ctrl-C), so a long-running main also checks
a flag it sets.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def run(main: Callable[[], Awaitable[T]], on_signal: Callable[[], None] | None = None) -> T | None:
    """Run `main()` to completion; None if a signal stopped it. `on_signal` is called on the first signal."""

    async def guarded() -> T | None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        signals = 0

        def signalled() -> None:
            nonlocal signals
            signals += 1
            if signals > 1:
                os._exit(130)  # asked twice: stop now, leaving files as they are (each write is atomic)
            if on_signal is not None:
                on_signal()
            assert task is not None
            task.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signalled)
        try:
            return await main()
        except asyncio.CancelledError:
            if signals:
                return None
            raise

    try:
        import uvloop
    except ImportError:
        return asyncio.run(guarded())
    return uvloop.run(guarded())
