"""Device slots: one run at a time per device, across every agent process of a node, in order.

An implementer and a replicator on a machine with one GPU (or one CPU slot) share it: each holds
the device's slot only while its run trains. The slot itself is an exclusive `flock` on a file in
the swarm directory, released by the kernel if its holder dies. Who gets it next is decided by a
queue of tickets beside it: higher priority first, then first come, first served. Without the
queue, an implementer whose next patch is always ready re-takes the slot microseconds after
releasing it, and a waiting replicator never gets a turn: candidates would never be replicated.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import time
from pathlib import Path
from types import TracebackType

POLL_SECONDS = 0.05  # how often a waiting agent looks again: bounds the idle time it adds
PRIORITY = {"baseline": 2, "replicate": 1, "promote": 1, "explore": 0}  # what a swarm needs decided first


class DeviceSlot:
    def __init__(self, swarm_dir: Path, device: str, priority: int = 0) -> None:
        self.device, self.priority = device, priority
        folder = swarm_dir / "devices"
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", device)
        self.path = folder / f"{name}.lock"
        self.queue = folder / f"{name}.queue"
        self.queue.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None
        self.waited = 0.0  # seconds spent waiting for the slot last time

    async def __aenter__(self) -> DeviceSlot:
        # Ticket names sort in serving order: priority (highest first), then arrival.
        ticket = self.queue / f"{9 - self.priority}-{time.time_ns():020d}-{os.getpid()}"
        ticket.touch()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        started = time.monotonic()
        try:
            while True:
                if self._first(ticket):
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        pass  # the current run has not finished yet
                await asyncio.sleep(POLL_SECONDS)
        except BaseException:
            os.close(fd)
            raise
        finally:
            ticket.unlink(missing_ok=True)
        self._fd, self.waited = fd, time.monotonic() - started
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def _first(self, mine: Path) -> bool:
        """Whether `mine` heads the queue, dropping tickets of processes that died waiting."""
        for ticket in sorted(self.queue.iterdir()):
            if ticket == mine:
                return True
            if _alive(int(ticket.name.rsplit("-", 1)[1])):
                return False
            ticket.unlink(missing_ok=True)
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
